"""Concurrent closers of one insurer's window (threads, real PostgreSQL and Redis):
no request ever lands in two dispatches, with or without the closer's Redis lock."""

import threading

import pytest
from django.db import IntegrityError, connection

from endorsements.errors import IllegalTransition
from endorsements.pipeline import scheduler
from insurers.models import DispatchItem, Insurer
from ledger.models import Account
from tests.pipeline.conftest import S, fund, policy_at, rest_insurer_at, states, validated

pytestmark = pytest.mark.django_db(transaction=True)


def run_together(target, count: int) -> list:
    barrier = threading.Barrier(count)
    outcomes: list = []

    def closer():
        try:
            barrier.wait()
            outcomes.append(target())
        except (IllegalTransition, IntegrityError) as refused:  # the database's guards
            outcomes.append(refused)
        finally:
            connection.close()

    threads = [threading.Thread(target=closer) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def requests_for(sandbox, approver):
    insurer = rest_insurer_at(sandbox, dispatch_window_seconds=1, dispatch_batch_size=100)
    policy = policy_at(insurer)
    fund(policy, 100_000_00, approver)
    requests = [validated(policy, premium=1_000_00) for _ in range(6)]
    requests += [validated(policy, premium=-500_00, kind="DELETE") for _ in range(4)]
    return insurer, requests


def assert_each_in_one_dispatch(requests) -> None:
    references = list(
        DispatchItem.objects.filter(reference__in=[r.tracking_id for r in requests]).values_list(
            "reference", flat=True
        )
    )
    assert sorted(references) == sorted(r.tracking_id for r in requests)
    # sent once each and answered inline: every request confirmed, every paisa accounted for
    assert states(*requests) == [S.CONFIRMED] * len(requests)
    account = Account.objects.get(employer_id=requests[0].employer_id)
    assert (account.posted, account.held) == (100_000_00 - 6 * 1_000_00 + 4 * 500_00, 0)


def test_closers_behind_the_redis_lock(sandbox, approver):
    insurer, requests = requests_for(sandbox, approver)

    outcomes = run_together(lambda: scheduler.window_close(insurer_id=insurer.pk), 4)

    assert_each_in_one_dispatch(requests)
    made = [o for o in outcomes if isinstance(o, scheduler.WindowClose) and o.dispatch_ids]
    assert sum(len(o.dispatch_ids) for o in made) == 2


def test_closers_without_the_lock_are_stopped_by_the_database(sandbox, approver):
    insurer, requests = requests_for(sandbox, approver)

    outcomes = run_together(lambda: scheduler._window_close(Insurer.objects.get(pk=insurer.pk)), 4)

    assert_each_in_one_dispatch(requests)
    assert any(isinstance(o, scheduler.WindowClose) for o in outcomes)
