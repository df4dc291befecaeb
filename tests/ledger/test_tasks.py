"""ledger.tasks: the expiry and parked sweeps, with and without the Redis lock."""

from datetime import timedelta

import pytest
from django.utils import timezone

from ems.redis_lock import redis_lock
from ledger import services, tasks
from ledger.models import Hold, ParkedRequest
from tests.ledger.conftest import balances, fund

pytestmark = pytest.mark.django_db

REDIS_URL = "redis://127.0.0.1:6379/11"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def ledger_redis(settings):
    settings.REDIS_URL = REDIS_URL


@pytest.fixture
def expired_hold_and_waiting_request(account, approver):
    fund(account, 10_000, approver)
    hold = services.hold_place(
        account_id=account.pk,
        amount=8_000,
        reference="OLD",
        idempotency_key="old",
        expires_at=timezone.now() + timedelta(seconds=30),
    ).hold
    Hold.objects.filter(pk=hold.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    waiting = services.hold_place(account_id=account.pk, amount=5_000, reference="NEW", idempotency_key="new")
    return hold, waiting.parked_request


def test_the_expiry_sweep_expires_and_wakes(account, expired_hold_and_waiting_request):
    hold, waiting = expired_hold_and_waiting_request
    assert tasks.hold_expiry_sweep.delay().get() == 1
    hold.refresh_from_db()
    waiting.refresh_from_db()
    assert (hold.state, waiting.state) == ("EXPIRED", "PLACED")
    assert balances(account) == (10_000, 5_000, 5_000)


def test_a_second_sweeper_skips_while_the_first_holds_the_lock(account, expired_hold_and_waiting_request):
    hold, _ = expired_hold_and_waiting_request
    with redis_lock("ledger:hold_expiry_sweep", timeout=30, blocking_timeout=0):
        assert tasks.hold_expiry_sweep() == 0
    hold.refresh_from_db()
    assert hold.state == "PENDING"
    assert tasks.hold_expiry_sweep() == 1


def test_the_sweeps_still_run_when_redis_is_down(settings, account, expired_hold_and_waiting_request):
    settings.REDIS_URL = UNREACHABLE_REDIS  # the platform's client is rebuilt per REDIS_URL
    hold, waiting = expired_hold_and_waiting_request
    assert tasks.hold_expiry_sweep() == 1
    hold.refresh_from_db()
    assert hold.state == "EXPIRED"


def test_the_parked_sweep_places_what_fits(account, approver):
    fund(account, 1_000, approver)
    services.hold_place(account_id=account.pk, amount=3_000, reference="WAIT", idempotency_key="w")
    # money that arrived by a path that did not wake the queue (an ops correction in raw SQL)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ledger_entry (account_id, kind, amount, reference, idempotency_key, memo,"
            " created_at) VALUES (%s, 'ADJUSTMENT', 2000, 'fix', 'fix', '', now())",
            [account.pk],
        )
    assert tasks.parked_sweep() == 1
    assert ParkedRequest.objects.get().state == "PLACED"
    assert tasks.parked_sweep() == 0
