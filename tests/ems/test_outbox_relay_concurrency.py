"""Relays running at the same time (threads with their own database connections).

Each test commits its rows (transaction=True) so that other connections see them.
"""

import json
import threading
import time
import uuid

import pytest
from django.db import connection, transaction

from ems import clients, outbox_relay
from ems.audit import AUDIT_COLLECTION, audit_record
from ems.models import OutboxEvent
from ems.outbox import KICK_KEY, KafkaEvent, outbox_write
from ems.outbox_relay import SINKS, SinkReport, Status, relay_pending
from ems.redis_lock import redis_client
from tests.ems.test_outbox_relay_kafka import topic_read

pytestmark = pytest.mark.django_db(transaction=True)

MONGO = OutboxEvent.Sink.MONGO
KAFKA = OutboxEvent.Sink.KAFKA


@pytest.fixture(autouse=True)
def _fresh_backoff():
    def reset():
        keys = [f"ems:outbox:{sink}:{part}" for sink in SINKS for part in ("failures", "retry_at")]
        redis_client().delete(*keys, KICK_KEY)
        outbox_relay._local_backoff.clear()

    reset()
    yield
    reset()


def in_thread(target, *args):
    """Run `target` in a thread with its own database connection; returns (thread, result list)."""
    result: list = []

    def run():
        try:
            result.append(target(*args))
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_two_relays_at_once_publish_every_event_exactly_once_in_order(kafka_server, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = [kafka_server.bootstrap_servers]
    clients.kafka_producer_discard()
    topic = f"ems.test.{uuid.uuid4().hex[:12]}"
    keys = [f"TRK-{n % 4}" for n in range(240)]
    with transaction.atomic():
        outbox_write(
            events=[
                KafkaEvent(topic=topic, key=key, event_type="t", employer_id=1, data={"n": n})
                for n, key in enumerate(keys)
            ]
        )
    start = threading.Barrier(2)

    def relay_until_drained() -> dict:
        counts = {"delivered": 0, "busy": 0}
        start.wait(timeout=30)
        while OutboxEvent.objects.filter(sink=KAFKA, delivered_at__isnull=True).exists():
            report = relay_pending(sink=KAFKA, batch_size=15).sinks[KAFKA]
            counts["delivered"] += report.delivered
            if report.status == Status.BUSY:
                counts["busy"] += 1
                time.sleep(0.005)
        return counts

    try:
        workers = [in_thread(relay_until_drained) for _ in range(2)]
        for thread, _result in workers:
            thread.join(120)
        results = [result[0] for _thread, result in workers]
        # every row was delivered by exactly one of the two relays
        assert sum(result["delivered"] for result in results) == 240
        assert OutboxEvent.objects.filter(delivered_at__isnull=True).count() == 0
        # and the topic holds each event once, each key's events in the order written
        records = topic_read(kafka_server.bootstrap_servers, topic, 240)
        per_key: dict[bytes, list] = {}
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            per_key.setdefault(record.key, []).append(json.loads(record.value)["data"]["n"])
        assert per_key == {f"TRK-{k}".encode(): [n for n in range(240) if n % 4 == k] for k in range(4)}
    finally:
        clients.kafka_producer_discard()


def test_rows_locked_by_another_transaction_are_skipped_not_waited_for(mongo_db):
    # given ten committed audit records, three of which another transaction holds locked
    with transaction.atomic():
        for number in range(10):
            audit_record(actor="ops1", action="member.touched", object_type="member", object_id=number)
    rows = list(OutboxEvent.objects.order_by("id"))
    held_ids = [row.id for row in rows[:3]]
    locked, release = threading.Event(), threading.Event()

    def hold_rows():
        with transaction.atomic():
            list(OutboxEvent.objects.select_for_update().filter(id__in=held_ids))
            locked.set()
            release.wait(30)

    holder, _ = in_thread(hold_rows)
    try:
        assert locked.wait(10)
        # when a relay runs meanwhile, then it delivers the other seven only
        report = relay_pending(sink=MONGO).sinks[MONGO]
        assert (report.status, report.delivered) == (Status.DELIVERED, 7)
        delivered = set(OutboxEvent.objects.filter(delivered_at__isnull=False).values_list("id", flat=True))
        assert delivered == {row.id for row in rows[3:]}
        assert sorted(doc["_id"] for doc in mongo_db[AUDIT_COLLECTION].find()) == sorted(
            str(row.event_id) for row in rows[3:]
        )
    finally:
        release.set()
        holder.join(30)
    # once the lock is gone the rest follow
    assert relay_pending(sink=MONGO).sinks[MONGO].delivered == 3
    assert mongo_db[AUDIT_COLLECTION].count_documents({}) == 10


def test_a_relay_that_finds_the_sink_taken_skips_it(mongo_db):
    with transaction.atomic():
        audit_record(actor="ops1", action="member.touched", object_type="member", object_id=1)
    locked, release = threading.Event(), threading.Event()

    def hold_sink():
        with transaction.atomic():
            assert outbox_relay._sink_lock_try(MONGO)
            locked.set()
            release.wait(30)

    holder, _ = in_thread(hold_sink)
    try:
        assert locked.wait(10)
        report = relay_pending(sink=MONGO)
        assert report.sinks[MONGO] == SinkReport(sink=MONGO, status=Status.BUSY)
        assert OutboxEvent.objects.get().delivered_at is None
        assert mongo_db[AUDIT_COLLECTION].count_documents({}) == 0
    finally:
        release.set()
        holder.join(30)
    assert relay_pending(sink=MONGO).sinks[MONGO].delivered == 1
