"""ledger.approvals.account_topup and topup_decide (maker-checker)."""

import datetime

import pytest
from django.utils import timezone

from ems.models import OutboxEvent
from ledger import approvals
from ledger.errors import (
    AccountNotFound,
    AmountInvalid,
    ApproverNotPermitted,
    IdempotencyConflict,
    IdempotencyKeyInvalid,
    MakerCannotApprove,
    NoteRequired,
    PaymentDateInvalid,
    ProofNoteInvalid,
    ReferenceInvalid,
    TopUpAlreadyDecided,
    TopUpNotFound,
)
from ledger.models import TopUp
from tests.factories import UserFactory
from tests.ledger.conftest import balances, ledger_events, snapshot

pytestmark = pytest.mark.django_db


def topup(account, **overrides):
    arguments = {
        "account_id": account.pk,
        "amount": 500_000,
        "payment_reference": "UTR-1",
        "idempotency_key": "k-1",
        "requested_by": "client:hris",
    }
    return approvals.account_topup(**{**arguments, **overrides})


def test_a_topup_is_pending_and_moves_no_money(account):
    created = topup(account)
    assert (created.state, created.amount, created.requested_by) == ("PENDING", 500_000, "client:hris")
    assert balances(account) == (0, 0, 0)
    assert ledger_events(account) == ["ledger.topup_requested"]
    audit = OutboxEvent.objects.get(destination="audit_logs")
    assert (audit.payload["action"], audit.payload["actor"]) == ("ledger.topup_requested", "client:hris")


def test_the_same_key_returns_the_first_topup(account):
    first = topup(account)
    assert topup(account).pk == first.pk
    assert TopUp.objects.count() == 1
    assert ledger_events(account) == ["ledger.topup_requested"]


def test_the_same_key_with_different_data_is_refused(account):
    topup(account)
    before = snapshot(account)
    with pytest.raises(IdempotencyConflict) as error:
        topup(account, amount=500_001)
    assert (error.value.code, error.value.status) == ("idempotency_conflict", 422)
    assert snapshot(account) == before


@pytest.mark.parametrize("amount", [0, -100, 1.5, "100", True, None, 10**12 + 1, 2**63])
def test_bad_amounts_are_refused(account, amount):
    before = snapshot(account)
    with pytest.raises(AmountInvalid) as error:
        topup(account, amount=amount)
    assert (error.value.code, error.value.status) == ("amount_invalid", 422)
    assert error.value.details[0].field == "amount"
    assert snapshot(account) == before


@pytest.mark.parametrize(
    ("overrides", "error_class"),
    [
        ({"payment_reference": ""}, ReferenceInvalid),
        ({"payment_reference": "x" * 101}, ReferenceInvalid),
        ({"idempotency_key": " "}, IdempotencyKeyInvalid),
        ({"idempotency_key": "k" * 256}, IdempotencyKeyInvalid),
    ],
)
def test_bad_references_and_keys_are_refused(account, overrides, error_class):
    before = snapshot(account)
    with pytest.raises(error_class) as error:
        topup(account, **overrides)
    assert error.value.status == 422
    assert snapshot(account) == before


def test_an_unknown_account_is_404(db):
    with pytest.raises(AccountNotFound) as error:
        approvals.account_topup(
            account_id=999_999, amount=1, payment_reference="x", idempotency_key="k", requested_by="client:x"
        )
    assert (error.value.code, error.value.status) == ("account_not_found", 404)
    assert OutboxEvent.objects.count() == 0


def test_approve_posts_a_topup_entry(account, approver):
    created = topup(account)
    approved = approvals.topup_decide(topup_id=created.pk, approver=approver, approve=True)
    assert (approved.state, approved.decided_by, approved.entry.kind) == ("APPROVED", approver, "TOPUP")
    assert (approved.entry.amount, approved.entry.balance_after) == (500_000, 500_000)
    assert balances(account) == (500_000, 0, 500_000)
    assert ledger_events(account) == ["ledger.topup_requested", "ledger.topup_approved"]


def test_the_maker_cannot_approve_their_own_topup(account, approver):
    created = topup(account, requested_by=f"user:{approver.pk}")
    before = snapshot(account)
    with pytest.raises(MakerCannotApprove) as error:
        approvals.topup_decide(topup_id=created.pk, approver=approver, approve=True)
    assert (error.value.code, error.value.status) == ("maker_cannot_approve", 403)
    with pytest.raises(MakerCannotApprove):
        approvals.topup_decide(topup_id=created.pk, approver=approver, approve=False, note="no")
    assert snapshot(account) == before


def test_a_user_without_the_permission_cannot_approve(account):
    created = topup(account)
    before = snapshot(account)
    with pytest.raises(ApproverNotPermitted) as error:
        approvals.topup_decide(topup_id=created.pk, approver=UserFactory(is_staff=True), approve=True)
    assert (error.value.code, error.value.status) == ("approver_not_permitted", 403)
    assert snapshot(account) == before


def test_a_decided_topup_cannot_be_decided_again(account, approver):
    created = topup(account)
    approvals.topup_decide(topup_id=created.pk, approver=approver, approve=True)
    before = snapshot(account)
    with pytest.raises(TopUpAlreadyDecided) as error:
        approvals.topup_decide(topup_id=created.pk, approver=approver, approve=True)
    assert (error.value.code, error.value.status) == ("topup_already_decided", 409)
    with pytest.raises(TopUpAlreadyDecided):
        approvals.topup_decide(topup_id=created.pk, approver=approver, approve=False, note="late")
    assert snapshot(account) == before


def test_reject_records_the_note_and_posts_nothing(account, approver):
    created = topup(account)
    rejected = approvals.topup_decide(
        topup_id=created.pk, approver=approver, approve=False, note="no such transfer"
    )
    assert (rejected.state, rejected.decision_note, rejected.entry) == ("REJECTED", "no such transfer", None)
    assert balances(account) == (0, 0, 0)
    assert ledger_events(account) == ["ledger.topup_requested", "ledger.topup_rejected"]


def test_reject_needs_a_note(account, approver):
    created = topup(account)
    before = snapshot(account)
    with pytest.raises(NoteRequired):
        approvals.topup_decide(topup_id=created.pk, approver=approver, approve=False, note="")
    assert snapshot(account) == before


def test_an_unknown_topup_is_404(approver):
    with pytest.raises(TopUpNotFound) as error:
        approvals.topup_decide(topup_id=424242, approver=approver, approve=True)
    assert (error.value.code, error.value.status) == ("topup_not_found", 404)


def test_an_approvers_note_is_kept_with_the_decision(account, approver):
    created = topup(account)
    approved = approvals.topup_decide(
        topup_id=created.pk, approver=approver, approve=True, note="UTR seen in bank"
    )
    assert (approved.state, approved.decision_note) == ("APPROVED", "UTR seen in bank")
    audit = OutboxEvent.objects.filter(destination="audit_logs").order_by("id").last()
    assert (audit.payload["action"], audit.payload["note"]) == ("ledger.topup_approved", "UTR seen in bank")


def test_an_approvers_note_over_500_characters_is_refused(account, approver):
    created = topup(account)
    before = snapshot(account)
    with pytest.raises(NoteRequired):
        approvals.topup_decide(topup_id=created.pk, approver=approver, approve=True, note="x" * 501)
    assert snapshot(account) == before


# --- what the employer says about the payment: its date and a proof note ---------------------


def test_the_payment_date_and_proof_note_are_kept_for_the_approver(account):
    paid = timezone.localdate() - datetime.timedelta(days=2)
    created = topup(account, payment_date=paid, proof_note="  bank advice emailed to finance  ")
    created.refresh_from_db()
    assert (created.state, created.payment_date, created.proof_note) == (
        "PENDING",
        paid,
        "bank advice emailed to finance",
    )
    audit = OutboxEvent.objects.get(destination="audit_logs")
    assert (audit.payload["after"]["payment_date"], audit.payload["after"]["proof_note"]) == (
        paid.isoformat(),
        "bank advice emailed to finance",
    )


def test_without_them_a_topup_has_no_date_and_an_empty_note(account):
    created = topup(account)
    created.refresh_from_db()
    assert (created.payment_date, created.proof_note) == (None, "")


@pytest.mark.parametrize(
    ("overrides", "error_class", "field"),
    [
        ({"payment_date": "2026-01-01"}, PaymentDateInvalid, "payment_date"),
        ({"payment_date": timezone.now()}, PaymentDateInvalid, "payment_date"),
        ({"payment_date": "tomorrow"}, PaymentDateInvalid, "payment_date"),
        ({"proof_note": "x" * 501}, ProofNoteInvalid, "proof_note"),
        ({"proof_note": 5}, ProofNoteInvalid, "proof_note"),
    ],
)
def test_a_bad_date_or_note_is_refused_and_nothing_is_written(account, overrides, error_class, field):
    before = snapshot(account)
    with pytest.raises(error_class) as error:
        topup(account, **overrides)
    assert (error.value.status, error.value.details[0].field) == (422, field)
    assert snapshot(account) == before
    assert TopUp.objects.count() == 0


def test_a_payment_dated_tomorrow_is_refused(account):
    with pytest.raises(PaymentDateInvalid) as error:
        topup(account, payment_date=timezone.localdate() + datetime.timedelta(days=1))
    assert error.value.details[0].message == "payment_date must not be after today."
    assert TopUp.objects.count() == 0


def test_the_same_key_with_another_note_is_refused(account):
    topup(account, proof_note="advice 1")
    before = snapshot(account)
    with pytest.raises(IdempotencyConflict):
        topup(account, proof_note="advice 2")
    assert snapshot(account) == before
    assert list(TopUp.objects.values_list("proof_note", flat=True)) == ["advice 1"]
