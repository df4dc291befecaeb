"""SLA clocks: every validated request must be confirmed by the insurer before its deadline.

How it works
- A request's deadline is `received_at` + its insurer's allowance:
  `Insurer.sla_inclusion_days` for an ADD or a DELETE, `sla_correction_days` for a
  CORRECTION (regulators cap them at 15 and 7). It is set in the write that validates the
  request, never by a write of its own: the assessment carries the allowance
  (`Decision.sla_days`, read with the policy book, no query), a file's rows are COPYed
  with their deadline, a single request's deadline rides in the per-row update that
  stores its premium.
- The clock runs while the request is in `SLA_CLOCK_STATES` (validated, not yet confirmed,
  not closed without effect). `sla_sweep` (a beat task, `SLA_SWEEP_SECONDS`) marks
  requests whose deadline passed as BREACHED and those that used
  `PIPELINE_SLA_NEAR_FRACTION` of their allowance as NEAR, set-based (a SELECT ... FOR
  UPDATE and an UPDATE per chunk, over a partial index; the same on SQLite for `make
  run`), and queues one `endorsement.sla_breached` / `endorsement.sla_near` event per
  newly marked request in the same transaction. A mark is never repeated: a chunk locks
  the rows not yet so marked (rows another sweep or a transition holds are skipped: SKIP
  LOCKED, and a row marked meanwhile no longer matches when its lock is granted), so
  running it twice, or two at once, marks and announces each request once. A NEAR request
  becomes BREACHED later (a second event); a request confirmed after its deadline keeps
  its BREACHED mark, the record that the clock ran out.
- A running clock without a deadline (a request validated by a path that set none, or
  before the clock existed) gets one from the sweep, set-based.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ems.outbox import TOPIC_ENDORSEMENTS, KafkaEvent
from endorsements.bulk_writes import rows_update
from endorsements.events import events_queue
from endorsements.locks import endorsements_lock_free
from endorsements.models import SLA_CLOCK_STATES, EndorsementRequest, EndorsementType, SlaStatus
from insurers.models import Insurer

log = structlog.get_logger(__name__)

EVENT_TYPES = {SlaStatus.BREACHED: "endorsement.sla_breached", SlaStatus.NEAR: "endorsement.sla_near"}


def allowance_days(*, endorsement_type: str, inclusion_days: int, correction_days: int) -> int:
    """The insurer's allowance for this kind of request, in days."""
    return correction_days if endorsement_type == EndorsementType.CORRECTION else inclusion_days


def deadline_of(*, received_at: datetime, days: int) -> datetime:
    return received_at + timedelta(days=days)


def deadline_text_of(received_at: datetime) -> Callable[[int | None], str | None]:
    """days -> the ISO text of `received_at` + days (None for None), once per allowance:
    a file's chunk COPYs thousands of rows received at the same moment."""
    texts: dict[int, str] = {}

    def text(days: int | None) -> str | None:
        if days is None:
            return None
        if days not in texts:
            texts[days] = deadline_of(received_at=received_at, days=days).isoformat()
        return texts[days]

    return text


@dataclass
class SlaSweep:
    """What one sweep did: deadlines it set, requests it marked BREACHED and NEAR."""

    deadlines_set: int = 0
    breached: int = 0
    near: int = 0


def _running():
    """Running clocks not yet breached: the predicate of the partial index
    `endorsement_sla_open_idx`, written the same way so the planner uses it."""
    return EndorsementRequest.objects.filter(sla_deadline__isnull=False, state__in=SLA_CLOCK_STATES).exclude(
        sla_status=SlaStatus.BREACHED
    )


_MARKED_FIELDS = ("pk", "tracking_id", "employer_id", "type", "state", "received_at", "sla_deadline")


def _mark(status: str, condition: Q, limit: int) -> int:
    """Mark up to `limit` running clocks matching `condition` with `status` and queue an
    event for each; inside the caller's transaction. Returns how many it marked."""
    rows = endorsements_lock_free(
        _running().filter(condition), fields=_MARKED_FIELDS, order_by=("sla_deadline", "pk"), limit=limit
    )
    if not rows:
        return 0
    EndorsementRequest.objects.filter(pk__in=[row[0] for row in rows]).update(sla_status=status)
    events_queue(
        KafkaEvent(
            topic=TOPIC_ENDORSEMENTS,
            key=tracking_id,
            event_type=EVENT_TYPES[status],
            employer_id=employer_id,
            data={
                "tracking_id": tracking_id,
                "endorsement_type": endorsement_type,
                "state": state,
                "sla_status": status,
                "received_at": received_at.isoformat(),
                "sla_deadline": deadline.isoformat(),
            },
        )
        for _pk, tracking_id, employer_id, endorsement_type, state, received_at, deadline in rows
    )
    return len(rows)


def _deadlines_set(limit: int) -> int:
    """Give up to `limit` running clocks without a deadline theirs, in one set-based update."""
    rows = endorsements_lock_free(
        EndorsementRequest.objects.filter(
            sla_deadline__isnull=True, state__in=SLA_CLOCK_STATES, policy__isnull=False
        ),
        fields=(
            "pk",
            "type",
            "received_at",
            "policy__insurer__sla_inclusion_days",
            "policy__insurer__sla_correction_days",
        ),
        order_by=("received_at", "pk"),
        limit=limit,
    )
    rows_update(
        EndorsementRequest,
        ["sla_deadline"],
        [
            (
                pk,
                deadline_of(
                    received_at=received_at,
                    days=allowance_days(
                        endorsement_type=kind, inclusion_days=inclusion, correction_days=correction
                    ),
                ),
            )
            for pk, kind, received_at, inclusion, correction in rows
        ],
    )
    return len(rows)


def _near(now: datetime, fraction: float) -> Q | None:
    """Clocks that used `fraction` of their allowance, their deadline still ahead.

    For a clock of `d` days: received_at <= now - fraction * d, i.e. its deadline is
    within (1 - fraction) * d of now. One term per allowance the insurers grant (a
    handful); a term of another allowance never matches a clock that is not near, so
    the OR is exact for every clock whose allowance an insurer grants today.
    """
    allowances = set()
    for inclusion, correction in Insurer.objects.values_list("sla_inclusion_days", "sla_correction_days"):
        allowances.update((inclusion, correction))
    terms = Q()
    for days in sorted(allowances):
        terms |= Q(
            received_at__lte=now - timedelta(days=days * fraction),
            sla_deadline__lte=now + timedelta(days=days * (1 - fraction)),
        )
    if not allowances:
        return None
    return Q(sla_status=SlaStatus.NONE, sla_deadline__gt=now) & terms


def _in_chunks(step, limit: int) -> int:
    """Run `step(limit)` in its own transaction until it comes back short; the total."""
    total = 0
    while True:
        with transaction.atomic():
            done = step(limit)
        total += done
        if done < limit:
            return total


def sla_sweep(*, now: datetime | None = None, limit: int | None = None) -> SlaSweep:
    """Set missing deadlines, then mark breached and near-breach clocks, once each, with
    one event per newly marked request. In chunks of `limit` (`SLA_SWEEP_CHUNK`), each its
    own transaction. Safe to run twice and concurrently."""
    now = now or timezone.now()
    limit = limit or settings.SLA_SWEEP_CHUNK
    result = SlaSweep(deadlines_set=_in_chunks(_deadlines_set, limit))
    result.breached = _in_chunks(lambda n: _mark(SlaStatus.BREACHED, Q(sla_deadline__lte=now), n), limit)
    near = _near(now, settings.PIPELINE_SLA_NEAR_FRACTION)
    if near is not None:
        result.near = _in_chunks(lambda n: _mark(SlaStatus.NEAR, near, n), limit)
    if result.deadlines_set or result.breached or result.near:
        log.info(
            "endorsements.sla_swept",
            deadlines_set=result.deadlines_set,
            breached=result.breached,
            near=result.near,
        )
    return result
