"""The REST adapter against the sandbox insurer over real HTTP on loopback.

Given a REST insurer pointed at the sandbox, when a dispatch is sent, then each item's
result lands on its item (through `dispatch_send` and `item_results_record`), the
registered confirmation handler hears the changed ones, and failures map to transient or
permanent errors as the protocol says.
"""

import time
import uuid
from datetime import date, timedelta

import pytest

from insurers import handlers
from insurers.adapters import adapter_for
from insurers.adapters.base import PermanentError, TransientError
from insurers.models import Dispatch, DispatchItem
from insurers.services import dispatch_create, dispatch_send
from tests.insurers.conftest import rest_insurer

pytestmark = pytest.mark.django_db(transaction=True)
RUN = uuid.uuid4().hex[:8]


def ref(name):
    return f"{name}-{RUN}"


def payload(reference, *, action="ADD", premium=708_000, employee_code=None, **extra):
    """One item's payload; references and employee codes are unique per run (the sandbox keeps its roster)."""
    return {
        "reference": f"{reference}-{RUN}",
        "action": action,
        "policy_number": "POL-1",
        "employee_code": employee_code or f"E-{reference}-{RUN}",
        "relation": "SELF",
        "first_name": "Asha",
        "last_name": "Rao",
        "date_of_birth": "1990-04-01",
        "plan_code": "SILVER",
        "sum_insured": 500_000,
        "effective_date": date.today().isoformat(),
        "premium": premium,
        "currency": "INR",
        **extra,
    }


@pytest.fixture
def insurer(sandbox):
    return rest_insurer(
        sandbox,
        request_timeout_seconds=2,
        circuit_failure_threshold=3,
        circuit_cooldown_seconds=1,
        rate_limit_per_second=1000,
    )


@pytest.fixture
def heard():
    calls = []

    def on_results(insurer_id, results):
        calls.append((insurer_id, [(r.reference, r.outcome) for r in results]))

    handlers.register_confirmation_handler(on_results)
    yield calls
    handlers.unregister_confirmation_handler(on_results)


def dispatch_of(insurer, *payloads):
    return dispatch_create(
        insurer=insurer,
        items=[{"reference": p["reference"], "kind": p["action"], "payload": p} for p in payloads],
    )


def test_send_confirms_inline_and_rejects_by_rule(insurer, heard, mongo_db):
    # given one ADD the insurer accepts (it rounds 7,080.00 + 0.55 to whole rupees) and one it refuses
    dispatch = dispatch_of(
        insurer, payload("T-OK", premium=708_055), payload("T-NO", employee_code=f"REJ-{RUN}")
    )
    # when it is sent
    results = dispatch_send(dispatch_id=dispatch.pk)
    # then the items carry the insurer's answers, the dispatch is complete, the handler heard both
    assert {r.reference: r.outcome for r in results} == {ref("T-OK"): "confirmed", ref("T-NO"): "rejected"}
    ok = DispatchItem.objects.get(reference=ref("T-OK"))
    assert (ok.result, ok.insurer_premium, ok.is_live) == ("CONFIRMED", 708_100, False)
    assert ok.insurer_member_id.startswith("M") and ok.insurer_reference.startswith("INS-")
    refused = DispatchItem.objects.get(reference=ref("T-NO"))
    assert (refused.result, refused.result_code, refused.is_live) == ("REJECTED", "member_refused", False)
    dispatch.refresh_from_db()
    assert (dispatch.state, dispatch.attempts) == ("COMPLETED", 1)
    assert heard == [(insurer.pk, [(ref("T-OK"), "confirmed"), (ref("T-NO"), "rejected")])]


def test_same_dispatch_twice_changes_nothing_at_the_insurer(insurer, heard):
    # given a dispatch the insurer answered but whose items we pretend were never recorded
    dispatch = dispatch_of(insurer, payload("T-TWICE"))
    adapter = adapter_for(insurer)
    items = list(dispatch.items.all())
    first = adapter.send(dispatch, items)
    # when the same dispatch (same keys) is sent again
    second = adapter.send(dispatch, items)
    # then the insurer answers the same and its roster holds the member once
    assert first == second
    roster = [
        m for m in adapter.roster_fetch(insurer) if m["employee_code"] == items[0].payload["employee_code"]
    ]
    assert len(roster) == 1
    assert roster[0]["insurer_member_id"] == first[0].insurer_member_id


def test_pending_then_confirmed_by_polling(insurer, sandbox, heard):
    # given the insurer answers "accepted" now and confirms later
    sandbox.switches(answer_mode="webhook")
    dispatch = dispatch_of(insurer, payload("T-LATER"))
    results = dispatch_send(dispatch_id=dispatch.pk)
    assert [r.outcome for r in results] == ["accepted"]
    item = DispatchItem.objects.get(reference=ref("T-LATER"))
    assert (item.result, item.is_live) == ("ACCEPTED", True)
    # when its confirmations are fetched and recorded
    from insurers.services import item_results_record

    confirmed = adapter_for(insurer).confirmations_fetch(insurer)
    changed = item_results_record(insurer=insurer, results=confirmed, source="poll")
    # then the item is confirmed and no longer live; recording the same again changes nothing
    item.refresh_from_db()
    assert (item.result, item.is_live, item.insurer_premium) == ("CONFIRMED", False, 708_000)
    assert [r.reference for r in changed] == [ref("T-LATER")]
    assert item_results_record(insurer=insurer, results=confirmed, source="poll") == []
    assert heard[-1] == (insurer.pk, [(ref("T-LATER"), "confirmed")])
    assert len(heard) == 2


def test_status_roster_and_statement(insurer):
    dispatch = dispatch_of(insurer, payload("T-S1"), payload("T-S2"))
    dispatch_send(dispatch_id=dispatch.pk)
    adapter = adapter_for(insurer)
    status = adapter.status_fetch(insurer, [ref("T-S1"), ref("T-NEVER")])
    assert [(r.reference, r.outcome) for r in status] == [(ref("T-S1"), "confirmed")]
    codes = {m["employee_code"] for m in adapter.roster_fetch(insurer)}
    assert {item.payload["employee_code"] for item in dispatch.items.all()} <= codes
    lines = adapter.statement_fetch(insurer, date.today() - timedelta(days=1), date.today())
    ours = [line for line in lines if line["reference"] in (ref("T-S1"), ref("T-S2"))]
    assert [(line["kind"], line["amount"]) for line in ours] == [("DEBIT", -708_000), ("DEBIT", -708_000)]


@pytest.mark.parametrize(
    ("switch", "code", "retry_after"),
    [("error_rate", "insurer_server_error", None), ("throttle_rate", "insurer_throttled", 7.0)],
)
def test_server_errors_and_throttling_are_transient(insurer, sandbox, switch, code, retry_after):
    sandbox.switches(**{switch: 1.0, "retry_after_seconds": 7})
    dispatch = dispatch_of(insurer, payload("T-5XX"))
    with pytest.raises(TransientError) as raised:
        dispatch_send(dispatch_id=dispatch.pk)
    assert (raised.value.code, raised.value.retry_after) == (code, retry_after)
    dispatch.refresh_from_db()
    item = DispatchItem.objects.get(reference=ref("T-5XX"))
    assert (dispatch.state, dispatch.attempts, item.result, item.is_live) == ("PENDING", 1, "PENDING", True)


def test_timeout_is_transient_and_bounded(insurer, sandbox):
    sandbox.switches(timeout_rate=1.0, timeout_seconds=20)
    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        dispatch_send(dispatch_id=dispatch_of(insurer, payload("T-SLOW")).pk)
    assert raised.value.code == "insurer_timeout"
    assert time.monotonic() - started < 10  # the read timeout (2 s) ended it, not the insurer's 20 s


def test_connection_refused_is_transient(insurer):
    from ems.embedded import free_port

    insurer.endpoint_url = f"http://127.0.0.1:{free_port()}"
    insurer.save(update_fields=["endpoint_url"])
    with pytest.raises(TransientError) as raised:
        dispatch_send(dispatch_id=dispatch_of(insurer, payload("T-DOWN")).pk)
    assert raised.value.code == "insurer_unreachable"


def test_other_4xx_is_permanent_and_fails_the_dispatch(insurer):
    insurer.credentials = {"bearer_token": "wrong"}
    insurer.save(update_fields=["credentials"])
    dispatch = dispatch_of(insurer, payload("T-401"))
    with pytest.raises(PermanentError):
        dispatch_send(dispatch_id=dispatch.pk)
    dispatch.refresh_from_db()
    assert dispatch.state == Dispatch.State.FAILED
    assert DispatchItem.objects.get(reference=ref("T-401")).result == "PENDING"


def test_response_lost_then_retried_with_same_key_acts_once(insurer, sandbox):
    # given the insurer acts on the dispatch but its answer is lost
    sandbox.switches(lose_response_rate=1.0)
    dispatch = dispatch_of(insurer, payload("T-LOST"))
    with pytest.raises(TransientError):
        dispatch_send(dispatch_id=dispatch.pk)
    # when the same dispatch is retried once the insurer answers again
    sandbox.switches(lose_response_rate=0.0)
    results = dispatch_send(dispatch_id=dispatch.pk)
    # then it answers the first outcome and holds the member once
    assert [r.outcome for r in results] == ["confirmed"]
    code = dispatch.items.get().payload["employee_code"]
    roster = [m for m in adapter_for(insurer).roster_fetch(insurer) if m["employee_code"] == code]
    assert len(roster) == 1
    dispatch.refresh_from_db()
    assert dispatch.attempts == 2
