"""The transactional outbox: events and audit records written with the change.

Writers call `event_emit` (a Kafka event) or `ems.audit.audit_record` (a Mongo audit
record) inside the transaction that made the change. Both insert an `OutboxEvent` row;
nothing leaves the process until the transaction commits. The relay
(`ems.outbox_relay`) then delivers the rows, at least once.

Event envelope (DESIGN.md "Events"):
`{"event_id", "type", "occurred_at", "employer_id", "data"}`, keyed by tracking id
(`ems.endorsements`) or account id (`ems.ledger`).
"""

import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from ems.models import OutboxEvent

TOPIC_ENDORSEMENTS = "ems.endorsements"
TOPIC_LEDGER = "ems.ledger"


def _json_safe(data: dict) -> dict:
    import json

    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def event_envelope(*, event_type: str, employer_id: int | None, data: dict, event_id: uuid.UUID) -> dict:
    return {
        "event_id": str(event_id),
        "type": event_type,
        "occurred_at": timezone.now().isoformat(),
        "employer_id": employer_id,
        "data": _json_safe(data),
    }


def event_emit(*, topic: str, key: str, event_type: str, employer_id: int | None, data: dict) -> OutboxEvent:
    """Queue one Kafka event in the current transaction."""
    _require_transaction()
    event_id = uuid.uuid4()
    payload = event_envelope(event_type=event_type, employer_id=employer_id, data=data, event_id=event_id)
    row = OutboxEvent.objects.create(
        event_id=event_id,
        sink=OutboxEvent.Sink.KAFKA,
        destination=topic,
        key=str(key),
        payload=payload,
    )
    _relay_after_commit()
    return row


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


def events_bulk_emit(rows: list[dict]) -> None:
    """Many Kafka events at once (bulk intake): each row has topic, key, event_type, employer_id, data."""
    _require_transaction()
    objects = []
    for row in rows:
        event_id = uuid.uuid4()
        payload = event_envelope(
            event_type=row["event_type"],
            employer_id=row["employer_id"],
            data=row["data"],
            event_id=event_id,
        )
        objects.append(
            OutboxEvent(
                event_id=event_id,
                sink=OutboxEvent.Sink.KAFKA,
                destination=row["topic"],
                key=str(row["key"]),
                payload=payload,
            )
        )
    OutboxEvent.objects.bulk_create(objects, batch_size=1000)
    _relay_after_commit()


def _relay_after_commit() -> None:
    # A hint to relay soon; beat and `relay_outbox --loop` deliver the rows regardless.
    def kick() -> None:
        from ems.outbox_relay import relay_soon

        relay_soon()

    transaction.on_commit(kick, robust=True)


def _require_transaction() -> None:
    if transaction.get_autocommit():
        raise RuntimeError("outbox rows must be written inside the transaction that made the change")
