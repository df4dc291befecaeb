"""Redis locks with an owner token and a mandatory expiry, plus the per-process Redis client.

How it works
- `redis_lock(name, timeout=..., blocking_timeout=...)` sets `ems:lock:<name>` to a random
  token with `SET NX PX`, so the lock frees itself `timeout` seconds later even if its
  holder dies. If the key is taken it polls until `blocking_timeout` (0 = try once) and
  then raises `LockNotAcquired`. Both timeouts are keyword-only and have no default.
- Release (on leaving the `with` block) runs a Lua compare-and-delete: the key is deleted
  only if it still holds our token, so a holder whose lock expired never deletes the next
  owner's lock. `HeldLock.extend()` is the same compare-and-`PEXPIRE`.
- When Redis does not answer, acquiring raises `LockBackendUnavailable`.

How callers should behave when Redis is down
- A Redis lock is an efficiency guard (two workers should not run the same sweep at the
  same time), never the guard for money or state: row locks, unique constraints and state
  checks in the database are. So:
  - a periodic sweep or beat task catches `LockBackendUnavailable`, logs and returns; the
    next tick tries again (Celery itself needs Redis, so little else is running anyway);
  - work that the database already makes safe may go on without the lock;
  - on a request path, let it propagate: it renders as a 503 error envelope.
- `redis_available()` is a quick ping (short timeouts) for choosing a degraded path up front.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
import structlog
from django.conf import settings

from ems.errors import EmsError

log = structlog.get_logger(__name__)

KEY_PREFIX = "ems:lock:"
_POLL_SECONDS = 0.05

# KEYS[1] = lock key, ARGV[1] = owner token
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
# KEYS[1] = lock key, ARGV[1] = owner token, ARGV[2] = new expiry in milliseconds
_EXTEND_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class LockNotAcquired(EmsError):
    code = "lock_not_acquired"
    status = 409
    message = "Another worker is doing this right now; try again shortly."


class LockBackendUnavailable(EmsError):
    code = "lock_backend_unavailable"
    status = 503
    message = "The lock service (Redis) is unavailable."


_client_lock = threading.Lock()
_client_state: dict = {"key": None, "client": None}


def redis_client() -> redis.Redis:
    """This process's Redis client for REDIS_URL, with short timeouts; rebuilt after a fork."""
    key = (os.getpid(), settings.REDIS_URL)
    with _client_lock:
        if _client_state["key"] != key:
            _client_state["key"] = key
            _client_state["client"] = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_connect_timeout=1,
                socket_timeout=2,
                health_check_interval=30,
            )
        return _client_state["client"]


def redis_available() -> bool:
    """True when Redis answers a ping within about a second."""
    try:
        return bool(redis_client().ping())
    except redis.RedisError:
        return False


@dataclass
class HeldLock:
    """A lock this process holds (or held): its name and owner token."""

    name: str
    token: str

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.name

    def extend(self, *, timeout: float) -> bool:
        """Reset the expiry to `timeout` seconds from now; False if we no longer own the lock."""
        milliseconds = _milliseconds(timeout, "timeout")
        try:
            return bool(redis_client().eval(_EXTEND_SCRIPT, 1, self.key, self.token, milliseconds))
        except redis.RedisError as exc:
            raise LockBackendUnavailable() from exc

    def owned(self) -> bool:
        try:
            return redis_client().get(self.key) == self.token.encode()
        except redis.RedisError as exc:
            raise LockBackendUnavailable() from exc


def lock_acquire(name: str, *, timeout: float, blocking_timeout: float) -> HeldLock:
    """Take the lock `name` for `timeout` seconds, waiting up to `blocking_timeout` seconds.

    Raises `LockNotAcquired` when another owner still holds it after the wait, and
    `LockBackendUnavailable` when Redis does not answer.
    """
    milliseconds = _milliseconds(timeout, "timeout")
    if blocking_timeout < 0:
        raise ValueError("blocking_timeout must be >= 0 (0 means: try once)")
    lock = HeldLock(name=name, token=secrets.token_hex(16))
    deadline = time.monotonic() + blocking_timeout
    client = redis_client()
    while True:
        try:
            if client.set(lock.key, lock.token, nx=True, px=milliseconds):
                return lock
        except redis.RedisError as exc:
            raise LockBackendUnavailable() from exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockNotAcquired()
        time.sleep(min(_POLL_SECONDS, remaining))


def lock_release(lock: HeldLock) -> bool:
    """Delete the lock if `lock.token` still owns it; True if it did. Never deletes another owner's lock."""
    try:
        return bool(redis_client().eval(_RELEASE_SCRIPT, 1, lock.key, lock.token))
    except redis.RedisError as exc:
        raise LockBackendUnavailable() from exc


@contextmanager
def redis_lock(name: str, *, timeout: float, blocking_timeout: float) -> Iterator[HeldLock]:
    """Hold the lock `name` for the `with` block (at most `timeout` seconds).

    Raises `LockNotAcquired` / `LockBackendUnavailable` before the block runs. Work that
    may outlive `timeout` should call `extend()`; if the lock expired meanwhile, leaving the
    block logs `redis_lock.lost` and leaves the new owner's lock alone.
    """
    lock = lock_acquire(name, timeout=timeout, blocking_timeout=blocking_timeout)
    try:
        yield lock
    finally:
        try:
            if not lock_release(lock):
                log.warning("redis_lock.lost", lock=name)
        except LockBackendUnavailable:
            # the key expires by itself; nothing else to do
            log.warning("redis_lock.release_failed", lock=name)


def _milliseconds(seconds: float, what: str) -> int:
    if seconds is None or seconds <= 0:
        raise ValueError(f"{what} must be a positive number of seconds")
    return max(1, int(seconds * 1000))
