"""The only place the ledger locks anything.

- Account rows: `account_lock` / `accounts_lock` take `SELECT ... FOR NO KEY UPDATE` on
  the account rows, always in primary-key order, inside the caller's transaction. Every
  ledger write takes its account's lock first and only then reads what it decides on,
  so writers to one account run one after another and READ COMMITTED reads after the
  lock see everything committed before it. (FOR NO KEY UPDATE, not FOR UPDATE: we never
  change the key, and it does not block other transactions inserting rows that
  reference the account.)
- `sweeper_lock`: a Redis lock so that one periodic sweeper runs at a time. It is an
  optimisation only: if Redis is down the sweep runs anyway, and the row locks keep it
  correct when two sweeps overlap.
"""

import contextlib
import uuid
from collections.abc import Iterable, Iterator

import redis
import structlog
from django.conf import settings
from django.db import transaction

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
def sweeper_lock(name: str, *, ttl_seconds: int = 300) -> Iterator[bool]:
    """Yield True if this process should sweep: it holds the lock, or Redis is unreachable.

    Yields False only when Redis answers and another sweeper holds the lock.
    """
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    token = uuid.uuid4().hex
    key = f"ems:ledger:sweeper:{name}"
    try:
        acquired = bool(client.set(key, token, nx=True, ex=ttl_seconds))
    except redis.RedisError:
        log.warning("ledger.sweeper_lock_unavailable", sweeper=name)
        client.close()
        yield True
        return
    try:
        yield acquired
    finally:
        if acquired:
            try:
                # Delete only our own token: after a TTL expiry another sweeper may own it.
                client.eval(
                    _UNLOCK_SCRIPT,
                    1,
                    key,
                    token,
                )
            except redis.RedisError:
                log.warning("ledger.sweeper_unlock_failed", sweeper=name)
        client.close()
