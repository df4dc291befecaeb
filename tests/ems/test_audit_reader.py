"""ems/audit_reader.py against the Mongo-wire server: the two selectors."""

import datetime

import pytest

from ems.audit import AUDIT_COLLECTION
from ems.audit_reader import AUDIT_MAX_LIMIT, audit_for_object, audit_search

UTC = datetime.UTC


def _at(day: int, hour: int = 0) -> datetime.datetime:
    return datetime.datetime(2026, 5, day, hour, tzinfo=UTC)


def _record(
    event_id: str,
    *,
    at,
    actor="ops1",
    action="member.corrected",
    object_type="member",
    object_id="1",
    employer_id=7,
    request_id="req-1",
) -> dict:
    return {
        "_id": event_id,
        "event_id": event_id,
        "at": at,
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "employer_id": employer_id,
        "before": {"first_name": "Asha"},
        "after": {"first_name": "Asha R"},
        "note": "",
        "request_id": request_id,
    }


def _plain(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "_id"}


@pytest.fixture
def records(mongo_db):
    documents = [
        _record("e1", at=_at(1), object_id="1"),
        _record("e2", at=_at(2), object_id="1", actor="ops2", action="member.deleted"),
        _record("e3", at=_at(3), object_id="2", employer_id=8),
        _record("e4", at=_at(3), object_id="1", actor="system", request_id="req-4"),  # same `at` as e3
        _record("e5", at=_at(4), object_type="endorsement", object_id="1"),
    ]
    mongo_db[AUDIT_COLLECTION].insert_many(documents)
    return {document["_id"]: _plain(document) for document in documents}


def test_audit_for_object_returns_that_objects_records_newest_first(records):
    assert audit_for_object(object_type="member", object_id=1, limit=10) == [
        records["e4"],
        records["e2"],
        records["e1"],
    ]
    assert audit_for_object(object_type="member", object_id="1", limit=2) == [records["e4"], records["e2"]]
    assert audit_for_object(object_type="member", object_id="999", limit=10) == []


def test_records_come_back_as_plain_dicts_with_aware_datetimes(records):
    [record] = audit_for_object(object_type="endorsement", object_id="1", limit=10)
    assert "_id" not in record
    assert record["at"] == _at(4)
    assert record["at"].utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["e5", "e4", "e3", "e2", "e1"]),  # e4 and e3 share `at`: the larger _id first
        ({"actor": "ops1"}, ["e5", "e3", "e1"]),
        ({"actor": "ops2"}, ["e2"]),
        ({"employer_id": 8}, ["e3"]),
        ({"action": "member.deleted"}, ["e2"]),
        ({"object_type": "member", "object_id": 1}, ["e4", "e2", "e1"]),
        ({"since": _at(2)}, ["e5", "e4", "e3", "e2"]),  # since is inclusive
        ({"until": _at(3)}, ["e2", "e1"]),  # until is exclusive
        ({"since": _at(2), "until": _at(4), "actor": "ops1"}, ["e3"]),
        ({"actor": "nobody"}, []),
    ],
)
def test_audit_search_filters(records, filters, expected):
    assert audit_search(**filters, limit=50) == [records[event_id] for event_id in expected]


def test_audit_search_pages_with_skip_and_limit(records):
    pages = [audit_search(limit=2, skip=skip) for skip in (0, 2, 4, 6)]
    assert [[record["event_id"] for record in page] for page in pages] == [
        ["e5", "e4"],
        ["e3", "e2"],
        ["e1"],
        [],
    ]


def test_limit_is_bounded(mongo_db):
    mongo_db[AUDIT_COLLECTION].insert_many(
        [
            _record(f"bulk{i:04d}", at=_at(1) + datetime.timedelta(seconds=i))
            for i in range(AUDIT_MAX_LIMIT + 5)
        ]
    )
    assert len(audit_search(limit=10_000)) == AUDIT_MAX_LIMIT
    assert len(audit_search(limit=0)) == 1
    assert audit_search(limit=1, skip=-5)[0]["event_id"] == f"bulk{AUDIT_MAX_LIMIT + 4:04d}"
