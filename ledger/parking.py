"""The parked queue: requests for a hold that did not fit, waiting for money.

Fairness rule: each account has one FIFO queue of parked requests. A request is placed
only if nothing older is waiting and it fits in `available`; otherwise it parks at the
back. A wake (after anything that raises available) places waiting requests oldest first
and stops at the first that does not fit: no overtaking, so a large request is never
starved by a stream of small ones (the price is that small requests behind a large one
wait too; ops can cancel or top up). A batch obeys the same rule in its given order. The
periodic sweep (`ledger.tasks.parked_sweep`) wakes every non-empty queue, so nothing
parked is forgotten if a wake was missed.

Everything here runs under the account row lock its caller took (`ledger.locks`), except
`parked_wake` and `parked_cancel`, which are services of their own (ops, the sweep).
An upper app hears "parked" and "placed" through `ledger.handlers`, after commit.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.utils import timezone

from ledger import events
from ledger.errors import IdempotencyConflict, ParkedRequestAlreadyResolved, ParkedRequestNotFound
from ledger.handlers import PARKED, PLACED, FundsEvent, funds_notify
from ledger.locks import account_lock
from ledger.models import Account, Hold, ParkedRequest
from ledger.postings import (
    NEXT_HOLD_ID,
    SYSTEM_ACTOR,
    change_record,
    hold_create,
    hold_ttl,
    holds_insert,
    transaction_run,
)
from ledger.validation import note_valid

WAKE_CHUNK = 200


@dataclass(frozen=True)
class HoldPlacement:
    """What a placement did: placed a hold, or parked the request (`parked` is True)."""

    hold: Hold | None = None
    parked_request: ParkedRequest | None = None

    @property
    def parked(self) -> bool:
        return self.hold is None

    @property
    def reference(self) -> str:
        return self.hold.reference if self.hold is not None else self.parked_request.reference


@dataclass(frozen=True)
class ReferenceRelease:
    """What a release by reference did: holds released, parked requests cancelled."""

    holds: list[Hold]
    parked_requests: list[ParkedRequest]


@dataclass(frozen=True)
class HoldRequest:
    """One debit asked for (`holds_place_batch` also accepts mappings with these keys)."""

    amount: int
    reference: str
    idempotency_key: str
    expires_at: datetime | None = None


# --- what was asked before --------------------------------------------------------------

_HOLD = Hold._meta.db_table
_PARKED_REQUEST = ParkedRequest._meta.db_table
_PARKED = ParkedRequest.State.PARKED.value
_PROBE_SQL = f"""
SELECT
    EXISTS (SELECT 1 FROM {_HOLD} WHERE account_id = %s AND idempotency_key = ANY(%s)),
    EXISTS (SELECT 1 FROM {_PARKED_REQUEST} WHERE account_id = %s AND idempotency_key = ANY(%s)),
    EXISTS (SELECT 1 FROM {_PARKED_REQUEST} WHERE account_id = %s AND state = '{_PARKED}')
"""
_PROBE_WITH_HOLD_ID_SQL = f"{_PROBE_SQL.rstrip()},\n    {NEXT_HOLD_ID}\n"


def probe(
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
                hold_used, parked_used, waiting, hold_id = cursor.fetchone()
            else:
                cursor.execute(_PROBE_SQL, [account.pk, keys, account.pk, keys, account.pk])
                hold_used, parked_used, waiting = cursor.fetchone()
        if not hold_used and not parked_used:
            return {}, {}, bool(waiting), hold_id
    holds = {h.idempotency_key: h for h in Hold.objects.filter(account=account, idempotency_key__in=keys)}
    parked = {
        p.idempotency_key: p
        for p in ParkedRequest.objects.filter(account=account, idempotency_key__in=keys).select_related(
            "hold"
        )
    }
    return holds, parked, queue_waiting(account), hold_id


def repeat_of(
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


def queue_waiting(account: Account) -> bool:
    return ParkedRequest.objects.filter(account=account, state=ParkedRequest.State.PARKED).exists()


def queue_first(account: Account, *, waiting: bool, actor: str) -> bool:
    """Before a new placement: wake the queue if it waits; whether it still waits."""
    if not waiting:
        return False
    wake(account, actor=actor)
    return queue_waiting(account)


# --- park, wake, cancel -------------------------------------------------------------------


def park(account: Account, request: HoldRequest, *, actor: str) -> ParkedRequest:
    parked = ParkedRequest.objects.create(
        account=account,
        reference=request.reference,
        amount=request.amount,
        idempotency_key=request.idempotency_key,
        expires_at=request.expires_at,
    )
    change_record(
        account,
        "hold_parked",
        events.parked_data(parked),
        actor=actor,
        object_type="ledger.ParkedRequest",
        object_id=parked.pk,
    )
    _funds_tell(PARKED, parked)
    return parked


def _funds_tell(kind: str, parked: ParkedRequest, hold: Hold | None = None) -> None:
    """Tell the upper app's handlers (after commit) that `parked` parked or got its hold."""
    funds_notify(
        parked.reference,
        FundsEvent(
            kind,
            account_id=parked.account_id,
            amount=parked.amount,
            parked_request_id=parked.pk,
            hold_id=hold.pk if hold is not None else None,
        ),
    )


def wake(account: Account, *, actor: str) -> list[HoldPlacement]:
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
            hold = hold_create(
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
            change_record(
                account,
                "hold_placed",
                {**events.hold_data(hold), "parked_request_id": parked.pk, "woken": True},
                actor=actor,
                object_type="ledger.Hold",
                object_id=hold.pk,
            )
            _funds_tell(PLACED, parked, hold)
            placements.append(HoldPlacement(hold=hold))
        if len(queue) < WAKE_CHUNK:
            break
    return placements


def requests_cancel(parked: list[ParkedRequest], *, reason: str, now: datetime) -> None:
    """Take PARKED requests out of the queue in one statement (the caller records it and wakes)."""
    if not parked:
        return
    ParkedRequest.objects.filter(pk__in=[p.pk for p in parked]).update(
        state=ParkedRequest.State.CANCELLED, cancel_reason=reason, resolved_at=now
    )
    for request in parked:
        request.state = ParkedRequest.State.CANCELLED
        request.cancel_reason = reason
        request.resolved_at = now


def cancel(account: Account, parked: ParkedRequest, *, reason: str, actor: str) -> None:
    """Take a PARKED request out of the queue (the caller wakes what may follow it)."""
    requests_cancel([parked], reason=reason, now=timezone.now())
    change_record(
        account,
        "parked_cancelled",
        {**events.parked_data(parked), "reason": reason},
        actor=actor,
        object_type="ledger.ParkedRequest",
        object_id=parked.pk,
        note=reason,
    )


# --- a batch --------------------------------------------------------------------------------


def batch_place(
    account: Account, batch: list[HoldRequest], *, now: datetime, actor: str, ahead_of_queue: bool = False
) -> list[HoldPlacement]:
    """A dispatch under its account's lock (`ledger.services.holds_place_batch` says the rules)."""
    holds, parked, waiting, _ = probe(account, [r.idempotency_key for r in batch])
    blocked = False if ahead_of_queue else queue_first(account, waiting=waiting, actor=actor)
    results: list[HoldPlacement | None] = [None] * len(batch)
    new_holds: list[tuple[int, Hold]] = []
    new_parked: list[tuple[int, ParkedRequest]] = []
    available = account.posted - account.held
    for index, request in enumerate(batch):
        repeat = repeat_of(request, holds, parked)
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
    holds_insert(account, [hold for _, hold in new_holds], now)
    ParkedRequest.objects.bulk_create([p for _, p in new_parked])
    for index, hold in new_holds:
        results[index] = HoldPlacement(hold=hold)
    for index, parked_request in new_parked:
        results[index] = HoldPlacement(parked_request=parked_request)
        _funds_tell(PARKED, parked_request)
    if new_holds or new_parked:
        change_record(
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


# --- ops' services ------------------------------------------------------------------------


def parked_wake(*, account_id: int, actor: str = SYSTEM_ACTOR) -> list[HoldPlacement]:
    """Place what now fits from the account's queue, oldest first (ops' "wake now", the sweep)."""
    return transaction_run(lambda: wake(account_lock(account_id), actor=actor))


def parked_cancel(*, parked_request_id: int, reason: str, actor: str) -> ParkedRequest:
    """Take a request out of the queue without placing it."""
    note_valid(reason, "reason")
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
        cancel(account, parked, reason=reason, actor=actor)
        # The head of the queue may have been blocking smaller requests behind it.
        wake(account, actor=actor)
        return parked

    return transaction_run(run)
