"""The gateway's reads: the exchange log of a dispatch or a tracking id (MongoDB), newest first.

The endorsement admin calls `exchanges_for_reference(tracking_id)`; the dispatch admin calls
`exchanges_for_dispatch(dispatch_id)`. Both raise `pymongo.errors.PyMongoError` when MongoDB
is unreachable; an admin page catches it and says so.
"""

from pymongo import DESCENDING

from ems import clients
from ems.audit import EXCHANGES_COLLECTION

EXCHANGES_MAX_LIMIT = 200
_NEWEST_FIRST = [("at", DESCENDING), ("_id", DESCENDING)]


def exchanges_for_reference(reference: str, *, limit: int = 50) -> list[dict]:
    return _find({"tracking_ids": reference}, limit)


def exchanges_for_dispatch(dispatch_id: int, *, limit: int = 50) -> list[dict]:
    return _find({"dispatch_id": int(dispatch_id)}, limit)


def _find(query: dict, limit: int) -> list[dict]:
    collection = clients.mongo_db()[EXCHANGES_COLLECTION]
    cursor = collection.find(query, {"_id": 0}).sort(_NEWEST_FIRST).limit(min(limit, EXCHANGES_MAX_LIMIT))
    return list(cursor)
