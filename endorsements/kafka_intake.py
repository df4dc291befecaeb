"""Kafka intake: HR systems that publish endorsements instead of calling the API.

How it works
- Topic `ems.endorsement.requests` (settings `KAFKA_REQUESTS_TOPIC`); each message is one
  endorsement body, exactly what `POST /api/v1/endorsements/` takes (a JSON object), keyed
  by the sender's idempotency key, with the sending API client's id in the header
  `ems-client-id`. The client must exist and be active; its employer is the tenant.
- Each message goes through the API's path, `services.endorsement_submit` (same parse,
  same RECEIVED insert, same validation on commit), inside one transaction with an
  advisory lock on (employer, key): a redelivered message whose key is already stored with
  the same content is a duplicate and stores nothing; the same key with other content is
  refused like the API's `idempotency_key_reused`.
- The consumer (`manage.py consume_requests`: a consumer group, `enable_auto_commit=False`)
  commits a message's offset only after its database transaction committed, so a crash
  in between redelivers it and the key makes that harmless.
- A poison message (not JSON, not an object, no key, an unknown or revoked client, a body
  the API would refuse) goes to `ems.endorsement.requests.dlq` with the reason in its
  headers and its offset is committed: it never blocks its partition. A database error is
  not the message's fault: nothing is committed and the consumer re-reads from there.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction

from ems.errors import EmsError
from ems.models import ApiClient
from ems.tenancy import caller_for_client
from endorsements.models import EndorsementRequest, Source
from endorsements.services import endorsement_submit
from endorsements.validation import content_hash, resubmits_split, row_parse

log = structlog.get_logger(__name__)
CLIENT_HEADER = "ems-client-id"
_LOCK_NAMESPACE = 0x4B49 << 48  # "KI": Kafka intake keys, apart from the other advisory locks


def requests_topic() -> str:
    return getattr(settings, "KAFKA_REQUESTS_TOPIC", "ems.endorsement.requests")


def dead_letter_topic() -> str:
    return f"{requests_topic()}.dlq"


@dataclass(frozen=True)
class Outcome:
    """What became of one message: "stored", "duplicate" or "dead_letter" (with its reason)."""

    kind: str
    tracking_id: str = ""
    reason: str = ""
    code: str = ""


def message_handle(*, key: bytes | None, value: bytes | None, headers) -> Outcome:
    """Store one message as an endorsement, or say why it is a dead letter. Raises on database errors."""
    header = {name: (raw or b"").decode("utf-8", "replace") for name, raw in (headers or [])}
    idempotency_key = (key or b"").decode("utf-8", "replace").strip()
    if not idempotency_key or len(idempotency_key) > 255:
        return Outcome(
            "dead_letter",
            reason="The message key (the idempotency key) is missing or too long.",
            code="key_invalid",
        )
    client = ApiClient.objects.filter(client_id=header.get(CLIENT_HEADER, ""), is_active=True).first()
    if client is None or client.revoked_at is not None:
        return Outcome(
            "dead_letter",
            reason=f"No active API client named in the {CLIENT_HEADER} header.",
            code="client_unknown",
        )
    try:
        body = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return Outcome("dead_letter", reason="The message is not JSON.", code="json_invalid")
    if not isinstance(body, dict):
        return Outcome("dead_letter", reason="The message must be a JSON object.", code="json_not_object")
    caller = caller_for_client(client)
    try:
        with transaction.atomic():
            _key_lock(client.employer_id, idempotency_key)
            stored = _stored(client.employer_id, idempotency_key)
            if stored is not None:
                return _repeat(stored, body)
            request = endorsement_submit(
                caller=caller, data=body, idempotency_key=idempotency_key, source=Source.API
            )
    except EmsError as error:
        details = "; ".join(f"{d.field}: {d.code}" if d.field else d.code for d in error.details[:20])
        reason = f"{error.message} {details}".strip()
        return Outcome("dead_letter", reason=reason[:1000], code=error.code)
    return Outcome("stored", tracking_id=request.tracking_id)


def _key_lock(employer_id: int, idempotency_key: str) -> None:
    if connection.vendor != "postgresql":
        return  # SQLite: one writer at a time already
    digest = int.from_bytes(hashlib.sha256(f"{employer_id}:{idempotency_key}".encode()).digest()[:6], "big")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_NAMESPACE | digest])


def _stored(employer_id: int, idempotency_key: str):
    return (
        EndorsementRequest.objects.filter(employer_id=employer_id, idempotency_key=idempotency_key)
        .only("tracking_id", "content_hash")
        .order_by("id")
        .first()
    )


def _repeat(stored: EndorsementRequest, body: dict) -> Outcome:
    """A redelivery (same content: nothing stored) or a reused key (other content: a dead letter)."""
    from endorsements.services.submission import local_today

    cells, _resubmits = resubmits_split({str(k).strip().lower(): v for k, v in body.items()})
    values, _issues = row_parse(cells, today=local_today())
    if values is not None and content_hash(values) == stored.content_hash:
        return Outcome("duplicate", tracking_id=stored.tracking_id)
    return Outcome(
        "dead_letter",
        tracking_id=stored.tracking_id,
        reason=f"The key was used for {stored.tracking_id} with other content.",
        code="idempotency_key_reused",
    )


def records_consume(
    consumer, producer, *, max_records: int | None = None, poll_ms: int = 500
) -> dict[str, int]:
    """Poll and handle records until `max_records` were handled (None: forever); counts by outcome.

    Each record commits its own database transaction (a dead letter is sent and acknowledged
    first); the offsets of a poll's records are committed once per poll, after those
    transactions. A crash in between redelivers them, and their keys make that harmless."""
    counts = {"stored": 0, "duplicate": 0, "dead_letter": 0}
    handled = 0
    while max_records is None or handled < max_records:
        done: dict = {}  # partition -> the offset after the last record handled
        for partition, records in consumer.poll(timeout_ms=poll_ms).items():
            for record in records:
                try:
                    outcome = message_handle(key=record.key, value=record.value, headers=record.headers)
                except (OperationalError, InterfaceError):
                    # Not the message's fault: read it again once the database answers.
                    log.warning(
                        "endorsements.kafka_intake_database_error", offset=record.offset, exc_info=True
                    )
                    close_old_connections()
                    consumer.seek(partition, record.offset)
                    time.sleep(1)
                    break
                if outcome.kind == "dead_letter":
                    _dead_letter(producer, record, outcome)
                done[partition] = record.offset + 1
                counts[outcome.kind] += 1
                handled += 1
                log.info(
                    "endorsements.kafka_intake",
                    outcome=outcome.kind,
                    code=outcome.code,
                    tracking_id=outcome.tracking_id,
                    partition=partition.partition,
                    offset=record.offset,
                )
        _offsets_commit(consumer, done)
    return counts


def _offsets_commit(consumer, done: dict) -> None:
    from kafka import OffsetAndMetadata

    if done:
        consumer.commit(
            {partition: OffsetAndMetadata(offset, None, -1) for partition, offset in done.items()}
        )


def _dead_letter(producer, record, outcome: Outcome) -> None:
    producer.send(
        dead_letter_topic(),
        key=record.key,
        value=record.value,
        headers=[
            *(record.headers or []),
            ("ems-dlq-code", outcome.code.encode()),
            ("ems-dlq-reason", outcome.reason.encode()),
            ("ems-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ],
    ).get(timeout=10)
