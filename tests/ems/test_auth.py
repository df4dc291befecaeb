"""OAuth2 client credentials: tokens, expiry, revocation, and employer scope."""

from base64 import b64encode
from urllib.parse import quote_plus, urlencode

import pytest
from django.core import signing
from django.utils import timezone

from ems.auth import TOKEN_SALT, hash_secret, token_client
from ems.models import ApiClient
from tests.factories import EmployerFactory, api_client_create

pytestmark = pytest.mark.django_db


def token_for(client, client_id: str, secret: str, fmt: str = "json"):
    payload = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    if fmt == "json":
        return client.post("/api/v1/auth/token", data=payload, content_type="application/json")
    return client.post(
        "/api/v1/auth/token", data=urlencode(payload), content_type="application/x-www-form-urlencoded"
    )


@pytest.mark.parametrize("fmt", ["json", "form"])
def test_client_credentials_grant_returns_a_bearer_token(client, settings, fmt):
    api_client, secret = api_client_create(employer=EmployerFactory())
    response = token_for(client, api_client.client_id, secret, fmt)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == int(settings.API_TOKEN_TTL.total_seconds())
    assert token_client(body["access_token"]).pk == api_client.pk
    api_client.refresh_from_db()
    assert api_client.last_token_at is not None


def test_secret_is_stored_hashed_never_in_clear():
    api_client, secret = api_client_create(employer=EmployerFactory())
    stored = ApiClient.objects.get(pk=api_client.pk)
    assert stored.secret_hash == hash_secret(secret)
    assert secret not in stored.secret_hash


@pytest.mark.parametrize(
    "client_id, secret_suffix",
    [("cli_unknown", ""), (None, "x")],
)
def test_wrong_credentials_are_401_with_one_message(client, client_id, secret_suffix):
    api_client, secret = api_client_create(employer=EmployerFactory())
    response = token_for(client, client_id or api_client.client_id, secret + secret_suffix)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid client credentials."
    api_client.refresh_from_db()
    assert api_client.last_token_at is None


def test_revoked_client_gets_no_token_and_its_tokens_stop_working(client):
    api_client, secret = api_client_create(employer=EmployerFactory())
    token = token_for(client, api_client.client_id, secret).json()["access_token"]
    ApiClient.objects.filter(pk=api_client.pk).update(is_active=False, revoked_at=timezone.now())
    assert token_for(client, api_client.client_id, secret).status_code == 401
    response = client.get("/api/schema/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200  # the schema is public
    from rest_framework.exceptions import AuthenticationFailed

    with pytest.raises(AuthenticationFailed) as raised:
        token_client(token)
    assert raised.value.detail.code == "client_revoked"


def test_expired_and_forged_tokens_are_refused(settings):
    api_client, _ = api_client_create(employer=EmployerFactory())
    from rest_framework.exceptions import AuthenticationFailed

    token = signing.dumps({"cid": api_client.client_id}, salt=TOKEN_SALT)
    settings.API_TOKEN_TTL = timezone.timedelta(seconds=-1)
    with pytest.raises(AuthenticationFailed) as expired:
        token_client(token)
    assert expired.value.detail.code == "token_expired"
    settings.API_TOKEN_TTL = timezone.timedelta(minutes=15)
    forged = signing.dumps({"cid": api_client.client_id}, salt="another-salt")
    with pytest.raises(AuthenticationFailed) as invalid:
        token_client(forged)
    assert invalid.value.detail.code == "token_invalid"


def test_malformed_authorization_header_is_401(client):
    response = client.get("/api/v1/ledger/balance", HTTP_AUTHORIZATION="Basic abc")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-urlencoded, then `id:secret` in base64."""
    return "Basic " + b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()


@pytest.mark.parametrize("fmt", ["json", "form"])
def test_http_basic_client_authentication_returns_a_bearer_token(client, fmt):
    api_client, secret = api_client_create(employer=EmployerFactory())
    body = {"grant_type": "client_credentials"}
    data, content_type = (
        (body, "application/json")
        if fmt == "json"
        else (urlencode(body), "application/x-www-form-urlencoded")
    )

    response = client.post(
        "/api/v1/auth/token",
        data=data,
        content_type=content_type,
        HTTP_AUTHORIZATION=basic(api_client.client_id, secret),
    )

    assert response.status_code == 200, response.content
    assert token_client(response.json()["access_token"]).pk == api_client.pk


def test_a_secret_with_reserved_characters_is_form_decoded_from_basic(client):
    api_client, _ = api_client_create(employer=EmployerFactory())
    secret = "a:b+c d%e/é"
    ApiClient.objects.filter(pk=api_client.pk).update(secret_hash=hash_secret(secret))

    response = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials"},
        content_type="application/json",
        HTTP_AUTHORIZATION=basic(api_client.client_id, secret),
    )

    assert response.status_code == 200, response.content


@pytest.mark.parametrize("field", ["client_id", "client_secret"])
def test_basic_and_the_body_at_once_are_refused_even_naming_other_credentials(client, field):
    api_client, secret = api_client_create(employer=EmployerFactory())
    other, other_secret = api_client_create(employer=EmployerFactory())
    body = {
        "grant_type": "client_credentials",
        field: other.client_id if field == "client_id" else other_secret,
    }

    response = client.post(
        "/api/v1/auth/token",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=basic(api_client.client_id, secret),
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {
            "field": "client_id",
            "code": "invalid",
            "message": "Send the client credentials with HTTP Basic or in the body, not both.",
        }
    ]
    assert ApiClient.objects.filter(last_token_at__isnull=False).count() == 0


@pytest.mark.parametrize(
    "authorization",
    ["wrong-secret", "Basic !!not-base64!!", "Basic " + b64encode(b"no-colon").decode()],
)
def test_bad_basic_credentials_are_401_and_issue_nothing(client, authorization):
    api_client, _ = api_client_create(employer=EmployerFactory())
    if authorization == "wrong-secret":
        authorization = basic(api_client.client_id, "wrong")

    response = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials"},
        content_type="application/json",
        HTTP_AUTHORIZATION=authorization,
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"invalid_client", "authentication_failed"}
    api_client.refresh_from_db()
    assert api_client.last_token_at is None


def test_no_client_credentials_at_all_is_401(client):
    response = client.post(
        "/api/v1/auth/token", data={"grant_type": "client_credentials"}, content_type="application/json"
    )

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid client credentials."
