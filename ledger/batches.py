"""The ledger's batch services: a window's confirmations for one account, in one round.

A window of insurer answers is many captures, releases and refunds on one account. Each
service here does for a whole list what its single counterpart in `ledger.services` does
for one item (`hold_capture`, `hold_release_by_reference`, `refund_post`), under ONE account
lock in ONE transaction (`postings.transaction_run`), and the number of SQL statements does
not depend on the list's length:

- validate every item (`ledger.validation`, no database) and the batch (`batch_valid`);
- lock the account, then probe: one statement per kind of row the decision reads, one
  index probe per value (`_probes`);
- decide every item against what the probe loaded; the first refusal raises (its detail
  names the item) and the batch writes nothing: all or nothing;
- then one set-based statement per kind of row (`postings.holds_resolve`,
  `postings.entries_insert`, `parking.requests_cancel`), one outbox INSERT (one event and
  one audit record for the batch, with per-item data) and at most one wake of the queue.

Idempotency is the single services': a capture's entry key is `capture:<key>`, a refund's
`refund:<key>`, so a key sent once alone and once in a batch is one capture or refund. A
repeat with the same data returns the first result and writes nothing; different data
raise `IdempotencyConflict`. A batch may mix new items and repeats. Releases are set-like:
a reference with nothing pending or parked is a no-op.
"""

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import F, Q
from django.utils import timezone

from ems.errors import ErrorDetail
from ledger import parking
from ledger.errors import (
    BatchInvalid,
    CaptureExceedsHold,
    HoldAlreadyResolved,
    HoldNotFound,
    IdempotencyConflict,
)
from ledger.locks import account_lock
from ledger.models import Account, Entry, Hold, ParkedRequest
from ledger.parking import ReferenceRelease
from ledger.postings import change_record, entries_insert, holds_resolve, transaction_run
from ledger.validation import amount_valid, batch_valid, key_valid, note_valid, reference_valid

__all__ = ["ReferenceRelease", "holds_capture_batch", "holds_release_batch", "refunds_post_batch"]


def _invalid(field: str, message: str) -> BatchInvalid:
    return BatchInvalid(details=[ErrorDetail(field, "batch_invalid", message)])


def _item(raw: Any, field: str) -> Mapping:
    if not isinstance(raw, Mapping):
        raise _invalid(field, f"{field} must be a mapping")
    return raw


# --- captures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Capture:
    field: str  # "captures[3]": where an error points
    hold_id: int | None
    reference: str | None
    amount: int | None  # None: all of the hold
    entry_key: str

    @property
    def target(self) -> str:
        return f"hold {self.hold_id}" if self.hold_id is not None else self.reference


def _capture_valid(raw: Any, field: str) -> _Capture:
    item = _item(raw, field)
    hold_id, reference, amount = item.get("hold_id"), item.get("reference"), item.get("amount")
    if (hold_id is None) == (reference is None):
        raise _invalid(field, f"{field} names its hold by hold_id or by reference (one of them)")
    if hold_id is not None and (isinstance(hold_id, bool) or not isinstance(hold_id, int)):
        raise _invalid(f"{field}.hold_id", f"{field}.hold_id must be a hold's id")
    return _Capture(
        field=field,
        hold_id=hold_id,
        reference=None if reference is None else reference_valid(reference, f"{field}.reference"),
        amount=None if amount is None else amount_valid(amount, field=f"{field}.amount"),
        entry_key=f"capture:{key_valid(item.get('idempotency_key'), f'{field}.idempotency_key')}",
    )


def _captures_valid(captures: list[Mapping]) -> list[_Capture]:
    batch = [_capture_valid(raw, f"captures[{index}]") for index, raw in enumerate(captures)]
    batch_valid(len(batch), [c.entry_key for c in batch], "captures")
    targets = [(c.hold_id, c.reference) for c in batch]
    if len(set(targets)) != len(targets):
        raise _invalid("captures", "two captures name the same hold")
    return batch


# --- probes: one index probe per value ---------------------------------------------------

_HOLD = Hold._meta.db_table
_ENTRY = Entry._meta.db_table


def _probes(
    source: str, column: str, array_type: str, selected: str, where: str = "", account: str = "account_id"
) -> str:
    """SQL for one account's rows of `source` (its `account` column) whose `column` is one of
    an array's values. Parameters: the array, then the account id.

    Each value is one probe of the index that leads with (account, column): a LATERAL
    subquery over the unnested values, fenced with OFFSET 0. Written as `column = ANY(...)`
    (or joined), the planner, on statistics that have not yet seen a hot account's new rows,
    read every row of the account or of the table instead (for 500 references on an account
    of 22,500 holds: 27 ms, growing with the account).
    """
    return (
        f"SELECT found.* FROM unnest(%s::{array_type}) AS wanted(value) CROSS JOIN LATERAL"
        f" (SELECT {selected} FROM {source} WHERE {account} = %s AND {column} = wanted.value{where}"
        " OFFSET 0) AS found"
    )


def _columns(model, alias: str) -> str:
    return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


def _loaded(model, row: tuple):
    return model.from_db(connection.alias, [field.attname for field in model._meta.concrete_fields], row)


_HOLD_COLUMNS = _columns(Hold, _HOLD)
_CAPTURED_WITH_KEY = _probes(
    f"{_ENTRY} AS entry JOIN {_HOLD} ON {_HOLD}.id = entry.hold_id",
    "entry.idempotency_key",
    "varchar[]",
    _HOLD_COLUMNS,
    account="entry.account_id",
)
# The holds a capture batch may mean: by id, by reference (any state), or captured with one of
# its keys; each with the key and amount of its capture entry, if it has one. A hold found two
# ways comes twice (UNION ALL: de-duplicating wide rows in SQL cost more than the rows).
_CAPTURE_PROBE_SQL = f"""
WITH named AS (
    {_probes(_HOLD, "id", "bigint[]", _HOLD_COLUMNS)}
    UNION ALL {_probes(_HOLD, "reference", "varchar[]", _HOLD_COLUMNS)}
    UNION ALL {_CAPTURED_WITH_KEY}
)
SELECT named.*, captured.idempotency_key, captured.amount
FROM named LEFT JOIN LATERAL (
    SELECT idempotency_key, amount FROM {_ENTRY} WHERE hold_id = named.id OFFSET 0
) AS captured ON true
ORDER BY named.id
"""
_PENDING_BY_REFERENCE_SQL = (
    _probes(_HOLD, "reference", "varchar[]", _HOLD_COLUMNS, f" AND state = '{Hold.State.PENDING.value}'")
    + " ORDER BY found.id"
)
_ENTRIES_BY_KEY_SQL = _probes(_ENTRY, "idempotency_key", "varchar[]", _columns(Entry, _ENTRY))


def _capture_probe(account: Account, batch: list[_Capture]) -> list[Hold]:
    """Every hold the batch may mean, each with `entry_key` and `entry_amount` of its capture
    entry (None if it has none)."""
    hold_ids = [c.hold_id for c in batch if c.hold_id is not None]
    references = [c.reference for c in batch if c.reference is not None]
    entry_keys = [c.entry_key for c in batch]
    if connection.vendor != "postgresql":  # SQLite (`make run`): the same through the ORM
        return list(
            account.holds.filter(
                Q(pk__in=hold_ids)
                | Q(reference__in=references)
                | Q(capture_entry__idempotency_key__in=entry_keys)
            )
            .annotate(entry_key=F("capture_entry__idempotency_key"), entry_amount=F("capture_entry__amount"))
            .order_by("id")
        )
    with connection.cursor() as cursor:
        cursor.execute(
            _CAPTURE_PROBE_SQL, [hold_ids, account.pk, references, account.pk, entry_keys, account.pk]
        )
        rows = cursor.fetchall()
    holds = []
    seen: set[int] = set()
    for row in rows:
        if row[0] in seen:
            continue
        seen.add(row[0])
        hold = _loaded(Hold, row[:-2])
        hold.account = account
        hold.entry_key, hold.entry_amount = row[-2:]
        holds.append(hold)
    return holds


def _pending_holds(account: Account, references: list[str]) -> list[Hold]:
    if connection.vendor != "postgresql":
        return list(account.holds.filter(reference__in=references, state=Hold.State.PENDING).order_by("id"))
    with connection.cursor() as cursor:
        cursor.execute(_PENDING_BY_REFERENCE_SQL, [references, account.pk])
        holds = [_loaded(Hold, row) for row in cursor.fetchall()]
    for hold in holds:
        hold.account = account
    return holds


def _entries_by_key(account: Account, keys: list[str]) -> dict[str, Entry]:
    if connection.vendor != "postgresql":
        return {e.idempotency_key: e for e in account.entries.filter(idempotency_key__in=keys)}
    with connection.cursor() as cursor:
        cursor.execute(_ENTRIES_BY_KEY_SQL, [keys, account.pk])
        entries = [_loaded(Entry, row) for row in cursor.fetchall()]
    for entry in entries:
        entry.account = account
    return {entry.idempotency_key: entry for entry in entries}


# --- captures: deciding and writing --------------------------------------------------------


def _repeat_check(capture: _Capture, first: Hold) -> None:
    """The key captured `first` before: the same hold for the same amount, or a conflict."""
    wanted = first.amount if capture.amount is None else capture.amount
    if capture.hold_id is not None:
        same_hold = first.pk == capture.hold_id
    else:
        same_hold = first.reference == capture.reference
    if not same_hold or -first.entry_amount != wanted:
        raise IdempotencyConflict(
            details=[
                ErrorDetail(
                    f"{capture.field}.idempotency_key",
                    "idempotency_conflict",
                    f"this key captured {-first.entry_amount} of hold {first.pk} ({first.reference})",
                )
            ]
        )


def _capture_target(capture: _Capture, by_id: dict[int, Hold], by_reference: dict[str, list[Hold]]) -> Hold:
    """The PENDING hold a new capture means, or the error that says why there is none."""
    if capture.hold_id is not None:
        candidates = [by_id[capture.hold_id]] if capture.hold_id in by_id else []
    else:
        candidates = by_reference.get(capture.reference, [])
    if not candidates:
        raise HoldNotFound(
            f"No hold for {capture.target} on this account.",
            details=[ErrorDetail(capture.field, "hold_not_found", f"no hold for {capture.target}")],
        )
    pending = [hold for hold in candidates if hold.state == Hold.State.PENDING]
    if not pending:
        last = candidates[-1]
        message = f"the hold of {last.reference} (hold {last.pk}) is already {last.state}"
        raise HoldAlreadyResolved(
            f"The hold of {last.reference} is already {last.state}.",
            details=[ErrorDetail(capture.field, "hold_already_resolved", message)],
        )
    if len(pending) > 1:
        raise _invalid(
            capture.field, f"{capture.reference} has {len(pending)} pending holds: name each by hold_id"
        )
    return pending[0]


def _captures_decide(
    batch: list[_Capture], holds: list[Hold]
) -> tuple[list[Hold], list[tuple[Hold, int, str]]]:
    """(the result for each capture, in order; the new captures as (hold, amount, entry key))."""
    by_id = {hold.pk: hold for hold in holds}
    by_entry_key = {hold.entry_key: hold for hold in holds if hold.entry_key is not None}
    by_reference: dict[str, list[Hold]] = defaultdict(list)
    for hold in holds:
        by_reference[hold.reference].append(hold)
    results: list[Hold] = []
    new: dict[int, tuple[Hold, int, str]] = {}
    for capture in batch:
        first = by_entry_key.get(capture.entry_key)
        if first is not None:
            _repeat_check(capture, first)
            results.append(first)
            continue
        hold = _capture_target(capture, by_id, by_reference)
        wanted = hold.amount if capture.amount is None else capture.amount
        if wanted > hold.amount:
            raise CaptureExceedsHold(
                details=[
                    ErrorDetail(
                        f"{capture.field}.amount",
                        "capture_exceeds_hold",
                        f"the hold of {hold.reference} is {hold.amount}, capture {wanted}",
                    )
                ]
            )
        if hold.pk in new:
            raise _invalid(capture.field, f"hold {hold.pk} ({hold.reference}) is named twice")
        new[hold.pk] = (hold, wanted, capture.entry_key)
        results.append(hold)
    return results, list(new.values())


def _captures_post(account: Account, captures: list[tuple[Hold, int, str]], *, actor: str) -> None:
    now = timezone.now()
    holds = [hold for hold, _, _ in captures]
    holds_resolve(account, holds, state=Hold.State.CAPTURED, now=now, captured=[w for _, w, _ in captures])
    entries = [
        # by attname: the related descriptors would cost more than the rest of the row
        Entry(
            account_id=account.pk,
            kind=Entry.Kind.CAPTURE,
            amount=-wanted,
            reference=hold.reference,
            idempotency_key=entry_key,
            hold_id=hold.pk,
        )
        for hold, wanted, entry_key in captures
    ]
    entries_insert(account, entries, now)
    change_record(
        account,
        "holds_batch_captured",
        {
            "holds": [
                {
                    "hold_id": hold.pk,
                    "reference": hold.reference,
                    "amount": hold.amount,
                    "captured_amount": hold.captured_amount,
                    "entry_id": entry.pk,
                    "balance_after": entry.balance_after,
                }
                for hold, entry in zip(holds, entries, strict=True)
            ]
        },
        actor=actor,
        object_type="ledger.Account",
        object_id=account.pk,
    )
    if any(wanted < hold.amount for hold, wanted, _ in captures):
        parking.wake(account, actor=actor)


def holds_capture_batch(*, account_id: int, captures: list[Mapping], actor: str) -> list[Hold]:
    """Capture many PENDING holds of one account: each all of it or `amount` (the rest returns).

    Each capture names its hold by `hold_id` or by `reference` (the PENDING hold of that
    reference on this account), with an optional `amount` and an `idempotency_key` (entry key
    `capture:<key>`, as `hold_capture`). Returns the holds in the given order. A resolved
    hold (captured under another key, released, expired) refuses the whole batch with
    `HoldAlreadyResolved` naming the reference. One event (`ledger.holds_batch_captured`)
    and one audit record; the queue wakes once if anything returned to available.
    """
    batch = _captures_valid(captures)

    def run() -> list[Hold]:
        account = account_lock(account_id)
        results, new = _captures_decide(batch, _capture_probe(account, batch))
        if new:
            _captures_post(account, new, actor=actor)
        return results

    return transaction_run(run)


# --- releases -----------------------------------------------------------------------------


def holds_release_batch(
    *, account_id: int, references: list[str], reason: str, actor: str
) -> ReferenceRelease:
    """Release every PENDING hold and cancel every PARKED request of `references` on one account.

    A reference with nothing pending or parked is a no-op (a release is safe twice). One
    event (`ledger.holds_batch_released`) and one audit record; the queue wakes once.
    """
    wanted = list(dict.fromkeys(reference_valid(r, f"references[{i}]") for i, r in enumerate(references)))
    batch_valid(len(wanted), [], "references")
    if reason:
        note_valid(reason, "reason")

    def run() -> ReferenceRelease:
        account = account_lock(account_id)
        holds = _pending_holds(account, wanted)
        parked = list(
            account.parked.filter(reference__in=wanted, state=ParkedRequest.State.PARKED).order_by("id")
        )
        if not holds and not parked:
            return ReferenceRelease(holds=[], parked_requests=[])
        now = timezone.now()
        holds_resolve(account, holds, state=Hold.State.RELEASED, now=now)
        parking.requests_cancel(parked, reason=reason or "released by reference", now=now)
        change_record(
            account,
            "holds_batch_released",
            {
                "reason": reason,
                "holds": [{"hold_id": h.pk, "reference": h.reference, "amount": h.amount} for h in holds],
                "parked_cancelled": [
                    {"parked_request_id": p.pk, "reference": p.reference, "amount": p.amount} for p in parked
                ],
            },
            actor=actor,
            object_type="ledger.Account",
            object_id=account.pk,
            note=reason,
        )
        parking.wake(account, actor=actor)
        return ReferenceRelease(holds=holds, parked_requests=parked)

    return transaction_run(run)


# --- refunds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Refund:
    field: str
    amount: int
    reference: str
    entry_key: str


def _refund_valid(raw: Any, field: str) -> _Refund:
    item = _item(raw, field)
    return _Refund(
        field=field,
        amount=amount_valid(item.get("amount"), field=f"{field}.amount"),
        reference=reference_valid(item.get("reference"), f"{field}.reference"),
        entry_key=f"refund:{key_valid(item.get('idempotency_key'), f'{field}.idempotency_key')}",
    )


def _refunds_decide(
    account: Account, batch: list[_Refund], first: dict[str, Entry]
) -> tuple[list[Entry], list[Entry]]:
    """(the entry for each refund, in order; the new ones, built and not yet posted)."""
    results: list[Entry] = []
    new: list[Entry] = []
    for refund in batch:
        entry = first.get(refund.entry_key)
        if entry is not None:
            if (entry.amount, entry.reference) != (refund.amount, refund.reference):
                raise IdempotencyConflict(
                    details=[
                        ErrorDetail(
                            f"{refund.field}.idempotency_key",
                            "idempotency_conflict",
                            f"this key refunded {entry.amount} for {entry.reference}",
                        )
                    ]
                )
        else:
            entry = Entry(
                account=account,
                kind=Entry.Kind.REFUND,
                amount=refund.amount,
                reference=refund.reference,
                idempotency_key=refund.entry_key,
            )
            new.append(entry)
        results.append(entry)
    return results, new


def refunds_post_batch(*, account_id: int, refunds: list[Mapping], actor: str) -> list[Entry]:
    """Credit one account with many refunds the insurer confirmed (deletions); wakes the queue once.

    Each refund has `amount` (> 0), `reference` and `idempotency_key` (entry key
    `refund:<key>`, the same refund as `refund_post` with that key). Returns the entries in
    the given order. One event (`ledger.refunds_batch_posted`) and one audit record.
    """
    batch = [_refund_valid(raw, f"refunds[{index}]") for index, raw in enumerate(refunds)]
    batch_valid(len(batch), [r.entry_key for r in batch], "refunds")

    def run() -> list[Entry]:
        account = account_lock(account_id)
        first = _entries_by_key(account, [r.entry_key for r in batch])
        results, new = _refunds_decide(account, batch, first)
        if new:
            entries_insert(account, new, timezone.now())
            change_record(
                account,
                "refunds_batch_posted",
                {
                    "entries": [
                        {
                            "entry_id": e.pk,
                            "amount": e.amount,
                            "reference": e.reference,
                            "balance_after": e.balance_after,
                        }
                        for e in new
                    ]
                },
                actor=actor,
                object_type="ledger.Account",
                object_id=account.pk,
            )
            parking.wake(account, actor=actor)
        return results

    return transaction_run(run)
