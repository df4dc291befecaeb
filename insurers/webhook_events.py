"""Insurer webhook events: stored as received, answered, then applied by a task.

- `webhook_events_receive` checks each event's shape, flags what ops must look at and
  stores the batch with ONE `INSERT ... ON CONFLICT (insurer_id, event_id) DO NOTHING
  RETURNING`, so a redelivered event id changes nothing and is answered "already received".
  The rows are committed before the view answers 2xx; the new ids are handed to
  `webhook_events_process_task` on commit, so the insurer's call never waits for a handler
  and a crash after the answer loses nothing (`webhook_events_sweep` re-drives what a lost
  task left behind).
- `webhook_events_process` turns events into `ItemResult`s and records them through
  `insurers.services.item_results_record` (the one place a result lands on its item and is
  handed upward); `statement.available` goes to the registered statement handlers.
  Several events for one reference in one run are reduced to the furthest one (confirmed
  or rejected beats accepted), so out-of-order delivery cannot move an item backwards.

Flags (stored, answered 2xx, not applied): `unknown_tracking_id` when the insurer names a
reference no dispatch to it carried; `incomplete_data` when a confirmation lacks the
premium, member id or effective date, a rejection lacks its code or reason, or a statement
its period.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from insurers import handlers
from insurers.adapters.base import ACCEPTED, CONFIRMED, REJECTED, ItemResult
from insurers.models import DispatchItem, Insurer, WebhookEvent
from insurers.services import item_results_record

log = structlog.get_logger(__name__)

Type = WebhookEvent.Type
Flag = WebhookEvent.Flag
EVENT_TYPES = tuple(Type.values)
_OUTCOME_OF = {Type.ACCEPTED: ACCEPTED, Type.REJECTED: REJECTED, Type.CONFIRMED: CONFIRMED}
_RANK = {ACCEPTED: 1, CONFIRMED: 2, REJECTED: 2}
RECEIVED = "received"
ALREADY_RECEIVED = "already_received"
REFUSED = "refused"


@dataclass(frozen=True)
class EventProblem:
    """Why an event was not stored: `unknown_event_type` or `validation_failed`, per field."""

    code: str
    field: str
    message: str


@dataclass(frozen=True)
class EventAnswer:
    event_id: str
    status: str  # RECEIVED, ALREADY_RECEIVED or REFUSED
    flag: str = ""
    problems: tuple[EventProblem, ...] = ()

    def as_dict(self) -> dict:
        answer = {"event_id": self.event_id, "status": self.status}
        if self.status == RECEIVED:
            answer["flag"] = self.flag
        if self.problems:
            answer["errors"] = [
                {"field": p.field, "code": p.code, "message": p.message} for p in self.problems
            ]
        return answer


def event_problems(event) -> list[EventProblem]:
    """What is wrong with an event's shape (empty when it may be stored)."""
    if not isinstance(event, dict):
        return [EventProblem("validation_failed", "", "An event must be a JSON object.")]
    problems = []
    for name, limit in (("event_id", 128), ("type", 40), ("tracking_id", 64)):
        value = event.get(name)
        if not isinstance(value, str) or not value.strip():
            problems.append(EventProblem("validation_failed", name, f"{name} is required (a string)."))
        elif len(value) > limit:
            problems.append(EventProblem("validation_failed", name, f"{name} is longer than {limit}."))
    kind = event.get("type")
    if isinstance(kind, str) and kind and kind not in EVENT_TYPES:
        problems.append(
            EventProblem(
                "unknown_event_type", "type", f"Unknown event type {kind!r}; known: {', '.join(EVENT_TYPES)}."
            )
        )
    occurred = event.get("occurred_at")
    if occurred is not None and not (isinstance(occurred, str) and _aware(occurred)):
        problems.append(
            EventProblem("validation_failed", "occurred_at", "occurred_at must be ISO 8601 with an offset.")
        )
    if event.get("data") is not None and not isinstance(event["data"], dict):
        problems.append(EventProblem("validation_failed", "data", "data must be a JSON object."))
    return problems


def webhook_events_receive(
    *, insurer: Insurer, events: list[dict], bodies: list[str], headers: dict
) -> list[EventAnswer]:
    """Store the well-formed events (each with its body text) and answer each; one statement per batch."""
    answers: list[EventAnswer | None] = [None] * len(events)
    storable: list[int] = []
    seen: set[str] = set()
    for index, event in enumerate(events):
        problems = event_problems(event)
        event_id = event.get("event_id") if isinstance(event, dict) else None
        event_id = event_id if isinstance(event_id, str) else ""
        if problems:
            answers[index] = EventAnswer(event_id, REFUSED, problems=tuple(problems))
        elif event_id in seen:  # the same id twice in one batch: the first is stored
            answers[index] = EventAnswer(event_id, ALREADY_RECEIVED)
        else:
            seen.add(event_id)
            storable.append(index)
    if storable:
        flags = _flags(insurer, [events[i] for i in storable])
        now = timezone.now()
        rows = [
            (
                insurer.pk,
                events[i]["event_id"],
                events[i]["type"],
                events[i]["tracking_id"],
                _aware(events[i].get("occurred_at")),
                bodies[i],
                json.dumps(headers),
                flag,
                reason,
                now,
                "",
            )
            for i, (flag, reason) in zip(storable, flags, strict=True)
        ]
        # One statement: in autocommit it is its own transaction (no BEGIN/COMMIT round
        # trips), and on_commit runs once it has committed; inside a caller's transaction
        # both wait for that one.
        stored = _insert_new(rows)
        if stored:
            ids = list(stored.values())
            transaction.on_commit(lambda: _process_later(ids))
        for i, (flag, _reason) in zip(storable, flags, strict=True):
            event_id = events[i]["event_id"]
            answers[i] = (
                EventAnswer(event_id, RECEIVED, flag=flag)
                if event_id in stored
                else (EventAnswer(event_id, ALREADY_RECEIVED))
            )
        log.info(
            "insurers.webhook_received",
            insurer_id=insurer.pk,
            events=len(events),
            stored=len(stored),
            flagged=sum(1 for flag, _ in flags if flag),
        )
    return [answer for answer in answers if answer is not None]


_COLUMNS = (
    "insurer_id",
    "event_id",
    "type",
    "tracking_id",
    "occurred_at",
    "body",
    "headers",
    "flag",
    "flag_reason",
    "received_at",
    "process_note",
)


def _insert_new(rows: list[tuple]) -> dict[str, int]:
    """INSERT every row, skipping event ids already stored; {event_id: id} of the rows written."""
    table = connection.ops.quote_name(WebhookEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
    one = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * len(rows))}"
        ' ON CONFLICT ("insurer_id", "event_id") DO NOTHING RETURNING "event_id", "id"'
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])
        return dict(cursor.fetchall())


def _process_later(event_ids: list[int]) -> None:
    from insurers.webhook_tasks import webhook_events_process_task  # tasks import this module

    webhook_events_process_task.delay(event_ids)


def _flags(insurer: Insurer, events: list[dict]) -> list[tuple[str, str]]:
    references = {e["tracking_id"] for e in events if e["type"] != Type.STATEMENT}
    known = (
        set(
            DispatchItem.objects.filter(dispatch__insurer=insurer, reference__in=references).values_list(
                "reference", flat=True
            )
        )
        if references
        else set()
    )
    flags = []
    for event in events:
        missing = _missing_data(event["type"], event.get("data") or {})
        if event["type"] != Type.STATEMENT and event["tracking_id"] not in known:
            flags.append((Flag.UNKNOWN_TRACKING_ID.value, "No dispatch to this insurer carried it."))
        elif missing:
            flags.append((Flag.INCOMPLETE_DATA.value, f"Missing or invalid in data: {', '.join(missing)}."))
        else:
            flags.append(("", ""))
    return flags


def _missing_data(kind: str, data: dict) -> list[str]:
    missing = []
    if kind == Type.CONFIRMED:
        premium = data.get("insurer_premium")
        if not isinstance(premium, int) or isinstance(premium, bool):
            missing.append("insurer_premium")
        if not isinstance(data.get("insurer_member_id"), str) or not data["insurer_member_id"]:
            missing.append("insurer_member_id")
        if not _is_date(data.get("effective_date")):
            missing.append("effective_date")
    elif kind == Type.REJECTED:
        if not (data.get("code") or data.get("reason")):
            missing.append("code or reason")
    elif kind == Type.STATEMENT:
        missing.extend(name for name in ("period_start", "period_end") if not _is_date(data.get(name)))
    return missing


def webhook_events_process(*, event_ids: list[int]) -> int:
    """Apply stored, unflagged, unprocessed events; returns how many were processed.

    Rows are locked with SKIP LOCKED, so the on-commit task and a sweep never apply the
    same event at once; `item_results_record` is forward-only, so applying one twice
    (a redelivered task) changes nothing either."""
    with transaction.atomic():
        events = list(
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(pk__in=event_ids, processed_at__isnull=True, flag=Flag.NONE)
            .select_related("insurer")
            .order_by("pk")
        )
        if not events:
            return 0
        notes: dict[int, str] = {}
        by_insurer: dict[int, list[WebhookEvent]] = {}
        for event in events:
            by_insurer.setdefault(event.insurer_id, []).append(event)
        for insurer_events in by_insurer.values():
            notes.update(_apply(insurer_events[0].insurer, insurer_events))
        now = timezone.now()
        for event in events:
            event.processed_at, event.process_note = now, notes.get(event.pk, "")
        WebhookEvent.objects.bulk_update(events, ["processed_at", "process_note"])
    return len(events)


def _apply(insurer: Insurer, events: list[WebhookEvent]) -> dict[int, str]:
    notes: dict[int, str] = {}
    furthest: dict[str, tuple[ItemResult, WebhookEvent]] = {}
    for event in sorted(events, key=lambda e: (e.occurred_at or e.received_at, e.pk)):
        data = json.loads(event.body).get("data") or {}
        if event.type == Type.STATEMENT:
            statement = {**data, "statement_id": event.tracking_id, "event_id": event.event_id}
            handlers.statement_notify(insurer.pk, statement)
            notes[event.pk] = "handed to statement handlers"
            continue
        result = _result_of(event, data)
        earlier = furthest.get(result.reference)
        if earlier and _RANK[earlier[0].outcome] > _RANK[result.outcome]:
            notes[event.pk] = f"superseded by {earlier[1].event_id}"
            continue
        if earlier:
            notes[earlier[1].pk] = f"superseded by {event.event_id}"
        furthest[result.reference] = (result, event)
    if furthest:
        changed = item_results_record(
            insurer=insurer, results=[result for result, _ in furthest.values()], source="webhook"
        )
        changed_references = {result.reference for result in changed}
        for reference, (_result, event) in furthest.items():
            notes[event.pk] = "applied" if reference in changed_references else "no change (already recorded)"
    return notes


def _result_of(event: WebhookEvent, data: dict) -> ItemResult:
    premium = data.get("insurer_premium")
    extra = {key: data[key] for key in ("effective_date", "sum_insured") if key in data}
    return ItemResult(
        reference=event.tracking_id,
        outcome=_OUTCOME_OF[event.type],
        insurer_reference=str(data.get("insurer_reference") or ""),
        insurer_member_id=str(data.get("insurer_member_id") or ""),
        insurer_premium=premium if isinstance(premium, int) and not isinstance(premium, bool) else None,
        code=str(data.get("code") or ""),
        reason=str(data.get("reason") or ""),
        data={**extra, "webhook_event_id": event.event_id},
    )


def webhook_events_sweep(*, older_than_seconds: int | None = None, limit: int = 1000) -> int:
    """Re-drive events stored but not processed after a while (a lost task, a worker killed)."""
    seconds = settings.WEBHOOK_REDRIVE_AFTER_SECONDS if older_than_seconds is None else older_than_seconds
    cutoff = timezone.now() - timedelta(seconds=seconds)
    ids = list(
        WebhookEvent.objects.filter(processed_at__isnull=True, flag=Flag.NONE, received_at__lte=cutoff)
        .order_by("received_at")
        .values_list("pk", flat=True)[:limit]
    )
    processed = webhook_events_process(event_ids=ids) if ids else 0
    if processed:
        log.info("insurers.webhook_redriven", events=processed)
    return processed


def _aware(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def _is_date(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True
