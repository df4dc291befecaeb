"""endorsements/events.py:events_queue — a few events as rows of their own, many as group rows."""

import uuid

import pytest
from django.db import transaction

from ems.models import OutboxEvent
from ems.outbox import kafka_messages
from endorsements.events import GROUP_ABOVE, events_queue, transition_event

pytestmark = pytest.mark.django_db


def _events(count: int) -> list:
    return [
        transition_event(
            tracking_id=f"TRK{n:05d}",
            employer_id=3,
            endorsement_type="ADD",
            from_state="RECEIVED",
            to_state="VALIDATED",
            changes={"premium_amount": 1000 + n},
        )
        for n in range(count)
    ]


def test_up_to_the_limit_each_event_is_an_outbox_row_of_its_own():
    with transaction.atomic():
        events_queue(_events(GROUP_ABOVE))
    rows = list(OutboxEvent.objects.order_by("id"))
    assert len(rows) == GROUP_ABOVE
    assert {row.event_count for row in rows} == {1}
    assert rows[0].key == "TRK00000"
    assert rows[0].payload["event_id"] == str(rows[0].event_id)
    assert rows[0].payload["type"] == "endorsement.validated"
    assert rows[0].payload["data"]["premium_amount"] == 1000


def test_above_the_limit_the_events_go_in_one_group_row_with_the_same_envelopes():
    with transaction.atomic():
        events_queue(_events(GROUP_ABOVE + 1))
    row = OutboxEvent.objects.get()
    assert (row.sink, row.destination, row.key, row.event_count) == (
        "KAFKA",
        "ems.endorsements",
        "",
        GROUP_ABOVE + 1,
    )
    messages = kafka_messages(row)
    assert len(messages) == GROUP_ABOVE + 1
    key, envelope = messages[GROUP_ABOVE]
    assert key == f"TRK{GROUP_ABOVE:05d}"
    assert envelope == {
        "event_id": str(uuid.uuid5(row.event_id, str(GROUP_ABOVE))),
        "type": "endorsement.validated",
        "occurred_at": row.payload["occurred_at"],
        "employer_id": 3,
        "data": {
            "tracking_id": f"TRK{GROUP_ABOVE:05d}",
            "endorsement_type": "ADD",
            "from_state": "RECEIVED",
            "to_state": "VALIDATED",
            "reason": "",
            "premium_amount": 1000 + GROUP_ABOVE,
        },
    }
