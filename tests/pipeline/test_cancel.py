"""`endorsements/pipeline/cancel.py`: cancel before SENT releases exactly the request's money;
after SENT it is refused with nothing changed; ops' cancel of a FAILED request asks the real
sandbox insurer first."""

import pytest

from endorsements.errors import (
    EndorsementBusy,
    EndorsementNotCancellable,
    InsurerHasEndorsement,
    InsurerUnreachable,
)
from endorsements.models import EndorsementRequest
from endorsements.pipeline import cancel, funds
from endorsements.pipeline.scheduler import closer_lock
from endorsements.transitions import endorsement_transition
from insurers import handlers
from insurers import services as gateway
from insurers.models import DispatchItem
from tests.pipeline.conftest import S, fund, policy_at, rest_insurer_at, states, validated
from tests.pipeline.dead_letter_helpers import failed_debit, footprint, ledger_state, sent_debit
from tests.pipeline.test_sending import MAKERS

pytestmark = pytest.mark.django_db
OPS = "user:ops-1"
Result = DispatchItem.Result


def in_state(state: str, policy) -> EndorsementRequest:
    """A ₹300 (or, to park, ₹700) debit brought to `state` by the pipeline's own moves."""
    if state == S.RECEIVED:
        return EndorsementRequest.objects.create(
            employer=policy.employer, policy=policy, type="ADD", source="API", content_hash="h-received"
        )
    request = validated(policy, premium=700_00 if state == S.ON_HOLD_FUNDS else 300_00)
    if state in (S.FUND_LOCKED, S.ON_HOLD_FUNDS):
        funds.debits_lock(endorsements=[request])
    elif state == S.ON_HOLD_REVIEW:
        endorsement_transition(
            endorsement=request, to_state=S.ON_HOLD_REVIEW, actor="gate", reason="velocity"
        )
    request.refresh_from_db()
    assert request.state == state
    return request


@pytest.mark.parametrize("state", [S.RECEIVED, S.VALIDATED, S.ON_HOLD_REVIEW, S.ON_HOLD_FUNDS, S.FUND_LOCKED])
def test_a_cancel_before_sent_releases_exactly_the_requests_money(sandbox, approver, state):
    # given ₹1,000 in the account, ₹600 of it locked by another request, and the request in `state`
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    other = validated(policy, premium=600_00)
    funds.debits_lock(endorsements=[other])
    request = in_state(state, policy)
    # when HR cancels it
    result = cancel.endorsements_cancel(
        endorsement_ids=[request.pk], actor="client:hris", reason="joined elsewhere", as_ops=False
    )
    # then it is CANCELLED, its own hold or parked request released, the other's untouched
    assert [e.pk for e in result.cancelled] == [request.pk]
    assert result.refused == {}
    assert states(request, other) == [S.CANCELLED, S.FUND_LOCKED]
    money = ledger_state(policy)
    assert (money["posted"], money["held"]) == (1_000_00, 600_00)
    mine_held = {S.FUND_LOCKED: [(request.tracking_id, 300_00, "RELEASED")]}.get(state, [])
    assert money["holds"] == sorted([(other.tracking_id, 600_00, "PENDING"), *mine_held])
    assert money["parked"] == (
        [(request.tracking_id, 700_00, "CANCELLED")] if state == S.ON_HOLD_FUNDS else []
    )
    last = request.transitions.order_by("-id").first()
    assert (last.from_state, last.to_state, last.actor, last.reason) == (
        state,
        S.CANCELLED,
        "client:hris",
        "joined elsewhere",
    )
    # and cancelling again answers the same and changes nothing
    before = footprint(request, other), ledger_state(policy)
    again = cancel.endorsements_cancel(endorsement_ids=[request.pk], actor="client:hris", as_ops=False)
    assert [e.pk for e in again.already_cancelled] == [request.pk]
    assert (again.cancelled, again.refused) == ([], {})
    assert (footprint(request, other), ledger_state(policy)) == before


def test_a_cancel_after_sent_is_refused_naming_the_state_and_changes_nothing(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request = sent_debit(policy, premium=300_00)
    before = footprint(request), ledger_state(policy)

    for as_ops in (False, True):
        result = cancel.endorsements_cancel(endorsement_ids=[request.pk], actor=OPS, as_ops=as_ops)
        refusal = result.refused[request.tracking_id]
        assert isinstance(refusal, EndorsementNotCancellable)
        assert (refusal.status, refusal.code) == (409, "endorsement_not_cancellable")
        assert f"{request.tracking_id} is SENT" in refusal.message
        assert result.done == []

    assert (footprint(request), ledger_state(policy)) == before


def test_hr_may_not_cancel_a_failed_request(sandbox, approver, django_capture_on_commit_callbacks):
    insurer = rest_insurer_at(sandbox, retry_max_attempts=1)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request, _ = failed_debit(sandbox, insurer, policy, django_capture_on_commit_callbacks, premium=300_00)
    before = footprint(request), ledger_state(policy)

    result = cancel.endorsements_cancel(endorsement_ids=[request.pk], actor="client:hris", as_ops=False)

    assert "is FAILED" in result.refused[request.tracking_id].message
    assert (footprint(request), ledger_state(policy)) == before


@pytest.mark.parametrize("protocol", ["REST", "SOAP", "SFTP"])
def test_ops_cancel_a_failed_request_the_insurer_never_got(
    sandbox, approver, django_capture_on_commit_callbacks, protocol
):
    # given a debit whose send the insurer refused (500s, faults, a dropped connection): ₹300 held
    insurer = MAKERS[protocol](sandbox, retry_max_attempts=1)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request, _ = failed_debit(sandbox, insurer, policy, django_capture_on_commit_callbacks, premium=300_00)
    assert ledger_state(policy)["held"] == 300_00
    # when ops cancel it: the sandbox's status call says it does not know the reference
    result = cancel.endorsements_cancel(endorsement_ids=[request.pk], actor=OPS, reason="stale", as_ops=True)
    # then it is cancelled and the hold released
    assert [e.pk for e in result.cancelled] == [request.pk]
    assert states(request) == [S.CANCELLED]
    money = ledger_state(policy)
    assert (money["posted"], money["held"]) == (1_000_00, 0)
    assert money["holds"] == [(request.tracking_id, 300_00, "RELEASED")]
    assert request.transitions.order_by("-id").values_list("from_state", "to_state", "actor").first() == (
        S.FAILED,
        S.CANCELLED,
        OPS,
    )


@pytest.mark.parametrize("protocol", ["REST", "SOAP"])
def test_ops_cancel_of_a_failed_request_the_insurer_has_records_its_answer_and_is_refused(
    sandbox, approver, django_capture_on_commit_callbacks, protocol
):
    # given a debit the sandbox confirmed but whose answer was lost: FAILED here, confirmed there
    insurer = MAKERS[protocol](sandbox, retry_max_attempts=1)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request, dispatch_id = failed_debit(
        sandbox, insurer, policy, django_capture_on_commit_callbacks, premium=300_00, insurer_keeps_it=True
    )
    item = DispatchItem.objects.get(dispatch_id=dispatch_id)
    assert (item.result, item.is_live) == (Result.PENDING, False)
    money_before = ledger_state(policy)
    heard = []

    def listener(insurer_id, results):
        heard.extend((insurer_id, r.reference, r.outcome) for r in results)

    handlers.register_confirmation_handler(listener)
    try:
        with django_capture_on_commit_callbacks() as after_commit:
            result = cancel.endorsements_cancel(endorsement_ids=[request.pk], actor=OPS, as_ops=True)
        # then the cancel is refused, saying the insurer has it, and nothing was cancelled
        refusal = result.refused[request.tracking_id]
        assert isinstance(refusal, InsurerHasEndorsement)
        assert f"{insurer.code} has it (confirmed); its answer was recorded" in refusal.message
        assert result.done == []
        assert states(request) == [S.FAILED]
        assert ledger_state(policy) == money_before  # the hold is the confirmation path's to capture
        # and the insurer's answer landed on the item, for the confirmation path after commit
        item.refresh_from_db()
        assert (item.result, item.insurer_premium, item.is_live) == (
            DispatchItem.Result.CONFIRMED,
            300_00,
            False,
        )
        assert item.result_data["source"] == "status"
        for callback in after_commit:
            callback()
    finally:
        handlers.unregister_confirmation_handler(listener)
    assert heard == [(insurer.pk, request.tracking_id, "confirmed")]


def test_ops_cancel_is_refused_when_the_insurer_cannot_be_asked(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox, retry_max_attempts=1)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request, _ = failed_debit(sandbox, insurer, policy, django_capture_on_commit_callbacks, premium=300_00)
    insurer.endpoint_url = "http://127.0.0.1:9"  # nothing listens there: connection refused
    insurer.save(update_fields=["endpoint_url"])
    before = footprint(request), ledger_state(policy)

    result = cancel.endorsements_cancel(endorsement_ids=[request.pk], actor=OPS, as_ops=True)

    refusal = result.refused[request.tracking_id]
    assert isinstance(refusal, InsurerUnreachable)
    assert (refusal.status, refusal.code) == (503, "insurer_unreachable")
    assert "nothing was cancelled" in refusal.message
    assert (footprint(request), ledger_state(policy)) == before


def test_a_request_in_a_dispatch_not_yet_sent_is_taken_out_of_it(sandbox, approver):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request = in_state(S.FUND_LOCKED, policy)
    dispatch = gateway.dispatch_create(
        insurer=insurer, items=[{"reference": request.tracking_id, "kind": "ADD", "payload": {}}]
    )

    result = cancel.endorsements_cancel(endorsement_ids=[request.pk], actor=OPS, as_ops=True)

    assert [e.pk for e in result.cancelled] == [request.pk]
    assert list(dispatch.items.values_list("reference", "is_live")) == [(request.tracking_id, False)]
    assert ledger_state(policy)["held"] == 0


def test_a_cancel_waits_for_a_closing_window_and_then_says_try_again(sandbox, approver, monkeypatch):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request = in_state(S.FUND_LOCKED, policy)
    monkeypatch.setattr(cancel, "CLOSER_WAIT_SECONDS", 0.1)
    before = footprint(request), ledger_state(policy)

    with closer_lock(insurer.pk, blocking_timeout=0):  # a window of the insurer is closing
        result = cancel.endorsements_cancel(endorsement_ids=[request.pk], actor=OPS, as_ops=False)

    assert isinstance(result.refused[request.tracking_id], EndorsementBusy)
    assert (footprint(request), ledger_state(policy)) == before


def test_an_employees_deletion_cancelled_takes_its_dependants_linked_deletions_along(sandbox, approver):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    employee = validated(policy, premium=-600_00, kind="DELETE")
    spouse = validated(policy, premium=-300_00, kind="DELETE")
    child = validated(policy, premium=-100_00, kind="DELETE")
    EndorsementRequest.objects.filter(pk__in=[spouse.pk, child.pk]).update(linked_to=employee)
    unrelated = validated(policy, premium=-50_00, kind="DELETE")

    result = cancel.endorsements_cancel(endorsement_ids=[employee.pk], actor="user:hr", as_ops=False)

    assert sorted(e.pk for e in result.cancelled) == sorted([employee.pk, spouse.pk, child.pk])
    assert states(employee, spouse, child, unrelated) == [S.CANCELLED, S.CANCELLED, S.CANCELLED, S.VALIDATED]
