"""Send: each dispatch goes through the gateway with its deterministic idempotency key.

How it works
- `dispatches_send(dispatch_ids)` (the `endorsements.pipeline.send_dispatches` task on
  `insurer_io`) sends each PENDING (or interrupted SENDING) dispatch once, under a Redis
  lock per dispatch so the task and the sweep never call the insurer for it at once.
- A transient failure (timeout, connection error, 5xx, 429 with Retry-After, an open
  breaker) keeps the same dispatch PENDING and stores its next attempt time:
  full-jitter exponential backoff, `uniform(0, min(cap, retry_base_seconds * 2**(n-1)))`,
  never sooner than the insurer's Retry-After. The requests stay SENT (SENT -> SENT is not
  a move): their `attempts` and `last_error` are recorded on the rows. An outcome-unknown
  send (a timeout, a lost response) is retried with the same key: the request is never
  re-priced or re-held, the insurer recognises the key.
- Retries exhausted (`Insurer.retry_max_attempts`) or a permanent refusal:
  `insurers.services.dispatch_fail`, and the unanswered requests move SENT -> FAILED (the
  dead-letter queue) with the last error and the attempt count; each exchange is kept by
  the gateway (the attempt history).
- `dispatches_send_due` (a beat sweep) sends every PENDING dispatch whose next attempt is
  due, any left PENDING without one for longer than a grace period (its task was lost),
  and any SENDING one whose lease ended (its worker died mid-call: the gateway leases a
  SENDING dispatch for the insurer's timeout plus a few seconds).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ems.redis_lock import LockBackendUnavailable, LockNotAcquired, redis_lock
from endorsements.models import EndorsementRequest, EndorsementState
from endorsements.transitions import endorsement_transition
from insurers import services as gateway
from insurers.adapters.base import GatewayError, PermanentError, TransientError
from insurers.models import Dispatch, DispatchItem

log = structlog.get_logger(__name__)
S = EndorsementState
ACTOR = "pipeline:sending"
SENDABLE = (Dispatch.State.PENDING, Dispatch.State.SENDING)
# A killed sender's lock frees itself this soon; the gateway's SENDING lease (the insurer's
# timeout plus a few seconds) and the idempotency keys guard a send that outlives it.
SEND_LOCK_SECONDS = 30


def retry_cap_seconds() -> float:
    return float(getattr(settings, "PIPELINE_RETRY_CAP_SECONDS", 300))


def backoff_seconds(*, attempt: int, base_seconds: float, retry_after: float | None = None) -> float:
    """Full jitter: a uniform draw up to min(cap, base * 2**(attempt-1)), at least Retry-After."""
    ceiling = min(retry_cap_seconds(), base_seconds * (2 ** max(attempt - 1, 0)))
    return max(random.uniform(0, ceiling), retry_after or 0.0)  # noqa: S311 - jitter, not secrets


def dispatches_queue(dispatch_ids: Sequence[int]) -> None:
    """Queue the send after the current transaction commits (on `insurer_io`)."""
    from endorsements.tasks import send_dispatches_task

    ids = list(dispatch_ids)
    transaction.on_commit(lambda: send_dispatches_task.delay(ids))


def dispatches_send(*, dispatch_ids: Sequence[int]) -> dict[int, str]:
    """Send each dispatch that still needs it; {dispatch id: outcome}. Safe to run twice."""
    outcomes: dict[int, str] = {}
    for dispatch_id in dispatch_ids:
        try:
            with redis_lock(f"dispatch:send:{dispatch_id}", timeout=SEND_LOCK_SECONDS, blocking_timeout=0):
                outcomes[dispatch_id] = dispatch_attempt(dispatch_id=dispatch_id)
        except LockNotAcquired:
            outcomes[dispatch_id] = "busy"
        except LockBackendUnavailable:
            # The insurer's idempotency key makes a concurrent send harmless; go on without the lock.
            outcomes[dispatch_id] = dispatch_attempt(dispatch_id=dispatch_id)
    return outcomes


def dispatch_attempt(*, dispatch_id: int) -> str:
    """One attempt: "sent", "retry", "failed" or "skipped" (nothing to send)."""
    dispatch = Dispatch.objects.select_related("insurer").filter(pk=dispatch_id).first()
    if dispatch is None or dispatch.state not in SENDABLE:
        return "skipped"
    if dispatch.next_attempt_at is not None and dispatch.next_attempt_at > timezone.now():
        return "skipped"  # a repeated message: the backoff stands
    attempts_before = dispatch.attempts
    try:
        gateway.dispatch_send(dispatch_id=dispatch_id)
    except TransientError as error:
        return _transient(dispatch, error, attempts=max(attempts_before + 1, _attempts(dispatch_id)))
    except PermanentError as error:
        dispatch_dead_letter(dispatch_id=dispatch_id, error=_text(error), attempts=_attempts(dispatch_id))
        return "failed"
    _endorsements_attempt(dispatch_id, attempts=_attempts(dispatch_id), error="")
    return "sent"


def _attempts(dispatch_id: int) -> int:
    return Dispatch.objects.filter(pk=dispatch_id).values_list("attempts", flat=True).get()


def _transient(dispatch: Dispatch, error: TransientError, *, attempts: int) -> str:
    insurer = dispatch.insurer
    text = _text(error)
    if attempts >= insurer.retry_max_attempts:
        dispatch_dead_letter(dispatch_id=dispatch.pk, error=text, attempts=attempts)
        return "failed"
    delay = backoff_seconds(
        attempt=attempts, base_seconds=insurer.retry_base_seconds, retry_after=error.retry_after
    )
    with transaction.atomic():
        # An open breaker refuses before the gateway counts the attempt: count it here.
        Dispatch.objects.filter(pk=dispatch.pk).update(
            state=Dispatch.State.PENDING,
            attempts=attempts,
            last_error=text,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
        )
        _endorsements_attempt(dispatch.pk, attempts=attempts, error=text)
    log.warning(
        "endorsements.dispatch_retry", dispatch_id=dispatch.pk, attempts=attempts, delay_s=round(delay, 3)
    )
    return "retry"


def _endorsements_attempt(dispatch_id: int, *, attempts: int, error: str) -> None:
    """Record the attempt on the dispatch's requests, without a state move (SENT -> SENT is none)."""
    fields = {"attempts": min(attempts, 32767), "updated_at": timezone.now()}
    if error:
        fields["last_error"] = error
    EndorsementRequest.objects.filter(dispatch_id=dispatch_id, state=S.SENT).update(**fields)


def dispatch_dead_letter(*, dispatch_id: int, error: str, attempts: int) -> list[EndorsementRequest]:
    """Give up on a dispatch: the gateway fails it, its unanswered requests move SENT -> FAILED."""
    with transaction.atomic():
        answered = set(
            DispatchItem.objects.filter(dispatch_id=dispatch_id)
            .exclude(result=DispatchItem.Result.PENDING)
            .values_list("reference", flat=True)
        )
        gateway.dispatch_fail(dispatch_id=dispatch_id, error=error)
        Dispatch.objects.filter(pk=dispatch_id).update(attempts=attempts, next_attempt_at=None)
        failing = [
            e
            for e in EndorsementRequest.objects.filter(dispatch_id=dispatch_id, state=S.SENT).order_by("id")
            if e.tracking_id not in answered
        ]
        moved = endorsement_transition(
            to_state=S.FAILED,
            actor=ACTOR,
            endorsements=failing,
            reason=error[:500],
            changes={e.pk: {"last_error": error, "attempts": min(attempts, 32767)} for e in failing},
        )
    log.warning("endorsements.dispatch_dead_letter", dispatch_id=dispatch_id, failed=len(moved))
    return moved


def dispatches_send_due(*, now=None) -> dict[int, str]:
    """Beat sweep: send every PENDING dispatch whose next attempt is due (or whose task was lost)."""
    now = now or timezone.now()
    grace = timedelta(seconds=float(getattr(settings, "PIPELINE_SEND_GRACE_SECONDS", 30)))
    due = list(
        Dispatch.objects.filter(state__in=SENDABLE)
        .filter(Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True, created_at__lte=now - grace))
        .order_by("next_attempt_at", "id")
        .values_list("pk", flat=True)[:200]
    )
    return dispatches_send(dispatch_ids=due) if due else {}


def _text(error: GatewayError) -> str:
    return f"{error.code}: {error}"[:2000]
