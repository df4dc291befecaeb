"""Audit records: who did what, before and after, with the request id.

`audit_record` writes to the outbox in the caller's transaction; the relay copies the
record into MongoDB `audit_logs`. Reading is `ems.audit_reader`. `audit_document` builds
the same record for `ems.outbox.outbox_write`, so a hot path can write its event and its
audit record in one INSERT.
"""

from django.utils import timezone

from ems.outbox import MongoDocument, document_emit
from ems.request_id import current_request_id

AUDIT_COLLECTION = "audit_logs"
EXCHANGES_COLLECTION = "insurer_exchanges"


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


def audit_record(
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | int,
    employer_id: int | None = None,
    before: dict | None = None,
    after: dict | None = None,
    note: str = "",
) -> None:
    record = audit_document(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        employer_id=employer_id,
        before=before,
        after=after,
        note=note,
    )
    document_emit(collection=record.collection, document=record.document)
