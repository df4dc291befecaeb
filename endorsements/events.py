"""The events endorsements emit on `ems.endorsements` (keyed by tracking id), and how they are queued.

Every state change emits `endorsement.<new state in lower case>`:
`{"tracking_id", "endorsement_type", "from_state", "to_state", "reason", ...changes}`.
A batch emits `batch.received`, `batch.completed` and `batch.failed` keyed by `batch:<id>`.

Each is an `ems.outbox.KafkaEvent` on that topic. `events_queue` writes events into the
outbox in the caller's transaction: a few as one outbox row each (`ems.outbox.outbox_write`),
many (a file's chunk) as group rows of `ems.outbox.events_bulk_emit`, which the relay sends
as one message per event.
"""

from collections.abc import Iterable

from ems.outbox import TOPIC_ENDORSEMENTS, KafkaEvent, events_bulk_emit, outbox_write


def state_event_type(state: str) -> str:
    return f"endorsement.{state.lower()}"


def transition_event(
    *,
    tracking_id: str,
    employer_id: int,
    endorsement_type: str,
    from_state: str,
    to_state: str,
    reason: str = "",
    changes: dict | None = None,
) -> KafkaEvent:
    return KafkaEvent(
        topic=TOPIC_ENDORSEMENTS,
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


def batch_event(*, batch, event_type: str, data: dict) -> KafkaEvent:
    return KafkaEvent(
        topic=TOPIC_ENDORSEMENTS,
        key=f"batch:{batch.pk}",
        event_type=event_type,
        employer_id=batch.employer_id,
        data=data,
    )


# Up to this many events in one call, one outbox row each (easy to find in the admin); above
# it, group rows (a file's chunk of 5,000 rows would otherwise write 5,000 outbox rows).
GROUP_ABOVE = 100


def events_queue(events: Iterable[KafkaEvent]) -> None:
    """Write the events (on `ems.endorsements`) to the outbox, inside the current transaction."""
    events = list(events)
    if not events:
        return
    if len(events) <= GROUP_ABOVE:
        outbox_write(events=events)
        return
    events_bulk_emit(TOPIC_ENDORSEMENTS, ((e.key, e.event_type, e.employer_id, e.data) for e in events))
