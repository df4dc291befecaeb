"""The only place the ledger locks anything.

- Account rows: `account_lock` / `account_lock_for_hold` take `SELECT ... FOR NO KEY UPDATE`
  on one account row, inside the caller's transaction (a write locks one account). Every
  ledger write takes its account's lock first and only then reads what it decides on,
  so writers to one account run one after another and READ COMMITTED reads after the
  lock see everything committed before it. (FOR NO KEY UPDATE, not FOR UPDATE: we never
  change the key, and it does not block other transactions inserting rows that
  reference the account.)
- `sweeper_lock`: a Redis lock (`ems.redis_lock`) so that one periodic sweeper runs at a
  time. It is an optimisation only: if Redis is down the sweep runs anyway, and the row
  locks keep it correct when two sweeps overlap.
"""

import contextlib
from collections.abc import Iterator

import structlog
from django.db import connection, transaction

from ems.redis_lock import LockBackendUnavailable, LockNotAcquired, lock_acquire, lock_release
from ledger.errors import AccountNotFound
from ledger.models import Account, Hold

log = structlog.get_logger(__name__)


def _account_columns(alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{field.column}"' for field in Account._meta.concrete_fields)


# Plain SQL on the hot path: no joins (Account's Meta.ordering would add some, and FOR
# UPDATE would then lock the employer and insurer rows too) and no query compilation.
_ACCOUNT = Account._meta.db_table
_LOCK_SQL = f"SELECT {_account_columns()} FROM {_ACCOUNT} WHERE id = %s FOR NO KEY UPDATE"
_LOCK_FOR_HOLD_SQL = (
    f"SELECT {_account_columns('a')} FROM {_ACCOUNT} a JOIN {Hold._meta.db_table} h ON h.account_id = a.id"
    " WHERE h.id = %s FOR NO KEY UPDATE OF a"
)


def _account_locked(sql: str, params: list) -> Account | None:
    _require_transaction()
    if not connection.features.has_select_for_update:
        # SQLite (`make run`): no row locks; its IMMEDIATE transactions serialise writers.
        sql = sql.split(" FOR NO KEY UPDATE")[0]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return Account.from_db(connection.alias, [f.attname for f in Account._meta.concrete_fields], row)


def account_lock(account_id: int) -> Account:
    """Lock one account row for the rest of the transaction; AccountNotFound if missing."""
    account = _account_locked(_LOCK_SQL, [account_id])
    if account is None:
        raise AccountNotFound()
    return account


def account_lock_for_hold(hold_id: int) -> Account | None:
    """Lock the account of a hold in one round trip (None if no such hold).

    Only the account row is locked (`OF a`). A hold's `account_id` never changes (triggers),
    so the join cannot pick a stale account.
    """
    return _account_locked(_LOCK_FOR_HOLD_SQL, [hold_id])


def _require_transaction() -> None:
    if transaction.get_autocommit():
        raise RuntimeError("ledger locks are taken inside transaction.atomic()")


@contextlib.contextmanager
def sweeper_lock(name: str, *, ttl_seconds: float = 300) -> Iterator[bool]:
    """Yield True if this process should sweep: it holds the lock, or Redis is unreachable.

    Yields False only when Redis answers and another sweeper holds the lock. A sweep is
    safe without the lock (every change is made under the account row lock and re-checks
    state), so a Redis outage only costs duplicate work, never money.
    """
    try:
        lock = lock_acquire(f"ledger:{name}", timeout=ttl_seconds, blocking_timeout=0)
    except LockNotAcquired:
        yield False
        return
    except LockBackendUnavailable:
        log.warning("ledger.sweeper_lock_unavailable", sweeper=name)
        yield True
        return
    try:
        yield True
    finally:
        try:
            lock_release(lock)
        except LockBackendUnavailable:
            log.warning("ledger.sweeper_unlock_failed", sweeper=name)  # the key expires by itself
