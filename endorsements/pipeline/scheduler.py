"""The smart scheduler: tumbling windows per insurer, credits before debits.

How it works
- A window of an insurer holds its requests ready to go: VALIDATED ones, and FUND_LOCKED
  ones not yet in a dispatch (woken from the funds queue). It opens with the oldest of
  them and closes when it is `Insurer.dispatch_window_seconds` old or holds
  `dispatch_batch_size` requests, whichever comes first: the beat sweep
  (`windows_close_due`) closes windows on time, the VALIDATED follow-up
  (`windows_full_close`) closes them on size. A window takes at most `dispatch_batch_size`
  requests, oldest first; what is left forms the next window.
- One closer per insurer at a time (a Redis lock, `ems.redis_lock`); the database is the
  real guard: the state machine refuses a second move and an item is in at most one live
  dispatch.
- At close: the review gates (`gates.gates_consult`) hold some requests (-> ON_HOLD_REVIEW,
  through `review.reviews_hold`; an approved request is not gated again and goes on);
  then the credits (DELETE, negative CORRECTION, zero-premium changes) go first, FIFO, in
  one dispatch (VALIDATED -> SENT). Where the insurer answers inline (REST) that dispatch is
  sent right here, so the confirmation handler posts the refunds before the debits lock
  funds and a refund can pay for an addition of the same window. Then the debits lock
  funds (`funds.debits_lock`: FUND_LOCKED or ON_HOLD_FUNDS) and every FUND_LOCKED request
  of the window goes in the second dispatch (FUND_LOCKED -> SENT, holds exempted from
  expiry in the same transaction). At most two dispatches per insurer per window
  (`PIPELINE_BATCHING` off: one per request, the benchmark's baseline).
- Sending is `sending.dispatches_send`, queued after commit on `insurer_io`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone

from ems.redis_lock import LockBackendUnavailable, LockNotAcquired, redis_lock
from endorsements.models import EndorsementRequest, EndorsementState
from endorsements.pipeline import confirmation, funds, gates, review, sending
from endorsements.pipeline.funds import is_credit
from endorsements.transitions import endorsement_transition
from insurers import services as gateway
from insurers.models import Insurer

log = structlog.get_logger(__name__)
S = EndorsementState
ACTOR = "pipeline:scheduler"
# A killed closer's lock frees itself this soon (a close takes seconds; the database guards every move).
CLOSER_LOCK_SECONDS = 30


@dataclass
class WindowClose:
    """What one close did (ids per outcome, the dispatches it made)."""

    insurer_id: int
    held: list[int] = field(default_factory=list)
    credits_dispatch_ids: list[int] = field(default_factory=list)
    debits_dispatch_ids: list[int] = field(default_factory=list)
    parked: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)

    @property
    def credits_dispatch_id(self) -> int | None:
        """The credits' dispatch (batching: the only one)."""
        return self.credits_dispatch_ids[0] if self.credits_dispatch_ids else None

    @property
    def debits_dispatch_id(self) -> int | None:
        return self.debits_dispatch_ids[0] if self.debits_dispatch_ids else None

    @property
    def dispatch_ids(self) -> list[int]:
        return [*self.credits_dispatch_ids, *self.debits_dispatch_ids]


def batching_enabled() -> bool:
    """PIPELINE_BATCHING (default on): a window's credits and debits go in one dispatch each;
    off, every request is a dispatch of its own (the baseline the pipeline benchmark compares)."""
    return bool(getattr(settings, "PIPELINE_BATCHING", True))


def _ready(insurer_id: int):
    return EndorsementRequest.objects.filter(
        Q(state=S.VALIDATED) | Q(state=S.FUND_LOCKED, dispatch__isnull=True), policy__insurer_id=insurer_id
    )


def _opened_at(insurer_id: int):
    """When the insurer's current window opened: its oldest ready request's arrival there."""
    ready = _ready(insurer_id).aggregate(
        validated=Min("validated_at", filter=Q(state=S.VALIDATED)),
        locked=Min("fund_locked_at", filter=Q(state=S.FUND_LOCKED)),
    )
    moments = [m for m in ready.values() if m is not None]
    return min(moments) if moments else None


def window_is_due(insurer: Insurer, *, now=None) -> bool:
    opened = _opened_at(insurer.pk)
    if opened is None:
        return False
    now = now or timezone.now()
    if opened <= now - timedelta(seconds=insurer.dispatch_window_seconds):
        return True
    return _ready(insurer.pk)[: insurer.dispatch_batch_size].count() >= insurer.dispatch_batch_size


def windows_close_due() -> list[WindowClose]:
    """Beat sweep: close every active insurer's window that is due (on time or on size)."""
    closed = []
    for insurer in Insurer.objects.filter(is_active=True):
        funds.parked_placed_catch_up(insurer_id=insurer.pk)
        if window_is_due(insurer):
            result = window_close(insurer_id=insurer.pk)
            if result is not None:
                closed.append(result)
    return closed


def windows_full_close(*, endorsement_ids: Sequence[int]) -> list[WindowClose]:
    """After requests became VALIDATED: close the windows of their insurers that are full."""
    insurer_ids = set(
        EndorsementRequest.objects.filter(pk__in=list(endorsement_ids), policy__isnull=False).values_list(
            "policy__insurer_id", flat=True
        )
    )
    closed = []
    for insurer in Insurer.objects.filter(pk__in=insurer_ids, is_active=True):
        if _ready(insurer.pk)[: insurer.dispatch_batch_size].count() >= insurer.dispatch_batch_size:
            result = window_close(insurer_id=insurer.pk)
            if result is not None:
                closed.append(result)
    return closed


def validated_follow_up(endorsement_ids: list[int]) -> None:
    """Follow-up on VALIDATED (after commit): queue the size check on `pipeline`."""
    from endorsements.tasks import windows_full_close_task

    windows_full_close_task.delay(list(endorsement_ids))


def closer_lock(insurer_id: int, *, blocking_timeout: float):
    """The insurer's closer lock: held while a window closes (and while a cancel decides)."""
    return redis_lock(
        f"scheduler:insurer:{insurer_id}", timeout=CLOSER_LOCK_SECONDS, blocking_timeout=blocking_timeout
    )


def window_close(*, insurer_id: int) -> WindowClose | None:
    """Close the insurer's window now. None if another closer holds the insurer's lock."""
    try:
        with closer_lock(insurer_id, blocking_timeout=0):
            return _window_close(Insurer.objects.get(pk=insurer_id))
    except LockNotAcquired:
        log.info("endorsements.window_close_busy", insurer_id=insurer_id)
        return None
    except LockBackendUnavailable:
        # The database guards every move; without Redis the next tick tries again.
        log.warning("endorsements.window_close_no_lock", insurer_id=insurer_id)
        return None


def _window_close(insurer: Insurer) -> WindowClose:
    result = WindowClose(insurer_id=insurer.pk)
    window = list(
        _ready(insurer.pk)
        .select_related("policy")
        .order_by("validated_at", "id")[: insurer.dispatch_batch_size]
    )
    # Requests an operator approved once are not offered to the gates again (review.gated).
    candidates = review.gated(window)
    answered = gates.gates_consult(candidates) if candidates else {}
    held = {e.pk: answered[e.pk] for e in candidates if e.pk in answered}
    if held:
        review.gates_hold(held=held, actor=ACTOR)
        result.held = list(held)
        window = [e for e in window if e.pk not in held]
    credits = [e for e in window if e.state == S.VALIDATED and is_credit(e)]
    if credits:
        result.credits_dispatch_ids = _dispatches_hand_over(insurer, credits)
        result.sent.extend(e.pk for e in credits)
        if insurer.protocol == Insurer.Protocol.REST:
            # Inline answers: the refunds post before the debits lock funds.
            sending.dispatches_send(dispatch_ids=result.credits_dispatch_ids)
            confirmation.endorsements_confirm(tracking_ids=[e.tracking_id for e in credits])
        else:
            sending.dispatches_queue(result.credits_dispatch_ids)
    debits = [e for e in window if e.state == S.VALIDATED and not is_credit(e)]
    locked = funds.debits_lock(endorsements=debits) if debits else {}
    result.parked = [e.pk for e in locked.get(S.ON_HOLD_FUNDS, [])]
    ready_debits = [e for e in window if e.state == S.FUND_LOCKED]
    ready_debits.sort(key=lambda e: (e.validated_at, e.pk))
    if ready_debits:
        with transaction.atomic():
            sendable = funds.debits_hand_over(endorsements=ready_debits)
            if sendable:
                result.debits_dispatch_ids = _dispatches_hand_over(insurer, sendable)
                result.sent.extend(e.pk for e in sendable)
        if result.debits_dispatch_ids:
            sending.dispatches_queue(result.debits_dispatch_ids)
    log.info(
        "endorsements.window_closed",
        insurer_id=insurer.pk,
        held=len(result.held),
        parked=len(result.parked),
        sent=len(result.sent),
        dispatches=result.dispatch_ids,
    )
    return result


def _dispatches_hand_over(insurer: Insurer, endorsements: list[EndorsementRequest]) -> list[int]:
    """The dispatch of these requests (one per request with batching off) and their move to
    SENT, in one transaction."""
    groups = [endorsements] if batching_enabled() else [[e] for e in endorsements]
    with transaction.atomic():
        dispatches = [
            gateway.dispatch_create(
                insurer=insurer,
                items=[
                    {"reference": e.tracking_id, "kind": e.type, "payload": item_payload(e)} for e in group
                ],
            )
            for group in groups
        ]
        endorsement_transition(
            to_state=S.SENT,
            actor=ACTOR,
            endorsements=endorsements,
            changes={
                e.pk: {"dispatch_id": dispatch.pk, "attempts": 0, "last_error": ""}
                for dispatch, group in zip(dispatches, groups, strict=True)
                for e in group
            },
        )
    return [dispatch.pk for dispatch in dispatches]


def item_payload(endorsement: EndorsementRequest) -> dict:
    """What the insurer sees for one request: the member's data, our price, the reference."""
    data = dict(endorsement.member_data)
    data.update(
        reference=endorsement.tracking_id,
        action=endorsement.type,
        policy_number=endorsement.policy.number,
        effective_date=endorsement.effective_date.isoformat() if endorsement.effective_date else None,
        premium=endorsement.premium_amount or 0,
        currency=endorsement.policy.currency,
    )
    return data
