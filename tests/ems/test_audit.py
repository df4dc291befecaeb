"""ems/audit.py: the audit collections' indexes, defined beside the writer, on the Mongo-wire server."""

import pytest
from pymongo.errors import DuplicateKeyError

from ems.audit import AUDIT_COLLECTION, EXCHANGES_COLLECTION, audit_indexes_ensure


def test_indexes_are_created_once_and_enforce_unique_event_ids(mongo_db):
    # when the indexes are ensured twice
    first = audit_indexes_ensure()
    second = audit_indexes_ensure()
    # then the same names come back and each collection has the keys the selectors use
    assert first == second
    assert first == [
        "event_id_unique", "at", "object_at", "actor_at", "employer_at", "request_id",
        "event_id_unique", "at", "insurer_at", "tracking_at", "dispatch_at", "pii_masked_at",
    ]  # fmt: skip
    audit_keys = {
        (tuple(field for field in index["key"]), bool(index.get("unique")))
        for index in mongo_db[AUDIT_COLLECTION].list_indexes()
    }
    assert audit_keys == {
        (("_id",), False),
        (("event_id",), True),
        (("at",), False),
        (("object_type", "object_id", "at"), False),
        (("actor", "at"), False),
        (("employer_id", "at"), False),
        (("request_id",), False),
    }
    exchange_keys = {
        (tuple(field for field in index["key"]), bool(index.get("unique")))
        for index in mongo_db[EXCHANGES_COLLECTION].list_indexes()
    }
    assert exchange_keys == {
        (("_id",), False),
        (("event_id",), True),
        (("at",), False),
        (("insurer_id", "at"), False),
        (("tracking_ids", "at"), False),
        (("dispatch_id", "at"), False),
        (("pii_masked", "at"), False),
    }
    # and a second document with the same event_id is refused
    mongo_db[AUDIT_COLLECTION].insert_one({"_id": "a", "event_id": "same"})
    with pytest.raises(DuplicateKeyError):
        mongo_db[AUDIT_COLLECTION].insert_one({"_id": "b", "event_id": "same"})
    assert mongo_db[AUDIT_COLLECTION].count_documents({}) == 1
