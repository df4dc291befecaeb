"""Faults on the whole pipeline: nothing lost, nothing done twice.

The deployed stack (bench/stack.py) runs while the sandbox insurer answers 500s,
times out, throttles with Retry-After and loses responses after acting; the whole worker
is SIGKILLed (parent and children) twice mid-run and its private Redis restarted (every
queued message lost). Afterwards every request must be ACTIVE (confirmed, effective
today), the EA exact to the paisa against an independent model (the requests' premiums
priced the insurer's published way), each request captured once, and the insurer must
have acted on each item once.
"""

import datetime
import time

import pytest
from django.db import connection

from endorsements.models import EndorsementRequest
from ledger.models import Account, Entry, Hold
from tests.insurers.gateway_items import sandbox_ledger_references
from tests.pipeline.conftest import S, account_of, fund, rest_insurer_at
from tests.pipeline.test_pipeline_e2e import ROWS, book_at, hr_token, insurer_charge, submit, wait_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
JOINERS = 24


def wait_until(predicate, *, timeout: float, what: str, stack) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s\n{stack.logs()}")
        time.sleep(0.2)


def test_faults_at_the_insurer_a_killed_worker_and_a_lost_redis_lose_nothing(
    stack, private_redis, sandbox, approver, employer
):
    today = datetime.date.today()
    insurer = rest_insurer_at(
        sandbox, dispatch_batch_size=6, retry_max_attempts=30, retry_base_seconds=1, request_timeout_seconds=1
    )
    policy = book_at(insurer, employer, today)
    fund(policy, 1_000_000_00, approver)
    sandbox.switches(
        error_rate=0.2,
        timeout_rate=0.1,
        timeout_seconds=2,
        throttle_rate=0.1,
        retry_after_seconds=1,
        lose_response_rate=0.2,
    )
    token = hr_token(stack, employer)
    joiner = dict(ROWS[0], date_of_joining=(today - datetime.timedelta(days=5)).isoformat())
    rows = [dict(joiner, employee_code=f"F-{n:03d}", email=f"f{n}@example.com") for n in range(JOINERS)]

    tracking_ids = submit(stack, token, policy, today, rows[: JOINERS // 2])
    stack.worker_kill()  # mid-run: some validated, some windows closing, some sends in flight
    stack.worker_start()
    tracking_ids += submit(stack, token, policy, today, rows[JOINERS // 2 :])
    wait_until(
        lambda: (
            not EndorsementRequest.objects.filter(tracking_id__in=tracking_ids, state=S.RECEIVED).exists()
        ),
        timeout=60,
        what="every request validated",
        stack=stack,
    )
    private_redis.stop()  # every queued task and lock gone
    time.sleep(1)
    private_redis.start()
    time.sleep(2)
    stack.worker_kill()
    stack.worker_start()
    time.sleep(3)
    sandbox.switches(error_rate=0, timeout_rate=0, throttle_rate=0, lose_response_rate=0)

    final = wait_final(stack, tracking_ids, timeout=120)

    assert {final[t].state for t in tracking_ids} == {S.ACTIVE}, {t: final[t].state for t in tracking_ids}
    model_posted = 1_000_000_00 - sum(insurer_charge(final[t].premium_amount) for t in tracking_ids)
    account = Account.objects.get(pk=account_of(policy).pk)
    assert (account.posted, account.held) == (model_posted, 0)
    captures = list(Entry.objects.filter(reference__in=tracking_ids).values_list("reference", flat=True))
    assert sorted(captures) == sorted(tracking_ids)  # one capture each
    assert Hold.objects.filter(reference__in=tracking_ids).exclude(state=Hold.State.CAPTURED).count() == 0
    assert sorted(sandbox_ledger_references(sandbox, tracking_ids)) == sorted(
        tracking_ids
    )  # the insurer acted on each item once
    connection.close()
