"""The ledger's rows: the only code that inserts entries and holds and resolves holds.

How it works
- Every ledger write runs in `transaction_run`: a transaction of its own, retried on a
  deadlock or serialization failure, or a savepoint inside a caller's transaction (then
  the caller retries).
- The functions here run under the account row lock (`ledger.locks`), which the caller
  has taken. `posted` and `held` are kept by database triggers (migrations 0003/0004):
  we insert entries and holds and resolve holds, never write those two columns, and
  mirror the triggers' effect on the locked `Account` object so nobody re-reads it.
- The rows are plain SQL (table names from the models' `_meta`): they run while the
  account is locked, where Django's query compilation would be most of the lock time.
  On PostgreSQL a new row's id can be drawn beforehand (`nextval` in the caller's probe);
  then the row is only built here and its INSERT (`row_statement`)
  goes to the server with its outbox rows in one statement (`change_record`).
- A batch (`holds_insert`, `entries_insert`, `holds_resolve`) is one statement whatever its
  size: arrays in, `unnest` in SQL (SQLite, for `make run`, takes the slow road).
- `change_record` writes one Kafka event (topic `ems.ledger`, keyed by account id) and
  one audit record per change, in the same transaction.
"""

import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from operator import attrgetter
from typing import TypeVar

import structlog
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from ems.audit import audit_document
from ems.outbox import TOPIC_LEDGER, KafkaEvent, outbox_write
from ledger import events
from ledger.models import Account, Entry, Hold

log = structlog.get_logger(__name__)

T = TypeVar("T")

SYSTEM_ACTOR = "system:ledger"
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
MAX_ATTEMPTS = 8


def hold_ttl() -> timedelta:
    """How long a hold lives when its request names no expiry."""
    return getattr(settings, "LEDGER_HOLD_TTL", timedelta(days=15))


# --- transactions ----------------------------------------------------------------------


def transaction_run(fn: Callable[[], T]) -> T:
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


# --- the outbox --------------------------------------------------------------------------


def change_record(
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


# --- SQL ---------------------------------------------------------------------------------

# The columns a new row is written with (the id comes from RETURNING or was drawn before).
_ENTRY_COLUMNS = (
    "account_id",
    "kind",
    "amount",
    "reference",
    "idempotency_key",
    "hold_id",
    "memo",
    "balance_after",
    "created_at",
)
_HOLD_COLUMNS = (
    "account_id",
    "reference",
    "amount",
    "captured_amount",
    "state",
    "idempotency_key",
    "expires_at",
    "created_at",
    "resolved_at",
)


def _insert_sql(model, columns: tuple[str, ...], *, with_id: bool) -> str:
    names = ("id", *columns) if with_id else columns
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
    return sql if with_id else f"{sql} RETURNING id"


# Per model: its column values in one call, the INSERT returning the id, the INSERT with an id.
_INSERTS = {
    model: (
        attrgetter(*columns),
        _insert_sql(model, columns, with_id=False),
        _insert_sql(model, columns, with_id=True),
    )
    for model, columns in ((Entry, _ENTRY_COLUMNS), (Hold, _HOLD_COLUMNS))
}
_ENTRY = Entry._meta.db_table
_HOLD = Hold._meta.db_table
# A sequence value for the next row; an unused one is a harmless gap.
NEXT_ENTRY_ID = f"nextval(pg_get_serial_sequence('{_ENTRY}', 'id'))"
NEXT_HOLD_ID = f"nextval(pg_get_serial_sequence('{_HOLD}', 'id'))"
_HOLD_RESOLVE_SQL = f"UPDATE {_HOLD} SET state = %s, resolved_at = %s, captured_amount = %s WHERE id = %s"
# A dispatch's holds in one INSERT from arrays (Django's bulk_create spends longer building
# the statement than PostgreSQL spends running it).
_HOLDS_INSERT_SQL = f"""
INSERT INTO {_HOLD} (account_id, reference, amount, captured_amount, state, idempotency_key,
                     expires_at, created_at, resolved_at)
SELECT %s, batch.reference, batch.amount, NULL, '{Hold.State.PENDING.value}', batch.idempotency_key,
       batch.expires_at, %s, NULL
FROM unnest(%s::varchar[], %s::bigint[], %s::varchar[], %s::timestamptz[])
    AS batch(reference, amount, idempotency_key, expires_at)
RETURNING id, idempotency_key
"""

# A batch's entries in one INSERT, in the given order: the row trigger stamps each entry's
# running balance in insertion order, so the order must be the one `balance_after` was
# computed in (the trigger refuses a mismatch).
_ENTRIES_INSERT_SQL = f"""
INSERT INTO {_ENTRY} (account_id, kind, amount, reference, idempotency_key, hold_id, memo,
                      balance_after, created_at)
SELECT %s, batch.kind, batch.amount, batch.reference, batch.idempotency_key, batch.hold_id, batch.memo,
       batch.balance_after, %s
FROM unnest(%s::varchar[], %s::bigint[], %s::varchar[], %s::varchar[], %s::bigint[], %s::varchar[],
            %s::bigint[]) WITH ORDINALITY
    AS batch(kind, amount, reference, idempotency_key, hold_id, memo, balance_after, position)
ORDER BY batch.position
RETURNING id, idempotency_key
"""
# A batch's holds resolved in one UPDATE (the statement trigger takes them out of `held` at once).
_HOLDS_RESOLVE_SQL = f"""
UPDATE {_HOLD} AS hold SET state = %s, resolved_at = %s, captured_amount = batch.captured_amount
FROM unnest(%s::bigint[], %s::bigint[]) AS batch(id, captured_amount)
WHERE hold.id = batch.id
"""


def _db_datetime(value: datetime):
    """A datetime as the backend stores it (SQLite: naive UTC text, like the ORM writes)."""
    return connection.ops.adapt_datetimefield_value(value)


def _written(row, drawn_id: int | None):
    """Insert `row` now (its id from RETURNING), or with `drawn_id` only give it that id:
    the caller sends `row_statement(row)` with its outbox rows."""
    if drawn_id is not None:
        row.pk = drawn_id
        return saved(row)
    values, sql, _ = _INSERTS[type(row)]
    params = [_db_datetime(value) if isinstance(value, datetime) else value for value in values(row)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row.pk = cursor.fetchone()[0]
    return saved(row)


def row_statement(row: Entry | Hold) -> tuple[str, list]:
    """The INSERT of an entry or hold built with a drawn id, for `change_record(together_with=...)`."""
    values, _, sql = _INSERTS[type(row)]
    # Ids are drawn on PostgreSQL only, which takes datetimes as they are.
    return sql, [row.pk, *values(row)]


def saved(instance):
    """Mark a row built here (and inserted by SQL) as loaded from the database."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


# --- entries and holds ----------------------------------------------------------------------


def entry_post(
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
    """Post an entry; with `entry_id` (drawn beforehand) only build it: the caller sends
    `row_statement(entry)` with its outbox rows (`change_record(together_with=...)`)."""
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
    _written(entry, entry_id)
    account.posted += amount
    return entry


def hold_create(
    account: Account,
    *,
    amount: int,
    reference: str,
    idempotency_key: str,
    expires_at: datetime,
    hold_id: int | None = None,
) -> Hold:
    """Place a PENDING hold; with `hold_id` (drawn beforehand) only build it: the caller sends
    `row_statement(hold)` with its outbox rows (`change_record(together_with=...)`)."""
    hold = Hold(
        account=account,
        amount=amount,
        reference=reference,
        idempotency_key=idempotency_key,
        expires_at=expires_at,
        created_at=timezone.now(),
    )
    _written(hold, hold_id)
    account.held += amount
    return hold


def holds_insert(account: Account, holds: list[Hold], now: datetime) -> None:
    """Insert a batch's new holds (built, not saved) in one statement."""
    if not holds:
        return
    account.held += sum(hold.amount for hold in holds)
    for hold in holds:
        hold.created_at = now
    if connection.vendor != "postgresql":
        Hold.objects.bulk_create(holds)
        return
    _rows_insert(
        _HOLDS_INSERT_SQL, [account.pk, now], holds, ("reference", "amount", "idempotency_key", "expires_at")
    )


def _rows_insert(sql: str, head: list, rows: list, columns: tuple[str, ...]) -> None:
    """Run a batch INSERT fed one array per column and give each row its id (matched by key)."""
    arrays = [[getattr(row, column) for row in rows] for column in columns]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*head, *arrays])
        ids = {key: pk for pk, key in cursor.fetchall()}
    for row in rows:
        row.pk = ids[row.idempotency_key]
        saved(row)


def entries_insert(account: Account, entries: list[Entry], now: datetime) -> None:
    """Post a batch's entries (built, not saved) in one statement, in the given order."""
    if not entries:
        return
    for entry in entries:
        account.posted += entry.amount
        entry.balance_after = account.posted
        entry.created_at = now
    if connection.vendor != "postgresql":
        Entry.objects.bulk_create(entries)
        return
    _rows_insert(
        _ENTRIES_INSERT_SQL,
        [account.pk, now],
        entries,
        ("kind", "amount", "reference", "idempotency_key", "hold_id", "memo", "balance_after"),
    )


def holds_resolve(
    account: Account, holds: list[Hold], *, state: str, now: datetime, captured: list[int] | None = None
) -> None:
    """Resolve a batch's PENDING holds in one statement: CAPTURED (`captured[i]` of `holds[i]`),
    RELEASED or EXPIRED. The caller has checked each is PENDING (the row trigger refuses otherwise)."""
    if not holds:
        return
    amounts: list[int | None] = list(captured) if captured is not None else [None] * len(holds)
    if connection.vendor != "postgresql":
        # SQLite (`make run`): one small UPDATE per hold.
        for hold, amount in zip(holds, amounts, strict=True):
            hold_resolve(account, hold, state=state, now=now, captured=amount)
        return
    with connection.cursor() as cursor:
        cursor.execute(_HOLDS_RESOLVE_SQL, [state, now, [h.pk for h in holds], amounts])
    for hold, amount in zip(holds, amounts, strict=True):
        hold.state = state
        hold.resolved_at = now
        hold.captured_amount = amount
        account.held -= hold.amount


def hold_resolve(
    account: Account, hold: Hold, *, state: str, now: datetime, captured: int | None = None
) -> None:
    """Move a PENDING hold to CAPTURED (with `captured`), RELEASED or EXPIRED."""
    hold.state = state
    hold.resolved_at = now
    hold.captured_amount = captured
    with connection.cursor() as cursor:
        cursor.execute(_HOLD_RESOLVE_SQL, [state, _db_datetime(now), captured, hold.pk])
    account.held -= hold.amount
