"""`ems.asgi_http.SyncChainASGIHandler`: requests run on a few reused threads."""

import asyncio
import threading

import pytest
from django.conf import settings

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
