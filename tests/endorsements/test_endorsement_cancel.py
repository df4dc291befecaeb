"""`POST /api/v1/endorsements/{tracking_id}/cancel` (pipeline.cancel.endorsement_cancel) and the
portal's Cancel button: HR's two doors, against requests the pipeline put in each state."""

import pytest

from endorsements.models import EndorsementRequest
from endorsements.pipeline import funds
from tests.factories import EmployerFactory, hr_user_create
from tests.insurers.conftest import sandbox, sandbox_server  # noqa: F401 - the session's sandbox
from tests.pipeline.conftest import S, approver, fund, policy_at, rest_insurer_at, validated  # noqa: F401
from tests.pipeline.dead_letter_helpers import footprint, ledger_state, sent_debit

pytestmark = pytest.mark.django_db


def cancel_url(request: EndorsementRequest) -> str:
    return f"/api/v1/endorsements/{request.tracking_id}/cancel"


@pytest.fixture
def policy(sandbox, approver, employer):  # noqa: F811 - the fixtures imported above
    """The employer's policy at a REST sandbox insurer, with ₹1,000 in the account."""
    policy = policy_at(rest_insurer_at(sandbox), employer=employer)
    fund(policy, 1_000_00, approver)
    return policy


def fund_locked(policy, premium: int = 300_00) -> EndorsementRequest:
    request = validated(policy, premium=premium)
    funds.debits_lock(endorsements=[request])
    return request


def test_the_api_cancels_a_fund_locked_request_and_answers_the_same_again(api, policy):
    request = fund_locked(policy)

    response = api.post(cancel_url(request), {"reason": "offer withdrawn"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["tracking_id"], body["state"]) == (request.tracking_id, S.CANCELLED)
    assert body["transitions"][-1]["from_state"] == S.FUND_LOCKED
    assert body["transitions"][-1]["reason"] == "offer withdrawn"
    assert body["transitions"][-1]["actor"] == f"client:{api.api_client.client_id}"
    money = ledger_state(policy)
    assert (money["posted"], money["held"]) == (1_000_00, 0)
    # again, without a body: the same answer, nothing more written
    before = footprint(request), ledger_state(policy)
    again = api.post(cancel_url(request))
    assert again.status_code == 200
    assert again.json() == body
    assert (footprint(request), ledger_state(policy)) == before


def test_an_idempotency_key_replays_the_first_answer(api, policy):
    request = fund_locked(policy)
    first = api.post(cancel_url(request), format="json", HTTP_IDEMPOTENCY_KEY="cancel-1")
    replay = api.post(cancel_url(request), format="json", HTTP_IDEMPOTENCY_KEY="cancel-1")
    assert (first.status_code, replay.status_code) == (200, 200)
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()


def test_the_api_refuses_a_sent_request_with_409_naming_its_state(
    api, policy, django_capture_on_commit_callbacks
):
    request = sent_debit(policy, premium=300_00)
    before = footprint(request), ledger_state(policy)

    response = api.post(cancel_url(request), format="json")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "endorsement_not_cancellable"
    assert f"{request.tracking_id} is SENT" in error["message"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert (footprint(request), ledger_state(policy)) == before


def test_another_employers_request_is_not_found(api, sandbox, approver):  # noqa: F811
    theirs = policy_at(rest_insurer_at(sandbox), employer=EmployerFactory())
    fund(theirs, 1_000_00, approver)
    request = fund_locked(theirs)
    before = footprint(request), ledger_state(theirs)

    response = api.post(cancel_url(request), format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "endorsement_not_found"
    assert (footprint(request), ledger_state(theirs)) == before


def test_the_schema_documents_the_cancel(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/endorsements/{tracking_id}/cancel"]["post"]
    assert operation["operationId"] == "endorsements_cancel"
    assert {"200", "404", "409"} <= set(operation["responses"])
    assert "Idempotency-Key" in [p["name"] for p in operation["parameters"]]


# --- the portal ---------------------------------------------------------------------------------


@pytest.fixture
def hr(client, employer):
    client.force_login(hr_user_create(employer=employer))
    return client


def page_of(request: EndorsementRequest) -> str:
    return f"/portal/endorsements/{request.tracking_id}/"


def test_the_portal_shows_cancel_only_while_cancellable_and_cancels_on_confirmation(hr, policy):
    request = fund_locked(policy)
    page = hr.get(page_of(request)).content.decode()
    assert "Cancel this endorsement" in page
    assert f'action="/portal/endorsements/{request.tracking_id}/cancel"' in page
    assert 'name="csrfmiddlewaretoken"' in page

    response = hr.post(f"{page_of(request)}cancel", {"reason": "left before joining"})

    assert response.status_code == 302
    assert response["Location"] == f"{page_of(request)}?cancelled=1"
    done = hr.get(response["Location"]).content.decode()
    assert "<strong>Cancelled.</strong>" in done
    assert "Cancel this endorsement" not in done
    assert ledger_state(policy)["held"] == 0
    request.refresh_from_db()
    assert request.state == S.CANCELLED
    assert request.transitions.order_by("-id").first().reason == "left before joining"


def test_the_portal_shows_the_refusal_when_it_was_sent_meanwhile(
    hr, policy, django_capture_on_commit_callbacks
):
    request = sent_debit(policy, premium=300_00)
    assert "Cancel this endorsement" not in hr.get(page_of(request)).content.decode()
    before = footprint(request), ledger_state(policy)

    response = hr.post(f"{page_of(request)}cancel", {})

    assert response.status_code == 409
    html = response.content.decode()
    assert "It was not cancelled" in html
    assert f"{request.tracking_id} is SENT" in html
    assert (footprint(request), ledger_state(policy)) == before


def test_the_portal_cancel_needs_a_post_with_the_csrf_token(policy, employer):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(hr_user_create(employer=employer))
    request = fund_locked(policy)
    assert browser.get(f"{page_of(request)}cancel").status_code == 405
    assert browser.post(f"{page_of(request)}cancel", {}).status_code == 403
    request.refresh_from_db()
    assert request.state == S.FUND_LOCKED
