"""ledger.approvals.adjustment_request and adjustment_decide (maker-checker)."""

import pytest

from ems.models import OutboxEvent
from ledger import approvals, services
from ledger.errors import (
    AdjustmentAlreadyDecided,
    AmountInvalid,
    ApproverNotPermitted,
    IdempotencyConflict,
    InsufficientFunds,
    MakerCannotApprove,
)
from tests.factories import UserFactory
from tests.ledger.conftest import balances, fund, snapshot

pytestmark = pytest.mark.django_db


def request_adjustment(account, maker, amount=-5_000, key="a1", reason="bank charge"):
    return approvals.adjustment_request(
        account_id=account.pk,
        amount=amount,
        reason=reason,
        idempotency_key=key,
        requested_by=f"user:{maker.pk}",
    )


def test_the_maker_cannot_approve_or_reject_their_own(account, approver):
    fund(account, 10_000, approver)
    adjustment = request_adjustment(account, approver)
    before = snapshot(account)
    with pytest.raises(MakerCannotApprove) as error:
        approvals.adjustment_decide(adjustment_id=adjustment.pk, approver=approver, approve=True)
    assert (error.value.code, error.value.status) == ("maker_cannot_approve", 403)
    with pytest.raises(MakerCannotApprove):
        approvals.adjustment_decide(adjustment_id=adjustment.pk, approver=approver, approve=False, note="no")
    assert snapshot(account) == before


def test_a_debit_larger_than_available_is_refused(account, approver, second_approver):
    fund(account, 10_000, approver)
    adjustment = request_adjustment(account, approver, amount=-10_001)
    before = snapshot(account)
    with pytest.raises(InsufficientFunds) as error:
        approvals.adjustment_decide(adjustment_id=adjustment.pk, approver=second_approver, approve=True)
    assert (error.value.code, error.value.status) == ("insufficient_funds", 409)
    assert snapshot(account) == before


def test_a_credit_adjustment_wakes_the_queue(account, approver, second_approver):
    parked = services.hold_place(account_id=account.pk, amount=5_000, reference="E", idempotency_key="h")
    adjustment = request_adjustment(account, approver, amount=5_000, reason="missed top-up")
    approvals.adjustment_decide(adjustment_id=adjustment.pk, approver=second_approver, approve=True)
    parked.parked_request.refresh_from_db()
    assert parked.parked_request.state == "PLACED"
    assert balances(account) == (5_000, 5_000, 0)


def test_reject_and_decide_once(account, approver, second_approver):
    adjustment = request_adjustment(account, approver)
    rejected = approvals.adjustment_decide(
        adjustment_id=adjustment.pk, approver=second_approver, approve=False, note="duplicate"
    )
    assert (rejected.state, rejected.decision_note, rejected.entry) == ("REJECTED", "duplicate", None)
    with pytest.raises(AdjustmentAlreadyDecided):
        approvals.adjustment_decide(adjustment_id=adjustment.pk, approver=second_approver, approve=True)


def test_requests_are_idempotent_and_validated(account, approver):
    first = request_adjustment(account, approver)
    assert request_adjustment(account, approver).pk == first.pk
    before = snapshot(account)
    with pytest.raises(IdempotencyConflict):
        request_adjustment(account, approver, amount=-5_001)
    with pytest.raises(AmountInvalid):
        request_adjustment(account, approver, amount=0, key="a2")
    assert snapshot(account) == before


def test_approving_needs_the_permission(account, approver):
    adjustment = request_adjustment(account, approver)
    with pytest.raises(ApproverNotPermitted):
        approvals.adjustment_decide(adjustment_id=adjustment.pk, approver=UserFactory(), approve=True)


def test_the_maker_is_a_principal_in_the_row_the_event_and_the_audit(account, approver):
    adjustment = request_adjustment(account, approver)
    assert adjustment.requested_by == f"user:{approver.pk}"
    event = OutboxEvent.objects.get(destination="ems.ledger", payload__type="ledger.adjustment_requested")
    audit = OutboxEvent.objects.get(destination="audit_logs", payload__action="ledger.adjustment_requested")
    assert (event.payload["data"]["requested_by"], audit.payload["actor"]) == (f"user:{approver.pk}",) * 2
