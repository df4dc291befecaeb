"""Throttles on the token endpoint (`ems.throttles`), through the API's own door.

Failed client authentications count per client id (form, JSON or HTTP Basic alike) and
per address; at the limit the endpoint answers 429 with Retry-After and the error
envelope, before it looks at the credentials, so the right secret waits for the window.
Each test uses addresses and clients of its own, so the shared counters never mix.
"""

import base64
import itertools
import os
import time
from urllib.parse import urlencode

import pytest
from django.test import RequestFactory

from ems.models import ApiClient
from ems.throttles import client_address
from tests.factories import EmployerFactory, api_client_create

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/token"
# Documentation-range addresses, only ever a header value here; the process id keeps two
# runs on one Redis apart (the counters outlive a test by their window).
_addresses = (f"2001:db8::{os.getpid() % 65536:x}:{n:x}" for n in itertools.count(1))


@pytest.fixture
def address() -> str:
    """An address no other test uses."""
    return next(_addresses)


def token(http, client_id: str, secret: str, *, address: str, way: str = "json"):
    grant = {"grant_type": "client_credentials"}
    credentials = {"client_id": client_id, "client_secret": secret}
    if way == "json":
        return http.post(
            TOKEN_URL, {**grant, **credentials}, content_type="application/json", REMOTE_ADDR=address
        )
    if way == "form":
        return http.post(
            TOKEN_URL,
            urlencode({**grant, **credentials}),
            content_type="application/x-www-form-urlencoded",
            REMOTE_ADDR=address,
        )
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return http.post(
        TOKEN_URL,
        urlencode(grant),
        content_type="application/x-www-form-urlencoded",
        REMOTE_ADDR=address,
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )


def assert_throttled(response) -> int:
    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["code"], error["details"]) == ("throttled", [])
    assert error["message"].startswith("Request was throttled.")
    wait = int(response["Retry-After"])
    assert 1 <= wait <= 60
    return wait


def test_failures_per_client_id_count_every_way_of_authenticating_and_then_the_right_secret_waits(
    client, settings, address
):
    # given: a limit of 3 failures per client id a minute
    settings.EMS_THROTTLE_RATES = {"token_client_failures": "3/min", "token_address_failures": "100/min"}
    api_client, secret = api_client_create(employer=EmployerFactory())
    # when: three wrong secrets, one each way
    failures = [
        token(client, api_client.client_id, "wrong", address=address, way=way).status_code
        for way in ("form", "json", "basic")
    ]
    # then: 401 each, and now even the right secret is refused, whichever way it comes
    assert failures == [401, 401, 401]
    for way in ("json", "form", "basic"):
        assert_throttled(token(client, api_client.client_id, secret, address=address, way=way))
    api_client.refresh_from_db()
    assert api_client.last_token_at is None  # no token was issued
    # another client from the same address is not held up
    other, other_secret = api_client_create(employer=EmployerFactory())
    assert token(client, other.client_id, other_secret, address=address).status_code == 200


def test_failures_per_address_hold_up_every_client_from_it(client, settings, address):
    settings.EMS_THROTTLE_RATES = {"token_client_failures": "100/min", "token_address_failures": "4/min"}
    api_client, secret = api_client_create(employer=EmployerFactory())
    # when: four unknown client ids from one address
    statuses = [token(client, f"cli_guess_{n}", "x", address=address).status_code for n in range(4)]
    # then
    assert statuses == [401, 401, 401, 401]
    assert_throttled(token(client, api_client.client_id, secret, address=address))
    # X-Forwarded-For does not move a caller to another address (no trusted proxy)
    spoofed = client.post(
        TOKEN_URL,
        {"grant_type": "client_credentials", "client_id": api_client.client_id, "client_secret": secret},
        content_type="application/json",
        REMOTE_ADDR=address,
        HTTP_X_FORWARDED_FOR="192.0.2.99",
    )
    assert_throttled(spoofed)
    # the same client from elsewhere gets its token
    assert token(client, api_client.client_id, secret, address=next(_addresses)).status_code == 200


def test_successful_requests_do_not_count(client, settings, address):
    settings.EMS_THROTTLE_RATES = {"token_client_failures": "2/min", "token_address_failures": "2/min"}
    api_client, secret = api_client_create(employer=EmployerFactory())
    statuses = [token(client, api_client.client_id, secret, address=address).status_code for _ in range(5)]
    assert statuses == [200] * 5


def test_the_right_secret_works_again_when_the_window_ends(client, settings, address):
    # given: a one-second window, spent (on a busy machine the requests may straddle two
    # windows: then the round is repeated with a fresh client, a few times at most)
    settings.EMS_THROTTLE_RATES = {"token_client_failures": "2/s", "token_address_failures": "100/s"}
    for _ in range(5):
        api_client, secret = api_client_create(employer=EmployerFactory())
        time.sleep(1 - time.time() % 1 + 0.01)  # the start of a window
        window = int(time.time())
        statuses = [
            token(client, api_client.client_id, "wrong", address=address).status_code for _ in range(2)
        ]
        refused = token(client, api_client.client_id, secret, address=address)
        if int(time.time()) == window:
            break
    assert statuses == [401, 401]
    assert_throttled(refused)
    # when: the next window starts
    time.sleep(1 - time.time() % 1 + 0.01)
    # then
    assert token(client, api_client.client_id, secret, address=address).status_code == 200


def test_http_basic_issues_a_token_and_refuses_two_ways_at_once_or_a_garbled_header(client, address):
    api_client, secret = api_client_create(employer=EmployerFactory())
    assert token(client, api_client.client_id, secret, address=address, way="basic").status_code == 200
    basic = base64.b64encode(f"{api_client.client_id}:{secret}".encode()).decode()
    both = client.post(
        TOKEN_URL,
        {"grant_type": "client_credentials", "client_id": api_client.client_id, "client_secret": secret},
        content_type="application/json",
        REMOTE_ADDR=address,
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )
    assert both.status_code == 422
    assert both.json()["error"]["details"] == [
        {
            "field": "client_id",
            "code": "invalid",
            "message": "Send the client credentials with HTTP Basic or in the body, not both.",
        }
    ]
    garbled = client.post(
        TOKEN_URL,
        "grant_type=client_credentials",
        content_type="application/x-www-form-urlencoded",
        REMOTE_ADDR=address,
        HTTP_AUTHORIZATION="Basic not-base64!",
    )
    assert garbled.status_code == 401
    assert garbled.json()["error"]["code"] == "authentication_failed"
    missing = client.post(
        TOKEN_URL, {"grant_type": "client_credentials"}, content_type="application/json", REMOTE_ADDR=address
    )
    assert (missing.status_code, missing.json()["error"]["message"]) == (401, "Invalid client credentials.")
    assert ApiClient.objects.get(pk=api_client.pk).last_token_at is not None  # the first call only


@pytest.mark.parametrize(
    "proxies, forwarded, expected",
    [
        (0, "192.0.2.1", "10.0.0.5"),
        (1, "192.0.2.1", "192.0.2.1"),
        (1, "6.6.6.6, 192.0.2.1", "192.0.2.1"),  # a client's own entry comes first, ignored
        (2, "6.6.6.6, 192.0.2.1, 10.0.0.9", "192.0.2.1"),
        (1, "", "10.0.0.5"),
    ],
)
def test_the_address_is_remote_addr_unless_a_trusted_proxy_forwarded_it(
    settings, proxies, forwarded, expected
):
    settings.EMS_TRUSTED_PROXY_COUNT = proxies
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected
