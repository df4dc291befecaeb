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

from bench.stack import Stack
from ems.embedded import start_kafka_wire
from ems.models import OutboxEvent
from endorsements.models import EndorsementRequest, EndorsementTransition
from ledger.models import Account, Entry, Hold
from tests.insurers.gateway_items import sandbox_ledger_references
from tests.ledger.conftest import invariants_hold
from tests.pipeline.conftest import S, account_of, fund, rest_insurer_at
from tests.pipeline.test_pipeline_e2e import (
    ROWS,
    book_at,
    hr_token,
    insurer_charge,
    kafka_events,
    submit,
    wait_final,
)
from tests.servers import database_url

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
    assert invariants_hold(account)  # posted = its entries, held = its pending holds
    captures = list(Entry.objects.filter(reference__in=tracking_ids).values_list("reference", flat=True))
    assert sorted(captures) == sorted(tracking_ids)  # one capture each
    assert Hold.objects.filter(reference__in=tracking_ids).exclude(state=Hold.State.CAPTURED).count() == 0
    assert sorted(sandbox_ledger_references(sandbox, tracking_ids)) == sorted(
        tracking_ids
    )  # the insurer acted on each item once
    connection.close()


def test_the_kafka_broker_stopped_and_restarted_loses_no_event(
    tmp_path, private_redis, sandbox, approver, employer
):
    """Kafka is down while requests travel: the pipeline goes on, the events wait in the outbox,
    and once a broker answers again every transition's event is delivered (the test broker keeps
    nothing across a restart, so every event read back was produced after it)."""

    broker = start_kafka_wire()
    port = broker.port
    stack = Stack(
        tmp_path,
        private_redis,
        database_url=database_url(),
        extra_env={"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers},
    ).start()
    try:
        broker.stop()
        today = datetime.date.today()
        insurer = rest_insurer_at(sandbox)
        policy = book_at(insurer, employer, today)
        fund(policy, 100_000_00, approver)
        joiner = dict(ROWS[0], date_of_joining=(today - datetime.timedelta(days=5)).isoformat())
        tracking_ids = submit(stack, hr_token(stack, employer), policy, today, [joiner, *ROWS[1:]])

        final = wait_final(stack, tracking_ids)

        assert {final[t].state for t in tracking_ids} == {S.ACTIVE}
        waiting = OutboxEvent.objects.filter(sink=OutboxEvent.Sink.KAFKA, delivered_at__isnull=True)
        assert waiting.filter(key__in=tracking_ids).count() > 0  # held back, not lost
        broker = start_kafka_wire(port=port)
        wait_until(lambda: not waiting.exists(), timeout=60, what="the outbox delivered", stack=stack)
        moves = EndorsementTransition.objects.filter(endorsement__tracking_id__in=tracking_ids)
        events = kafka_events(broker, tracking_ids)
        assert sorted((e["data"]["tracking_id"], e["data"]["to_state"]) for e in events) == sorted(
            (t.endorsement.tracking_id, t.to_state) for t in moves.select_related("endorsement")
        )
    finally:
        stack.stop()
        broker.stop()
        connection.close()
