"""Fund lock: a window's debits reserve their premium in the employer's EA, or park.

How it works
- Accounts are per (employer, insurer). `debits_lock` places one `holds_place_batch` per
  account, oldest request first, with the key `hold:<tracking_id>`: a request that fits
  moves VALIDATED -> FUND_LOCKED, one that does not (or would overtake an older parked
  one) moves VALIDATED -> ON_HOLD_FUNDS; its parked request waits in the ledger's queue.
  Holds and moves commit together, one transition call per outcome and account.
- The ledger calls `funds_event` (registered in `wiring`) after a top-up, refund or release
  placed a parked request's hold; the `endorsements.pipeline.funds_placed` task moves those
  requests ON_HOLD_FUNDS -> FUND_LOCKED, and the next window of their insurer sends them,
  oldest first. `parked_placed_catch_up` re-reads the ledger for a handler call that was
  lost (a worker killed after the ledger's commit); the scheduler runs it at every close.
- `debits_hand_over` runs in the transaction that moves debits to SENT: their holds are
  exempted from expiry (`ledger.services.holds_expiry_exempt`: the insurer has the
  request, the hold ends only by capture or release). A request whose hold expired
  before it was sent gets a new hold (`hold:<tracking_id>:after-<expired hold id>`): it
  stays FUND_LOCKED for the next window if that fits, or moves FUND_LOCKED -> ON_HOLD_FUNDS.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from endorsements.models import EndorsementRequest, EndorsementState, EndorsementType
from endorsements.transitions import endorsement_transition
from ledger import services as ledger
from ledger.handlers import PLACED, FundsEvent
from ledger.models import Account, Hold, ParkedRequest

S = EndorsementState
ACTOR = "pipeline:funds"


def is_credit(endorsement: EndorsementRequest) -> bool:
    """Credits lock nothing: deletions, negative corrections, zero-premium changes."""
    return endorsement.type == EndorsementType.DELETE or (endorsement.premium_amount or 0) <= 0


def hold_key(endorsement: EndorsementRequest) -> str:
    return f"hold:{endorsement.tracking_id}"


def _account_ids(endorsements: Sequence[EndorsementRequest]) -> dict[tuple[int, int], int]:
    """{(employer_id, insurer_id): account id}, opening the accounts that do not exist yet (at 0)."""
    wanted = {(e.employer_id, e.policy.insurer_id) for e in endorsements}
    found = {
        (employer_id, insurer_id): pk
        for pk, employer_id, insurer_id in Account.objects.filter(
            employer_id__in={w[0] for w in wanted}, insurer_id__in={w[1] for w in wanted}
        ).values_list("pk", "employer_id", "insurer_id")
    }
    for employer_id, insurer_id in wanted - set(found):
        found[(employer_id, insurer_id)] = ledger.account_open(
            employer_id=employer_id, insurer_id=insurer_id
        ).pk
    return found


def endorsements_by_account(
    endorsements: Sequence[EndorsementRequest],
) -> dict[int, list[EndorsementRequest]]:
    accounts = _account_ids(endorsements)
    grouped: dict[int, list[EndorsementRequest]] = {}
    for e in endorsements:
        grouped.setdefault(accounts[(e.employer_id, e.policy.insurer_id)], []).append(e)
    return grouped


def debits_lock(*, endorsements: Sequence[EndorsementRequest]) -> dict[str, list[EndorsementRequest]]:
    """Lock funds for VALIDATED debits (oldest first per account). Returns them by new state."""
    out: dict[str, list[EndorsementRequest]] = {S.FUND_LOCKED: [], S.ON_HOLD_FUNDS: []}
    for account_id, group in endorsements_by_account(endorsements).items():
        with transaction.atomic():
            placements = ledger.holds_place_batch(
                account_id=account_id,
                requests=[
                    {"amount": e.premium_amount, "reference": e.tracking_id, "idempotency_key": hold_key(e)}
                    for e in group
                ],
                actor=ACTOR,
            )
            locked = [e for e, p in zip(group, placements, strict=True) if not p.parked]
            parked = [e for e, p in zip(group, placements, strict=True) if p.parked]
            endorsement_transition(to_state=S.FUND_LOCKED, actor=ACTOR, endorsements=locked)
            endorsement_transition(
                to_state=S.ON_HOLD_FUNDS, actor=ACTOR, endorsements=parked, reason="insufficient_funds"
            )
        out[S.FUND_LOCKED].extend(locked)
        out[S.ON_HOLD_FUNDS].extend(parked)
    return out


def debits_hand_over(*, endorsements: Sequence[EndorsementRequest]) -> list[EndorsementRequest]:
    """Inside the SENT move's transaction: exempt the debits' holds from expiry.

    Returns the debits that may be sent; the others (hold expired) were re-held or parked."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("debits are handed over inside the transaction that sends them")
    sendable: list[EndorsementRequest] = []
    for account_id, group in endorsements_by_account(endorsements).items():
        exempted = set(
            ledger.holds_expiry_exempt(
                account_id=account_id, references=[e.tracking_id for e in group], actor=ACTOR
            )
        )
        sendable.extend(e for e in group if e.tracking_id in exempted)
        expired = [e for e in group if e.tracking_id not in exempted]
        if expired:
            _holds_renew(account_id, expired)
    return sendable


def _holds_renew(account_id: int, expired: list[EndorsementRequest]) -> None:
    """FUND_LOCKED requests whose hold expired: a new hold, or back to the queue."""
    last_hold = dict(
        Hold.objects.filter(account_id=account_id, reference__in=[e.tracking_id for e in expired])
        .order_by("reference", "-id")
        .distinct("reference")
        .values_list("reference", "pk")
    )
    placements = ledger.holds_place_batch(
        account_id=account_id,
        requests=[
            {
                "amount": e.premium_amount,
                "reference": e.tracking_id,
                "idempotency_key": f"{hold_key(e)}:after-{last_hold.get(e.tracking_id, 0)}",
            }
            for e in expired
        ],
        actor=ACTOR,
    )
    parked = [e for e, p in zip(expired, placements, strict=True) if p.parked]
    endorsement_transition(to_state=S.ON_HOLD_FUNDS, actor=ACTOR, endorsements=parked, reason="hold_expired")


# --- woken by the ledger ----------------------------------------------------------------------


def funds_event(reference: str, event: FundsEvent) -> None:
    """The ledger's funds handler: a parked request got its hold; queue the move (after commit)."""
    if event != PLACED:
        return
    from endorsements.pipeline.confirmation import DIFFERENCE_SUFFIX
    from endorsements.tasks import differences_capture_task, funds_placed_task

    if reference.endswith(DIFFERENCE_SUFFIX):
        differences_capture_task.delay([reference])  # a confirmed debit's parked difference
    else:
        funds_placed_task.delay([reference])


def parked_placed(*, tracking_ids: Sequence[str]) -> list[EndorsementRequest]:
    """ON_HOLD_FUNDS -> FUND_LOCKED for requests whose parked hold the ledger placed. Safe twice."""
    placed = set(
        ParkedRequest.objects.filter(
            reference__in=list(tracking_ids), state=ParkedRequest.State.PLACED, hold__state=Hold.State.PENDING
        ).values_list("reference", flat=True)
    )
    waiting = list(
        EndorsementRequest.objects.filter(tracking_id__in=placed, state=S.ON_HOLD_FUNDS).order_by(
            "on_hold_funds_at", "id"
        )
    )
    return endorsement_transition(
        to_state=S.FUND_LOCKED, actor=ACTOR, endorsements=waiting, reason="funds_placed"
    )


def parked_placed_catch_up(*, insurer_id: int) -> list[EndorsementRequest]:
    """The same for every parked request of an insurer whose hold was placed (a lost handler call)."""
    waiting = EndorsementRequest.objects.filter(state=S.ON_HOLD_FUNDS, policy__insurer_id=insurer_id)
    tracking_ids = list(waiting.values_list("tracking_id", flat=True))
    return parked_placed(tracking_ids=tracking_ids) if tracking_ids else []
