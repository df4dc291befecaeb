"""The only place the ledger locks anything.

- Account rows: `account_lock` / `accounts_lock` take `SELECT ... FOR NO KEY UPDATE` on
  the account rows, always in primary-key order, inside the caller's transaction. Every
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
from collections.abc import Iterable, Iterator

import structlog
from django.db import transaction

from ems.redis_lock import LockBackendUnavailable, LockNotAcquired, lock_acquire, lock_release
from ledger.errors import AccountNotFound
from ledger.models import Account

log = structlog.get_logger(__name__)

_UNLOCK_SCRIPT = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


def account_lock(account_id: int) -> Account:
    """Lock one account row for the rest of the transaction; AccountNotFound if missing."""
    _require_transaction()
    account = Account.objects.select_for_update(no_key=True).filter(pk=account_id).first()
    if account is None:
        raise AccountNotFound()
    return account


def account_lock_by(**related) -> Account | None:
    """Lock the account of a related row in one round trip, e.g. `account_lock_by(holds__id=7)`.

    Only the account row is locked (`OF self`); None if no such row. The related row's
    `account_id` never changes (triggers), so the join cannot pick a stale account.
    """
    _require_transaction()
    return Account.objects.select_for_update(no_key=True, of=("self",)).filter(**related).first()


def accounts_lock(account_ids: Iterable[int]) -> dict[int, Account]:
    """Lock several account rows in pk order (so two lockers never deadlock)."""
    _require_transaction()
    wanted = sorted(set(account_ids))
    accounts = {
        account.pk: account
        for account in Account.objects.select_for_update(no_key=True).filter(pk__in=wanted).order_by("pk")
    }
    if len(accounts) != len(wanted):
        raise AccountNotFound()
    return accounts


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
