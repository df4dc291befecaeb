"""ems/redis_lock.py against the real Redis: exclusion, expiry, owner-only release, Redis down."""

import threading
import time
import uuid

import pytest

from ems.errors import EmsError
from ems.redis_lock import (
    KEY_PREFIX,
    HeldLock,
    LockBackendUnavailable,
    LockNotAcquired,
    lock_acquire,
    lock_release,
    redis_available,
    redis_client,
    redis_lock,
)


@pytest.fixture
def name():
    lock_name = f"test-{uuid.uuid4().hex}"
    yield lock_name
    redis_client().delete(KEY_PREFIX + lock_name)


@pytest.fixture
def redis_down(settings):
    # a port nothing listens on: connections are refused at once
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"


def _wait_until_gone(key: str, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while redis_client().exists(key) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_lock_excludes_a_second_owner_until_released(name):
    # given a held lock
    with redis_lock(name, timeout=10, blocking_timeout=0) as held:
        assert redis_client().get(KEY_PREFIX + name) == held.token.encode()
        # when a second owner tries, then it is refused and the first keeps the lock
        with pytest.raises(LockNotAcquired) as refused:
            lock_acquire(name, timeout=10, blocking_timeout=0)
        assert held.owned() is True
    # the refusal is an EmsError with a stable code
    assert isinstance(refused.value, EmsError)
    assert (refused.value.code, refused.value.status) == ("lock_not_acquired", 409)
    # after the block the key is gone and a new owner gets it
    assert redis_client().exists(KEY_PREFIX + name) == 0
    second = lock_acquire(name, timeout=10, blocking_timeout=0)
    assert lock_release(second) is True


def test_waiting_owner_gets_the_lock_when_the_first_releases(name):
    first = lock_acquire(name, timeout=10, blocking_timeout=0)
    releaser = threading.Timer(0.2, lock_release, args=(first,))
    releaser.start()
    try:
        second = lock_acquire(name, timeout=10, blocking_timeout=10)
    finally:
        releaser.join()
    assert second.token != first.token
    assert second.owned() is True
    assert lock_release(second) is True


def test_lock_expires_after_its_timeout_and_the_old_owner_cannot_release_the_new_one(name):
    # given an owner whose lock expires
    old = lock_acquire(name, timeout=0.2, blocking_timeout=0)
    _wait_until_gone(KEY_PREFIX + name)
    # when someone else takes it
    new = lock_acquire(name, timeout=10, blocking_timeout=0)
    # then the old owner's release and extend do nothing
    assert lock_release(old) is False
    assert old.extend(timeout=10) is False
    assert old.owned() is False
    assert redis_client().get(KEY_PREFIX + name) == new.token.encode()
    assert lock_release(new) is True


def test_release_by_a_non_owner_is_refused(name):
    owner = lock_acquire(name, timeout=10, blocking_timeout=0)
    forged = HeldLock(name=name, token="not-the-owner")
    assert lock_release(forged) is False
    assert forged.extend(timeout=60) is False
    assert redis_client().get(KEY_PREFIX + name) == owner.token.encode()
    assert 0 < redis_client().pttl(KEY_PREFIX + name) <= 10_000
    assert lock_release(owner) is True


def test_owner_can_extend_its_lock(name):
    with redis_lock(name, timeout=1, blocking_timeout=0) as held:
        assert held.extend(timeout=60) is True
        assert redis_client().pttl(KEY_PREFIX + name) > 1_000


def test_leaving_the_block_after_expiry_leaves_the_next_owners_lock_alone(name):
    with redis_lock(name, timeout=0.2, blocking_timeout=0):
        _wait_until_gone(KEY_PREFIX + name)
        next_owner = lock_acquire(name, timeout=10, blocking_timeout=0)
    assert next_owner.owned() is True
    assert lock_release(next_owner) is True


@pytest.mark.parametrize(
    ("timeout", "blocking_timeout"),
    [(0, 0), (-1, 0), (None, 0), (5, -0.1)],
)
def test_timeouts_must_be_given_and_sane(name, timeout, blocking_timeout):
    with pytest.raises(ValueError):
        lock_acquire(name, timeout=timeout, blocking_timeout=blocking_timeout)
    assert redis_client().exists(KEY_PREFIX + name) == 0


def test_timeouts_are_keyword_only_and_mandatory(name):
    with pytest.raises(TypeError):
        lock_acquire(name)  # type: ignore[call-arg]
    with pytest.raises(TypeError), redis_lock(name, timeout=5):  # type: ignore[call-arg]
        pass
    assert redis_client().exists(KEY_PREFIX + name) == 0


def test_redis_down_is_reported_so_callers_can_degrade(name, redis_down):
    assert redis_available() is False
    with (
        pytest.raises(LockBackendUnavailable) as unavailable,
        redis_lock(name, timeout=5, blocking_timeout=1),
    ):
        pytest.fail("the block must not run without the lock")
    assert (unavailable.value.code, unavailable.value.status) == ("lock_backend_unavailable", 503)


def test_redis_available_when_it_answers():
    assert redis_available() is True
