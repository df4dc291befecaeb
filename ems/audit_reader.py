"""Reading the audit store: indexes and selectors over MongoDB `audit_logs`.

How it works
- Audit documents arrive through the outbox relay (`ems.outbox_relay`), one per outbox row,
  with `_id` = the row's `event_id`, and `at` stored as a BSON date (the relay converts the
  ISO string written in the transaction), so ranges and sorts are by time.
- The indexes the selectors use are defined beside the writer (`ems.audit.AUDIT_INDEXES`);
  the relay ensures them before its first MongoDB delivery in each process.
- The selectors return plain dicts (without Mongo's `_id`; `event_id` identifies a record),
  newest first, ties broken by `_id` so paging is stable. `limit` is capped at
  `AUDIT_MAX_LIMIT`. They raise `pymongo.errors.PyMongoError` when MongoDB is unreachable;
  callers that can degrade (the admin page) catch it.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import DESCENDING

from ems import clients
from ems.audit import AUDIT_COLLECTION

AUDIT_MAX_LIMIT = 500

_NEWEST_FIRST = [("at", DESCENDING), ("_id", DESCENDING)]


def audit_for_object(*, object_type: str, object_id: str | int, limit: int = 100) -> list[dict]:
    """The audit trail of one object, newest first."""
    return _find({"object_type": object_type, "object_id": str(object_id)}, limit=limit, skip=0)


def audit_search(
    *,
    actor: str | None = None,
    employer_id: int | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    skip: int = 0,
) -> list[dict]:
    """Audit records matching every given filter, newest first. `since` inclusive, `until` exclusive."""
    query: dict = {}
    if actor:
        query["actor"] = actor
    if employer_id is not None:
        query["employer_id"] = int(employer_id)
    if action:
        query["action"] = action
    if object_type:
        query["object_type"] = object_type
    if object_id not in (None, ""):
        query["object_id"] = str(object_id)
    at: dict = {}
    if since is not None:
        at["$gte"] = since
    if until is not None:
        at["$lt"] = until
    if at:
        query["at"] = at
    return _find(query, limit=limit, skip=skip)


def _find(query: dict, *, limit: int, skip: int) -> list[dict]:
    limit = max(1, min(int(limit), AUDIT_MAX_LIMIT))
    skip = max(0, int(skip))
    cursor = clients.mongo_db()[AUDIT_COLLECTION].find(query).sort(_NEWEST_FIRST).skip(skip).limit(limit)
    return [{key: value for key, value in document.items() if key != "_id"} for document in cursor]
