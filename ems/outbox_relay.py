"""The outbox relay: delivers `OutboxEvent` rows to Kafka and MongoDB, at least once.

How it works
- `relay_pending()` works sink by sink (MongoDB, then Kafka). For each it claims a batch
  of undelivered rows in id order, sends them, waits for the sink's acknowledgement, and
  only then marks them delivered; it repeats until the sink has nothing left (or
  `max_batches`). A crash between the acknowledgement and the commit redelivers the batch
  later: delivery is at least once and consumers dedupe by `event_id`.
- On PostgreSQL a batch is claimed in one transaction that first takes a transaction-level
  advisory lock for the sink (`pg_try_advisory_xact_lock`; a relay that finds it taken
  skips the sink and reports it `busy`), then `SELECT ... FOR UPDATE SKIP LOCKED` the rows.
  The advisory lock keeps one relay per sink at a time, so rows leave in id order; SKIP
  LOCKED means a relay never waits for, or delivers, a row another transaction has claimed.
  On SQLite (`make run`) there is one relay and row locks do not exist: rows are read,
  sent, then marked in a short write transaction, so the database is not held during I/O.
- Kafka: the per-process producer (`ems.clients.kafka_producer`, `acks="all"`); every
  row is sent with its key (a group row as each of its events, `ems.outbox.kafka_messages`),
  then every future is awaited; a group row is acknowledged when all of its messages are.
  The contiguous prefix that was acknowledged is marked delivered. A row the broker can
  never accept (too large, invalid topic) gets its own error and is left pending for ops,
  without blocking the others.
  Any other failure is a sink failure: the producer is discarded and rebuilt next time.
  When `KAFKA_BOOTSTRAP_SERVERS` is empty the Kafka relay is off and Kafka rows stay
  pending (reported `disabled`); they are delivered once Kafka is configured.
- MongoDB: `insert_many(ordered=False)` per destination collection, each document with
  `_id` = the row's `event_id`, so redelivery is a no-op (duplicate-key write errors count
  as delivered). `at` (an ISO string in the outbox JSON) is stored as a BSON date. The
  audit indexes are ensured before the first MongoDB delivery in each process.
- A sink failure adds 1 to `attempts` and sets `last_error` on the claimed rows not
  delivered, and backs the sink off exponentially (equal jitter, capped at
  `OUTBOX_MAX_BACKOFF_SECONDS`). The backoff lives in Redis (shared by every relay
  process, with a TTL); when Redis is unreachable each process keeps its own. Backoff
  only decides when to try again, so a lost or stale backoff never loses or duplicates a
  row. `outbox_backoff_clear()` (the admin's "retry now") ends it.
- One relay runs: the `manage.py relay_outbox --loop` process (make run, docker-compose).
  A pass logs at INFO only when it moved something (`outbox.delivered`); an idle pass is
  silent. For a deployment without that process, `OUTBOX_RELAY_ON_COMMIT` makes
  `ems.outbox.relay_soon` queue the relay task (`ems.tasks.outbox_relay`, by name) after
  a commit that wrote outbox rows.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime

import structlog
from bson.errors import InvalidDocument
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from kafka.errors import InvalidTopicError, KafkaError, MessageSizeTooLargeError
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
from redis import RedisError

from ems import clients
from ems.audit import audit_indexes_ensure, audit_record
from ems.models import OutboxEvent
from ems.outbox import kafka_messages
from ems.redis_lock import redis_client

log = structlog.get_logger(__name__)

SINKS = (OutboxEvent.Sink.MONGO, OutboxEvent.Sink.KAFKA)
DEFAULT_MAX_BATCHES = 50
#: Seconds to wait for Kafka's acknowledgement of one batch.
KAFKA_ACK_TIMEOUT_SECONDS = 20.0
MONGO_DUPLICATE_KEY = 11000
ERROR_MAX_CHARS = 1000
# pg advisory locks are (int4, int4); the first number namespaces ours ("EMS").
_ADVISORY_NAMESPACE = 0x454D53
_ADVISORY_SINK_IDS = {OutboxEvent.Sink.MONGO: 1, OutboxEvent.Sink.KAFKA: 2}
_FAILURES_TTL_SECONDS = 24 * 3600


class Status:
    """What happened to a sink in one `relay_pending()` call."""

    IDLE = "idle"  # nothing pending
    DELIVERED = "delivered"  # everything claimed went out
    FAILED = "failed"  # the sink failed; now backing off
    BACKING_OFF = "backing_off"  # skipped: still inside the backoff window
    BUSY = "busy"  # skipped: another relay holds this sink
    DISABLED = "disabled"  # Kafka not configured


@dataclass
class SinkReport:
    sink: str
    status: str = Status.IDLE
    delivered: int = 0
    failed: int = 0
    error: str = ""
    retry_in_seconds: float = 0.0


@dataclass
class RelayReport:
    sinks: dict[str, SinkReport] = field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return sum(report.delivered for report in self.sinks.values())

    def as_dict(self) -> dict:
        return {"delivered": self.delivered, "sinks": {name: asdict(r) for name, r in self.sinks.items()}}


@dataclass
class _Delivery:
    """The outcome of sending one batch: ids acknowledged, per-row errors, or a sink error."""

    delivered: list[int] = field(default_factory=list)
    row_errors: dict[int, str] = field(default_factory=dict)
    sink_error: str = ""


# --- the relay ------------------------------------------------------------------------


def relay_pending(
    *,
    sink: str | None = None,
    batch_size: int | None = None,
    max_batches: int = DEFAULT_MAX_BATCHES,
) -> RelayReport:
    """Deliver undelivered outbox rows, in id order per sink, to one sink or all of them."""
    batch_size = batch_size or settings.OUTBOX_RELAY_BATCH
    sinks = SINKS if sink is None else (OutboxEvent.Sink(sink),)
    report = RelayReport()
    for name in sinks:
        report.sinks[name] = _relay_sink(name, batch_size=batch_size, max_batches=max_batches)
    return report


def _relay_sink(sink: str, *, batch_size: int, max_batches: int) -> SinkReport:
    report = SinkReport(sink=sink)
    if sink == OutboxEvent.Sink.KAFKA and not clients.kafka_enabled():
        report.status = Status.DISABLED
        return report
    waiting = backoff_remaining(sink)
    if waiting > 0:
        report.status = Status.BACKING_OFF
        report.retry_in_seconds = round(waiting, 3)
        return report
    for _ in range(max_batches):
        claimed, delivery, more = _relay_batch(sink, batch_size=batch_size)
        if claimed is None:
            report.status = Status.BUSY
            return report
        report.delivered += len(delivery.delivered)
        report.failed += claimed - len(delivery.delivered)
        if delivery.sink_error:
            report.status = Status.FAILED
            report.error = delivery.sink_error
            report.retry_in_seconds = round(_backoff_failure_record(sink), 3)
            log.warning(
                "outbox.sink_failed",
                sink=sink,
                error=delivery.sink_error,
                retry_in_seconds=report.retry_in_seconds,
            )
            return report
        if claimed:
            report.status = Status.DELIVERED
            _backoff_forget(sink)
        if not more or not delivery.delivered:
            break
    if report.delivered:
        log.info("outbox.delivered", sink=sink, rows=report.delivered, failed=report.failed)
    return report


def _relay_batch(sink: str, *, batch_size: int) -> tuple[int | None, _Delivery, bool]:
    """Claim, send and record one batch.

    Returns (rows claimed, or None if busy; delivery; whether more rows may be pending).
    A batch is at most `batch_size` rows and, past its first row, at most `batch_size`
    messages (a group row stands for many; see `ems.outbox.events_bulk_emit`).
    """
    pending = OutboxEvent.objects.filter(sink=sink, delivered_at__isnull=True).order_by("id")
    if connection.vendor == "postgresql":
        with transaction.atomic():
            if not _sink_lock_try(sink):
                return None, _Delivery(), False
            rows, more = _messages_bounded(
                list(pending.select_for_update(skip_locked=True)[:batch_size]), batch_size
            )
            delivery = _deliver(sink, rows)
            _delivery_record(rows, delivery)
        return len(rows), delivery, more
    rows, more = _messages_bounded(list(pending[:batch_size]), batch_size)
    delivery = _deliver(sink, rows)
    with transaction.atomic():
        _delivery_record(rows, delivery)
    return len(rows), delivery, more


def _messages_bounded(fetched: list[OutboxEvent], limit: int) -> tuple[list[OutboxEvent], bool]:
    """The leading rows of at most `limit` fetched that stand for at most `limit` messages
    (always the first row), and whether more rows may be pending after them."""
    total = 0
    for index, row in enumerate(fetched):
        total += row.event_count
        if total > limit and index > 0:
            return fetched[:index], True
    return fetched, len(fetched) == limit


def _sink_lock_try(sink: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(%s, %s)",
            [_ADVISORY_NAMESPACE, _ADVISORY_SINK_IDS[sink]],
        )
        return bool(cursor.fetchone()[0])


def _deliver(sink: str, rows: list[OutboxEvent]) -> _Delivery:
    if not rows:
        return _Delivery()
    if sink == OutboxEvent.Sink.KAFKA:
        return _kafka_deliver(rows)
    return _mongo_deliver(rows)


def _delivery_record(rows: list[OutboxEvent], delivery: _Delivery) -> None:
    if delivery.delivered:
        OutboxEvent.objects.filter(id__in=delivery.delivered).update(delivered_at=timezone.now())
    for row_id, error in delivery.row_errors.items():
        OutboxEvent.objects.filter(id=row_id).update(attempts=F("attempts") + 1, last_error=error)
    if delivery.sink_error:
        done = set(delivery.delivered) | set(delivery.row_errors)
        failed = [row.id for row in rows if row.id not in done]
        if failed:
            OutboxEvent.objects.filter(id__in=failed).update(
                attempts=F("attempts") + 1, last_error=delivery.sink_error
            )


# --- Kafka ------------------------------------------------------------------------------


def _kafka_deliver(rows: list[OutboxEvent]) -> _Delivery:
    # The broker will never accept these rows, however often we retry.
    row_level = (MessageSizeTooLargeError, InvalidTopicError)
    delivery = _Delivery()
    try:
        producer = clients.kafka_producer()
    except (KafkaError, OSError) as exc:
        delivery.sink_error = _describe(exc)
        return delivery

    sent = []
    for row in rows:
        futures = []
        try:
            # A group row stands for many messages; it is delivered when all of them are.
            for key, envelope in kafka_messages(row):
                futures.append(producer.send(row.destination, key=key, value=_json(envelope)))
        except row_level as exc:
            delivery.row_errors[row.id] = _describe(exc)
            continue
        except KafkaError as exc:
            delivery.sink_error = _describe(exc)
            break
        sent.append((row, futures))

    deadline = time.monotonic() + KAFKA_ACK_TIMEOUT_SECONDS
    for row, futures in sent:
        try:
            for future in futures:
                future.get(timeout=max(0.1, deadline - time.monotonic()))
        except row_level as exc:
            delivery.row_errors[row.id] = _describe(exc)
            continue
        except KafkaError as exc:
            # Stop at the first failure: later rows are retried even if they got through,
            # so redelivery keeps id order (consumers dedupe by event_id).
            delivery.sink_error = delivery.sink_error or _describe(exc)
            break
        delivery.delivered.append(row.id)
    if delivery.sink_error:
        clients.kafka_producer_discard()
    return delivery


def _json(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


# --- MongoDB ----------------------------------------------------------------------------

_indexes_ready: set[tuple] = set()


def _mongo_deliver(rows: list[OutboxEvent]) -> _Delivery:
    delivery = _Delivery()
    try:
        database = clients.mongo_db()
        _audit_indexes_once(database)
    except PyMongoError as exc:
        delivery.sink_error = _describe(exc)
        return delivery

    by_collection: dict[str, list[OutboxEvent]] = {}
    for row in rows:
        by_collection.setdefault(row.destination, []).append(row)
    for destination, group in by_collection.items():
        collection = database[destination]
        try:
            try:
                collection.insert_many([_mongo_document(row) for row in group], ordered=False)
            except BulkWriteError as exc:
                if exc.details.get("writeConcernErrors"):
                    raise
                for error in exc.details.get("writeErrors", []):
                    if error.get("code") != MONGO_DUPLICATE_KEY:
                        row = group[error["index"]]
                        delivery.row_errors[row.id] = _trim(f"{error.get('code')}: {error.get('errmsg')}")
            except InvalidDocument:
                # A document BSON cannot encode: find it one by one so the others still go.
                _mongo_insert_each(collection, group, delivery)
        except PyMongoError as exc:
            delivery.sink_error = _describe(exc)
            return delivery
        delivery.delivered.extend(row.id for row in group if row.id not in delivery.row_errors)
    return delivery


def _mongo_insert_each(collection, group: list[OutboxEvent], delivery: _Delivery) -> None:
    for row in group:
        try:
            collection.insert_one(_mongo_document(row))
        except DuplicateKeyError:
            pass
        except InvalidDocument as exc:
            delivery.row_errors[row.id] = _describe(exc)


def _mongo_document(row: OutboxEvent) -> dict:
    document = {**row.payload, "_id": str(row.event_id)}
    document.setdefault("event_id", str(row.event_id))
    if isinstance(document.get("at"), str):
        try:
            document["at"] = datetime.fromisoformat(document["at"])
        except ValueError:
            pass
    return document


def _audit_indexes_once(database) -> None:
    key = (os.getpid(), settings.MONGO_URL, settings.MONGO_DB)
    if key not in _indexes_ready:
        audit_indexes_ensure(database=database)
        _indexes_ready.add(key)


# --- backoff ------------------------------------------------------------------------------

# Used only while Redis is unreachable: {sink: (failures, time.monotonic() to retry at)}.
_local_backoff: dict[str, tuple[int, float]] = {}


def backoff_delay(failures: int) -> float:
    """Seconds to wait after `failures` consecutive failures: equal jitter below a capped doubling."""
    base = float(getattr(settings, "OUTBOX_BACKOFF_BASE_SECONDS", 1.0))
    ceiling = min(float(settings.OUTBOX_MAX_BACKOFF_SECONDS), base * 2 ** min(max(failures, 1) - 1, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def backoff_remaining(sink: str) -> float:
    """Seconds until the relay may try `sink` again (0 when it may try now)."""
    try:
        milliseconds = redis_client().pttl(_retry_key(sink))
    except RedisError:
        _failures, retry_at = _local_backoff.get(sink, (0, 0.0))
        return max(0.0, retry_at - time.monotonic())
    return milliseconds / 1000 if milliseconds > 0 else 0.0


def _backoff_failure_record(sink: str) -> float:
    failures = _local_backoff.get(sink, (0, 0.0))[0] + 1
    try:
        client = redis_client()
        pipeline = client.pipeline()
        pipeline.incr(_failures_key(sink))
        pipeline.expire(_failures_key(sink), _FAILURES_TTL_SECONDS)
        failures = int(pipeline.execute()[0])
        delay = backoff_delay(failures)
        client.set(_retry_key(sink), failures, px=max(1, int(delay * 1000)))
    except RedisError:
        delay = backoff_delay(failures)
    _local_backoff[sink] = (failures, time.monotonic() + delay)
    return delay


def _backoff_forget(sink: str) -> None:
    _local_backoff.pop(sink, None)
    try:
        redis_client().delete(_failures_key(sink), _retry_key(sink))
    except RedisError:
        pass


def _failures_key(sink: str) -> str:
    return f"ems:outbox:{sink}:failures"


def _retry_key(sink: str) -> str:
    return f"ems:outbox:{sink}:retry_at"


def outbox_backoff_clear(*, sinks: Iterable[str], actor: str) -> list[str]:
    """End the backoff of `sinks` so the next relay run tries them now ("retry now").

    Touches no outbox row. Records one audit entry per sink.
    """
    cleared = sorted({OutboxEvent.Sink(sink).value for sink in sinks})
    with transaction.atomic():
        for sink in cleared:
            _backoff_forget(sink)
            audit_record(
                actor=actor,
                action="outbox.backoff_cleared",
                object_type="outbox_sink",
                object_id=sink,
            )
    log.info("outbox.backoff_cleared", sinks=cleared, actor=actor)
    return cleared


# --- helpers ------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    name, text = type(exc).__name__, str(exc)
    return _trim(text if text.startswith(name) else f"{name}: {text}")


def _trim(text: str) -> str:
    return text[:ERROR_MAX_CHARS]
