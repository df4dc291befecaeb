"""insurers/adapters/soap.py against the sandbox insurer's spyne service over real SOAP."""

import json
import time
from datetime import date

import pytest
from django.conf import settings

from insurers import services
from insurers.adapters.base import PermanentError, TransientError
from insurers.adapters.soap import SoapAdapter
from insurers.models import Dispatch, DispatchItem
from tests.factories import InsurerFactory
from tests.insurers.gateway_items import (
    dispatch_of,
    exchange_documents,
    payload,
    references,
    results_of,
    sandbox_received,
    taken_and_refused_assert,
)

pytestmark = pytest.mark.django_db
Result = DispatchItem.Result


@pytest.fixture
def soap_insurer(sandbox):
    return InsurerFactory(
        protocol="SOAP",
        endpoint_url=f"{sandbox.faces['soap']}?wsdl",
        credentials={"username": settings.SANDBOX_SOAP_USERNAME, "password": settings.SANDBOX_SOAP_PASSWORD},
        connection={"policy_number": "POL-GW-1"},
        request_timeout_seconds=2,
    )


def test_send_records_accepted_and_rejected_items_with_the_insurers_premium(sandbox, soap_insurer):
    # Given a dispatch with a member the insurer takes and one its rules refuse
    taken, refused = references(2)
    dispatch = dispatch_of(
        soap_insurer, payload(reference=taken), payload(reference=refused, employee_code="REJ-7", premium=100)
    )

    # When it is sent over SOAP
    results = services.dispatch_send(dispatch_id=dispatch.pk)

    # Then the insurer's rounding (whole rupees, half up) is on the confirmed item
    assert [(r.reference, r.outcome) for r in results] == [(taken, "confirmed"), (refused, "rejected")]
    taken_and_refused_assert(sandbox, dispatch, taken=taken, refused=refused)


def test_a_resent_dispatch_gets_the_same_answer_without_acting_twice(sandbox, soap_insurer):
    (reference,) = references(1)
    dispatch = dispatch_of(soap_insurer, payload(reference=reference))
    items = list(dispatch.items.all())

    first = SoapAdapter().send(dispatch, items)
    again = SoapAdapter().send(dispatch, items)

    assert first == again
    assert first[0].insurer_reference.startswith("INS-")
    assert len(sandbox_received(sandbox, dispatch.idempotency_key)) == 1


def test_accepted_now_then_confirmed_by_polling(sandbox, soap_insurer):
    sandbox.switches(answer_mode="webhook")
    reference, other = references(2)
    dispatch = dispatch_of(soap_insurer, payload(reference=reference), payload(reference=other))

    services.dispatch_send(dispatch_id=dispatch.pk)
    assert [row[1] for row in results_of(dispatch)] == [Result.ACCEPTED, Result.ACCEPTED]

    polled = services.confirmations_poll(insurer_id=soap_insurer.pk)

    assert {r.reference for r in polled} == {reference, other}
    assert results_of(dispatch) == [
        (reference, Result.CONFIRMED, 1234600, "", False),
        (other, Result.CONFIRMED, 1234600, "", False),
    ]
    assert services.confirmations_poll(insurer_id=soap_insurer.pk) == []


def test_status_roster_and_statement(sandbox, soap_insurer):
    (reference,) = references(1)
    code = f"E-{reference}"
    dispatch = dispatch_of(soap_insurer, payload(reference=reference, employee_code=code))
    services.dispatch_send(dispatch_id=dispatch.pk)
    adapter = SoapAdapter()

    (status,) = adapter.status_fetch(soap_insurer, [reference])
    roster = [row for row in adapter.roster_fetch(soap_insurer) if row["employee_code"] == code]
    today = date.today()
    lines = [
        row for row in adapter.statement_fetch(soap_insurer, today, today) if row["reference"] == reference
    ]

    assert (status.reference, status.outcome, status.insurer_premium) == (reference, "confirmed", 1234600)
    assert status.data == {"effective_date": "2026-01-01"}
    assert len(roster) == 1
    assert roster[0]["insurer_member_id"] == status.insurer_member_id
    assert (roster[0]["plan_code"], roster[0]["sum_insured"], roster[0]["start"]) == (
        "GOLD",
        500000,
        "2026-01-01",
    )
    assert [(line["kind"], line["amount"]) for line in lines] == [("DEBIT", -1234600)]


@pytest.mark.parametrize(
    ("switches", "code", "retry_after"),
    [
        ({"error_rate": 1.0}, "soap_Server.Unavailable", None),
        ({"throttle_rate": 1.0, "retry_after_seconds": 7}, "soap_Server.Throttled", 7.0),
    ],
)
def test_server_faults_are_transient_and_change_nothing(sandbox, soap_insurer, switches, code, retry_after):
    sandbox.switches(**switches)
    (reference,) = references(1)
    dispatch = dispatch_of(soap_insurer, payload(reference=reference))

    with pytest.raises(TransientError) as raised:
        services.dispatch_send(dispatch_id=dispatch.pk)

    assert (raised.value.code, raised.value.retry_after) == (code, retry_after)
    assert results_of(dispatch) == [(reference, Result.PENDING, None, "", True)]
    assert Dispatch.objects.get(pk=dispatch.pk).state == Dispatch.State.PENDING
    assert sandbox_received(sandbox, dispatch.idempotency_key) == []


def test_a_client_fault_is_permanent_and_changes_no_item(sandbox, soap_insurer):
    soap_insurer.credentials = {"username": settings.SANDBOX_SOAP_USERNAME, "password": "not-the-password"}
    soap_insurer.save(update_fields=["credentials"])
    (reference,) = references(1)
    dispatch = dispatch_of(soap_insurer, payload(reference=reference))

    with pytest.raises(PermanentError) as raised:
        services.dispatch_send(dispatch_id=dispatch.pk)

    assert raised.value.code == "soap_Client.Authentication"
    assert results_of(dispatch) == [(reference, Result.PENDING, None, "", True)]
    assert Dispatch.objects.get(pk=dispatch.pk).state == Dispatch.State.FAILED
    assert sandbox_received(sandbox, dispatch.idempotency_key) == []


def test_a_hanging_insurer_times_out_within_the_insurers_timeout(sandbox, soap_insurer):
    (reference,) = references(1)
    dispatch = dispatch_of(soap_insurer, payload(reference=reference))
    SoapAdapter().status_fetch(soap_insurer, [reference])  # WSDL loaded and cached before the hang
    sandbox.switches(timeout_rate=1.0, timeout_seconds=30)
    started = time.monotonic()

    with pytest.raises(TransientError) as raised:
        SoapAdapter().send(dispatch, list(dispatch.items.all()))

    assert raised.value.code == "soap_timeout"
    assert time.monotonic() - started < soap_insurer.request_timeout_seconds + 1.5


def test_an_unreachable_wsdl_is_transient(soap_insurer):
    soap_insurer.endpoint_url = "http://127.0.0.1:9/?wsdl"
    soap_insurer.save(update_fields=["endpoint_url"])

    with pytest.raises(TransientError) as raised:
        SoapAdapter().status_fetch(soap_insurer, ["EN-1"])

    assert raised.value.code == "soap_connection_error"


def test_exchanges_are_logged_without_the_ws_security_password(sandbox, soap_insurer):
    (reference,) = references(1)
    dispatch = dispatch_of(soap_insurer, payload(reference=reference))

    services.dispatch_send(dispatch_id=dispatch.pk)

    (document,) = exchange_documents(soap_insurer)
    assert (document["operation"], document["status"], document["dispatch_key"]) == (
        "SubmitEndorsements",
        "ok",
        dispatch.idempotency_key,
    )
    assert document["tracking_ids"] == [reference]
    assert settings.SANDBOX_SOAP_PASSWORD not in json.dumps(document)
