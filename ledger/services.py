"""The ledger's public services: accounts, holds and refunds. Nothing else moves money.

How a service runs
- Validate the input (`ledger.validation`, no database), then open a transaction
  (`ledger.postings.transaction_run`: retried on deadlock or serialization failure when
  the service owns it; inside a caller's transaction a savepoint, and the caller
  retries), lock the account row (`ledger.locks`), and only then read what the decision
  depends on: the idempotency key, the hold, the queue.
- Rows are written by `ledger.postings` (the only code that inserts entries and holds or
  resolves holds); `posted` and `held` follow by database trigger.
- Idempotency: each service that creates something takes a key, unique per account in
  the table it creates rows in. A repeat with the same data returns the first result; a
  repeat with different data raises `IdempotencyConflict`. The key is checked after the
  account lock, so two concurrent calls with one key serialise and the second sees the first.
  Entry keys are namespaced by kind (`capture:`, `refund:`; approvals use `topup:<id>`,
  `adjustment:<id>`).
- Every change writes one Kafka event and one audit record to the outbox in the same
  transaction (`postings.change_record`); handlers and notifications run after commit.
- A hold that does not fit, or would overtake waiting requests, parks; anything that
  raises available wakes the queue (`ledger.parking` has the fairness rule).

Top-ups and adjustments (maker-checker) are in `ledger.approvals`; ops' queue services
(`parked_wake`, `parked_cancel`) in `ledger.parking`; a window's captures, releases and
refunds on one account in `ledger.batches` (re-exported here).
"""

import functools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from django.db import connection
from django.utils import timezone

from ems.errors import ErrorDetail
from ledger import events, parking
from ledger.batches import holds_capture_batch as holds_capture_batch
from ledger.batches import holds_release_batch as holds_release_batch
from ledger.batches import refunds_post_batch as refunds_post_batch
from ledger.errors import (
    AccountNotFound,
    AmountInvalid,
    CaptureExceedsHold,
    HoldAlreadyResolved,
    HoldNotFound,
    IdempotencyConflict,
)
from ledger.locks import account_lock, account_lock_for_hold
from ledger.models import Account, Entry, Hold, ParkedRequest
from ledger.parking import HoldPlacement, HoldRequest, ReferenceRelease
from ledger.postings import (
    NEXT_ENTRY_ID,
    SYSTEM_ACTOR,
    change_record,
    entry_post,
    hold_create,
    hold_resolve,
    hold_ttl,
    row_statement,
    transaction_run,
)
from ledger.validation import (
    amount_valid,
    batch_valid,
    expiry_valid,
    key_valid,
    max_amount,
    reference_valid,
)

# --- accounts ----------------------------------------------------------------------------


def account_open(
    *,
    employer_id: int,
    insurer_id: int,
    currency: str = "INR",
    low_balance_threshold: int = 0,
    actor: str = SYSTEM_ACTOR,
) -> Account:
    """The employer's EA with the insurer (created at 0/0 if missing; idempotent)."""
    if not isinstance(low_balance_threshold, int) or low_balance_threshold < 0:
        raise AmountInvalid(
            details=[ErrorDetail("low_balance_threshold", "amount_invalid", "must be zero or more")]
        )

    def run() -> Account:
        account, created = Account.objects.get_or_create(
            employer_id=employer_id,
            insurer_id=insurer_id,
            defaults={"currency": currency, "low_balance_threshold": low_balance_threshold},
        )
        if created:
            change_record(
                account, "account_opened", {}, actor=actor, object_type="ledger.Account", object_id=account.pk
            )
        return account

    return transaction_run(run)


def account_update(*, account_id: int, low_balance_threshold: int, actor: str) -> Account:
    """Change an account's low-balance threshold (the only field ops may edit)."""
    if isinstance(low_balance_threshold, bool) or not isinstance(low_balance_threshold, int):
        raise AmountInvalid(
            details=[ErrorDetail("low_balance_threshold", "amount_invalid", "must be a whole number")]
        )
    if low_balance_threshold < 0 or low_balance_threshold > max_amount():
        raise AmountInvalid(
            details=[ErrorDetail("low_balance_threshold", "amount_invalid", "must be zero or more")]
        )

    def run() -> Account:
        account = account_lock(account_id)
        before = {"low_balance_threshold": account.low_balance_threshold}
        account.low_balance_threshold = low_balance_threshold
        account.save(update_fields=["low_balance_threshold"])
        change_record(
            account,
            "account_updated",
            {"low_balance_threshold": low_balance_threshold},
            actor=actor,
            object_type="ledger.Account",
            object_id=account.pk,
            before=before,
        )
        return account

    return transaction_run(run)


# --- holds: place, a dispatch ---------------------------------------------------------------


def hold_place(
    *,
    account_id: int,
    amount: int,
    reference: str,
    idempotency_key: str,
    expires_at: datetime | None = None,
    actor: str = SYSTEM_ACTOR,
) -> HoldPlacement:
    """Reserve `amount` for `reference`; park the request if it does not fit (or others wait)."""
    now = timezone.now()
    request = HoldRequest(
        amount=amount_valid(amount),
        reference=reference_valid(reference),
        idempotency_key=key_valid(idempotency_key),
        expires_at=expiry_valid(expires_at, now),
    )

    def run() -> HoldPlacement:
        account = account_lock(account_id)
        holds, parked, queue_waiting, hold_id = parking.probe(
            account, [request.idempotency_key], draw_hold_id=True
        )
        repeat = parking.repeat_of(request, holds, parked)
        if repeat is not None:
            return repeat
        queue_waiting = parking.queue_first(account, waiting=queue_waiting, actor=actor)
        if queue_waiting or request.amount > account.posted - account.held:
            return HoldPlacement(parked_request=parking.park(account, request, actor=actor))
        hold = hold_create(
            account,
            amount=request.amount,
            reference=request.reference,
            idempotency_key=request.idempotency_key,
            expires_at=request.expires_at or now + hold_ttl(),
            hold_id=hold_id,
        )
        change_record(
            account,
            "hold_placed",
            events.hold_data(hold),
            actor=actor,
            object_type="ledger.Hold",
            object_id=hold.pk,
            together_with=row_statement(hold) if hold_id is not None else None,
        )
        return HoldPlacement(hold=hold)

    return transaction_run(run)


def _batch_requests_valid(requests: Iterable[HoldRequest | Mapping], now: datetime) -> list[HoldRequest]:
    valid: list[HoldRequest] = []
    for index, raw in enumerate(requests):
        get = raw.get if isinstance(raw, Mapping) else functools.partial(getattr, raw)
        prefix = f"requests[{index}]"
        valid.append(
            HoldRequest(
                amount=amount_valid(get("amount", None), field=f"{prefix}.amount"),
                reference=reference_valid(get("reference", None), f"{prefix}.reference"),
                idempotency_key=key_valid(get("idempotency_key", None), f"{prefix}.idempotency_key"),
                expires_at=expiry_valid(get("expires_at", None), now),
            )
        )
    batch_valid(len(valid), [r.idempotency_key for r in valid], "requests")
    return valid


def holds_place_batch(
    *,
    account_id: int,
    requests: list[HoldRequest | Mapping],
    actor: str = SYSTEM_ACTOR,
    ahead_of_queue: bool = False,
) -> list[HoldPlacement]:
    """A whole dispatch under one lock and one transaction: one hold row per request, in order.

    Requests are placed in the given order while they fit and nothing older waits; from
    the first that does not fit on, the rest park (the FIFO rule of `hold_place`).
    Repeated keys return their first result. One event (`ledger.holds_batch_placed`) and
    one audit record cover the batch; "parked" handlers are told per parked reference.
    `ahead_of_queue` is for money already owed (a confirmed request's premium difference):
    placed while it fits even if older requests wait; what does not fit still parks.
    """
    now = timezone.now()
    batch = _batch_requests_valid(requests, now)
    return transaction_run(
        lambda: parking.batch_place(
            account_lock(account_id), batch, now=now, actor=actor, ahead_of_queue=ahead_of_queue
        )
    )


# --- the probes: what a capture or refund decides on, in one round trip each -------------------

_ENTRY = Entry._meta.db_table
_HOLD = Hold._meta.db_table
_HOLD_COLUMNS = ", ".join(f'h."{field.column}"' for field in Hold._meta.concrete_fields)
_HOLD_ATTNAMES = [field.attname for field in Hold._meta.concrete_fields]
# The hold, and the entry (if any) already made with this capture key.
_CAPTURE_PROBE_SQL = (
    f"SELECT {_HOLD_COLUMNS}, e.hold_id, e.amount FROM {_HOLD} h"
    f" LEFT JOIN {_ENTRY} e ON e.account_id = h.account_id AND e.idempotency_key = %s WHERE h.id = %s"
)
# PostgreSQL: the same, plus the id the capture entry will get.
_CAPTURE_PROBE_WITH_ID_SQL = (
    f"SELECT {_HOLD_COLUMNS}, e.hold_id, e.amount, {NEXT_ENTRY_ID} FROM {_HOLD} h"
    f" LEFT JOIN {_ENTRY} e ON e.account_id = h.account_id AND e.idempotency_key = %s WHERE h.id = %s"
)
# Any entry already made with the refund's key, and whether the queue waits.
_REFUND_PROBE_SQL = (
    "SELECT e.id, e.amount, e.reference,"
    f" EXISTS (SELECT 1 FROM {ParkedRequest._meta.db_table}"
    f" WHERE account_id = %s AND state = '{ParkedRequest.State.PARKED.value}')"
    f" FROM (SELECT 1) AS one LEFT JOIN {_ENTRY} e ON e.account_id = %s AND e.idempotency_key = %s"
)
# PostgreSQL: the same, plus the id the refund entry will get.
_REFUND_PROBE_WITH_ID_SQL = _REFUND_PROBE_SQL.replace(
    " FROM (SELECT 1)", f", {NEXT_ENTRY_ID} FROM (SELECT 1)", 1
)


# --- holds: capture, release, expire ----------------------------------------------------------


def _hold_account_id(hold_id: int) -> int:
    account_id = Hold.objects.filter(pk=hold_id).values_list("account_id", flat=True).first()
    if account_id is None:
        raise HoldNotFound()
    return account_id


def hold_capture(
    *, hold_id: int, amount: int | None = None, idempotency_key: str, actor: str = SYSTEM_ACTOR
) -> Hold:
    """Post the hold as a CAPTURE entry: all of it, or `amount` (the rest returns to available)."""
    if amount is not None:
        amount_valid(amount)
    key_valid(idempotency_key)
    entry_key = f"capture:{idempotency_key}"

    def run() -> Hold:
        account = account_lock_for_hold(hold_id)
        if account is None:
            raise HoldNotFound()
        drawing = connection.vendor == "postgresql"
        with connection.cursor() as cursor:
            cursor.execute(
                _CAPTURE_PROBE_WITH_ID_SQL if drawing else _CAPTURE_PROBE_SQL, [entry_key, hold_id]
            )
            row = cursor.fetchone()
        entry_id = row[-1] if drawing else None
        if drawing:
            row = row[:-1]
        hold = Hold.from_db(connection.alias, _HOLD_ATTNAMES, row[:-2])
        hold.account = account
        first_hold_id, first_amount = row[-2:]
        wanted = hold.amount if amount is None else amount
        if first_amount is not None:
            if first_hold_id != hold.pk or -first_amount != wanted:
                raise IdempotencyConflict()
            return hold
        if hold.state != Hold.State.PENDING:
            raise HoldAlreadyResolved()
        if wanted > hold.amount:
            raise CaptureExceedsHold(
                details=[
                    ErrorDetail(
                        "amount", "capture_exceeds_hold", f"the hold is {hold.amount}, capture {wanted}"
                    )
                ]
            )
        now = timezone.now()
        before = events.hold_data(hold)
        hold_resolve(account, hold, state=Hold.State.CAPTURED, now=now, captured=wanted)
        entry = entry_post(
            account,
            kind=Entry.Kind.CAPTURE,
            amount=-wanted,
            reference=hold.reference,
            idempotency_key=entry_key,
            hold=hold,
            entry_id=entry_id,
        )
        change_record(
            account,
            "hold_captured",
            {**events.hold_data(hold), **events.entry_data(entry)},
            actor=actor,
            object_type="ledger.Hold",
            object_id=hold.pk,
            before=before,
            together_with=row_statement(entry) if entry_id is not None else None,
        )
        if wanted < hold.amount:
            parking.wake(account, actor=actor)
        return hold

    return transaction_run(run)


def hold_release(*, hold_id: int, reason: str = "", actor: str = SYSTEM_ACTOR) -> Hold:
    """Void a pending hold: its amount returns to available; parked requests wake."""
    account_id = _hold_account_id(hold_id)

    def run() -> Hold:
        account = account_lock(account_id)
        hold = Hold.objects.get(pk=hold_id)
        if hold.state != Hold.State.PENDING:
            raise HoldAlreadyResolved()
        _hold_release(account, hold, reason=reason, actor=actor)
        parking.wake(account, actor=actor)
        return hold

    return transaction_run(run)


def _hold_release(account: Account, hold: Hold, *, reason: str, actor: str) -> None:
    before = events.hold_data(hold)
    hold_resolve(account, hold, state=Hold.State.RELEASED, now=timezone.now())
    change_record(
        account,
        "hold_released",
        {**events.hold_data(hold), "reason": reason},
        actor=actor,
        object_type="ledger.Hold",
        object_id=hold.pk,
        before=before,
        note=reason,
    )


def hold_release_by_reference(
    *, account_id: int, reference: str, reason: str = "", actor: str = SYSTEM_ACTOR
) -> ReferenceRelease:
    """Release the PENDING hold(s) and cancel the PARKED request(s) for `reference`; no-op if none."""
    reference_valid(reference)

    def run() -> ReferenceRelease:
        account = account_lock(account_id)
        holds = list(Hold.objects.filter(account=account, reference=reference, state=Hold.State.PENDING))
        parked = list(
            ParkedRequest.objects.filter(
                account=account, reference=reference, state=ParkedRequest.State.PARKED
            )
        )
        for hold in holds:
            _hold_release(account, hold, reason=reason, actor=actor)
        for parked_request in parked:
            parking.cancel(account, parked_request, reason=reason or "released by reference", actor=actor)
        if holds or parked:
            parking.wake(account, actor=actor)
        return ReferenceRelease(holds=holds, parked_requests=parked)

    return transaction_run(run)


def hold_expire(*, now: datetime | None = None, limit: int = 5000) -> int:
    """Sweep: expire PENDING holds past their expiry, one transaction per account; returns the count."""
    now = now or timezone.now()
    account_ids = sorted(
        set(
            Hold.objects.filter(state=Hold.State.PENDING, expires_at__lte=now)
            .order_by("expires_at")
            .values_list("account_id", flat=True)[:limit]
        )
    )
    expired = 0
    for account_id in account_ids:
        expired += transaction_run(functools.partial(_account_holds_expire, account_id, now))
    return expired


def _account_holds_expire(account_id: int, now: datetime) -> int:
    try:
        account = account_lock(account_id)
    except AccountNotFound:
        return 0
    holds = list(
        Hold.objects.filter(account=account, state=Hold.State.PENDING, expires_at__lte=now).order_by("id")
    )
    for hold in holds:
        before = events.hold_data(hold)
        hold_resolve(account, hold, state=Hold.State.EXPIRED, now=now)
        change_record(
            account,
            "hold_expired",
            events.hold_data(hold),
            actor=SYSTEM_ACTOR,
            object_type="ledger.Hold",
            object_id=hold.pk,
            before=before,
        )
    if holds:
        parking.wake(account, actor=SYSTEM_ACTOR)
    return len(holds)


# A PENDING hold with this expiry is never picked by `hold_expire`: it ends by capture or release.
HOLD_NEVER_EXPIRES = datetime(9999, 12, 31, tzinfo=UTC)


def holds_expiry_exempt(*, account_id: int, references: list[str], actor: str = SYSTEM_ACTOR) -> list[str]:
    """Exempt the PENDING holds of `references` from expiry (the insurer has their requests).

    Returns the references whose pending hold is now exempt; a reference with no pending
    hold (it expired or was resolved) is left out, for the caller to decide. One statement
    under the account lock, so it cannot interleave with `hold_expire`."""
    for reference in references:
        reference_valid(reference)

    def run() -> list[str]:
        account = account_lock(account_id)
        exempted = list(
            Hold.objects.filter(
                account=account, reference__in=references, state=Hold.State.PENDING
            ).values_list("pk", "reference")
        )
        if exempted:
            Hold.objects.filter(pk__in=[pk for pk, _ in exempted]).update(expires_at=HOLD_NEVER_EXPIRES)
            change_record(
                account,
                "holds_expiry_exempted",
                {"holds": [{"hold_id": pk, "reference": reference} for pk, reference in exempted]},
                actor=actor,
                object_type="ledger.Account",
                object_id=account.pk,
            )
        return [reference for _, reference in exempted]

    return transaction_run(run)


# --- refunds ------------------------------------------------------------------------------------


def refund_post(
    *, account_id: int, amount: int, reference: str, idempotency_key: str, actor: str = SYSTEM_ACTOR
) -> Entry:
    """Credit the account with a refund the insurer confirmed (a deletion); wakes parked requests."""
    amount_valid(amount)
    reference_valid(reference)
    key_valid(idempotency_key)
    entry_key = f"refund:{idempotency_key}"

    def run() -> Entry:
        account = account_lock(account_id)
        drawing = connection.vendor == "postgresql"
        with connection.cursor() as cursor:
            cursor.execute(
                _REFUND_PROBE_WITH_ID_SQL if drawing else _REFUND_PROBE_SQL,
                [account.pk, account.pk, entry_key],
            )
            first_id, first_amount, first_reference, queue_waiting, *drawn = cursor.fetchone()
        entry_id = drawn[0] if drawn else None
        if first_id is not None:
            if (first_amount, first_reference) != (amount, reference):
                raise IdempotencyConflict()
            return Entry.objects.get(pk=first_id)
        entry = entry_post(
            account,
            kind=Entry.Kind.REFUND,
            amount=amount,
            reference=reference,
            idempotency_key=entry_key,
            entry_id=entry_id,
        )
        change_record(
            account,
            "refund_posted",
            events.entry_data(entry),
            actor=actor,
            object_type="ledger.Entry",
            object_id=entry.pk,
            together_with=row_statement(entry) if entry_id is not None else None,
        )
        if queue_waiting:
            parking.wake(account, actor=actor)
        return entry

    return transaction_run(run)
