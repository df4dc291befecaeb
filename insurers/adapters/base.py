"""The one interface every protocol adapter implements, and the errors and results it speaks.

An adapter only speaks its protocol: it turns a dispatch's items into the insurer's
request, the insurer's answer into `ItemResult`s, and a failure of the call as a whole into
`TransientError` (try the same dispatch again later) or `PermanentError` (do not). It writes
nothing to the database; `insurers.services` records results, the breaker and attempts.
Every call is bounded by the insurer's timeouts, and every request/response is logged
through `insurers.exchanges.exchange_record` with secrets redacted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # models import nothing from here; the annotations only name them
    from insurers.models import Dispatch, DispatchItem, Insurer

ACCEPTED = "accepted"
REJECTED = "rejected"
PENDING = "pending"
CONFIRMED = "confirmed"
OUTCOMES = (ACCEPTED, REJECTED, PENDING, CONFIRMED)


class GatewayError(Exception):
    """A failure of a call to an insurer as a whole (not one item's rejection)."""

    code = "gateway_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class TransientError(GatewayError):
    """Timeouts, connection errors, 5xx, 429, an open breaker: the same dispatch may succeed later."""

    code = "insurer_unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PermanentError(GatewayError):
    """The insurer refused the request itself (4xx, a SOAP Client fault): retrying cannot help."""

    code = "insurer_refused"


@dataclass(frozen=True)
class ItemResult:
    reference: str
    outcome: str  # one of OUTCOMES
    insurer_reference: str = ""
    insurer_member_id: str = ""
    insurer_premium: int | None = None  # minor units
    code: str = ""
    reason: str = ""
    data: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")


class Adapter(Protocol):
    def send(self, dispatch: Dispatch, items: Sequence[DispatchItem]) -> list[ItemResult]: ...

    def confirmations_fetch(self, insurer: Insurer) -> list[ItemResult]: ...

    def status_fetch(self, insurer: Insurer, references: Sequence[str]) -> list[ItemResult]: ...

    def roster_fetch(self, insurer: Insurer) -> list[dict]: ...

    def statement_fetch(self, insurer: Insurer, period_start: date, period_end: date) -> list[dict]: ...


def item_result_from(row: dict) -> ItemResult:
    """An `ItemResult` from the insurer-neutral dict the sandbox and the file formats use."""
    premium = row.get("insurer_premium")
    return ItemResult(
        reference=str(row["reference"]),
        outcome=str(row["outcome"]),
        insurer_reference=str(row.get("insurer_reference") or ""),
        insurer_member_id=str(row.get("insurer_member_id") or ""),
        insurer_premium=None if premium in (None, "") else int(premium),
        code=str(row.get("code") or ""),
        reason=str(row.get("reason") or ""),
        data=dict(row.get("data") or {}),
    )
