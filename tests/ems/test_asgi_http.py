"""`ems.asgi_http.SyncChainASGIHandler`: requests run on a few reused threads."""

import asyncio
import threading

import pytest
from django.conf import settings
from django.core import signals

from tests.asgi_exchange import asgi_exchange

pytestmark = pytest.mark.django_db(transaction=True)  # the views run in other threads


async def _get(path: str) -> tuple[int, bytes]:
    status, _headers, content = await asgi_exchange("GET", path)
    return status, content


def _request_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("ems-http-")}


def test_many_concurrent_requests_share_at_most_asgi_threads_threads():
    before = _request_threads()

    async def many():
        return await asyncio.gather(*(_get("/healthz") for _ in range(3 * settings.ASGI_THREADS)))

    # when three times as many requests as threads arrive at once
    answers = asyncio.run(many())
    # then every one is answered, and no more threads than ASGI_THREADS were started for them
    assert [status for status, _ in answers] == [200] * (3 * settings.ASGI_THREADS)
    assert len(_request_threads() - before) <= settings.ASGI_THREADS


def test_an_unknown_api_route_still_gets_the_json_envelope():
    status, content = asyncio.run(_get("/api/v1/nowhere/"))
    assert status == 404
    assert b'"not_found"' in content


def test_a_request_is_started_answered_and_finished_in_one_visit_to_its_thread():
    seen: list[tuple[str, str]] = []

    def started(**kwargs):
        seen.append(("started", threading.current_thread().name))

    def finished(**kwargs):
        seen.append(("finished", threading.current_thread().name))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        status, content = asyncio.run(_get("/healthz"))
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    # then the answer is whole, and both signals ran once, on the same request thread
    assert (status, content[:1]) == (200, b"{")
    assert [event for event, _ in seen] == ["started", "finished"]
    assert seen[0][1] == seen[1][1] and seen[0][1].startswith("ems-http-")


def test_a_streamed_response_is_sent_whole_and_closed_after_it():
    finished: list[str] = []

    def on_finished(**kwargs):
        finished.append(threading.current_thread().name)

    from django.http import StreamingHttpResponse

    from ems.asgi_http import SyncChainASGIHandler

    handler = SyncChainASGIHandler()
    handler.get_response = lambda request: StreamingHttpResponse(iter([b"a,b\r\n", b"1,2\r\n"]))

    signals.request_finished.connect(on_finished)
    try:
        status, _headers, body = asyncio.run(asgi_exchange("GET", "/x", application=handler))
    finally:
        signals.request_finished.disconnect(on_finished)
    assert (status, body) == (200, b"a,b\r\n1,2\r\n")
    assert len(finished) == 1 and finished[0].startswith("ems-http-")
