"""Cancel: HR or ops withdraw a request before it reaches the insurer; ops a dead letter after.

How it works
- Before SENT (RECEIVED, VALIDATED, ON_HOLD_REVIEW, ON_HOLD_FUNDS, FUND_LOCKED not in a
  dispatch that is being sent): one transaction per request releases its hold and cancels
  its parked request (`ledger.services.hold_release_by_reference`, which locks the account
  first, the order the fund lock takes), takes it out of a PENDING dispatch that holds it
  (`insurers.services.item_release`), and moves it to CANCELLED. Each insurer's requests are
  decided under the scheduler's closer lock, so a cancel never lands in the middle of a
  window's close; the database guards the rest (the state machine refuses a second move).
- Cancelling a CANCELLED request answers the same and changes nothing.
- An employee's DELETE takes along its dependants' unsent linked DELETEs (`linked_to`).
- SENT and later: refused (`EndorsementNotCancellable`, naming the state); the way back
  from an applied change is a new endorsement.
- FAILED (ops only, `as_ops=True`): the insurer is asked first (`references_status`). If it
  has the request, its answer is recorded through the gateway (`item_results_record`, so
  the confirmation path takes it) and the cancel is refused (`InsurerHasEndorsement`); if it
  cannot be reached, refused (`InsurerUnreachable`); if it never got it, cancelled as above.
- Nothing is all-or-nothing across requests: the result lists what moved, what was already
  cancelled and each refusal with its error, for the admin's message and the API's answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from django.db import transaction

from ems.errors import EmsError
from ems.redis_lock import LockBackendUnavailable, LockNotAcquired
from ems.tenancy import Caller, scoped
from endorsements.errors import (
    EndorsementBusy,
    EndorsementNotCancellable,
    EndorsementNotFound,
    InsurerHasEndorsement,
    InsurerUnreachable,
)
from endorsements.locks import endorsements_lock
from endorsements.models import EndorsementRequest, EndorsementState
from endorsements.pipeline.scheduler import closer_lock
from endorsements.transitions import endorsement_transition
from insurers import services as gateway
from insurers.adapters.base import PENDING, GatewayError
from insurers.models import Dispatch, DispatchItem, Insurer
from ledger import services as ledger
from ledger.models import Account

log = structlog.get_logger(__name__)
S = EndorsementState

# Not yet with the insurer: anyone allowed to cancel may.
CANCELLABLE = frozenset({S.RECEIVED, S.VALIDATED, S.ON_HOLD_REVIEW, S.ON_HOLD_FUNDS, S.FUND_LOCKED})
# States whose money sits in the ledger under the request's tracking id.
LEDGER_STATES = frozenset({S.ON_HOLD_FUNDS, S.FUND_LOCKED})
# How long a cancel waits for a closing window of the request's insurer.
CLOSER_WAIT_SECONDS = 5


@dataclass
class CancelResult:
    cancelled: list[EndorsementRequest] = field(default_factory=list)
    already_cancelled: list[EndorsementRequest] = field(default_factory=list)
    refused: dict[str, EmsError] = field(default_factory=dict)  # tracking id -> why

    @property
    def done(self) -> list[EndorsementRequest]:
        """Every request that is CANCELLED now, by this call or before it."""
        return [*self.cancelled, *self.already_cancelled]


def endorsements_cancel(
    *, endorsement_ids: Sequence[int], actor: str, reason: str = "", as_ops: bool
) -> CancelResult:
    """Cancel each request that may be; report the others. Safe to repeat."""
    result = CancelResult()
    rows = list(
        EndorsementRequest.objects.filter(pk__in=list(endorsement_ids))
        .select_related("policy__insurer")
        .order_by("pk")
    )
    unsent: dict[int | None, list[EndorsementRequest]] = {}
    failed: dict[int, list[EndorsementRequest]] = {}
    for endorsement in rows:
        if endorsement.state == S.CANCELLED:
            result.already_cancelled.append(endorsement)
        elif endorsement.state in CANCELLABLE:
            unsent.setdefault(_insurer_id(endorsement), []).append(endorsement)
        elif endorsement.state == S.FAILED and as_ops and endorsement.policy_id is not None:
            failed.setdefault(endorsement.policy.insurer_id, []).append(endorsement)
        else:
            result.refused[endorsement.tracking_id] = _not_cancellable(endorsement, as_ops=as_ops)
    _linked_add(unsent, exclude={e.pk for e in rows})
    for insurer_id, group in unsent.items():
        _cancel_under_closer_lock(insurer_id, group, result, actor=actor, reason=reason or _default(as_ops))
    for insurer_id, group in failed.items():
        _dead_letters_cancel(insurer_id, group, result, actor=actor, reason=reason or _default(as_ops))
    for tracking_id, error in result.refused.items():
        log.info("endorsements.cancel_refused", actor=actor, tracking_id=tracking_id, code=error.code)
    log.info(
        "endorsements.cancelled",
        actor=actor,
        cancelled=len(result.cancelled),
        already=len(result.already_cancelled),
        refused=len(result.refused),
    )
    return result


def _linked_add(unsent: dict[int | None, list[EndorsementRequest]], *, exclude: set[int]) -> None:
    """An employee's DELETE cancelled takes along the unsent DELETEs of its dependants that
    validation linked to it (`linked_to`): without it they would end the dependants' cover alone."""
    employees = [e.pk for group in unsent.values() for e in group]
    if not employees:
        return
    for linked in (
        EndorsementRequest.objects.filter(linked_to_id__in=employees, state__in=CANCELLABLE)
        .exclude(pk__in=exclude)
        .select_related("policy__insurer")
        .order_by("pk")
    ):
        unsent.setdefault(_insurer_id(linked), []).append(linked)


def endorsement_cancel(*, caller: Caller, tracking_id: str, reason: str = "") -> EndorsementRequest:
    """HR's cancel of one of its employer's requests (the API and the portal): the request,
    CANCELLED (now or before); raises the refusal otherwise."""
    endorsement_id = (
        scoped(EndorsementRequest.objects.all(), caller)
        .filter(tracking_id=tracking_id)
        .values_list("pk", flat=True)
        .first()
    )
    if endorsement_id is None:
        raise EndorsementNotFound()
    result = endorsements_cancel(
        endorsement_ids=[endorsement_id], actor=caller.principal, reason=reason, as_ops=caller.is_staff
    )
    if tracking_id in result.refused:
        raise result.refused[tracking_id]
    return result.done[0]


def is_cancellable(endorsement: EndorsementRequest, *, as_ops: bool = False) -> bool:
    """Whether a cancel may succeed (the portal shows its button by it); the service decides."""
    return endorsement.state in CANCELLABLE or (as_ops and endorsement.state == S.FAILED)


def _default(as_ops: bool) -> str:
    return "cancelled by operations" if as_ops else "cancelled by HR"


def _insurer_id(endorsement: EndorsementRequest) -> int | None:
    return endorsement.policy.insurer_id if endorsement.policy_id is not None else None


def _not_cancellable(endorsement: EndorsementRequest, *, as_ops: bool) -> EndorsementNotCancellable:
    if endorsement.state == S.FAILED:
        why = (
            "the insurer may have it; operations check with the insurer before cancelling it"
            if not as_ops
            else "it has no policy to ask the insurer about"
        )
    else:
        why = "it has reached the insurer; send a new endorsement to undo its change"
    return EndorsementNotCancellable(
        f"{endorsement.tracking_id} is {endorsement.state}: it cannot be cancelled ({why}).",
    )


def _cancel_under_closer_lock(insurer_id, group, result: CancelResult, *, actor: str, reason: str) -> None:
    if insurer_id is None:
        _cancel_each(group, result, actor=actor, reason=reason, from_states=CANCELLABLE)
        return
    try:
        with closer_lock(insurer_id, blocking_timeout=CLOSER_WAIT_SECONDS):
            _cancel_each(group, result, actor=actor, reason=reason, from_states=CANCELLABLE)
    except LockNotAcquired:
        for endorsement in group:
            result.refused[endorsement.tracking_id] = EndorsementBusy()
    except LockBackendUnavailable:
        # The lock only spares a window's close a refused move; the database guards the rest.
        _cancel_each(group, result, actor=actor, reason=reason, from_states=CANCELLABLE)


def _cancel_each(group, result: CancelResult, *, actor: str, reason: str, from_states) -> None:
    accounts = _account_ids(group)
    for endorsement in group:
        try:
            moved = _cancel_one(
                endorsement,
                accounts.get((endorsement.employer_id, _insurer_id(endorsement))),
                actor=actor,
                reason=reason,
                from_states=from_states,
            )
        except EmsError as error:
            result.refused[endorsement.tracking_id] = error
            continue
        (result.cancelled if moved else result.already_cancelled).append(endorsement)


def _cancel_one(endorsement: EndorsementRequest, account_id, *, actor: str, reason: str, from_states) -> bool:
    """One request's cancel in one transaction: True if it moved, False if it was CANCELLED."""
    with transaction.atomic():
        if account_id is not None:
            # The account first (the fund lock's order); undone with the rest if refused below.
            ledger.hold_release_by_reference(
                account_id=account_id, reference=endorsement.tracking_id, reason=reason, actor=actor
            )
        state = endorsements_lock([endorsement.pk]).get(endorsement.pk)
        if state == S.CANCELLED:
            return False
        if state not in from_states:
            endorsement.state = state
            raise _not_cancellable(endorsement, as_ops=S.FAILED in from_states)
        if state in LEDGER_STATES and account_id is None:
            raise EndorsementBusy("Its funds were locked a moment ago; try again.")
        _dispatch_item_withdraw(endorsement)
        endorsement_transition(
            to_state=S.CANCELLED,
            actor=actor,
            endorsement=endorsement,
            reason=reason[:500],
            changes={endorsement.pk: {"next_attempt_at": None}},
        )
    return True


def _dispatch_item_withdraw(endorsement: EndorsementRequest) -> None:
    """Take the request out of a dispatch not yet sent; refuse if one is being sent."""
    live = DispatchItem.objects.filter(reference=endorsement.tracking_id, is_live=True).select_related(
        "dispatch"
    )
    for item in live:
        if item.result != DispatchItem.Result.PENDING or item.dispatch.state != Dispatch.State.PENDING:
            raise EndorsementNotCancellable(
                f"{endorsement.tracking_id} is in dispatch {item.dispatch_id}, which is being sent "
                f"({item.dispatch.state}): it cannot be cancelled."
            )
    gateway.item_release(reference=endorsement.tracking_id)


def _account_ids(group) -> dict[tuple[int, int | None], int]:
    insurer_ids = {_insurer_id(e) for e in group} - {None}
    if not insurer_ids:
        return {}
    rows = Account.objects.filter(
        employer_id__in={e.employer_id for e in group}, insurer_id__in=insurer_ids
    ).values_list("employer_id", "insurer_id", "pk")
    return {(employer_id, insurer_id): pk for employer_id, insurer_id, pk in rows}


# --- dead letters: ask the insurer first -----------------------------------------------------


def _dead_letters_cancel(insurer_id: int, group, result: CancelResult, *, actor: str, reason: str) -> None:
    insurer = Insurer.objects.get(pk=insurer_id)
    accepted = _accepted_before(group)
    for endorsement in group:
        if endorsement.tracking_id in accepted:
            result.refused[endorsement.tracking_id] = InsurerHasEndorsement(
                f"{endorsement.tracking_id}: the insurer accepted it earlier "
                f"({accepted[endorsement.tracking_id]}); wait for its answer instead of cancelling."
            )
    asking = [e for e in group if e.tracking_id not in accepted]
    if not asking:
        return
    try:
        # A network call: outside any transaction, and before anything is decided.
        found = gateway.references_status(insurer_id=insurer_id, references=[e.tracking_id for e in asking])
    except GatewayError as error:
        for endorsement in asking:
            result.refused[endorsement.tracking_id] = InsurerUnreachable(
                f"{endorsement.tracking_id}: {insurer.code} could not be asked whether it has it "
                f"({error.code}); nothing was cancelled. Try again later."
            )
        return
    has = {answer.reference: answer for answer in found}
    if has:
        gateway.item_results_record(insurer=insurer, results=list(has.values()), source="status")
    for endorsement in asking:
        answer = has.get(endorsement.tracking_id)
        if answer is not None:
            recorded = "" if answer.outcome == PENDING else "; its answer was recorded"
            result.refused[endorsement.tracking_id] = InsurerHasEndorsement(
                f"{endorsement.tracking_id}: {insurer.code} has it ({answer.outcome}){recorded}. "
                "It was not cancelled."
            )
    missing = [e for e in asking if e.tracking_id not in has]
    _cancel_each(missing, result, actor=actor, reason=reason, from_states=frozenset({S.FAILED}))


def _accepted_before(group) -> dict[str, str]:
    """{tracking id: result} for requests an insurer already accepted or confirmed to us."""
    return dict(
        DispatchItem.objects.filter(
            reference__in=[e.tracking_id for e in group],
            result__in=[DispatchItem.Result.ACCEPTED, DispatchItem.Result.CONFIRMED],
        ).values_list("reference", "result")
    )
