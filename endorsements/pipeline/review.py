"""The review hold: requests an operator must look at before any money is locked for them.

How it works
- `reviews_hold` moves VALIDATED requests to ON_HOLD_REVIEW with the reason that held
  them. The scheduler calls it at window close for the requests a gate (`gates.py`, e.g.
  the velocity breaker) answered for; another app may call it directly.
- `reviews_approve` moves them back to VALIDATED: the move re-stamps `validated_at`, so an
  approved request joins its insurer's next window (the one open now, or a new one
  opening at the approval) instead of closing an old window at once. A request that was
  reviewed once (`on_hold_review_at` set) is not offered to the gates again: an operator's
  approval is not overruled by the same breaker on the next close.
- `reviews_reject` moves them to REJECTED with a machine-readable reason
  (`{"field": "", "code": "review_rejected", "message": <the operator's reason>}`), shown
  to HR in the portal and the API like any rejection.
Each call is all or nothing: one request that is not in the expected state refuses the
whole call (`IllegalTransition`) and nothing is written. Nothing here touches the ledger:
a request on review hold has no hold yet (the gates run before fund lock). The transition
writes the history, the event and the audit record with the actor.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from ems.errors import ValidationFailed
from endorsements.errors import EndorsementNotFound
from endorsements.models import EndorsementRequest, EndorsementState
from endorsements.transitions import endorsement_transition

S = EndorsementState
REJECTION_CODE = "review_rejected"
APPROVED_REASON = "review_approved"


class ReviewReasonRequired(ValidationFailed):
    code = "review_reason_required"
    message = "Say why the request is held or rejected."


def _requests(endorsement_ids: Sequence[int]) -> list[EndorsementRequest]:
    ids = sorted(set(endorsement_ids))
    found = list(EndorsementRequest.objects.filter(pk__in=ids).order_by("pk"))
    if len(found) != len(ids):
        raise EndorsementNotFound(f"{len(ids) - len(found)} of {len(ids)} endorsements do not exist.")
    return found


def _reason_required(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ReviewReasonRequired()
    return reason[:500]


def reviews_hold(*, endorsement_ids: Sequence[int], reason: str, actor: str) -> list[EndorsementRequest]:
    """VALIDATED -> ON_HOLD_REVIEW for all of them, with `reason` on each move."""
    reason = _reason_required(reason)
    with transaction.atomic():
        return endorsement_transition(
            to_state=S.ON_HOLD_REVIEW, actor=actor, endorsements=_requests(endorsement_ids), reason=reason
        )


def reviews_approve(
    *, endorsement_ids: Sequence[int], actor: str, note: str = ""
) -> list[EndorsementRequest]:
    """ON_HOLD_REVIEW -> VALIDATED: back to the scheduler, into the insurer's next window."""
    reason = f"{APPROVED_REASON}: {note.strip()}" if note.strip() else APPROVED_REASON
    with transaction.atomic():
        return endorsement_transition(
            to_state=S.VALIDATED, actor=actor, endorsements=_requests(endorsement_ids), reason=reason[:500]
        )


def reviews_reject(*, endorsement_ids: Sequence[int], actor: str, reason: str) -> list[EndorsementRequest]:
    """ON_HOLD_REVIEW -> REJECTED, each with the `review_rejected` reason carrying `reason`."""
    reason = _reason_required(reason)
    with transaction.atomic():
        requests = _requests(endorsement_ids)
        rejection = [{"field": "", "code": REJECTION_CODE, "message": reason}]
        return endorsement_transition(
            to_state=S.REJECTED,
            actor=actor,
            endorsements=requests,
            reason=f"{REJECTION_CODE}: {reason}"[:500],
            changes={e.pk: {"rejection_reasons": rejection} for e in requests},
        )


def gated(endorsements: Sequence[EndorsementRequest]) -> list[EndorsementRequest]:
    """The validated requests the gates may still hold: those never reviewed before."""
    return [e for e in endorsements if e.state == S.VALIDATED and e.on_hold_review_at is None]


def gates_hold(*, held: dict[int, str], actor: str) -> None:
    """Hold what the gates answered ({id: reason}): one `reviews_hold` per distinct reason
    (set-based: a window's held requests cost a call per reason, not per request)."""
    by_reason: dict[str, list[int]] = {}
    for pk, reason in held.items():
        by_reason.setdefault(reason.strip() or "held by a review gate", []).append(pk)
    for reason in sorted(by_reason):
        reviews_hold(endorsement_ids=by_reason[reason], reason=reason, actor=actor)
