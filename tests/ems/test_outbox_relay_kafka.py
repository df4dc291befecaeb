"""ems/outbox_relay.py with the Kafka-wire broker, read back by a real kafka-python consumer."""

import json
import time
import uuid

import pytest
from django.db import transaction
from kafka import KafkaConsumer, TopicPartition

from ems import clients, outbox_relay
from ems.embedded import start_kafka_wire
from ems.models import OutboxEvent
from ems.outbox import KICK_KEY, KafkaEvent, events_bulk_emit, outbox_write
from ems.outbox_relay import (
    SINKS,
    SinkReport,
    Status,
    backoff_remaining,
    outbox_backoff_clear,
    relay_pending,
)
from ems.redis_lock import redis_client

pytestmark = pytest.mark.django_db

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


@pytest.fixture
def kafka(kafka_server, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = [kafka_server.bootstrap_servers]
    clients.kafka_producer_discard()
    yield kafka_server
    clients.kafka_producer_discard()


def unique_topic() -> str:
    return f"ems.test.{uuid.uuid4().hex[:12]}"


def events_emit(topic: str, keys: list[str], *, start: int = 0) -> list[OutboxEvent]:
    with transaction.atomic():
        for number, key in enumerate(keys, start=start):
            event = KafkaEvent(
                topic=topic,
                key=key,
                event_type="endorsement.validated",
                employer_id=7,
                data={"tracking_id": key, "n": number},
            )
            outbox_write(events=[event])
    return list(OutboxEvent.objects.filter(sink=KAFKA, destination=topic).order_by("id"))


def topic_read(
    bootstrap_servers: str, topic: str, expected: int, *, limit: float = 20.0, distinct: int | None = None
) -> list:
    """Every record of `topic` (all partitions, from the beginning).

    Reads until `expected` records arrived, then keeps polling for another second so a
    duplicate beyond `expected` would show up; asserts they carry `distinct` event ids
    (default: as many as records). (Tansu's end offsets count record batches,
    not records, so they cannot be used for this.)
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + limit
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.1)
        assert partitions, f"topic {topic} has no partitions"
        assigned = [TopicPartition(topic, number) for number in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records = []
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=250).values():
                records.extend(batch)
        grace = time.monotonic() + 1.0
        while time.monotonic() < grace:
            for batch in consumer.poll(timeout_ms=250).values():
                records.extend(batch)
        assert len(records) == expected
        event_ids = {json.loads(record.value)["event_id"] for record in records}
        assert len(event_ids) == (expected if distinct is None else distinct)
        return records
    finally:
        consumer.close()


def test_events_arrive_with_their_topic_key_and_envelope(kafka):
    # given three events for two keys
    topic = unique_topic()
    rows = events_emit(topic, ["TRK-1", "TRK-2", "TRK-1"])
    # when the relay runs
    report = relay_pending(sink=KAFKA)
    # then each is acknowledged and marked delivered
    assert report.sinks == {KAFKA: SinkReport(sink=KAFKA, status=Status.DELIVERED, delivered=3)}
    assert all(row.delivered_at for row in OutboxEvent.objects.all())
    # and a consumer reads exactly those three, keyed, with the envelope as written
    records = topic_read(kafka.bootstrap_servers, topic, 3)
    by_event = {json.loads(record.value)["event_id"]: record for record in records}
    assert sorted(by_event) == sorted(str(row.event_id) for row in rows)
    for row in rows:
        record = by_event[str(row.event_id)]
        assert record.topic == topic
        assert record.key == row.key.encode()
        assert json.loads(record.value) == row.payload
        assert sorted(row.payload) == ["data", "employer_id", "event_id", "occurred_at", "type"]
        assert row.payload["type"] == "endorsement.validated"
        assert row.payload["employer_id"] == 7
    # and one key's events are in one partition, in the order written
    trk1 = [record for record in records if record.key == b"TRK-1"]
    assert len({record.partition for record in trk1}) == 1
    assert [json.loads(record.value)["data"]["n"] for record in sorted(trk1, key=lambda r: r.offset)] == [
        0,
        2,
    ]


def test_bulk_events_go_as_group_rows_and_leave_as_one_message_each_in_order(kafka):
    # given 2,500 events written at once: three group rows
    topic = unique_topic()
    with transaction.atomic():
        written = events_bulk_emit(topic, [("ACC-1", "ledger.hold_placed", 1, {"n": n}) for n in range(2500)])
    rows = list(OutboxEvent.objects.filter(destination=topic).order_by("id"))
    assert written == 3
    assert [row.event_count for row in rows] == [1000, 1000, 500]
    # when a relay runs one batch of at most 1,500 messages: the first group only
    first = relay_pending(sink=KAFKA, batch_size=1500, max_batches=1).sinks[KAFKA]
    assert (first.status, first.delivered) == (Status.DELIVERED, 1)
    # and then the rest
    rest = relay_pending(sink=KAFKA, batch_size=1500).sinks[KAFKA]
    assert (rest.status, rest.delivered) == (Status.DELIVERED, 2)
    # then the topic holds one message per event, in order, each with the envelope and its own id
    records = sorted(topic_read(kafka.bootstrap_servers, topic, 2500), key=lambda r: r.offset)
    values = [json.loads(record.value) for record in records]
    assert [value["data"]["n"] for value in values] == list(range(2500))
    assert {record.key for record in records} == {b"ACC-1"}
    assert values[1001] == {
        "event_id": str(uuid.uuid5(rows[1].event_id, "1")),
        "type": "ledger.hold_placed",
        "occurred_at": rows[1].payload["occurred_at"],
        "employer_id": 1,
        "data": {"n": 1001},
    }
    assert len({value["event_id"] for value in values}) == 2500


def test_a_redelivered_group_carries_the_same_event_ids(kafka):
    # given a group row delivered once
    topic = unique_topic()
    with transaction.atomic():
        events_bulk_emit(topic, [(f"TRK-{n}", "t", 1, {"n": n}) for n in range(150)])
    assert relay_pending(sink=KAFKA).sinks[KAFKA].delivered == 1
    # when it is sent again (a relay that died before marking it delivered)
    OutboxEvent.objects.filter(destination=topic).update(delivered_at=None)
    assert relay_pending(sink=KAFKA).sinks[KAFKA].delivered == 1
    # then each event went twice under one id: consumers dedupe by event_id
    records = topic_read(kafka.bootstrap_servers, topic, 300, distinct=150)
    ids: dict[str, list] = {}
    for record in records:
        value = json.loads(record.value)
        ids.setdefault(value["event_id"], []).append((record.key, value["data"]["n"]))
    assert len(ids) == 150
    assert all(len(copies) == 2 and copies[0] == copies[1] for copies in ids.values())


def test_a_message_the_broker_can_never_take_is_set_aside_and_the_rest_go(kafka):
    # given a too-large event between two normal ones
    topic = unique_topic()
    with transaction.atomic():
        for data in ({"n": 0}, {"blob": "x" * 1_100_000}, {"n": 2}):
            outbox_write(events=[KafkaEvent(topic=topic, key="K", event_type="t", employer_id=1, data=data)])
    huge = OutboxEvent.objects.filter(destination=topic).order_by("id")[1]
    # when the relay runs
    report = relay_pending(sink=KAFKA).sinks[KAFKA]
    # then the two normal ones are delivered, the huge one waits with its error, no backoff
    assert (report.status, report.delivered, report.failed) == (Status.DELIVERED, 2, 1)
    huge.refresh_from_db()
    assert (huge.delivered_at, huge.attempts) == (None, 1)
    assert huge.last_error.startswith("MessageSizeTooLargeError")
    assert backoff_remaining(KAFKA) == 0
    records = topic_read(kafka.bootstrap_servers, topic, 2)
    assert sorted(json.loads(record.value)["data"]["n"] for record in records) == [0, 2]


def test_kafka_rows_wait_while_kafka_is_off_and_go_once_it_is_configured(kafka, settings):
    topic = unique_topic()
    settings.KAFKA_BOOTSTRAP_SERVERS = []
    rows = events_emit(topic, ["A", "B"])
    assert relay_pending(sink=KAFKA).sinks[KAFKA].status == Status.DISABLED
    assert OutboxEvent.objects.filter(delivered_at__isnull=True).count() == 2

    settings.KAFKA_BOOTSTRAP_SERVERS = [kafka.bootstrap_servers]
    assert relay_pending(sink=KAFKA).sinks[KAFKA].delivered == 2
    records = topic_read(kafka.bootstrap_servers, topic, 2)
    assert sorted(json.loads(record.value)["event_id"] for record in records) == sorted(
        str(row.event_id) for row in rows
    )


@pytest.mark.slow
def test_broker_down_rows_wait_then_all_arrive_in_order_once(settings):
    settings.OUTBOX_BACKOFF_BASE_SECONDS = 60
    broker = start_kafka_wire()
    settings.KAFKA_BOOTSTRAP_SERVERS = [broker.bootstrap_servers]
    clients.kafka_producer_discard()
    restarted = None
    try:
        topic = unique_topic()
        # given a broker that took a first event, then went down
        events_emit(topic, ["K"])
        assert relay_pending(sink=KAFKA).sinks[KAFKA].delivered == 1
        broker.stop()
        waiting = events_emit(topic, ["K", "K", "K"], start=1)[1:]

        # when the relay runs, then nothing is marked delivered; attempts and error are recorded
        report = relay_pending(sink=KAFKA).sinks[KAFKA]
        assert (report.status, report.delivered, report.failed) == (Status.FAILED, 0, 3)
        pending = list(OutboxEvent.objects.filter(delivered_at__isnull=True).order_by("id"))
        assert [row.id for row in pending] == [row.id for row in waiting]
        assert {row.attempts for row in pending} == {1}
        assert all(row.last_error.startswith("KafkaTimeoutError") for row in pending)
        # and the sink backs off: the next run does not touch it
        assert relay_pending(sink=KAFKA).sinks[KAFKA].status == Status.BACKING_OFF
        assert {row.attempts for row in OutboxEvent.objects.filter(delivered_at__isnull=True)} == {1}

        # when the broker is back (empty: it keeps data in memory) and the backoff is cleared
        restarted = start_kafka_wire(port=broker.port)
        outbox_backoff_clear(sinks=[KAFKA], actor="ops1")
        report = relay_pending(sink=KAFKA).sinks[KAFKA]

        # then the three waiting events arrive once each, in the order written
        assert (report.status, report.delivered) == (Status.DELIVERED, 3)
        assert OutboxEvent.objects.filter(sink=KAFKA, delivered_at__isnull=True).count() == 0
        records = sorted(topic_read(restarted.bootstrap_servers, topic, 3), key=lambda r: r.offset)
        assert [json.loads(record.value)["event_id"] for record in records] == [
            str(row.event_id) for row in waiting
        ]
    finally:
        clients.kafka_producer_discard()
        broker.stop()
        if restarted is not None:
            restarted.stop()
