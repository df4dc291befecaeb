"""ems/outbox_relay.py with MongoDB: exactly-once documents, rollbacks, sink outages, backoff.

Kafka delivery: test_outbox_relay_kafka.py. Concurrent relays: test_outbox_relay_concurrency.py.
"""

import datetime
import socket

import pytest
from django.db import transaction

from ems import clients, outbox_relay
from ems.audit import AUDIT_COLLECTION, audit_record
from ems.audit_reader import audit_for_object
from ems.embedded import start_mongo_wire
from ems.models import OutboxEvent
from ems.outbox import KICK_KEY, TOPIC_ENDORSEMENTS, KafkaEvent, document_emit, outbox_write
from ems.outbox_relay import (
    SINKS,
    SinkReport,
    Status,
    backoff_delay,
    backoff_remaining,
    outbox_backoff_clear,
    relay_pending,
)
from ems.redis_lock import redis_client

pytestmark = pytest.mark.django_db

MONGO = OutboxEvent.Sink.MONGO
KAFKA = OutboxEvent.Sink.KAFKA
MONGO_ERRORS = {"AutoReconnect", "ServerSelectionTimeoutError", "NetworkTimeout", "ConnectionFailure"}


def backoff_reset(client) -> None:
    keys = [f"ems:outbox:{sink}:{part}" for sink in SINKS for part in ("failures", "retry_at")]
    client.delete(*keys, KICK_KEY)
    outbox_relay._local_backoff.clear()


@pytest.fixture(autouse=True)
def _fresh_backoff(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = []  # these tests are about MongoDB; Kafka rows stay pending
    client = redis_client()  # the real Redis, even if a test points REDIS_URL elsewhere
    backoff_reset(client)
    yield
    backoff_reset(client)


def audit_touch(count: int, *, object_type: str = "member", start: int = 0) -> list[OutboxEvent]:
    with transaction.atomic():
        for number in range(start, start + count):
            audit_record(actor="ops1", action="member.touched", object_type=object_type, object_id=number)
    return list(OutboxEvent.objects.filter(sink=MONGO).order_by("id"))


def mongo_ids(database) -> list[str]:
    return sorted(document["_id"] for document in database[AUDIT_COLLECTION].find({}, {"_id": 1}))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- delivery -------------------------------------------------------------------------


def test_audit_record_arrives_in_mongo_as_the_exact_document(mongo_db):
    # given an audit record written in a transaction
    with transaction.atomic():
        audit_record(
            actor="ops1",
            action="member.corrected",
            object_type="member",
            object_id=42,
            employer_id=7,
            before={"first_name": "Asha"},
            after={"first_name": "Asha R"},
            note="typo in the name",
        )
    row = OutboxEvent.objects.get()
    # when the relay runs
    report = relay_pending()
    # then it is delivered once, with _id = event_id and `at` a date (BSON keeps milliseconds)
    assert report.sinks[MONGO] == SinkReport(sink=MONGO, status=Status.DELIVERED, delivered=1)
    assert report.sinks[KAFKA] == SinkReport(sink=KAFKA, status=Status.DISABLED)
    row.refresh_from_db()
    assert row.delivered_at is not None
    assert (row.attempts, row.last_error) == (0, "")
    written_at = datetime.datetime.fromisoformat(row.payload["at"])
    assert mongo_db[AUDIT_COLLECTION].find_one({"_id": str(row.event_id)}) == {
        "_id": str(row.event_id),
        "event_id": str(row.event_id),
        "at": written_at.replace(microsecond=written_at.microsecond // 1000 * 1000),
        "actor": "ops1",
        "action": "member.corrected",
        "object_type": "member",
        "object_id": "42",
        "employer_id": 7,
        "before": {"first_name": "Asha"},
        "after": {"first_name": "Asha R"},
        "note": "typo in the name",
        "request_id": "",
    }
    # and the audit reader finds it
    assert [record["event_id"] for record in audit_for_object(object_type="member", object_id=42)] == [
        str(row.event_id)
    ]


def test_rows_of_a_rolled_back_transaction_never_appear(mongo_db):
    # given a transaction that writes an audit record and an event, then fails
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        audit_record(actor="ops1", action="member.touched", object_type="member", object_id=1)
        outbox_write(
            events=[KafkaEvent(topic=TOPIC_ENDORSEMENTS, key="T1", event_type="x", employer_id=1, data={})]
        )
        raise ZeroDivisionError
    # when the relay runs
    report = relay_pending()
    # then there was nothing to deliver, anywhere
    assert OutboxEvent.objects.count() == 0
    assert report.sinks[MONGO].status == Status.IDLE
    assert mongo_db[AUDIT_COLLECTION].count_documents({}) == 0


def test_relaying_twice_delivers_each_document_exactly_once(mongo_db):
    rows = audit_touch(5)
    assert relay_pending().sinks[MONGO].delivered == 5
    # a second run finds nothing
    assert relay_pending().sinks[MONGO] == SinkReport(sink=MONGO, status=Status.IDLE)
    # a crash after Mongo acknowledged but before the rows were marked: all go again...
    OutboxEvent.objects.update(delivered_at=None)
    report = relay_pending()
    # ...and the duplicates are no-ops
    assert report.sinks[MONGO] == SinkReport(sink=MONGO, status=Status.DELIVERED, delivered=5)
    assert mongo_ids(mongo_db) == sorted(str(row.event_id) for row in rows)
    assert OutboxEvent.objects.filter(delivered_at__isnull=True).count() == 0


def test_rows_are_delivered_in_batches_to_their_own_collections(mongo_db):
    with transaction.atomic():
        for number in range(7):
            audit_record(actor="ops1", action="member.touched", object_type="member", object_id=number)
            document_emit(collection="insurer_exchanges", document={"insurer_id": 3, "n": number})
    report = relay_pending(batch_size=4)
    assert report.sinks[MONGO] == SinkReport(sink=MONGO, status=Status.DELIVERED, delivered=14)
    assert mongo_db[AUDIT_COLLECTION].count_documents({}) == 7
    assert sorted(doc["n"] for doc in mongo_db["insurer_exchanges"].find()) == list(range(7))


def test_max_batches_bounds_one_run(mongo_db):
    audit_touch(10)
    assert relay_pending(batch_size=3, max_batches=2).sinks[MONGO].delivered == 6
    assert OutboxEvent.objects.filter(delivered_at__isnull=True).count() == 4
    assert relay_pending(batch_size=3).sinks[MONGO].delivered == 4


def test_kafka_rows_stay_pending_while_kafka_is_not_configured(mongo_db):
    with transaction.atomic():
        event = KafkaEvent(
            topic=TOPIC_ENDORSEMENTS, key="T1", event_type="endorsement.received", employer_id=1, data={}
        )
        outbox_write(events=[event])
    report = relay_pending()
    assert report.sinks[KAFKA] == SinkReport(sink=KAFKA, status=Status.DISABLED)
    row = OutboxEvent.objects.get()
    assert (row.delivered_at, row.attempts, row.last_error) == (None, 0, "")


# --- MongoDB down, backoff, catch-up ----------------------------------------------------


@pytest.fixture
def own_mongo(settings, tmp_path):
    """A Mongo-wire server of this test's own, on a file so it can be stopped and restarted."""
    data_path = tmp_path / "audit.db"
    server = start_mongo_wire(data_path=data_path)
    settings.MONGO_URL = server.url
    clients.reset()
    servers = [server]

    def restart():
        servers.append(start_mongo_wire(port=server.port, data_path=data_path))
        return servers[-1]

    yield server, restart
    clients.reset()
    for each in servers:
        each.stop()


def test_mongo_down_keeps_rows_pending_backs_off_then_catches_up(own_mongo, settings):
    server, restart = own_mongo
    settings.OUTBOX_BACKOFF_BASE_SECONDS = 60
    # given one delivered batch, then MongoDB goes down and more records are written
    first = audit_touch(3)
    assert relay_pending().sinks[MONGO].delivered == 3
    server.stop()
    second = [row for row in audit_touch(4, start=3) if row.delivered_at is None]
    assert len(second) == 4

    # when the relay runs, then the rows stay pending with the attempt and the error recorded
    report = relay_pending().sinks[MONGO]
    assert (report.status, report.delivered, report.failed) == (Status.FAILED, 0, 4)
    assert 30 <= report.retry_in_seconds <= 60
    pending = list(OutboxEvent.objects.filter(delivered_at__isnull=True).order_by("id"))
    assert [row.id for row in pending] == [row.id for row in second]
    assert {row.attempts for row in pending} == {1}
    assert {row.last_error.split(":")[0] for row in pending} <= MONGO_ERRORS

    # and the next run respects the backoff: the sink is not tried, nothing changes
    report = relay_pending().sinks[MONGO]
    assert report.status == Status.BACKING_OFF
    assert 0 < report.retry_in_seconds <= 60
    assert {row.attempts for row in OutboxEvent.objects.filter(delivered_at__isnull=True)} == {1}

    # when MongoDB is back, the backoff still holds until it ends (here: ops "retry now")
    restart()
    assert relay_pending().sinks[MONGO].status == Status.BACKING_OFF
    assert outbox_backoff_clear(sinks=[MONGO], actor="ops1") == [MONGO]
    assert backoff_remaining(MONGO) == 0
    report = relay_pending().sinks[MONGO]

    # then everything is delivered (the 4 waiting rows and the audit record of the retry), nothing twice
    assert (report.status, report.delivered) == (Status.DELIVERED, 5)
    assert OutboxEvent.objects.filter(delivered_at__isnull=True).count() == 0
    every_row = OutboxEvent.objects.filter(sink=MONGO)
    assert mongo_ids(clients.mongo_db()) == sorted(str(row.event_id) for row in every_row)
    assert len(every_row) == len(first) + len(second) + 1
    cleared = clients.mongo_db()[AUDIT_COLLECTION].find_one({"action": "outbox.backoff_cleared"})
    assert (cleared["actor"], cleared["object_type"], cleared["object_id"]) == ("ops1", "outbox_sink", MONGO)


def test_unreachable_mongo_at_first_use_fails_the_sink_and_backs_off(settings):
    settings.MONGO_URL = f"mongodb://127.0.0.1:{closed_port()}/"
    clients.reset()
    try:
        rows = audit_touch(2)
        report = relay_pending().sinks[MONGO]
    finally:
        clients.reset()
    assert (report.status, report.delivered, report.failed) == (Status.FAILED, 0, 2)
    assert backoff_remaining(MONGO) > 0
    assert int(redis_client().get(f"ems:outbox:{MONGO}:failures")) == 1
    assert [(row.attempts, row.delivered_at) for row in OutboxEvent.objects.order_by("id")] == [
        (1, None) for _ in rows
    ]


def test_consecutive_failures_double_the_backoff():
    for failures in range(1, 12):
        ceiling = min(300.0, 1.0 * 2 ** (failures - 1))
        delays = [backoff_delay(failures) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), failures


def test_a_second_failure_counts_up_in_redis(settings):
    settings.OUTBOX_BACKOFF_BASE_SECONDS = 10
    first = outbox_relay._backoff_failure_record(MONGO)
    second = outbox_relay._backoff_failure_record(MONGO)
    assert 5 <= first <= 10
    assert 10 <= second <= 20
    assert int(redis_client().get(f"ems:outbox:{MONGO}:failures")) == 2
    assert 9 < backoff_remaining(MONGO) <= 20


def test_with_redis_down_the_relay_still_delivers_and_keeps_backoff_in_process(mongo_db, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    # delivery does not need Redis
    audit_touch(2)
    assert relay_pending().sinks[MONGO].delivered == 2
    # a failure's backoff is kept in this process while Redis is down
    settings.OUTBOX_BACKOFF_BASE_SECONDS = 60
    outbox_relay._backoff_failure_record(MONGO)
    assert 30 <= backoff_remaining(MONGO) <= 60
    assert relay_pending().sinks[MONGO].status == Status.BACKING_OFF


def test_the_celery_task_relays_and_reports(mongo_db):
    from ems.tasks import outbox_relay as task

    audit_touch(2)
    result = task.delay().get()
    assert result["delivered"] == 2
    assert result["sinks"]["MONGO"]["status"] == Status.DELIVERED
