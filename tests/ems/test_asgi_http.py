"""`ems.asgi_http.SyncChainASGIHandler`: requests run on a few reused threads."""

import asyncio
import threading

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings

from ems.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)  # the views run in other threads


def _scope(path: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def _get(path: str) -> tuple[int, bytes]:
    communicator = ApplicationCommunicator(application, _scope(path))
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(10)
    content = b""
    while True:
        message = await communicator.receive_output(10)
        content += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(10)
    return start["status"], content


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
