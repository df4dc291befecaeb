"""The events endorsements emit on `ems.endorsements` (keyed by tracking id), and how they are queued.

Every state change emits `endorsement.<new state in lower case>`:
`{"tracking_id", "endorsement_type", "from_state", "to_state", "reason", ...changes}`.
A batch emits `batch.received`, `batch.completed` and `batch.failed` keyed by `batch:<id>`.

`events_queue` writes events into the outbox in the caller's transaction: a few as one
outbox row each, many (a file's chunk) as group rows of `ems.outbox.events_bulk_emit`,
which the relay sends as one message per event.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction

from ems.outbox import TOPIC_ENDORSEMENTS, KafkaEvent, events_bulk_emit, outbox_write


def state_event_type(state: str) -> str:
    return f"endorsement.{state.lower()}"


@dataclass
class QueuedEvent:
    key: str
    event_type: str
    employer_id: int | None
    data: dict = field(default_factory=dict)


def transition_event(
    *,
    tracking_id: str,
    employer_id: int,
    endorsement_type: str,
    from_state: str,
    to_state: str,
    reason: str = "",
    changes: dict | None = None,
) -> QueuedEvent:
    return QueuedEvent(
        key=tracking_id,
        event_type=state_event_type(to_state),
        employer_id=employer_id,
        data=transition_data(tracking_id, endorsement_type, from_state, to_state, reason, changes),
    )


def transition_data(
    tracking_id: str, endorsement_type: str, from_state: str, to_state: str, reason: str, changes: dict | None
) -> dict:
    """The `data` of an endorsement's transition event (also built straight into a file's
    group rows, `transitions.endorsements_create_decided`)."""
    data = {
        "tracking_id": tracking_id,
        "endorsement_type": endorsement_type,
        "from_state": from_state,
        "to_state": to_state,
        "reason": reason,
    }
    if changes:
        data.update(changes)
    return data


def outbox_event(event: QueuedEvent) -> KafkaEvent:
    """The same event for `ems.outbox.outbox_write` (one event written with other rows)."""
    return KafkaEvent(
        topic=TOPIC_ENDORSEMENTS,
        key=event.key,
        event_type=event.event_type,
        employer_id=event.employer_id,
        data=event.data,
    )


def batch_event(*, batch, event_type: str, data: dict) -> QueuedEvent:
    return QueuedEvent(
        key=f"batch:{batch.pk}", event_type=event_type, employer_id=batch.employer_id, data=data
    )


# Up to this many events in one call, one outbox row each (easy to find in the admin); above
# it, group rows (a file's chunk of 5,000 rows would otherwise write 5,000 outbox rows).
GROUP_ABOVE = 100


def events_queue(events: Iterable[QueuedEvent]) -> None:
    """Write the events to the outbox, inside the current transaction."""
    events = list(events)
    if not events:
        return
    if transaction.get_autocommit():
        raise RuntimeError("outbox rows must be written inside the transaction that made the change")
    if len(events) <= GROUP_ABOVE:
        outbox_write(events=[outbox_event(e) for e in events])
        return
    events_bulk_emit(TOPIC_ENDORSEMENTS, ((e.key, e.event_type, e.employer_id, e.data) for e in events))
