"""Checks of a ledger call's input, made before any transaction opens (no database).

Each check returns the value it accepted or raises the `LedgerError` whose code names
the problem, with one `ErrorDetail` naming the field.
"""

from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from ems.errors import ErrorDetail
from ledger.errors import (
    AmountInvalid,
    BatchInvalid,
    HoldExpiryInvalid,
    IdempotencyKeyInvalid,
    NoteRequired,
    PaymentDateInvalid,
    ProofNoteInvalid,
    ReferenceInvalid,
)


def max_amount() -> int:
    return getattr(settings, "LEDGER_MAX_AMOUNT", 10**12)


def max_batch_holds() -> int:
    """The most requests, captures, references or refunds one batch call may carry."""
    return getattr(settings, "LEDGER_MAX_BATCH_HOLDS", 10_000)


def batch_valid(size: int, keys: list[str], field: str) -> None:
    """A batch holds 1 to `max_batch_holds()` items whose idempotency keys are distinct."""
    if not size or size > max_batch_holds():
        raise BatchInvalid(
            details=[ErrorDetail(field, "batch_invalid", f"{field} must hold 1 to {max_batch_holds()} items")]
        )
    if len(set(keys)) != len(keys):
        raise BatchInvalid(details=[ErrorDetail(field, "batch_invalid", "idempotency keys repeat")])


def amount_valid(amount: Any, *, field: str = "amount", signed: bool = False) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        reason = "must be a whole number of minor units"
    elif amount == 0:
        reason = "must not be zero"
    elif amount < 0 and not signed:
        reason = "must be greater than zero"
    elif abs(amount) > max_amount():
        reason = f"must be at most {max_amount()} minor units"
    else:
        return amount
    raise AmountInvalid(
        details=[ErrorDetail(field=field, code="amount_invalid", message=f"{field} {reason}.")]
    )


def text_valid(value: Any, *, field: str, max_length: int, error: type) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise error(
            details=[
                ErrorDetail(
                    field=field,
                    code=error.code,
                    message=f"{field} must be 1 to {max_length} characters.",
                )
            ]
        )
    return value


def reference_valid(reference: Any, field: str = "reference") -> str:
    return text_valid(reference, field=field, max_length=100, error=ReferenceInvalid)


def key_valid(key: Any, field: str = "idempotency_key") -> str:
    return text_valid(key, field=field, max_length=255, error=IdempotencyKeyInvalid)


def note_valid(note: Any, field: str = "note") -> str:
    return text_valid(note, field=field, max_length=500, error=NoteRequired)


def payment_date_valid(value: Any, field: str = "payment_date") -> date | None:
    """None (not given), or a day that has come: a payment cannot be made tomorrow."""
    if value is None:
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        reason = "must be a date (YYYY-MM-DD)"
    elif value > timezone.localdate():
        reason = "must not be after today"
    else:
        return value
    raise PaymentDateInvalid(
        details=[ErrorDetail(field=field, code=PaymentDateInvalid.code, message=f"{field} {reason}.")]
    )


def proof_note_valid(value: Any, field: str = "proof_note") -> str:
    """Optional text (empty when not given) of at most 500 characters."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 500:
        raise ProofNoteInvalid(
            details=[
                ErrorDetail(
                    field=field,
                    code=ProofNoteInvalid.code,
                    message=f"{field} must be at most 500 characters of text.",
                )
            ]
        )
    return value.strip()


def expiry_valid(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime) or timezone.is_naive(expires_at) or expires_at <= now:
        raise HoldExpiryInvalid()
    return expires_at
