"""Every write to the ledger. Nothing else moves money.

How a service runs
- Validate the input (no database), then open a transaction (retried on deadlock or
  serialization failure when the service owns it; inside a caller's transaction it is a
  savepoint and the caller retries), lock the account row (`ledger.locks`), and only then
  read what the decision depends on: the idempotency key, the hold, the queue.
- `posted` and `held` are maintained by database triggers (migration 0003): a service
  inserts entries and holds and resolves holds; it never writes those two columns. The
  locked `Account` object is kept in step in memory (`_track_*`), so no re-read is needed.
- Idempotency: each service that creates something takes a key, unique per account in
  the table it creates rows in. A repeat with the same data returns the first result; a
  repeat with different data raises `IdempotencyConflict`. The key is checked after the
  account lock, so two concurrent calls with one key serialise and the second sees the first.
  Entry keys are namespaced by kind (`capture:`, `refund:`, `topup:<id>`, `adjustment:<id>`).
- Every change writes one Kafka event (topic `ems.ledger`, keyed by account id) and one
  audit record to the outbox in the same transaction; handlers and notifications run
  after commit.

Park and wake (fairness rule): each account has one FIFO queue of parked requests.
A request is placed only if nothing older is waiting and it fits in `available`;
otherwise it parks at the back. A wake (after anything that raises available) places
waiting requests oldest first and stops at the first that does not fit: no overtaking,
so a large request is never starved by a stream of small ones (the price is that small
requests behind a large one wait too; ops can cancel or top up). A batch obeys the same
rule in its given order. The periodic sweep (`ledger.tasks.parked_sweep`) wakes every
non-empty queue, so nothing parked is forgotten if a wake was missed.
"""

import functools
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from ems.audit import audit_document
from ems.errors import ErrorDetail
from ems.notifications import notify_employer
from ems.outbox import TOPIC_LEDGER, KafkaEvent, outbox_write
from ledger import events
from ledger.errors import (
    AccountNotFound,
    AdjustmentAlreadyDecided,
    AdjustmentNotFound,
    AmountInvalid,
    ApproverNotPermitted,
    BatchInvalid,
    CaptureExceedsHold,
    HoldAlreadyResolved,
    HoldExpiryInvalid,
    HoldNotFound,
    IdempotencyConflict,
    IdempotencyKeyInvalid,
    InsufficientFunds,
    MakerCannotApprove,
    NoteRequired,
    ParkedRequestAlreadyResolved,
    ParkedRequestNotFound,
    ReferenceInvalid,
    TopUpAlreadyDecided,
    TopUpNotFound,
)
from ledger.handlers import PARKED, PLACED, FundsEvent, funds_notify
from ledger.locks import account_lock, account_lock_for_hold
from ledger.models import Account, Adjustment, Entry, Hold, ParkedRequest, TopUp

log = structlog.get_logger(__name__)

T = TypeVar("T")

SYSTEM_ACTOR = "system:ledger"
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
MAX_ATTEMPTS = 8
WAKE_CHUNK = 200


def max_amount() -> int:
    return getattr(settings, "LEDGER_MAX_AMOUNT", 10**12)


def hold_ttl() -> timedelta:
    return getattr(settings, "LEDGER_HOLD_TTL", timedelta(days=15))


def max_batch_holds() -> int:
    return getattr(settings, "LEDGER_MAX_BATCH_HOLDS", 10_000)


# --- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class HoldPlacement:
    """What `hold_place` did: placed a hold, or parked the request (`parked` is True)."""

    hold: Hold | None = None
    parked_request: ParkedRequest | None = None

    @property
    def parked(self) -> bool:
        return self.hold is None

    @property
    def reference(self) -> str:
        return self.hold.reference if self.hold is not None else self.parked_request.reference


@dataclass(frozen=True)
class HoldRequest:
    """One debit of a batch (`holds_place_batch` also accepts mappings with these keys)."""

    amount: int
    reference: str
    idempotency_key: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class ReferenceRelease:
    """What `hold_release_by_reference` did: holds released, parked requests cancelled."""

    holds: list[Hold]
    parked_requests: list[ParkedRequest]


# --- transactions ----------------------------------------------------------------------


def _atomic(fn: Callable[[], T]) -> T:
    """Run `fn` in a transaction; if we own it, retry deadlocks and serialization failures."""
    if connection.in_atomic_block:
        # A caller's transaction: a savepoint. A deadlock aborts the caller's whole
        # transaction, so only the caller can retry it.
        with transaction.atomic():
            return fn()
    attempt = 1
    while True:
        try:
            with transaction.atomic():
                return fn()
        except DatabaseError as exc:
            sqlstate = getattr(exc.__cause__, "sqlstate", None)
            if sqlstate not in RETRYABLE_SQLSTATES or attempt >= MAX_ATTEMPTS:
                raise
            log.info("ledger.transaction_retry", sqlstate=sqlstate, attempt=attempt)
            time.sleep(random.uniform(0, 0.002 * 2**attempt))
            attempt += 1


# --- validation ------------------------------------------------------------------------


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


def _text_valid(value: Any, *, field: str, max_length: int, error: type) -> str:
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


def _reference_valid(reference: Any, field: str = "reference") -> str:
    return _text_valid(reference, field=field, max_length=100, error=ReferenceInvalid)


def _key_valid(key: Any, field: str = "idempotency_key") -> str:
    return _text_valid(key, field=field, max_length=255, error=IdempotencyKeyInvalid)


def _note_valid(note: Any, field: str = "note") -> str:
    return _text_valid(note, field=field, max_length=500, error=NoteRequired)


def _expiry_valid(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime) or timezone.is_naive(expires_at) or expires_at <= now:
        raise HoldExpiryInvalid()
    return expires_at


def _approver_valid(approver, permission: str) -> None:
    if approver is None or not getattr(approver, "is_active", False) or not approver.has_perm(permission):
        raise ApproverNotPermitted()


def _principal(user) -> str:
    return f"user:{user.pk}"


# --- outbox -----------------------------------------------------------------------------


def _emit(
    account: Account,
    event_type: str,
    data: dict,
    *,
    actor: str,
    object_type: str,
    object_id: int,
    before: dict | None = None,
    note: str = "",
    together_with: tuple[str, list] | None = None,
) -> None:
    """One Kafka event and one audit record, in the current transaction (one INSERT).

    `together_with`: the service's own row write, sent in the same round trip (PostgreSQL).
    """
    payload = {**events.account_data(account), **data}
    outbox_write(
        events=[
            KafkaEvent(
                topic=TOPIC_LEDGER,
                key=str(account.pk),
                event_type=f"ledger.{event_type}",
                employer_id=account.employer_id,
                data=payload,
            )
        ],
        documents=[
            audit_document(
                actor=actor,
                action=f"ledger.{event_type}",
                object_type=object_type,
                object_id=object_id,
                employer_id=account.employer_id,
                before=before,
                after=payload,
                note=note,
            )
        ],
        together_with=together_with,
    )


# --- the rows (balances move by trigger; we mirror them on the locked account) -----------


# Plain SQL for the rows every money movement writes: these run under the account lock,
# where Django's query compilation would be most of the time the lock is held.
_ENTRY_INSERT_SQL = (
    "INSERT INTO ledger_entry (account_id, kind, amount, reference, idempotency_key, hold_id, memo,"
    " balance_after, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)
_HOLD_INSERT_SQL = (
    "INSERT INTO ledger_hold (account_id, reference, amount, captured_amount, state, idempotency_key,"
    " expires_at, created_at, resolved_at)"
    " VALUES (%s, %s, %s, NULL, 'PENDING', %s, %s, %s, NULL) RETURNING id"
)
# With the id drawn beforehand (`nextval` in the probe that precedes them), so the row can
# go to the server in the same statement as its outbox rows (`_emit(together_with=...)`).
_ENTRY_INSERT_WITH_ID_SQL = (
    "INSERT INTO ledger_entry (id, account_id, kind, amount, reference, idempotency_key, hold_id, memo,"
    " balance_after, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_HOLD_INSERT_WITH_ID_SQL = (
    "INSERT INTO ledger_hold (id, account_id, reference, amount, captured_amount, state, idempotency_key,"
    " expires_at, created_at, resolved_at)"
    " VALUES (%s, %s, %s, %s, NULL, 'PENDING', %s, %s, %s, NULL)"
)
_NEXT_ENTRY_ID = "nextval(pg_get_serial_sequence('ledger_entry', 'id'))"
_NEXT_HOLD_ID = "nextval(pg_get_serial_sequence('ledger_hold', 'id'))"
_HOLD_RESOLVE_SQL = "UPDATE ledger_hold SET state = %s, resolved_at = %s, captured_amount = %s WHERE id = %s"
_HOLD_COLUMNS = ", ".join(f'h."{field.column}"' for field in Hold._meta.concrete_fields)
_HOLD_ATTNAMES = [field.attname for field in Hold._meta.concrete_fields]
# The hold, and the entry (if any) already made with this capture key, in one round trip.
_CAPTURE_PROBE_SQL = (
    f"SELECT {_HOLD_COLUMNS}, e.hold_id, e.amount FROM ledger_hold h"
    " LEFT JOIN ledger_entry e ON e.account_id = h.account_id AND e.idempotency_key = %s WHERE h.id = %s"
)
# PostgreSQL: the same, plus the id the capture entry will get (a sequence value; an unused
# one is a harmless gap).
_CAPTURE_PROBE_WITH_ID_SQL = (
    f"SELECT {_HOLD_COLUMNS}, e.hold_id, e.amount, {_NEXT_ENTRY_ID} FROM ledger_hold h"
    " LEFT JOIN ledger_entry e ON e.account_id = h.account_id AND e.idempotency_key = %s WHERE h.id = %s"
)


def _db_datetime(value: datetime):
    """A datetime as the backend stores it (SQLite: naive UTC text, like the ORM writes)."""
    return connection.ops.adapt_datetimefield_value(value)


def _saved(instance):
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


def _entry_post(
    account: Account,
    *,
    kind: str,
    amount: int,
    reference: str,
    idempotency_key: str,
    hold: Hold | None = None,
    memo: str = "",
    entry_id: int | None = None,
) -> Entry:
    """Insert the entry; with `entry_id` (drawn beforehand) only build it: the caller sends
    `_entry_statement(entry)` with its outbox rows (`_emit(together_with=...)`)."""
    entry = Entry(
        account=account,
        kind=kind,
        amount=amount,
        reference=reference,
        idempotency_key=idempotency_key,
        hold=hold,
        memo=memo,
        balance_after=account.posted + amount,
        created_at=timezone.now(),
    )
    if entry_id is not None:
        entry.pk = entry_id
        account.posted += amount
        return _saved(entry)
    with connection.cursor() as cursor:
        cursor.execute(
            _ENTRY_INSERT_SQL,
            [
                account.pk,
                kind,
                amount,
                reference,
                idempotency_key,
                hold.pk if hold else None,
                memo,
                entry.balance_after,
                _db_datetime(entry.created_at),
            ],
        )
        entry.pk = cursor.fetchone()[0]
    account.posted += amount
    return _saved(entry)


def _entry_statement(entry: Entry) -> tuple[str, list]:
    return (
        _ENTRY_INSERT_WITH_ID_SQL,
        [
            entry.pk,
            entry.account_id,
            entry.kind,
            entry.amount,
            entry.reference,
            entry.idempotency_key,
            entry.hold_id,
            entry.memo,
            entry.balance_after,
            entry.created_at,
        ],
    )


def _hold_statement(hold: Hold) -> tuple[str, list]:
    return (
        _HOLD_INSERT_WITH_ID_SQL,
        [
            hold.pk,
            hold.account_id,
            hold.reference,
            hold.amount,
            hold.idempotency_key,
            hold.expires_at,
            hold.created_at,
        ],
    )


def _hold_create(
    account: Account,
    *,
    amount: int,
    reference: str,
    idempotency_key: str,
    expires_at: datetime,
    hold_id: int | None = None,
) -> Hold:
    """Insert the hold; with `hold_id` (drawn beforehand) only build it: the caller sends
    `_hold_statement(hold)` with its outbox rows (`_emit(together_with=...)`)."""
    hold = Hold(
        account=account,
        amount=amount,
        reference=reference,
        idempotency_key=idempotency_key,
        expires_at=expires_at,
        created_at=timezone.now(),
    )
    if hold_id is not None:
        hold.pk = hold_id
        account.held += amount
        return _saved(hold)
    with connection.cursor() as cursor:
        cursor.execute(
            _HOLD_INSERT_SQL,
            [
                account.pk,
                reference,
                amount,
                idempotency_key,
                _db_datetime(expires_at),
                _db_datetime(hold.created_at),
            ],
        )
        hold.pk = cursor.fetchone()[0]
    account.held += amount
    return _saved(hold)


def _hold_resolve(
    account: Account, hold: Hold, *, state: str, now: datetime, captured: int | None = None
) -> None:
    hold.state = state
    hold.resolved_at = now
    hold.captured_amount = captured
    with connection.cursor() as cursor:
        cursor.execute(_HOLD_RESOLVE_SQL, [state, _db_datetime(now), captured, hold.pk])
    account.held -= hold.amount


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
            _emit(
                account, "account_opened", {}, actor=actor, object_type="ledger.Account", object_id=account.pk
            )
        return account

    return _atomic(run)


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
        _emit(
            account,
            "account_updated",
            {"low_balance_threshold": low_balance_threshold},
            actor=actor,
            object_type="ledger.Account",
            object_id=account.pk,
            before=before,
        )
        return account

    return _atomic(run)


# --- top-ups ----------------------------------------------------------------------------


def account_topup(
    *, account_id: int, amount: int, payment_reference: str, idempotency_key: str, requested_by: str
) -> TopUp:
    """Record money the employer says it paid: a PENDING top-up awaiting a finance approver."""
    amount_valid(amount)
    _reference_valid(payment_reference, "payment_reference")
    _key_valid(idempotency_key)
    _text_valid(requested_by, field="requested_by", max_length=100, error=ReferenceInvalid)

    def run() -> TopUp:
        account = account_lock(account_id)
        existing = TopUp.objects.filter(account=account, idempotency_key=idempotency_key).first()
        if existing is not None:
            same = (existing.amount, existing.payment_reference, existing.requested_by) == (
                amount,
                payment_reference,
                requested_by,
            )
            if not same:
                raise IdempotencyConflict()
            return existing
        topup = TopUp.objects.create(
            account=account,
            amount=amount,
            payment_reference=payment_reference,
            idempotency_key=idempotency_key,
            requested_by=requested_by,
        )
        _emit(
            account,
            "topup_requested",
            events.topup_data(topup),
            actor=requested_by,
            object_type="ledger.TopUp",
            object_id=topup.pk,
        )
        return topup

    return _atomic(run)


def _request_account_id(model, pk: int, not_found: type[Exception]) -> int:
    """The account of a pending top-up or adjustment, read before locking it."""
    account_id = model.objects.filter(pk=pk).values_list("account_id", flat=True).first()
    if account_id is None:
        raise not_found()
    return account_id


def _pending_request(*, model, pk: int, already_decided: type[Exception], is_maker):
    """Load a top-up or adjustment under its account's lock; refuse decided ones and the maker."""
    request = model.objects.get(pk=pk)
    if request.state != model.State.PENDING:
        raise already_decided()
    if is_maker(request):
        raise MakerCannotApprove()
    return request


def _request_reject(
    *, account: Account, request, approver, note: str, data, object_type: str, event: str
) -> None:
    """Maker-checker rejection shared by top-ups and adjustments: nothing is posted."""
    before = data(request)
    request.state = type(request).State.REJECTED
    request.decided_by = approver
    request.decision_note = note
    request.decided_at = timezone.now()
    request.save(update_fields=["state", "decided_by", "decision_note", "decided_at"])
    _emit(
        account,
        event,
        {**data(request), "note": note},
        actor=_principal(approver),
        object_type=object_type,
        object_id=request.pk,
        before=before,
        note=note,
    )


def _topup_account_id(topup_id: int) -> int:
    return _request_account_id(TopUp, topup_id, TopUpNotFound)


def _pending_topup(topup_id: int, approver) -> TopUp:
    return _pending_request(
        model=TopUp,
        pk=topup_id,
        already_decided=TopUpAlreadyDecided,
        is_maker=lambda topup: topup.requested_by == _principal(approver),
    )


def topup_approve(*, topup_id: int, approver) -> TopUp:
    """Finance approves (maker ≠ checker): post the TOPUP entry, then wake the parked queue."""
    _approver_valid(approver, "ledger.approve_topup")
    account_id = _topup_account_id(topup_id)

    def run() -> TopUp:
        account = account_lock(account_id)
        topup = _pending_topup(topup_id, approver)
        before = events.topup_data(topup)
        entry = _entry_post(
            account,
            kind=Entry.Kind.TOPUP,
            amount=topup.amount,
            reference=topup.payment_reference,
            idempotency_key=f"topup:{topup.pk}",
            memo=f"top-up {topup.pk}",
        )
        topup.state = TopUp.State.APPROVED
        topup.entry = entry
        topup.decided_by = approver
        topup.decided_at = timezone.now()
        topup.save(update_fields=["state", "entry", "decided_by", "decided_at"])
        _emit(
            account,
            "topup_approved",
            {**events.topup_data(topup), **events.entry_data(entry)},
            actor=_principal(approver),
            object_type="ledger.TopUp",
            object_id=topup.pk,
            before=before,
        )
        _wake(account, actor=_principal(approver))
        notify_employer(
            account.employer_id, "ledger.topup_approved", {"account_id": account.pk, "topup_id": topup.pk}
        )
        return topup

    return _atomic(run)


def topup_reject(*, topup_id: int, approver, note: str) -> TopUp:
    _approver_valid(approver, "ledger.approve_topup")
    _note_valid(note)
    account_id = _topup_account_id(topup_id)

    def run() -> TopUp:
        account = account_lock(account_id)
        topup = _pending_topup(topup_id, approver)
        _request_reject(
            account=account,
            request=topup,
            approver=approver,
            note=note,
            data=events.topup_data,
            object_type="ledger.TopUp",
            event="topup_rejected",
        )
        notify_employer(
            account.employer_id, "ledger.topup_rejected", {"account_id": account.pk, "topup_id": topup.pk}
        )
        return topup

    return _atomic(run)


# --- holds: place, batch, wake --------------------------------------------------------------


def _placement_probe(
    account: Account, keys: list[str], *, draw_hold_id: bool = False
) -> tuple[dict[str, Hold], dict[str, ParkedRequest], bool, int | None]:
    """Holds and parked requests already made with these keys, whether the queue is non-empty,
    and (PostgreSQL, `draw_hold_id`) the id a new hold will get."""
    hold_id = None
    if connection.vendor == "postgresql":
        # One round trip; the rows are loaded only when a key was used before (a repeat).
        with connection.cursor() as cursor:
            if draw_hold_id:
                cursor.execute(_PROBE_WITH_HOLD_ID_SQL, [account.pk, keys, account.pk, keys, account.pk])
                hold_used, parked_used, queue_waiting, hold_id = cursor.fetchone()
            else:
                cursor.execute(_PROBE_SQL, [account.pk, keys, account.pk, keys, account.pk])
                hold_used, parked_used, queue_waiting = cursor.fetchone()
        if not hold_used and not parked_used:
            return {}, {}, bool(queue_waiting), hold_id
    holds = {h.idempotency_key: h for h in Hold.objects.filter(account=account, idempotency_key__in=keys)}
    parked = {
        p.idempotency_key: p
        for p in ParkedRequest.objects.filter(account=account, idempotency_key__in=keys).select_related(
            "hold"
        )
    }
    queue_waiting = ParkedRequest.objects.filter(account=account, state=ParkedRequest.State.PARKED).exists()
    return holds, parked, queue_waiting, hold_id


_PROBE_SQL = """
SELECT
    EXISTS (SELECT 1 FROM ledger_hold WHERE account_id = %s AND idempotency_key = ANY(%s)),
    EXISTS (SELECT 1 FROM ledger_parkedrequest WHERE account_id = %s AND idempotency_key = ANY(%s)),
    EXISTS (SELECT 1 FROM ledger_parkedrequest WHERE account_id = %s AND state = 'PARKED')
"""
_PROBE_WITH_HOLD_ID_SQL = f"{_PROBE_SQL.rstrip()},\n    {_NEXT_HOLD_ID}\n"

# A dispatch's holds in one INSERT from arrays (Django's bulk_create spends longer building
# the statement than PostgreSQL spends running it).
_HOLDS_INSERT_SQL = """
INSERT INTO ledger_hold (account_id, reference, amount, captured_amount, state, idempotency_key,
                         expires_at, created_at, resolved_at)
SELECT %s, batch.reference, batch.amount, NULL, 'PENDING', batch.idempotency_key, batch.expires_at, %s, NULL
FROM unnest(%s::varchar[], %s::bigint[], %s::varchar[], %s::timestamptz[])
    AS batch(reference, amount, idempotency_key, expires_at)
RETURNING id, idempotency_key
"""


def _holds_insert(account: Account, holds: list[Hold], now: datetime) -> None:
    if not holds:
        return
    if connection.vendor != "postgresql":
        for hold in holds:
            hold.created_at = now
        Hold.objects.bulk_create(holds)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _HOLDS_INSERT_SQL,
            [
                account.pk,
                now,
                [h.reference for h in holds],
                [h.amount for h in holds],
                [h.idempotency_key for h in holds],
                [h.expires_at for h in holds],
            ],
        )
        ids = {key: pk for pk, key in cursor.fetchall()}
    for hold in holds:
        hold.pk = ids[hold.idempotency_key]
        hold.created_at = now
        _saved(hold)


def _placement_repeat(
    request: HoldRequest, holds: dict[str, Hold], parked: dict[str, ParkedRequest]
) -> HoldPlacement | None:
    """The first result for a repeated key, or IdempotencyConflict if the data differ."""
    key = request.idempotency_key
    first: Hold | ParkedRequest | None = holds.get(key) or parked.get(key)
    if first is None:
        return None
    if (first.amount, first.reference) != (request.amount, request.reference):
        raise IdempotencyConflict()
    if isinstance(first, Hold):
        return HoldPlacement(hold=first)
    if first.hold is not None:
        return HoldPlacement(hold=first.hold)
    return HoldPlacement(parked_request=first)


def _park(account: Account, request: HoldRequest, *, actor: str) -> ParkedRequest:
    parked = ParkedRequest.objects.create(
        account=account,
        reference=request.reference,
        amount=request.amount,
        idempotency_key=request.idempotency_key,
        expires_at=request.expires_at,
    )
    _emit(
        account,
        "hold_parked",
        events.parked_data(parked),
        actor=actor,
        object_type="ledger.ParkedRequest",
        object_id=parked.pk,
    )
    funds_notify(
        parked.reference,
        FundsEvent(PARKED, account_id=account.pk, amount=parked.amount, parked_request_id=parked.pk),
    )
    return parked


def _wake(account: Account, *, actor: str) -> list[HoldPlacement]:
    """Place parked requests oldest first while they fit; stop at the first that does not."""
    placements: list[HoldPlacement] = []
    now = timezone.now()
    while account.posted - account.held > 0:
        queue = list(
            ParkedRequest.objects.filter(account=account, state=ParkedRequest.State.PARKED).order_by("id")[
                :WAKE_CHUNK
            ]
        )
        for parked in queue:
            if parked.amount > account.posted - account.held:
                return placements
            expires_at = (
                parked.expires_at if parked.expires_at and parked.expires_at > now else now + hold_ttl()
            )
            hold = _hold_create(
                account,
                amount=parked.amount,
                reference=parked.reference,
                idempotency_key=parked.idempotency_key,
                expires_at=expires_at,
            )
            parked.state = ParkedRequest.State.PLACED
            parked.hold = hold
            parked.resolved_at = now
            parked.save(update_fields=["state", "hold", "resolved_at"])
            _emit(
                account,
                "hold_placed",
                {**events.hold_data(hold), "parked_request_id": parked.pk, "woken": True},
                actor=actor,
                object_type="ledger.Hold",
                object_id=hold.pk,
            )
            funds_notify(
                parked.reference,
                FundsEvent(
                    PLACED,
                    account_id=account.pk,
                    amount=parked.amount,
                    parked_request_id=parked.pk,
                    hold_id=hold.pk,
                ),
            )
            placements.append(HoldPlacement(hold=hold))
        if len(queue) < WAKE_CHUNK:
            break
    return placements


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
        reference=_reference_valid(reference),
        idempotency_key=_key_valid(idempotency_key),
        expires_at=_expiry_valid(expires_at, now),
    )

    def run() -> HoldPlacement:
        account = account_lock(account_id)
        holds, parked, queue_waiting, hold_id = _placement_probe(
            account, [request.idempotency_key], draw_hold_id=True
        )
        repeat = _placement_repeat(request, holds, parked)
        if repeat is not None:
            return repeat
        if queue_waiting:
            _wake(account, actor=actor)
            queue_waiting = ParkedRequest.objects.filter(
                account=account, state=ParkedRequest.State.PARKED
            ).exists()
        if queue_waiting or request.amount > account.posted - account.held:
            return HoldPlacement(parked_request=_park(account, request, actor=actor))
        hold = _hold_create(
            account,
            amount=request.amount,
            reference=request.reference,
            idempotency_key=request.idempotency_key,
            expires_at=request.expires_at or now + hold_ttl(),
            hold_id=hold_id,
        )
        _emit(
            account,
            "hold_placed",
            events.hold_data(hold),
            actor=actor,
            object_type="ledger.Hold",
            object_id=hold.pk,
            together_with=_hold_statement(hold) if hold_id is not None else None,
        )
        return HoldPlacement(hold=hold)

    return _atomic(run)


def _batch_requests_valid(requests: Iterable[HoldRequest | Mapping], now: datetime) -> list[HoldRequest]:
    valid: list[HoldRequest] = []
    for index, raw in enumerate(requests):
        get = raw.get if isinstance(raw, Mapping) else functools.partial(getattr, raw)
        prefix = f"requests[{index}]"
        valid.append(
            HoldRequest(
                amount=amount_valid(get("amount", None), field=f"{prefix}.amount"),
                reference=_reference_valid(get("reference", None), f"{prefix}.reference"),
                idempotency_key=_key_valid(get("idempotency_key", None), f"{prefix}.idempotency_key"),
                expires_at=_expiry_valid(get("expires_at", None), now),
            )
        )
    if not valid or len(valid) > max_batch_holds():
        raise BatchInvalid()
    if len({r.idempotency_key for r in valid}) != len(valid):
        raise BatchInvalid(details=[ErrorDetail("requests", "batch_invalid", "idempotency keys repeat")])
    return valid


def holds_place_batch(
    *, account_id: int, requests: list[HoldRequest | Mapping], actor: str = SYSTEM_ACTOR
) -> list[HoldPlacement]:
    """A whole dispatch under one lock and one transaction: one hold row per request, in order.

    Requests are placed in the given order while they fit and nothing older waits; from
    the first that does not fit on, the rest park (the FIFO rule of `hold_place`).
    Repeated keys return their first result. One event (`ledger.holds_batch_placed`) and
    one audit record cover the batch; "parked" handlers are told per parked reference.
    """
    now = timezone.now()
    batch = _batch_requests_valid(requests, now)

    def run() -> list[HoldPlacement]:
        account = account_lock(account_id)
        holds, parked, queue_waiting, _ = _placement_probe(account, [r.idempotency_key for r in batch])
        if queue_waiting:
            _wake(account, actor=actor)
            queue_waiting = ParkedRequest.objects.filter(
                account=account, state=ParkedRequest.State.PARKED
            ).exists()
        results: list[HoldPlacement | None] = [None] * len(batch)
        new_holds: list[tuple[int, Hold]] = []
        new_parked: list[tuple[int, ParkedRequest]] = []
        available = account.posted - account.held
        blocked = queue_waiting
        for index, request in enumerate(batch):
            repeat = _placement_repeat(request, holds, parked)
            if repeat is not None:
                results[index] = repeat
                continue
            fields = {
                "account": account,
                "amount": request.amount,
                "reference": request.reference,
                "idempotency_key": request.idempotency_key,
            }
            if not blocked and request.amount <= available:
                available -= request.amount
                new_holds.append((index, Hold(**fields, expires_at=request.expires_at or now + hold_ttl())))
            else:
                blocked = True
                new_parked.append((index, ParkedRequest(**fields, expires_at=request.expires_at)))
        _holds_insert(account, [hold for _, hold in new_holds], now)
        ParkedRequest.objects.bulk_create([p for _, p in new_parked])
        account.held += sum(hold.amount for _, hold in new_holds)
        for index, hold in new_holds:
            results[index] = HoldPlacement(hold=hold)
        for index, parked_request in new_parked:
            results[index] = HoldPlacement(parked_request=parked_request)
            funds_notify(
                parked_request.reference,
                FundsEvent(
                    PARKED,
                    account_id=account.pk,
                    amount=parked_request.amount,
                    parked_request_id=parked_request.pk,
                ),
            )
        if new_holds or new_parked:
            _emit(
                account,
                "holds_batch_placed",
                {
                    "holds": [
                        {"hold_id": h.pk, "reference": h.reference, "amount": h.amount} for _, h in new_holds
                    ],
                    "parked": [
                        {"parked_request_id": p.pk, "reference": p.reference, "amount": p.amount}
                        for _, p in new_parked
                    ],
                },
                actor=actor,
                object_type="ledger.Account",
                object_id=account.pk,
            )
        return results  # type: ignore[return-value]

    return _atomic(run)


def parked_wake(*, account_id: int, actor: str = SYSTEM_ACTOR) -> list[HoldPlacement]:
    """Place what now fits from the account's queue, oldest first (ops' "wake now", the sweep)."""

    def run() -> list[HoldPlacement]:
        return _wake(account_lock(account_id), actor=actor)

    return _atomic(run)


def parked_cancel(*, parked_request_id: int, reason: str, actor: str) -> ParkedRequest:
    """Take a request out of the queue without placing it."""
    _note_valid(reason, "reason")
    account_id = (
        ParkedRequest.objects.filter(pk=parked_request_id).values_list("account_id", flat=True).first()
    )
    if account_id is None:
        raise ParkedRequestNotFound()

    def run() -> ParkedRequest:
        account = account_lock(account_id)
        parked = ParkedRequest.objects.get(pk=parked_request_id)
        if parked.state != ParkedRequest.State.PARKED:
            raise ParkedRequestAlreadyResolved()
        _parked_cancel(account, parked, reason=reason, actor=actor)
        # The head of the queue may have been blocking smaller requests behind it.
        _wake(account, actor=actor)
        return parked

    return _atomic(run)


def _parked_cancel(account: Account, parked: ParkedRequest, *, reason: str, actor: str) -> None:
    parked.state = ParkedRequest.State.CANCELLED
    parked.cancel_reason = reason
    parked.resolved_at = timezone.now()
    parked.save(update_fields=["state", "cancel_reason", "resolved_at"])
    _emit(
        account,
        "parked_cancelled",
        {**events.parked_data(parked), "reason": reason},
        actor=actor,
        object_type="ledger.ParkedRequest",
        object_id=parked.pk,
        note=reason,
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
    _key_valid(idempotency_key)
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
        _hold_resolve(account, hold, state=Hold.State.CAPTURED, now=now, captured=wanted)
        entry = _entry_post(
            account,
            kind=Entry.Kind.CAPTURE,
            amount=-wanted,
            reference=hold.reference,
            idempotency_key=entry_key,
            hold=hold,
            entry_id=entry_id,
        )
        _emit(
            account,
            "hold_captured",
            {**events.hold_data(hold), **events.entry_data(entry)},
            actor=actor,
            object_type="ledger.Hold",
            object_id=hold.pk,
            before=before,
            together_with=_entry_statement(entry) if entry_id is not None else None,
        )
        if wanted < hold.amount:
            _wake(account, actor=actor)
        return hold

    return _atomic(run)


def hold_release(*, hold_id: int, reason: str = "", actor: str = SYSTEM_ACTOR) -> Hold:
    """Void a pending hold: its amount returns to available; parked requests wake."""
    account_id = _hold_account_id(hold_id)

    def run() -> Hold:
        account = account_lock(account_id)
        hold = Hold.objects.get(pk=hold_id)
        if hold.state != Hold.State.PENDING:
            raise HoldAlreadyResolved()
        _hold_release(account, hold, reason=reason, actor=actor)
        _wake(account, actor=actor)
        return hold

    return _atomic(run)


def _hold_release(account: Account, hold: Hold, *, reason: str, actor: str) -> None:
    before = events.hold_data(hold)
    _hold_resolve(account, hold, state=Hold.State.RELEASED, now=timezone.now())
    _emit(
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
    _reference_valid(reference)

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
            _parked_cancel(account, parked_request, reason=reason or "released by reference", actor=actor)
        if holds or parked:
            _wake(account, actor=actor)
        return ReferenceRelease(holds=holds, parked_requests=parked)

    return _atomic(run)


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
        expired += _atomic(functools.partial(_account_holds_expire, account_id, now))
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
        _hold_resolve(account, hold, state=Hold.State.EXPIRED, now=now)
        _emit(
            account,
            "hold_expired",
            events.hold_data(hold),
            actor=SYSTEM_ACTOR,
            object_type="ledger.Hold",
            object_id=hold.pk,
            before=before,
        )
    if holds:
        _wake(account, actor=SYSTEM_ACTOR)
    return len(holds)


# --- credits and corrections --------------------------------------------------------------------


def refund_post(
    *, account_id: int, amount: int, reference: str, idempotency_key: str, actor: str = SYSTEM_ACTOR
) -> Entry:
    """Credit the account with a refund the insurer confirmed (a deletion); wakes parked requests."""
    amount_valid(amount)
    _reference_valid(reference)
    _key_valid(idempotency_key)
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
        entry = _entry_post(
            account,
            kind=Entry.Kind.REFUND,
            amount=amount,
            reference=reference,
            idempotency_key=entry_key,
            entry_id=entry_id,
        )
        _emit(
            account,
            "refund_posted",
            events.entry_data(entry),
            actor=actor,
            object_type="ledger.Entry",
            object_id=entry.pk,
            together_with=_entry_statement(entry) if entry_id is not None else None,
        )
        if queue_waiting:
            _wake(account, actor=actor)
        return entry

    return _atomic(run)


# Any entry already made with the refund's key, and whether the queue waits, in one round trip.
_REFUND_PROBE_SQL = (
    "SELECT e.id, e.amount, e.reference,"
    " EXISTS (SELECT 1 FROM ledger_parkedrequest WHERE account_id = %s AND state = 'PARKED')"
    " FROM (SELECT 1) AS one LEFT JOIN ledger_entry e ON e.account_id = %s AND e.idempotency_key = %s"
)
# PostgreSQL: the same, plus the id the refund entry will get (an unused one is a harmless gap).
_REFUND_PROBE_WITH_ID_SQL = _REFUND_PROBE_SQL.replace(
    " FROM (SELECT 1)", f", {_NEXT_ENTRY_ID} FROM (SELECT 1)", 1
)


def adjustment_request(
    *, account_id: int, amount: int, reason: str, idempotency_key: str, requested_by
) -> Adjustment:
    """Ask for a correcting entry (signed amount); a different finance approver approves it."""
    amount_valid(amount, signed=True)
    _note_valid(reason, "reason")
    _key_valid(idempotency_key)

    def run() -> Adjustment:
        account = account_lock(account_id)
        first = Adjustment.objects.filter(account=account, idempotency_key=idempotency_key).first()
        if first is not None:
            if (first.amount, first.reason, first.requested_by_id) != (amount, reason, requested_by.pk):
                raise IdempotencyConflict()
            return first
        adjustment = Adjustment.objects.create(
            account=account,
            amount=amount,
            reason=reason,
            idempotency_key=idempotency_key,
            requested_by=requested_by,
        )
        _emit(
            account,
            "adjustment_requested",
            events.adjustment_data(adjustment),
            actor=_principal(requested_by),
            object_type="ledger.Adjustment",
            object_id=adjustment.pk,
            note=reason,
        )
        return adjustment

    return _atomic(run)


def _adjustment_account_id(adjustment_id: int) -> int:
    return _request_account_id(Adjustment, adjustment_id, AdjustmentNotFound)


def _pending_adjustment(adjustment_id: int, approver) -> Adjustment:
    return _pending_request(
        model=Adjustment,
        pk=adjustment_id,
        already_decided=AdjustmentAlreadyDecided,
        is_maker=lambda adjustment: adjustment.requested_by_id == approver.pk,
    )


def adjustment_approve(*, adjustment_id: int, approver) -> Adjustment:
    """Post the adjustment as an ADJUSTMENT entry (maker ≠ checker; a debit needs the money)."""
    _approver_valid(approver, "ledger.approve_adjustment")
    account_id = _adjustment_account_id(adjustment_id)

    def run() -> Adjustment:
        account = account_lock(account_id)
        adjustment = _pending_adjustment(adjustment_id, approver)
        if adjustment.amount < 0 and -adjustment.amount > account.posted - account.held:
            raise InsufficientFunds()
        before = events.adjustment_data(adjustment)
        entry = _entry_post(
            account,
            kind=Entry.Kind.ADJUSTMENT,
            amount=adjustment.amount,
            reference=f"adjustment:{adjustment.pk}",
            idempotency_key=f"adjustment:{adjustment.pk}",
            memo=adjustment.reason[:500],
        )
        adjustment.state = Adjustment.State.APPROVED
        adjustment.entry = entry
        adjustment.decided_by = approver
        adjustment.decided_at = timezone.now()
        adjustment.save(update_fields=["state", "entry", "decided_by", "decided_at"])
        _emit(
            account,
            "adjustment_approved",
            {**events.adjustment_data(adjustment), **events.entry_data(entry)},
            actor=_principal(approver),
            object_type="ledger.Adjustment",
            object_id=adjustment.pk,
            before=before,
        )
        if adjustment.amount > 0:
            _wake(account, actor=_principal(approver))
        return adjustment

    return _atomic(run)


def adjustment_reject(*, adjustment_id: int, approver, note: str) -> Adjustment:
    _approver_valid(approver, "ledger.approve_adjustment")
    _note_valid(note)
    account_id = _adjustment_account_id(adjustment_id)

    def run() -> Adjustment:
        account = account_lock(account_id)
        adjustment = _pending_adjustment(adjustment_id, approver)
        _request_reject(
            account=account,
            request=adjustment,
            approver=approver,
            note=note,
            data=events.adjustment_data,
            object_type="ledger.Adjustment",
            event="adjustment_rejected",
        )
        return adjustment

    return _atomic(run)
