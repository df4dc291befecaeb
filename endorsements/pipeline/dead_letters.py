"""Dead letters: FAILED requests and stuck ones, for operations to retry or cancel.

How it works
- `dead_letter_filter(now)` selects the admin's list: every FAILED request, and every request that has
  stayed in a non-final state longer than its stage allows (`stuck_limit_seconds`, the rule
  written in docs/decisions.md): RECEIVED past `PIPELINE_STUCK_RECEIVED_SECONDS`; VALIDATED
  or FUND_LOCKED (not in a dispatch) past two of its insurer's windows plus
  `PIPELINE_STUCK_GRACE_SECONDS`; SENT past the insurer's whole retry budget plus
  `PIPELINE_STUCK_SENT_SECONDS` (its time to answer); CONFIRMED a day past its effective
  date. ON_HOLD_FUNDS and ON_HOLD_REVIEW wait for money or a person, in queues of their own.
- `dead_letters_retry` sends FAILED requests again: per insurer, in one transaction, the
  rows are locked, a NEW dispatch is made for them (`insurers.services.dispatch_create`:
  the next generation of the dispatch key, the items' own keys unchanged, so the insurer
  recognises what it already has and answers it the same), they move FAILED -> SENT with
  their attempts reset, and the send is queued on `insurer_io` after commit
  (`sending.dispatches_queue`). A debit keeps the hold it had (exempt from expiry since it
  was first sent); one whose hold is gone, or that an insurer already holds in a live
  dispatch, is refused with its reason. Cancel is `endorsements.pipeline.cancel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from ems.errors import EmsError
from endorsements.errors import EndorsementNotRetryable
from endorsements.locks import endorsements_lock
from endorsements.models import EndorsementRequest, EndorsementState
from endorsements.pipeline import sending
from endorsements.pipeline.scheduler import is_credit, item_payload
from endorsements.pipeline.sending import retry_cap_seconds
from endorsements.transitions import endorsement_transition
from insurers import services as gateway
from insurers.models import DispatchItem, Insurer
from ledger.models import Hold

log = structlog.get_logger(__name__)
S = EndorsementState

# The state each stuck rule measures from.
STATE_SINCE = {
    S.RECEIVED: "received_at",
    S.VALIDATED: "validated_at",
    S.FUND_LOCKED: "fund_locked_at",
    S.SENT: "sent_at",
    S.FAILED: "closed_at",
}


def retry_budget_seconds(insurer: Insurer) -> float:
    """The longest the gateway may keep retrying a dispatch: every attempt's timeout and the
    largest backoff between attempts (`sending.backoff_seconds`' ceiling)."""
    waits = sum(
        min(retry_cap_seconds(), insurer.retry_base_seconds * 2 ** (attempt - 1))
        for attempt in range(1, insurer.retry_max_attempts)
    )
    return waits + insurer.retry_max_attempts * insurer.request_timeout_seconds


def stuck_limit_seconds(insurer: Insurer, state: str) -> float | None:
    """How long a request may stay in `state` at this insurer before it counts as stuck."""
    grace = float(getattr(settings, "PIPELINE_STUCK_GRACE_SECONDS", 60))
    if state == S.RECEIVED:
        return float(getattr(settings, "PIPELINE_STUCK_RECEIVED_SECONDS", 600))
    if state in (S.VALIDATED, S.FUND_LOCKED):
        return 2 * insurer.dispatch_window_seconds + grace
    if state == S.SENT:
        return retry_budget_seconds(insurer) + float(getattr(settings, "PIPELINE_STUCK_SENT_SECONDS", 3600))
    return None


def dead_letter_filter(now) -> Q:
    """FAILED, or in a state longer than its limit at the request's insurer (one query for the insurers)."""
    received_limit = stuck_limit_seconds(Insurer(), S.RECEIVED)
    rule = Q(state=S.FAILED)
    rule |= Q(state=S.RECEIVED, received_at__lt=now - timedelta(seconds=received_limit))
    rule |= Q(state=S.CONFIRMED, effective_date__lt=timezone.localdate(now))
    for insurer in Insurer.objects.all():
        at_insurer = Q(policy__insurer_id=insurer.pk)
        for state in (S.VALIDATED, S.FUND_LOCKED, S.SENT):
            since = now - timedelta(seconds=stuck_limit_seconds(insurer, state))
            condition = Q(state=state, **{f"{STATE_SINCE[state]}__lt": since})
            if state == S.FUND_LOCKED:
                condition &= Q(dispatch__isnull=True)
            rule |= at_insurer & condition
    return rule


def dead_letters(*, now=None) -> QuerySet[EndorsementRequest]:
    """FAILED requests and stuck ones (see the module's rule), oldest first."""
    now = now or timezone.now()
    return EndorsementRequest.objects.filter(dead_letter_filter(now)).order_by("updated_at", "id")


def stuck_text(endorsement: EndorsementRequest, *, now=None) -> str:
    """Why a request is in the list: "FAILED", or how long it has been in its state and the limit."""
    if endorsement.state == S.FAILED:
        return "FAILED"
    if endorsement.state == S.CONFIRMED:
        return f"CONFIRMED, effective {endorsement.effective_date} and not active"
    since = getattr(endorsement, STATE_SINCE.get(endorsement.state, "updated_at"), None)
    insurer = endorsement.policy.insurer if endorsement.policy_id is not None else Insurer()
    limit = stuck_limit_seconds(insurer, endorsement.state)
    if since is None or limit is None:
        return endorsement.state
    waited = ((now or timezone.now()) - since).total_seconds()
    return f"{endorsement.state} for {_duration(waited)} (limit {_duration(limit)})"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


# --- retry ------------------------------------------------------------------------------------


@dataclass
class RetryResult:
    sent: list[EndorsementRequest] = field(default_factory=list)
    dispatch_ids: list[int] = field(default_factory=list)
    refused: dict[str, EmsError] = field(default_factory=dict)  # tracking id -> why


def dead_letters_retry(*, endorsement_ids: Sequence[int], actor: str) -> RetryResult:
    """Send FAILED requests again through a new dispatch per insurer, same item keys."""
    result = RetryResult()
    by_insurer: dict[int, list[EndorsementRequest]] = {}
    for endorsement in (
        EndorsementRequest.objects.filter(pk__in=list(endorsement_ids))
        .select_related("policy__insurer")
        .order_by("pk")
    ):
        if endorsement.state != S.FAILED or endorsement.policy_id is None:
            result.refused[endorsement.tracking_id] = _not_retryable(endorsement, endorsement.state)
            continue
        by_insurer.setdefault(endorsement.policy.insurer_id, []).append(endorsement)
    for group in by_insurer.values():
        insurer = group[0].policy.insurer
        size = max(insurer.dispatch_batch_size, 1)
        for start in range(0, len(group), size):
            _retry_chunk(insurer, group[start : start + size], result, actor=actor)
    for tracking_id, error in result.refused.items():
        log.info("endorsements.retry_refused", actor=actor, tracking_id=tracking_id, code=error.code)
    log.info(
        "endorsements.dead_letters_retried", actor=actor, sent=len(result.sent), refused=len(result.refused)
    )
    return result


def _retry_chunk(
    insurer: Insurer, chunk: list[EndorsementRequest], result: RetryResult, *, actor: str
) -> None:
    with transaction.atomic():
        states = endorsements_lock(e.pk for e in chunk)
        ready = []
        for endorsement in chunk:
            state = states.get(endorsement.pk, "")
            if state == S.FAILED:
                ready.append(endorsement)
            else:
                result.refused[endorsement.tracking_id] = _not_retryable(endorsement, state)
        ready = _with_live_holds_only(ready, result)
        ready = _without_live_items(ready, result)
        if not ready:
            return
        dispatch = gateway.dispatch_create(
            insurer=insurer,
            items=[{"reference": e.tracking_id, "kind": e.type, "payload": item_payload(e)} for e in ready],
        )
        endorsement_transition(
            to_state=S.SENT,
            actor=actor,
            endorsements=ready,
            reason=f"retried by operations in dispatch {dispatch.pk}",
            changes={
                e.pk: {
                    "dispatch_id": dispatch.pk,
                    "attempts": 0,
                    "last_error": "",
                    "next_attempt_at": None,
                    "closed_at": None,
                }
                for e in ready
            },
        )
        sending.dispatches_queue([dispatch.pk])
    result.sent.extend(ready)
    result.dispatch_ids.append(dispatch.pk)


def _not_retryable(endorsement: EndorsementRequest, state: str) -> EndorsementNotRetryable:
    return EndorsementNotRetryable(
        f"{endorsement.tracking_id} is {state or 'gone'}: only a FAILED endorsement can be retried."
    )


def _with_live_holds_only(ready: list[EndorsementRequest], result: RetryResult) -> list[EndorsementRequest]:
    """A debit goes again only with its hold still pending (the money it was priced against)."""
    debits = [e for e in ready if not is_credit(e)]
    held = set(
        Hold.objects.filter(
            reference__in=[e.tracking_id for e in debits], state=Hold.State.PENDING
        ).values_list("reference", flat=True)
    )
    keep = []
    for endorsement in ready:
        if is_credit(endorsement) or endorsement.tracking_id in held:
            keep.append(endorsement)
        else:
            result.refused[endorsement.tracking_id] = EndorsementNotRetryable(
                f"{endorsement.tracking_id} has no pending hold any more: "
                "cancel it and send a new endorsement."
            )
    return keep


def _without_live_items(ready: list[EndorsementRequest], result: RetryResult) -> list[EndorsementRequest]:
    """A request the insurer holds in a live dispatch (it accepted it) waits for that answer."""
    live = dict(
        DispatchItem.objects.filter(reference__in=[e.tracking_id for e in ready], is_live=True).values_list(
            "reference", "dispatch_id"
        )
    )
    for endorsement in ready:
        if endorsement.tracking_id in live:
            result.refused[endorsement.tracking_id] = EndorsementNotRetryable(
                f"{endorsement.tracking_id} is still live in dispatch {live[endorsement.tracking_id]} "
                "(the insurer accepted it): wait for its answer."
            )
    return [e for e in ready if e.tracking_id not in live]
