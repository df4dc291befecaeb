"""`POST /api/v1/endorsements/` through the ASGI application (`ems.asgi`, Django's own handler)."""

import asyncio
import json

import pytest

from endorsements.models import EndorsementRequest
from tests.asgi_exchange import asgi_exchange

pytestmark = pytest.mark.django_db(transaction=True)  # the view runs in a thread of its own


def asgi_request(method: str, path: str, body: bytes = b"", headers: dict | None = None):
    return asyncio.run(asgi_exchange(method, path, body, headers))


def test_an_endorsement_is_received_over_asgi_with_the_middleware_at_work(api, book):
    token = api._credentials["HTTP_AUTHORIZATION"]
    status, headers, content = asgi_request(
        "POST",
        "/api/v1/endorsements/",
        json.dumps(book.add_row()).encode(),
        {"Content-Type": "application/json", "Authorization": token, "X-Request-ID": "asgi-1"},
    )
    assert status == 201, content
    body = json.loads(content)
    assert body["state"] == "RECEIVED"
    assert headers[b"x-request-id"] == b"asgi-1"  # RequestIdMiddleware
    assert headers[b"location"] == f"/api/v1/endorsements/{body['tracking_id']}".encode()
    assert EndorsementRequest.objects.filter(tracking_id=body["tracking_id"]).exists()


def test_an_unknown_api_route_gets_the_json_envelope_over_asgi():
    status, headers, content = asgi_request("GET", "/api/v1/nowhere/")
    assert status == 404
    assert json.loads(content)["error"]["code"] == "not_found"  # ApiNotFoundMiddleware
