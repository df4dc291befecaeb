"""Confirmation: the insurer's answer becomes the request's state and the EA's money, once.

How it works
- The gateway writes every answer on its dispatch item (`insurers.services.item_results_record`:
  inline results, webhook events, SFTP response files, status fetches all come through it)
  and calls `results_handler` after that commit. The handler, the catch-up sweep and ops'
  tools all call ONE service, `endorsements_confirm(tracking_ids)`, which reads the items'
  result columns (the truth), not the message that woke it: a duplicate or out-of-order
  event, a second worker or a sweep after a lost handler call all find the same answer.
- Per account (employer x insurer), one transaction: the requests' rows are locked and
  re-read (only SENT and FAILED ones are answered: FAILED -> CONFIRMED | INSURER_REJECTED is
  a late answer), the money moves, then the states move through `endorsement_transition`.
  Every ledger call carries a key derived from the tracking id, so a repeat moves no money.
- A confirmed debit captures its hold for the insurer's premium. Lower: the rest returns to
  available. Higher: the hold is captured whole and a second hold, `<tracking_id>/diff`, is
  placed and captured for the difference; if it does not fit it parks (never a negative
  available balance), the request is CONFIRMED with the difference parked in its
  discrepancy, and the ledger's wake (`funds.funds_event`) captures it when funds arrive.
- A confirmed credit (DELETE, negative correction) posts a refund of the insurer's figure
  (ours when the insurer gives none).
- A rejection moves the request to INSURER_REJECTED with the insurer's code and reason and
  releases its hold.
- ACCEPTED (the insurer has it, the confirmation comes later) moves nothing: the insurer's
  reference and premium are noted on the request; CONFIRMED or REJECTED follows.
- Any difference in premium, effective date or sum insured is kept in `discrepancy` for
  reconciliation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from django.db import transaction
from django.db.models import Exists, OuterRef

from endorsements.locks import endorsements_lock
from endorsements.models import EndorsementRequest, EndorsementState
from endorsements.pipeline.funds import endorsements_by_account, is_credit
from endorsements.transitions import endorsement_transition
from insurers.models import DispatchItem
from ledger import services as ledger
from ledger.models import Hold

log = structlog.get_logger(__name__)
S = EndorsementState
R = DispatchItem.Result
ACTOR = "pipeline:confirmation"
ANSWERABLE = (S.SENT, S.FAILED)
DIFFERENCE_SUFFIX = "/diff"


@dataclass
class Confirmed:
    """What one call did, by tracking id."""

    confirmed: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    differences_parked: list[str] = field(default_factory=list)


def results_handler(insurer_id: int, results: Sequence) -> None:
    """The gateway's confirmation handler (after the results' commit): queue the answers on `pipeline`."""
    from endorsements.tasks import confirm_task

    references = [r.reference for r in results if r.outcome != "pending"]
    if references:
        confirm_task.delay(references)


def difference_reference(tracking_id: str) -> str:
    return f"{tracking_id}{DIFFERENCE_SUFFIX}"


def _answers(tracking_ids: Sequence[str]) -> dict[str, DispatchItem]:
    """Each reference's answer: its final item (CONFIRMED or REJECTED), else its ACCEPTED one."""
    rank = {R.CONFIRMED: 2, R.REJECTED: 2, R.ACCEPTED: 1}
    best: dict[str, DispatchItem] = {}
    for item in DispatchItem.objects.filter(reference__in=list(tracking_ids), result__in=list(rank)).order_by(
        "id"
    ):
        current = best.get(item.reference)
        if current is None or rank[item.result] >= rank[current.result]:
            best[item.reference] = item
    return best


def endorsements_confirm(*, tracking_ids: Sequence[str]) -> Confirmed:
    """Apply the insurer's recorded answers to these requests. Safe to run twice, in any order."""
    done = Confirmed()
    answers = _answers(tracking_ids)
    if not answers:
        return done
    waiting = list(
        EndorsementRequest.objects.filter(tracking_id__in=list(answers), state__in=ANSWERABLE)
        .select_related("policy")
        .order_by("id")
    )
    _accepted_note([e for e in waiting if answers[e.tracking_id].result == R.ACCEPTED], answers)
    final = [e for e in waiting if answers[e.tracking_id].result != R.ACCEPTED]
    for account_id, group in endorsements_by_account(final).items():
        with transaction.atomic():
            current = endorsements_lock(e.pk for e in group)
            group = [e for e in group if current.get(e.pk) in ANSWERABLE]
            if group:
                _account_confirm(account_id, group, answers, done)
    if done.confirmed or done.rejected:
        log.info(
            "endorsements.confirmed",
            confirmed=len(done.confirmed),
            rejected=len(done.rejected),
            differences_parked=len(done.differences_parked),
        )
    return done


def _account_confirm(account_id: int, group: list[EndorsementRequest], answers, done: Confirmed) -> None:
    """One account's answers: the money in one batch call per kind, then the moves."""
    confirmed = [e for e in group if answers[e.tracking_id].result == R.CONFIRMED]
    rejected = [e for e in group if answers[e.tracking_id].result == R.REJECTED]
    parked = _debits_capture(account_id, [e for e in confirmed if not is_credit(e)], answers)
    _credits_refund(account_id, [e for e in confirmed if is_credit(e)], answers)
    released = [e.tracking_id for e in rejected if not is_credit(e)]
    if released:
        ledger.holds_release_batch(
            account_id=account_id, references=released, reason="insurer_rejected", actor=ACTOR
        )
    changes: dict[int, dict] = {}
    for e in confirmed:
        item = answers[e.tracking_id]
        discrepancy = discrepancy_of(e, item)
        if parked.get(e.tracking_id):
            discrepancy["difference_parked"] = parked[e.tracking_id]
            done.differences_parked.append(e.tracking_id)
        changes[e.pk] = {
            "insurer_reference": item.insurer_reference or e.insurer_reference,
            "insurer_member_id": item.insurer_member_id,
            "insurer_premium": item.insurer_premium,
            "discrepancy": discrepancy,
            "closed_at": None,
            "last_error": "",
        }
    endorsement_transition(to_state=S.CONFIRMED, actor=ACTOR, endorsements=confirmed, changes=changes)
    for (code, reason), same in _by_reason(rejected, answers).items():
        endorsement_transition(
            to_state=S.INSURER_REJECTED,
            actor=ACTOR,
            endorsements=same,
            reason=f"{code}: {reason}"[:500],
            changes={
                e.pk: {
                    "rejection_reasons": [{"field": "", "code": code, "message": reason}],
                    "insurer_reference": answers[e.tracking_id].insurer_reference or e.insurer_reference,
                }
                for e in same
            },
        )
    done.confirmed.extend(e.tracking_id for e in confirmed)
    done.rejected.extend(e.tracking_id for e in rejected)


def _by_reason(rejected, answers) -> dict[tuple[str, str], list[EndorsementRequest]]:
    grouped: dict[tuple[str, str], list[EndorsementRequest]] = {}
    for e in rejected:
        item = answers[e.tracking_id]
        key = (item.result_code or "insurer_rejected", item.result_reason or "The insurer rejected it.")
        grouped.setdefault(key, []).append(e)
    return grouped


def _debits_capture(account_id: int, debits: list[EndorsementRequest], answers) -> dict[str, int]:
    """Capture the debits' holds for the insurer's premiums (one batch), then place and capture
    the differences where the insurer charged more. Returns the differences left parked."""
    if not debits:
        return {}
    holds = {
        hold.reference: hold
        for hold in Hold.objects.filter(
            account_id=account_id, reference__in=[e.tracking_id for e in debits], state=Hold.State.PENDING
        )
    }
    missing = [e.tracking_id for e in debits if e.tracking_id not in holds]
    if missing:
        raise RuntimeError(f"confirmed debits without a pending hold: {missing[:5]}")
    charges = {e.tracking_id: _charge(answers[e.tracking_id], holds[e.tracking_id].amount) for e in debits}
    ledger.holds_capture_batch(
        account_id=account_id,
        captures=[
            {"hold_id": holds[t].pk, "amount": min(charge, holds[t].amount), "idempotency_key": t}
            for t, charge in charges.items()
        ],
        actor=ACTOR,
    )
    more = {t: charge - holds[t].amount for t, charge in charges.items() if charge > holds[t].amount}
    if not more:
        return {}
    placements = ledger.holds_place_batch(
        account_id=account_id,
        requests=[
            {
                "amount": amount,
                "reference": difference_reference(t),
                "idempotency_key": f"hold:{difference_reference(t)}",
            }
            for t, amount in more.items()
        ],
        actor=ACTOR,
        ahead_of_queue=True,  # owed for cover the insurer confirmed: not behind unsent requests
    )
    placed = [p.hold for p in placements if p.hold is not None and p.hold.state == Hold.State.PENDING]
    if placed:
        ledger.holds_capture_batch(
            account_id=account_id,
            captures=[{"hold_id": hold.pk, "idempotency_key": hold.reference} for hold in placed],
            actor=ACTOR,
        )
    return {t: amount for (t, amount), p in zip(more.items(), placements, strict=True) if p.hold is None}


def _charge(item: DispatchItem, held: int) -> int:
    """What the insurer charged for a debit: its figure, or what we held when it gives none."""
    return abs(item.insurer_premium) if item.insurer_premium is not None else held


def _difference_capture(hold: Hold) -> None:
    if hold.state == Hold.State.PENDING:
        ledger.hold_capture(hold_id=hold.pk, idempotency_key=hold.reference, actor=ACTOR)


def differences_capture(*, references: Sequence[str]) -> int:
    """The ledger placed parked differences (`<tracking_id>/diff`): capture them. Safe twice."""
    holds = list(Hold.objects.filter(reference__in=list(references), state=Hold.State.PENDING).order_by("id"))
    for hold in holds:
        if hold.reference.endswith(DIFFERENCE_SUFFIX):
            _difference_capture(hold)
    return len(holds)


def _credits_refund(account_id: int, credits: list[EndorsementRequest], answers) -> None:
    """Post the insurer's refund figures (ours where it gives none) in one batch; zero posts nothing."""
    refunds = []
    for e in credits:
        item = answers[e.tracking_id]
        amount = abs(item.insurer_premium) if item.insurer_premium is not None else abs(e.premium_amount or 0)
        if amount:
            refunds.append({"amount": amount, "reference": e.tracking_id, "idempotency_key": e.tracking_id})
    if refunds:
        ledger.refunds_post_batch(account_id=account_id, refunds=refunds, actor=ACTOR)


def discrepancy_of(e: EndorsementRequest, item: DispatchItem) -> dict:
    """Where the insurer's answer differs from our request: premium, effective date, sum insured."""
    found: dict = {}
    ours = e.premium_amount or 0
    if item.insurer_premium is not None and abs(item.insurer_premium) != abs(ours):
        found["premium"] = {"ours": ours, "insurer": item.insurer_premium}
    data = item.result_data or {}
    theirs_date = data.get("effective_date")
    if theirs_date and e.effective_date and str(theirs_date)[:10] != e.effective_date.isoformat():
        found["effective_date"] = {"ours": e.effective_date.isoformat(), "insurer": str(theirs_date)[:10]}
    theirs_sum = data.get("sum_insured")
    ours_sum = (e.member_data or {}).get("sum_insured")
    if theirs_sum not in (None, "") and ours_sum not in (None, "") and int(theirs_sum) != int(ours_sum):
        found["sum_insured"] = {"ours": int(ours_sum), "insurer": int(theirs_sum)}
    return found


def _accepted_note(accepted: list[EndorsementRequest], answers) -> None:
    """ACCEPTED is not a move (SENT -> SENT is none): note the insurer's reference and premium."""
    noted = []
    for e in accepted:
        item = answers[e.tracking_id]
        if item.insurer_reference and not e.insurer_reference:
            e.insurer_reference, e.insurer_premium = item.insurer_reference, item.insurer_premium
            noted.append(e)
    if noted:
        EndorsementRequest.objects.bulk_update(
            noted, ["insurer_reference", "insurer_premium"], batch_size=500
        )


def confirmations_catch_up(*, limit: int = 1000) -> Confirmed:
    """Sweep: requests still SENT or FAILED whose item holds a final answer (a lost handler call),
    and placed differences not yet captured (a lost wake)."""
    differences_capture(
        references=list(
            Hold.objects.filter(state=Hold.State.PENDING, reference__endswith=DIFFERENCE_SUFFIX)
            .order_by("id")
            .values_list("reference", flat=True)[:limit]
        )
    )
    answered = DispatchItem.objects.filter(
        reference=OuterRef("tracking_id"), result__in=[R.CONFIRMED, R.REJECTED]
    )
    tracking_ids = list(
        EndorsementRequest.objects.filter(state__in=ANSWERABLE)
        .filter(Exists(answered))
        .order_by("id")
        .values_list("tracking_id", flat=True)[:limit]
    )
    return endorsements_confirm(tracking_ids=tracking_ids) if tracking_ids else Confirmed()
