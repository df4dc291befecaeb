"""The endorsement state machine: one transition table and one function that applies it.

`endorsement_transition` moves one endorsement, or many at once (a validated chunk of a
file), to a new state. In one transaction it locks the rows (pk order, `locks.py`),
refuses the whole call if any move is illegal (`IllegalTransition`, nothing written),
sets the state, the state's timestamp and any per-row changes (premium, reasons, ...),
records an `EndorsementTransition` per row, queues an `endorsement.<state>` event per row
on `ems.endorsements` (keyed by tracking id) and an audit record, and schedules what
follows with `transaction.on_commit`: the follow-ups registered for the new state (other
stages register theirs with `follow_up_register`) and, for a single endorsement, a
websocket hint to the employer.

This module is the only writer of a request's `state` and of its history
(`EndorsementTransition`, read by `EndorsementRequest.history()`), for every move:
- `endorsement_create`: a single request's arrival (`"" -> RECEIVED`), its row, history
  record, event and audit record in one statement;
- `endorsements_create_decided`: a file's rows that were validated before they were
  stored, each inserted straight in its decided state with ONE compact intake step
  (`"" -> <decided state>` by `batch:<id>`: arrival and validation in one history row;
  `EndorsementTransition.steps()` reads it as its two moves);
- `endorsement_transition`: every later move.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from ems.audit import audit_document, audit_record
from ems.errors import ErrorDetail
from ems.notifications import notify_employer
from ems.outbox import TOPIC_ENDORSEMENTS, events_bulk_emit, outbox_write
from ems.row_insert import row_insert_statement
from endorsements import bulk_writes
from endorsements.errors import IllegalTransition
from endorsements.events import (
    events_queue,
    state_event_type,
    transition_data,
    transition_event,
)
from endorsements.locks import endorsements_lock
from endorsements.models import (
    VALIDATION_ACTOR,
    EndorsementRequest,
    EndorsementState,
    EndorsementTransition,
    rejection_codes,
)
from endorsements.pipeline import sla

S = EndorsementState

# from state -> the states it may move to. The pipeline's edges, by stage:
# - validation: RECEIVED -> VALIDATED | REJECTED;
# - review hold (a gate before fund lock): VALIDATED -> ON_HOLD_REVIEW; approve
#   ON_HOLD_REVIEW -> VALIDATED (back to the scheduler), reject ON_HOLD_REVIEW -> REJECTED;
# - fund lock: VALIDATED -> FUND_LOCKED (a debit that fits) | ON_HOLD_FUNDS (parked);
#   ON_HOLD_FUNDS -> FUND_LOCKED (woken); FUND_LOCKED -> ON_HOLD_FUNDS (its hold expired
#   before it was sent, and it parked again);
# - send: FUND_LOCKED -> SENT (debits), VALIDATED -> SENT (credits and zero-premium
#   changes lock nothing); a retry of a sent request is NOT a move: SENT -> SENT is
#   refused here, and the attempt is recorded on the row and its dispatch instead;
#   SENT -> FAILED (retries exhausted: the dead-letter queue); FAILED -> SENT (ops retry,
#   same idempotency key);
# - confirmation: SENT -> CONFIRMED | INSURER_REJECTED, and from FAILED too (a late answer
#   from the insurer to a request we had given up on);
# - activation: CONFIRMED -> ACTIVE;
# - cancel (HR or ops, before SENT; ops also from FAILED once the insurer does not have
#   it): every unsent state and FAILED -> CANCELLED;
# - supersede (a newer request for the same member before this one was sent): every
#   unsent state -> SUPERSEDED.
TRANSITIONS: dict[str, frozenset[str]] = {
    S.RECEIVED: frozenset({S.VALIDATED, S.REJECTED, S.CANCELLED, S.SUPERSEDED}),
    S.VALIDATED: frozenset(
        {S.FUND_LOCKED, S.ON_HOLD_FUNDS, S.ON_HOLD_REVIEW, S.SENT, S.CANCELLED, S.SUPERSEDED}
    ),
    S.ON_HOLD_FUNDS: frozenset({S.FUND_LOCKED, S.CANCELLED, S.SUPERSEDED}),
    S.ON_HOLD_REVIEW: frozenset({S.VALIDATED, S.REJECTED, S.CANCELLED, S.SUPERSEDED}),
    S.FUND_LOCKED: frozenset({S.SENT, S.ON_HOLD_FUNDS, S.CANCELLED, S.SUPERSEDED}),
    S.SENT: frozenset({S.CONFIRMED, S.INSURER_REJECTED, S.FAILED}),
    S.FAILED: frozenset({S.SENT, S.CONFIRMED, S.INSURER_REJECTED, S.CANCELLED}),
    S.CONFIRMED: frozenset({S.ACTIVE}),
    S.ACTIVE: frozenset(),
    S.REJECTED: frozenset(),
    S.INSURER_REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
    S.SUPERSEDED: frozenset(),
}

# The timestamp column each state sets when it is reached.
STATE_TIMESTAMPS: dict[str, str] = {
    S.VALIDATED: "validated_at",
    S.ON_HOLD_FUNDS: "on_hold_funds_at",
    S.ON_HOLD_REVIEW: "on_hold_review_at",
    S.FUND_LOCKED: "fund_locked_at",
    S.SENT: "sent_at",
    S.CONFIRMED: "confirmed_at",
    S.ACTIVE: "activated_at",
    S.REJECTED: "closed_at",
    S.INSURER_REJECTED: "closed_at",
    S.CANCELLED: "closed_at",
    S.SUPERSEDED: "closed_at",
    S.FAILED: "closed_at",
}

# Not yet sent to the insurer: a newer request for the same member replaces these.
UNSENT_STATES = frozenset({S.VALIDATED, S.ON_HOLD_FUNDS, S.ON_HOLD_REVIEW, S.FUND_LOCKED})
# Dead ends that free their content: a new request with the same content is not a duplicate.
CLOSED_WITHOUT_EFFECT = frozenset({S.REJECTED, S.CANCELLED, S.SUPERSEDED, S.INSURER_REJECTED})
LIVE_STATES = frozenset(S.values) - CLOSED_WITHOUT_EFFECT

# One audit document per endorsement up to this many in one call; above it, one document
# for the whole group (a 100,000-row file would otherwise write 100,000 audit documents).
AUDIT_PER_ROW_LIMIT = 100

_FOLLOW_UPS: dict[str, list[Callable[[list[int]], None]]] = {}

# Columns a caller may change together with the state.
CHANGEABLE = frozenset(
    {
        "premium_amount",
        "tax_amount",
        "rejection_reasons",
        "member_id",
        "member_key",
        "policy_id",
        "superseded_by_id",
        "last_error",
        "insurer_reference",
        "attempts",
        "dispatch_id",
        "insurer_premium",
        "insurer_member_id",
        "discrepancy",
        "next_attempt_at",
        "sla_deadline",
        "sla_status",
        "resubmission_of_id",
        "linked_to_id",
        "closed_at",  # cleared when a FAILED request is sent again or answered late
    }
)


def follow_up_register(state: str, handler: Callable[[list[int]], None]) -> None:
    """Call `handler(endorsement_ids)` after commit whenever endorsements reach `state`."""
    handlers = _FOLLOW_UPS.setdefault(state, [])
    if handler not in handlers:
        handlers.append(handler)


def is_legal(from_state: str, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(from_state, frozenset())


def endorsement_transition(
    *,
    to_state: str,
    actor: str,
    endorsement: EndorsementRequest | None = None,
    endorsements: Sequence[EndorsementRequest] = (),
    reason: str = "",
    changes: Mapping[int, Mapping[str, Any]] | None = None,
    follow_up: bool = True,
) -> list[EndorsementRequest]:
    """Move endorsements to `to_state`; all or nothing. Returns them, updated in memory.

    `changes` maps an endorsement id to extra column values (see `CHANGEABLE`) stored
    with the move; `reason` is recorded on the transition and in the event.
    """
    items = [endorsement] if endorsement is not None else list(endorsements)
    if not items:
        return []
    if to_state not in TRANSITIONS:
        raise IllegalTransition(f"Unknown state {to_state!r}.")
    changes = changes or {}
    unknown = {name for values in changes.values() for name in values} - CHANGEABLE
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)} in a transition")
    with transaction.atomic():
        current = endorsements_lock(e.pk for e in items)
        illegal = [
            ErrorDetail(
                field=e.tracking_id,
                code="illegal_transition",
                message=f"{current.get(e.pk, 'missing')} -> {to_state} is not allowed.",
            )
            for e in items
            if not is_legal(current.get(e.pk, ""), to_state)
        ]
        if illegal:
            if len(items) == 1:
                raise IllegalTransition(illegal[0].message, details=illegal)
            raise IllegalTransition(
                f"{len(illegal)} of {len(items)} endorsements cannot move to {to_state}.",
                details=illegal[:50],
            )
        now = timezone.now()
        _state_write(items, to_state=to_state, now=now, changes=changes)
        from_states = {e.pk: current[e.pk] for e in items}
        _history_write(items, from_states=from_states, to_state=to_state, actor=actor, reason=reason, now=now)
        events_queue(
            transition_event(
                tracking_id=e.tracking_id,
                employer_id=e.employer_id,
                endorsement_type=e.type,
                from_state=from_states[e.pk],
                to_state=to_state,
                reason=reason or _reason_text(changes.get(e.pk)),
                changes=_event_changes(changes.get(e.pk)),
            )
            for e in items
        )
        _audit_write(items, from_states=from_states, to_state=to_state, actor=actor, reason=reason)
        for e in items:
            e.state = to_state
            timestamp = STATE_TIMESTAMPS.get(to_state)
            if timestamp:
                setattr(e, timestamp, now)
            for name, value in changes.get(e.pk, {}).items():
                setattr(e, name, value)
        ids = [e.pk for e in items]
        if follow_up:
            for handler in _FOLLOW_UPS.get(to_state, []):
                transaction.on_commit(partial(handler, ids))
        if len(items) == 1 and items[0].batch_id is None:
            # A batch's rows are announced by the batch's progress instead.
            e = items[0]
            notify_employer(
                e.employer_id,
                "endorsement.updated",
                {"tracking_id": e.tracking_id, "state": to_state, "from_state": from_states[e.pk]},
            )
    return items


def _state_write(items, *, to_state: str, now, changes: Mapping[int, Mapping[str, Any]]) -> None:
    fields = {"state": to_state, "updated_at": now}
    timestamp = STATE_TIMESTAMPS.get(to_state)
    if timestamp:
        fields[timestamp] = now
    plain = [e.pk for e in items if not changes.get(e.pk)]
    for start in range(0, len(plain), 1000):
        EndorsementRequest.objects.filter(pk__in=plain[start : start + 1000]).update(**fields)
    changed = [e for e in items if changes.get(e.pk)]
    if not changed:
        return
    names = sorted({name for e in changed for name in changes[e.pk]})
    if len(changed) == 1:
        e = changed[0]
        EndorsementRequest.objects.filter(pk=e.pk).update(**fields, **changes[e.pk])
        return
    # Rows with per-row values: one set-based update (bulk_writes.rows_update).
    model_fields = {f.attname: f for f in EndorsementRequest._meta.concrete_fields}
    columns = [model_fields[n].column for n in names]
    state_columns = [model_fields[n].column for n in fields]
    rows = []
    for e in changed:
        values = changes[e.pk]
        row = [e.pk]
        for name in names:
            value = values[name] if name in values else getattr(e, name)
            if model_fields[name].get_internal_type() == "JSONField":
                value = json.dumps(value)
            row.append(value)
        row.extend(fields.values())
        rows.append(tuple(row))
    bulk_writes.rows_update(EndorsementRequest, [*columns, *state_columns], rows)


_HISTORY_COLUMNS = ("endorsement_id", "from_state", "to_state", "actor", "reason", "at")

_CREATE_COLUMNS = (
    "id",
    "tracking_id",
    "employer_id",
    "policy_id",
    "member_id",
    "type",
    "member_data",
    "effective_date",
    "premium_amount",
    "tax_amount",
    "content_hash",
    "member_key",
    "idempotency_key",
    "source",
    "batch_id",
    "row_number",
    "state",
    "rejection_reasons",
    "attempts",
    "last_error",
    "insurer_reference",
    "superseded_by_id",
    "linked_to_id",
    "resubmission_of_id",
    "received_at",
    "validated_at",
    "closed_at",
    "updated_at",
    "sla_deadline",
)


def endorsements_create_decided(
    *,
    rows: Sequence[Any],
    decisions: Mapping[int, Any],
    source: str,
) -> dict[str, list[int]]:
    """Store requests that were validated before they were stored, each in its decided state.

    For a file's chunk: instead of inserting RECEIVED rows and then updating each one
    (which rewrites every index of every row), each row is inserted once, already
    VALIDATED, REJECTED or SUPERSEDED, with what a stored request would leave: one compact
    intake step in its history (`"" -> state` by `batch:<id>`, read as `"" -> RECEIVED` by
    the batch and `RECEIVED -> state` by VALIDATION_ACTOR; one history row instead of
    two per file row), one `endorsement.<state>` event per row, grouped audit records,
    and the follow-ups registered for each state after commit. `rows` are
    `assessment.IntakeRow`s (ids reserved, each with its batch), `decisions` their
    `assessment.Decision` by id. Returns ids by state.
    """
    if not rows:
        return {}
    illegal = [r for r in rows if not is_legal(S.RECEIVED, decisions[r.pk].state)]
    if illegal:
        raise IllegalTransition(
            f"{len(illegal)} of {len(rows)} endorsements cannot be stored as decided.",
            details=[
                ErrorDetail(r.tracking_id, "illegal_transition", f"RECEIVED -> {decisions[r.pk].state}")
                for r in illegal[:50]
            ],
        )
    if any(r.batch_id is None for r in rows):
        raise ValueError("only a file's rows are stored decided: their history names the batch")
    if transaction.get_autocommit():
        raise RuntimeError("decided endorsements must be stored inside the caller's transaction")
    # Timestamps go to COPY as ISO text: psycopg's datetime dumper cost three times the
    # rest of a row's formatting (0.9 s against 0.3 s for 100,000 requests).
    moment = timezone.now()
    now = moment.isoformat()
    deadline = sla.deadline_text_of(moment)  # a validated row's SLA deadline, as COPY text
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    by_state: dict[str, list[int]] = {}
    for r in rows:
        by_state.setdefault(decisions[r.pk].state, []).append(r.pk)

    def request_rows():
        for r in rows:
            decision = decisions[r.pk]
            state = decision.state
            changes = decision.changes
            validated = now if state == S.VALIDATED else None
            reasons = changes.get("rejection_reasons")
            yield (
                r.pk,
                r.tracking_id,
                r.employer_id,
                changes.get("policy_id", r.policy_id),
                changes.get("member_id"),
                r.type,
                encode(r.member_data),
                r.member_data.get("effective_date"),
                changes.get("premium_amount"),
                changes.get("tax_amount"),
                r.content_hash,
                changes.get("member_key", r.member_key),
                "",
                source,
                r.batch_id,
                r.row_number,
                state,
                encode(reasons) if reasons else "[]",
                0,
                "",
                "",
                changes.get("superseded_by_id"),
                changes.get("linked_to_id"),
                changes.get("resubmission_of_id"),
                now,
                validated,
                None if validated else now,
                now,
                deadline(decision.sla_days) if validated else None,
            )

    bulk_writes.rows_insert(EndorsementRequest, _CREATE_COLUMNS, request_rows())
    bulk_writes.rows_insert(
        EndorsementTransition,
        _HISTORY_COLUMNS,
        (
            (
                r.pk,
                "",
                decisions[r.pk].state,
                f"batch:{r.batch_id}",
                _reason_text(decisions[r.pk].changes),
                now,
            )
            for r in rows
        ),
    )
    # A chunk's events always go as group rows (the data of `transition_event`, built
    # straight into the group: a KafkaEvent per row cost more than the rest).
    event_types = {state: state_event_type(state) for state in by_state}

    def chunk_events():
        for r in rows:
            decision = decisions[r.pk]
            data = transition_data(
                r.tracking_id,
                r.type,
                S.RECEIVED,
                decision.state,
                _reason_text(decision.changes),
                _event_changes(decision.changes),
            )
            yield r.tracking_id, event_types[decision.state], r.employer_id, data

    events_bulk_emit(TOPIC_ENDORSEMENTS, chunk_events())
    for state, ids in by_state.items():
        members = [r for r in rows if decisions[r.pk].state == state]
        _audit_write(
            members,
            from_states=dict.fromkeys(ids, S.RECEIVED),
            to_state=state,
            actor=VALIDATION_ACTOR,
            reason="",
            grouped=True,  # a file's chunk: one record per state, like its arrival
        )
        for handler in _FOLLOW_UPS.get(state, []):
            transaction.on_commit(partial(handler, ids))
    return by_state


def endorsement_create(
    *, request: EndorsementRequest, actor: str, computed: Mapping[str, tuple[str, list]]
) -> EndorsementRequest:
    """Store one new request as RECEIVED: its row (with `computed` columns, see
    `ems.row_insert`), its first history record, its `endorsement.received` event and its
    audit record, in one statement (one round trip), inside the caller's transaction."""
    request.state = S.RECEIVED
    insert = row_insert_statement(request, computed=computed)
    returned = outbox_write(
        events=[
            transition_event(
                tracking_id=request.tracking_id,
                employer_id=request.employer_id,
                endorsement_type=request.type,
                from_state="",
                to_state=S.RECEIVED,
            )
        ],
        documents=[
            audit_document(
                actor=actor,
                action="endorsement.received",
                object_type="endorsement",
                object_id=request.tracking_id,
                employer_id=request.employer_id,
                after={"state": S.RECEIVED, "type": request.type, "source": request.source},
            )
        ],
        first=insert.statement,
        together_with=(_RECEIVED_HISTORY_SQL, [S.RECEIVED, actor[:100], timezone.now()]),
    )
    insert.finish(returned)
    return request


# The arrival's history record, for the row the same statement inserts (`first_row`).
_RECEIVED_HISTORY_SQL = (
    f"INSERT INTO {EndorsementTransition._meta.db_table}"
    " (endorsement_id, from_state, to_state, actor, reason, at) SELECT id, '', %s, %s, '', %s FROM first_row"
)


def _history_write(items, *, from_states, to_state: str, actor: str, reason: str, now) -> None:
    actor = actor[:100]
    reason = reason[:500]
    bulk_writes.rows_insert(
        EndorsementTransition,
        _HISTORY_COLUMNS,
        ((e.pk, from_states[e.pk], to_state, actor, reason, now.isoformat()) for e in items),
    )


def _reason_text(values: Mapping[str, Any] | None) -> str:
    return rejection_codes(values.get("rejection_reasons")) if values else ""


def _event_changes(values: Mapping[str, Any] | None) -> dict:
    if not values:
        return {}
    out = {}
    for name in ("premium_amount", "tax_amount", "rejection_reasons", "insurer_reference", "last_error"):
        if name in values:
            out[name] = values[name]
    if "superseded_by_id" in values and values["superseded_by_id"] is not None:
        out["superseded_by_id"] = values["superseded_by_id"]
    return out


def _audit_write(
    items, *, from_states, to_state: str, actor: str, reason: str, grouped: bool = False
) -> None:
    if not grouped and len(items) <= AUDIT_PER_ROW_LIMIT:
        # One document per endorsement, all in one outbox INSERT.
        outbox_write(
            documents=[
                audit_document(
                    actor=actor,
                    action=f"endorsement.{to_state.lower()}",
                    object_type="endorsement",
                    object_id=e.tracking_id,
                    employer_id=e.employer_id,
                    before={"state": from_states[e.pk]},
                    after={"state": to_state},
                    note=reason,
                )
                for e in items
            ]
        )
        return
    by_employer: dict[int, list[str]] = {}
    for e in items:
        by_employer.setdefault(e.employer_id, []).append(e.tracking_id)
    for employer_id, tracking_ids in by_employer.items():
        audit_record(
            actor=actor,
            action=f"endorsement.{to_state.lower()}",
            object_type="endorsement_group",
            object_id=f"{tracking_ids[0]}..{tracking_ids[-1]}",
            employer_id=employer_id,
            before={"states": sorted(set(from_states.values()))},
            after={"state": to_state, "tracking_ids": tracking_ids},
            note=reason,
        )
