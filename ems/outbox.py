"""The transactional outbox: events and audit records written with the change.

Writers queue rows inside the transaction that made the change; nothing leaves the process
until it commits. The relay (`ems.outbox_relay`) then delivers the rows, at least once.
- `outbox_write` queues Kafka events (`KafkaEvent`) and Mongo documents (`MongoDocument`)
  in ONE INSERT, optionally with the caller's own statements in the same round trip: the
  hot paths use it, so a money movement or an endorsement costs one outbox round trip.
- `events_bulk_emit` stores many events (a file's chunk) as group rows of up to 1,000
  events, which the relay sends as one message each (`kafka_messages`).
- `document_emit` queues one document; `ems.audit.audit_record` writes audit records with it.
Payloads are JSON-encoded once (DjangoJSONEncoder) and stored as sent.

Event envelope (DESIGN.md "Events"), built in one place (`_envelope`):
`{"event_id", "type", "occurred_at", "employer_id", "data"}`, keyed by tracking id
(`ems.endorsements`) or account id (`ems.ledger`).

After a commit that wrote rows, `relay_soon` queues one relay task (de-duplicated across
processes), sent by its name so this module does not import the relay or the tasks.
"""

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import structlog
from celery import signature
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError
from redis import RedisError

from ems.models import OutboxEvent
from ems.redis_lock import redis_client

log = structlog.get_logger(__name__)

TOPIC_ENDORSEMENTS = "ems.endorsements"
TOPIC_LEDGER = "ems.ledger"
# Events in one group row (events_bulk_emit): about 250 KB of JSON.
GROUP_MAX_EVENTS = 1000
# The relay's Celery task (`ems.tasks.outbox_relay`), sent by name.
RELAY_TASK = "ems.tasks.outbox_relay"
KICK_KEY = "ems:outbox:kick"


_ENCODER = DjangoJSONEncoder(separators=(",", ":"))


def _json_safe(data: dict) -> dict:
    return json.loads(_ENCODER.encode(data))


@dataclass(frozen=True)
class KafkaEvent:
    """One Kafka event: its topic, its key (tracking id, account id) and its envelope's fields."""

    topic: str
    key: str
    event_type: str
    employer_id: int | None
    data: dict


@dataclass(frozen=True)
class MongoDocument:
    """One document for `outbox_write` (the arguments of `document_emit`)."""

    collection: str
    document: dict


def _envelope(
    *, event_id: uuid.UUID, event_type: str, occurred_at: str, employer_id: int | None, data
) -> dict:
    return {
        "event_id": str(event_id),
        "type": event_type,
        "occurred_at": occurred_at,
        "employer_id": employer_id,
        "data": data,
    }


def document_emit(*, collection: str, document: dict) -> OutboxEvent:
    """Queue one MongoDB document in the current transaction."""
    _require_transaction()
    event_id = uuid.uuid4()
    document = {**_json_safe(document), "event_id": str(event_id)}
    row = OutboxEvent.objects.create(
        event_id=event_id,
        sink=OutboxEvent.Sink.MONGO,
        destination=collection,
        payload=document,
    )
    _relay_after_commit()
    return row


def events_bulk_emit(topic: str, events: Iterable[tuple[str, str, int | None, dict]]) -> int:
    """Many Kafka events at once (a file's chunk) in few outbox rows. Returns the rows written.

    `events` are (key, event type, employer id, data). Instead of one outbox row per event,
    they go into group rows of up to GROUP_MAX_EVENTS (payload `{"occurred_at", "group":
    [[key, type, employer_id, data], ...]}`, `event_count` = how many). The relay sends
    every event of a group as its own message, keyed as given, with the envelope
    `outbox_write` would have written and its own `event_id` (`group_event_id`: derived from
    the group row's id and the event's place, so a redelivered group carries the same
    ids). One row per 1,000 events instead of 1,000 rows is what lets a 100,000-row file
    store its events in a few milliseconds.
    """
    _require_transaction()
    occurred_at = timezone.now().isoformat()
    groups = []
    part: list = []
    for key, event_type, employer_id, data in events:
        part.append([str(key), event_type, employer_id, data])
        if len(part) == GROUP_MAX_EVENTS:
            groups.append(_group_row(topic, occurred_at, part))
            part = []
    if part:
        groups.append(_group_row(topic, occurred_at, part))
    _rows_insert(groups)
    return len(groups)


def _group_row(topic: str, occurred_at: str, events: list) -> tuple:
    payload = {"occurred_at": occurred_at, "group": events}
    return (uuid.uuid4(), OutboxEvent.Sink.KAFKA.value, topic, "", payload, len(events))


def group_event_id(group_id: uuid.UUID, index: int) -> uuid.UUID:
    """The event id of the `index`-th event (from 0) of a group row."""
    return uuid.uuid5(group_id, str(index))


def kafka_messages(row: OutboxEvent) -> list[tuple[str | None, dict]]:
    """The (key, envelope) messages a Kafka outbox row stands for: itself, or each event of its group."""
    group = row.payload.get("group")  # a plain envelope has no such key
    if group is None:
        return [(row.key or None, row.payload)]
    occurred_at = row.payload.get("occurred_at")
    return [
        (
            key or None,
            _envelope(
                event_id=group_event_id(row.event_id, index),
                event_type=event_type,
                occurred_at=occurred_at,
                employer_id=employer_id,
                data=data,
            ),
        )
        for index, (key, event_type, employer_id, data) in enumerate(group)
    ]


def outbox_write(
    *,
    events: list[KafkaEvent] = (),
    documents: list[MongoDocument] = (),
    together_with: tuple[str, list] | None = None,
    first: tuple[str, list] | None = None,
) -> tuple | None:
    """Queue Kafka events and Mongo documents in the current transaction, in one INSERT.

    A document's row is the one `document_emit` would write; the events get the lower
    ids, in the order given.

    The caller's own writes can go in the same round trip (on PostgreSQL, as CTEs of one
    statement; elsewhere they run just before, in order):
    - `first`: an `INSERT ... RETURNING` whose row the caller needs (a new row's id);
      outbox_write returns that row. `together_with` may read it as `first_row`.
    - `together_with`: a data-modifying statement `(sql, params)` whose result the caller
      does not need (e.g. a row for an id it already has, or for `first_row`'s id).
    The statements touch different tables from the outbox, so none depends on the outbox
    rows; only `together_with` may read `first_row`.
    """
    _require_transaction()
    now = timezone.now()
    occurred_at = now.isoformat()
    rows: list[tuple] = []
    for event in events:
        event_id = uuid.uuid4()
        payload = _envelope(
            event_id=event_id,
            event_type=event.event_type,
            occurred_at=occurred_at,
            employer_id=event.employer_id,
            data=event.data,
        )
        rows.append((event_id, OutboxEvent.Sink.KAFKA.value, event.topic, str(event.key), payload))
    for document in documents:
        event_id = uuid.uuid4()
        payload = {**document.document, "event_id": str(event_id)}
        rows.append((event_id, OutboxEvent.Sink.MONGO.value, document.collection, "", payload))
    if not rows and together_with is None and first is None:
        return None
    return _rows_insert([(*row, 1) for row in rows], together_with=together_with, first=first)


_OUTBOX_COLUMNS = "(event_id, sink, destination, key, payload, created_at, attempts, last_error, event_count)"
_OUTBOX_ROW = "(%s, %s, %s, %s, %s::jsonb, %s, 0, '', %s)"


def _rows_insert(
    rows: list[tuple],
    *,
    together_with: tuple[str, list] | None = None,
    first: tuple[str, list] | None = None,
) -> tuple | None:
    """Insert (event_id, sink, destination, key, payload, event_count) rows in one statement,
    with the caller's `first` and `together_with` statements (see `outbox_write`)."""
    now = timezone.now()
    if connection.vendor != "postgresql" or not rows:
        returned = _statements_in_turn(first, together_with)
        if rows:
            # SQLite (`make run`): the ORM adapts the values; the payloads are the same.
            OutboxEvent.objects.bulk_create(
                [
                    OutboxEvent(
                        event_id=event_id,
                        sink=sink,
                        destination=destination,
                        key=key,
                        payload=_json_safe(payload),
                        created_at=now,
                        event_count=count,
                    )
                    for event_id, sink, destination, key, payload, count in rows
                ]
            )
            _relay_after_commit()
        return returned
    ctes: list[str] = []
    params: list = []
    if first is not None:
        ctes.append(f"first_row AS ({first[0]})")
        params += first[1]
    if together_with is not None:
        ctes.append(f"together AS ({together_with[0]})")
        params += together_with[1]
    insert = f"INSERT INTO {OutboxEvent._meta.db_table} {_OUTBOX_COLUMNS} VALUES " + ", ".join(
        [_OUTBOX_ROW] * len(rows)
    )
    for event_id, sink, destination, key, payload, count in rows:
        params += [event_id, sink, destination, key, _ENCODER.encode(payload), now, count]
    if first is not None:
        sql = f"WITH {', '.join(ctes)}, outbox_rows AS ({insert}) SELECT * FROM first_row"
    elif ctes:
        sql = f"WITH {', '.join(ctes)} {insert}"
    else:
        sql = insert
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchone() if first is not None else None
    _relay_after_commit()
    return returned


def _statements_in_turn(
    first: tuple[str, list] | None, together_with: tuple[str, list] | None
) -> tuple | None:
    """`first` then `together_with` as separate statements; `first_row` is given to the second
    as a one-row CTE of the values the first returned."""
    returned = None
    with connection.cursor() as cursor:
        if first is not None:
            cursor.execute(*first)
            returned = cursor.fetchone()
            columns = [column[0] for column in cursor.description]
        if together_with is not None:
            sql, params = together_with
            if first is not None:
                names = ", ".join(connection.ops.quote_name(name) for name in columns)
                values = ", ".join(["%s"] * len(columns))
                sql = f"WITH first_row ({names}) AS (VALUES ({values})) {sql}"
                params = [*returned, *params]
            cursor.execute(sql, params)
    return returned


def _relay_after_commit() -> None:
    # A hint to relay soon (one per write call; `relay_soon` de-duplicates across
    # processes); beat and `relay_outbox --loop` deliver the rows regardless.
    transaction.on_commit(relay_soon, robust=True)


# Until when (time.monotonic()) the relay task this process last queued will carry what
# commits here: the task runs `seconds` after the kick, so rows committed before then are
# in its run. Within that window the SET NX below would fail anyway (the key lives as
# long), so this process skips the Redis round trip: one fewer per API write.
_kick_covers_until = 0.0


def relay_soon() -> None:
    """After a commit that wrote outbox rows: queue one relay task, de-duplicated across processes.

    At most one task per `OUTBOX_RELAY_KICK_SECONDS` (when `OUTBOX_RELAY_ON_COMMIT` is on),
    queued with that countdown so it also covers the commits it de-duplicated. The task is
    sent by name: where it is registered (a worker, the tests) it runs as its own
    `apply_async` says, elsewhere it is published for a worker.
    """
    global _kick_covers_until
    if not getattr(settings, "OUTBOX_RELAY_ON_COMMIT", False):
        return
    seconds = float(getattr(settings, "OUTBOX_RELAY_KICK_SECONDS", 1.0))
    started = time.monotonic()
    if started < _kick_covers_until:
        return
    try:
        first = redis_client().set(KICK_KEY, "1", nx=True, px=max(1, int(seconds * 1000)))
    except RedisError:
        return  # beat and the relay loop catch up
    if not first:
        return
    _kick_covers_until = started + seconds
    try:
        signature(RELAY_TASK).apply_async(countdown=seconds)
    except OperationalError:
        log.warning("outbox.kick_failed")


def _require_transaction() -> None:
    if transaction.get_autocommit():
        raise RuntimeError("outbox rows must be written inside the transaction that made the change")
