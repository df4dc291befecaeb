"""Top-ups and adjustments: money that moves only when a second person says so (maker-checker).

How it works
- A maker asks (`account_topup`: money the employer says it paid; `adjustment_request`: a
  signed correcting entry). The request is PENDING and nothing is posted. The maker is a
  principal string (`user:<id>` or `client:<client_id>`), the same type on both models.
- A finance approver decides once (`topup_decide`, `adjustment_decide`, both through
  `_decide`): approving posts the TOPUP or ADJUSTMENT entry (idempotency key
  `topup:<id>` / `adjustment:<id>`) and wakes the parked queue when money came in;
  rejecting posts nothing and needs a note. The approver must hold
  `ledger.approve_topup` / `ledger.approve_adjustment`, be active, and not be the maker;
  a decided request stays decided. A debit adjustment needs the money to be available.
  A CHECK constraint on each table refuses a decider who is the maker, even in raw SQL.
- Like every ledger write: validate, lock the account (`ledger.locks`), then read; one
  event and one audit record per change (`ledger.postings.change_record`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from django.db import models
from django.utils import timezone

from ems.errors import ErrorDetail
from ems.notifications import notify_employer
from ledger import events, parking
from ledger.errors import (
    AdjustmentAlreadyDecided,
    AdjustmentNotFound,
    ApproverNotPermitted,
    IdempotencyConflict,
    InsufficientFunds,
    MakerCannotApprove,
    PaymentReferenceDeclared,
    ReferenceInvalid,
    TopUpAlreadyDecided,
    TopUpNotFound,
)
from ledger.locks import account_lock
from ledger.models import Adjustment, Entry, TopUp
from ledger.postings import change_record, entry_post, transaction_run
from ledger.validation import (
    amount_valid,
    key_valid,
    note_valid,
    payment_date_valid,
    proof_note_valid,
    reference_valid,
    text_valid,
)


@dataclass(frozen=True)
class _Kind:
    """What differs between a top-up and an adjustment; the steps are the same."""

    model: type[models.Model]
    name: str  # in event names and the approver's permission
    not_found: type[Exception]
    already_decided: type[Exception]
    data: Callable[[models.Model], dict]
    entry: Callable[[models.Model], dict]  # the entry an approval posts
    tells_employer: bool  # the HR portal hears of a decided top-up
    unique_check: Callable[[models.Model, dict], None] | None = None  # refuses a second declaration

    @property
    def object_type(self) -> str:
        return f"ledger.{self.model.__name__}"

    @property
    def permission(self) -> str:
        return f"ledger.approve_{self.name}"


_TOPUP = _Kind(
    model=TopUp,
    name="topup",
    not_found=TopUpNotFound,
    already_decided=TopUpAlreadyDecided,
    data=events.topup_data,
    entry=lambda topup: {
        "kind": Entry.Kind.TOPUP,
        "reference": topup.payment_reference,
        "idempotency_key": f"topup:{topup.pk}",
        "memo": f"top-up {topup.pk}",
    },
    tells_employer=True,
    unique_check=lambda account, fields: _reference_once(account, fields["payment_reference"]),
)
_ADJUSTMENT = _Kind(
    model=Adjustment,
    name="adjustment",
    not_found=AdjustmentNotFound,
    already_decided=AdjustmentAlreadyDecided,
    data=events.adjustment_data,
    entry=lambda adjustment: {
        "kind": Entry.Kind.ADJUSTMENT,
        "reference": f"adjustment:{adjustment.pk}",
        "idempotency_key": f"adjustment:{adjustment.pk}",
        "memo": adjustment.reason[:500],
    },
    tells_employer=False,
)


def _principal(user) -> str:
    return f"user:{user.pk}"


def _requester_valid(requested_by) -> str:
    return text_valid(requested_by, field="requested_by", max_length=100, error=ReferenceInvalid)


# --- the maker asks ------------------------------------------------------------------------


def account_topup(
    *,
    account_id: int,
    amount: int,
    payment_reference: str,
    idempotency_key: str,
    requested_by: str,
    payment_date: date | None = None,
    proof_note: str = "",
) -> TopUp:
    """Record money the employer says it paid: a PENDING top-up awaiting a finance approver.

    `payment_date` (not after today) and `proof_note` are what the employer says for the
    approver; both optional. A repeat under the same key must say the same.
    """
    amount_valid(amount)
    reference_valid(payment_reference, "payment_reference")
    key_valid(idempotency_key)
    _requester_valid(requested_by)
    fields = {
        "amount": amount,
        "payment_reference": payment_reference,
        "requested_by": requested_by,
        "payment_date": payment_date_valid(payment_date),
        "proof_note": proof_note_valid(proof_note),
    }
    return _request(_TOPUP, account_id=account_id, idempotency_key=idempotency_key, fields=fields)


def adjustment_request(
    *, account_id: int, amount: int, reason: str, idempotency_key: str, requested_by: str
) -> Adjustment:
    """Ask for a correcting entry (signed amount); a different finance approver decides it."""
    amount_valid(amount, signed=True)
    note_valid(reason, "reason")
    key_valid(idempotency_key)
    _requester_valid(requested_by)
    fields = {"amount": amount, "reason": reason, "requested_by": requested_by}
    return _request(
        _ADJUSTMENT, account_id=account_id, idempotency_key=idempotency_key, fields=fields, note=reason
    )


def _reference_once(account, payment_reference: str) -> None:
    """A payment is declared once per account; only a rejected declaration may be made again.

    The partial unique constraint `topup_payment_reference_once` backs this check.
    """
    existing = (
        TopUp.objects.filter(account=account, payment_reference=payment_reference)
        .exclude(state=TopUp.State.REJECTED)
        .values_list("pk", flat=True)
        .first()
    )
    if existing is not None:
        raise PaymentReferenceDeclared(
            details=[ErrorDetail("topup_id", "payment_reference_declared", str(existing))]
        )


def _request(kind: _Kind, *, account_id: int, idempotency_key: str, fields: dict, note: str = ""):
    """Create the PENDING request once per key; a repeat with other data is a conflict."""

    def run():
        account = account_lock(account_id)
        first = kind.model.objects.filter(account=account, idempotency_key=idempotency_key).first()
        if first is not None:
            if any(getattr(first, name) != value for name, value in fields.items()):
                raise IdempotencyConflict()
            return first
        if kind.unique_check is not None:
            kind.unique_check(account, fields)
        request = kind.model.objects.create(account=account, idempotency_key=idempotency_key, **fields)
        change_record(
            account,
            f"{kind.name}_requested",
            kind.data(request),
            actor=fields["requested_by"],
            object_type=kind.object_type,
            object_id=request.pk,
            note=note,
        )
        return request

    return transaction_run(run)


# --- the checker decides -------------------------------------------------------------------


def topup_decide(*, topup_id: int, approver, approve: bool, note: str = "") -> TopUp:
    """Approve (post the TOPUP entry, wake the queue) or reject (with a note) a pending top-up."""
    return _decide(_TOPUP, pk=topup_id, approver=approver, approve=approve, note=note)


def adjustment_decide(*, adjustment_id: int, approver, approve: bool, note: str = "") -> Adjustment:
    """Approve (post the ADJUSTMENT entry; a debit needs the money) or reject (with a note)."""
    return _decide(_ADJUSTMENT, pk=adjustment_id, approver=approver, approve=approve, note=note)


def _decide(kind: _Kind, *, pk: int, approver, approve: bool, note: str):
    permitted = approver is not None and getattr(approver, "is_active", False)
    if not permitted or not approver.has_perm(kind.permission):
        raise ApproverNotPermitted()
    if not approve or note:
        note_valid(note)  # a rejection needs one; an approval may carry one
    # The account is read before its lock is taken: a request never changes account.
    account_id = kind.model.objects.filter(pk=pk).values_list("account_id", flat=True).first()
    if account_id is None:
        raise kind.not_found()

    def run():
        account = account_lock(account_id)
        request = kind.model.objects.get(pk=pk)
        if request.state != kind.model.State.PENDING:
            raise kind.already_decided()
        if request.requested_by == _principal(approver):
            raise MakerCannotApprove()
        if approve and request.amount < 0 and -request.amount > account.posted - account.held:
            raise InsufficientFunds()
        before = kind.data(request)
        entry = entry_post(account, amount=request.amount, **kind.entry(request)) if approve else None
        request.state = kind.model.State.APPROVED if approve else kind.model.State.REJECTED
        request.entry = entry
        request.decided_by = approver
        request.decision_note = note
        request.decided_at = timezone.now()
        request.save(update_fields=["state", "entry", "decided_by", "decision_note", "decided_at"])
        decided = request.state.lower()
        change_record(
            account,
            f"{kind.name}_{decided}",
            {**kind.data(request), **(events.entry_data(entry) if entry else {"note": note})},
            actor=_principal(approver),
            object_type=kind.object_type,
            object_id=request.pk,
            before=before,
            note=note,
        )
        if entry is not None and entry.amount > 0:
            parking.wake(account, actor=_principal(approver))
        if kind.tells_employer:
            notify_employer(
                account.employer_id,
                f"ledger.{kind.name}_{decided}",
                {"account_id": account.pk, f"{kind.name}_id": request.pk},
            )
        return request

    return transaction_run(run)
