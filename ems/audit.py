"""Audit records: who did what, before and after, with the request id.

`audit_record` writes to the outbox in the caller's transaction; the relay copies the
record into MongoDB `audit_logs`. Reading is `ems.audit_reader`. `audit_document` builds
the same record for `ems.outbox.outbox_write`, so a hot path can write its event and its
audit record in one INSERT.

The MongoDB indexes of the audit collections are defined here, beside what they index:
`audit_indexes_ensure()` creates the missing ones (idempotent); the relay calls it before
its first MongoDB delivery in each process, so the reader's queries always have them.
"""

from django.utils import timezone
from pymongo import ASCENDING, DESCENDING

from ems import clients
from ems.outbox import MongoDocument, document_emit
from ems.request_id import current_request_id

AUDIT_COLLECTION = "audit_logs"
EXCHANGES_COLLECTION = "insurer_exchanges"

# (collection, keys, options); names are ours so real MongoDB treats repeats as no-ops.
AUDIT_INDEXES: tuple[tuple[str, list[tuple[str, int]], dict], ...] = (
    (AUDIT_COLLECTION, [("event_id", ASCENDING)], {"name": "event_id_unique", "unique": True}),
    (AUDIT_COLLECTION, [("at", DESCENDING)], {"name": "at"}),
    (
        AUDIT_COLLECTION,
        [("object_type", ASCENDING), ("object_id", ASCENDING), ("at", DESCENDING)],
        {"name": "object_at"},
    ),
    (AUDIT_COLLECTION, [("actor", ASCENDING), ("at", DESCENDING)], {"name": "actor_at"}),
    (AUDIT_COLLECTION, [("employer_id", ASCENDING), ("at", DESCENDING)], {"name": "employer_at"}),
    (AUDIT_COLLECTION, [("request_id", ASCENDING)], {"name": "request_id"}),
    (EXCHANGES_COLLECTION, [("event_id", ASCENDING)], {"name": "event_id_unique", "unique": True}),
    (EXCHANGES_COLLECTION, [("at", DESCENDING)], {"name": "at"}),
    (EXCHANGES_COLLECTION, [("insurer_id", ASCENDING), ("at", DESCENDING)], {"name": "insurer_at"}),
    (EXCHANGES_COLLECTION, [("tracking_ids", ASCENDING), ("at", DESCENDING)], {"name": "tracking_at"}),
    (EXCHANGES_COLLECTION, [("dispatch_id", ASCENDING), ("at", DESCENDING)], {"name": "dispatch_at"}),
    (EXCHANGES_COLLECTION, [("pii_masked", ASCENDING), ("at", ASCENDING)], {"name": "pii_masked_at"}),
)


def audit_indexes_ensure(*, database=None) -> list[str]:
    """Create every audit index that is missing; returns the index names. Safe to repeat."""
    database = database if database is not None else clients.mongo_db()
    return [database[collection].create_index(keys, **options) for collection, keys, options in AUDIT_INDEXES]


def audit_document(
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | int,
    employer_id: int | None = None,
    before: dict | None = None,
    after: dict | None = None,
    note: str = "",
) -> MongoDocument:
    """The audit record `audit_record` would write, for `outbox_write`."""
    return MongoDocument(
        collection=AUDIT_COLLECTION,
        document={
            "at": timezone.now().isoformat(),
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": str(object_id),
            "employer_id": employer_id,
            "before": before or {},
            "after": after or {},
            "note": note,
            "request_id": current_request_id(),
        },
    )


def audit_record(**fields) -> None:
    """Queue, in the caller's transaction, the record `audit_document(**fields)` builds."""
    record = audit_document(**fields)
    document_emit(collection=record.collection, document=record.document)
