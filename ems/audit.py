"""Audit records: who did what, before and after, with the request id.

`audit_record` writes to the outbox in the caller's transaction; the relay copies the
record into MongoDB `audit_logs`. Reading is `ems.audit_reader`.
"""

from django.utils import timezone

from ems.outbox import document_emit
from ems.request_id import current_request_id

AUDIT_COLLECTION = "audit_logs"
EXCHANGES_COLLECTION = "insurer_exchanges"


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
    document_emit(
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
