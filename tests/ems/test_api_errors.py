"""Every API error is the DESIGN.md envelope with the right status and a request id."""

import json

import pytest

from ems.models import IdempotencyRecord, OutboxEvent

pytestmark = pytest.mark.django_db


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response["X-Request-ID"]
    return error


def nothing_written() -> None:
    assert OutboxEvent.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0


def test_unknown_api_route_is_a_json_404(client):
    response = client.get("/api/v1/no-such-thing/")
    error = assert_envelope(response, 404, "not_found")
    assert "/api/v1/no-such-thing/" in error["message"]


def test_unknown_route_outside_the_api_is_not_json(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_wrong_method_on_the_token_endpoint_is_405(client):
    response = client.get("/api/v1/auth/token")
    assert_envelope(response, 405, "method_not_allowed")


def test_malformed_json_is_400(client):
    response = client.post("/api/v1/auth/token", data="{not json", content_type="application/json")
    assert_envelope(response, 400, "malformed_request")
    nothing_written()


def test_unsupported_media_type_is_415(client):
    response = client.post("/api/v1/auth/token", data="<xml/>", content_type="application/xml")
    assert_envelope(response, 415, "unsupported_media_type")


def test_validation_errors_list_each_field(client):
    # (client_id and client_secret may be absent: they can come with HTTP Basic instead)
    response = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "client_id": "", "client_secret": ""},
        content_type="application/json",
    )
    error = assert_envelope(response, 422, "validation_failed")
    fields = {detail["field"]: detail["code"] for detail in error["details"]}
    assert fields == {"grant_type": "invalid_choice", "client_id": "blank", "client_secret": "blank"}


def test_oversized_body_is_413_before_anything_is_read(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"grant_type": "client_credentials", "client_id": "x" * 2000, "client_secret": "y"})
    response = client.post("/api/v1/auth/token", data=body, content_type="application/json")
    error = assert_envelope(response, 413, "payload_too_large")
    assert "1000 bytes" in error["message"]
    nothing_written()


def test_missing_token_is_401_with_a_challenge(client):
    response = client.get("/api/v1/ledger/balance")
    assert_envelope(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_unhandled_exception_under_api_is_a_json_500(client, monkeypatch):
    from ems import api

    def explode(**_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "token_issue", explode)
    client.raise_request_exception = False
    response = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"},
        content_type="application/json",
    )
    error = assert_envelope(response, 500, "internal_error")
    assert "boom" not in error["message"]
