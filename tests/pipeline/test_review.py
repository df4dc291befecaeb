"""`endorsements/pipeline/review.py`: held at window close, approved into the next window, rejected."""

import datetime

import pytest
from django.utils import timezone

from ems.models import OutboxEvent
from endorsements.errors import EndorsementNotFound, IllegalTransition
from endorsements.models import EndorsementRequest, EndorsementTransition
from endorsements.pipeline import gates, review, scheduler
from insurers.models import Dispatch
from ledger.models import Hold
from tests.pipeline.conftest import S, fund, policy_at, rest_insurer_at, states, validated

pytestmark = pytest.mark.django_db


def window_passes(insurer, *requests) -> None:
    """The insurer's window ages past its length (validated_at moved back by it and a second)."""
    # received then too: no state is reached before arrival (a CHECK)
    then = timezone.now() - datetime.timedelta(seconds=insurer.dispatch_window_seconds + 1)
    EndorsementRequest.objects.filter(pk__in=[r.pk for r in requests]).update(
        received_at=then, validated_at=then
    )


@pytest.fixture
def velocity_gate():
    """A registered gate that holds the requests named in `holding` (a set of ids)."""
    holding: set[int] = set()

    def velocity(endorsements):
        return {e.pk: "velocity_breaker" for e in endorsements if e.pk in holding}

    gates.gate_register(velocity)
    yield holding
    gates.gate_unregister(velocity)


def snapshot(*requests) -> tuple:
    return (
        states(*requests),
        EndorsementTransition.objects.count(),
        OutboxEvent.objects.count(),
        Hold.objects.count(),
    )


def test_a_gated_request_is_held_at_close_and_once_approved_goes_in_the_next_window(
    sandbox, approver, velocity_gate
):
    # given an insurer with 30 s windows, a funded account and a gate that holds one request
    insurer = rest_insurer_at(sandbox, dispatch_window_seconds=30, dispatch_batch_size=100)
    policy = policy_at(insurer)
    fund(policy, 10_000_00, approver)
    suspicious, fine = validated(policy, premium=9_000_00), validated(policy, premium=1_000_00)
    velocity_gate.add(suspicious.pk)
    window_passes(insurer, suspicious, fine)
    # when the window closes
    (first,) = [c for c in scheduler.windows_close_due() if c.insurer_id == insurer.pk]
    # then the held one waits for review, with no hold on its account; the other went
    assert first.held == [suspicious.pk]
    assert states(suspicious, fine) == [S.ON_HOLD_REVIEW, S.SENT]
    assert not Hold.objects.filter(reference=suspicious.tracking_id).exists()
    assert suspicious.transitions.order_by("-id").values_list("actor", "reason")[0] == (
        scheduler.ACTOR,
        "velocity_breaker",
    )

    # when an operator approves it (the gate would still hold it)
    before = timezone.now()
    (approved,) = review.reviews_approve(endorsement_ids=[suspicious.pk], actor="user:7", note="known hire")
    # then it is VALIDATED again, stamped now: a new window opens with it, not due yet
    stored = EndorsementRequest.objects.get(pk=suspicious.pk)
    assert stored.state == S.VALIDATED and stored.validated_at >= before
    assert stored.on_hold_review_at is not None
    assert approved.transitions.order_by("-id").values_list("from_state", "actor", "reason")[0] == (
        S.ON_HOLD_REVIEW,
        "user:7",
        "review_approved: known hire",
    )
    assert not scheduler.window_is_due(insurer)
    assert [c.insurer_id for c in scheduler.windows_close_due()].count(insurer.pk) == 0
    assert states(suspicious) == [S.VALIDATED]

    # when that window has passed
    window_passes(insurer, suspicious)
    (second,) = [c for c in scheduler.windows_close_due() if c.insurer_id == insurer.pk]
    # then it is not gated again: it locked its funds and went in that window's dispatch
    assert second.held == [] and second.sent == [suspicious.pk]
    assert states(suspicious) == [S.SENT]
    dispatch = Dispatch.objects.get(pk=second.debits_dispatch_id)
    assert list(dispatch.items.values_list("reference", flat=True)) == [suspicious.tracking_id]
    assert dispatch.pk != first.debits_dispatch_id
    hold = Hold.objects.get(reference=suspicious.tracking_id)
    assert hold.amount == 9_000_00


def test_a_rejected_request_ends_rejected_with_a_machine_readable_reason(sandbox, approver, velocity_gate):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 10_000_00, approver)
    held = validated(policy, premium=9_000_00)
    velocity_gate.add(held.pk)
    scheduler.window_close(insurer_id=insurer.pk)
    assert states(held) == [S.ON_HOLD_REVIEW]
    events_before = OutboxEvent.objects.filter(destination="ems.endorsements").count()

    review.reviews_reject(endorsement_ids=[held.pk], actor="user:7", reason="  Not our employee  ")

    stored = EndorsementRequest.objects.get(pk=held.pk)
    assert stored.state == S.REJECTED and stored.closed_at is not None
    assert stored.rejection_reasons == [
        {"field": "", "code": "review_rejected", "message": "Not our employee"}
    ]
    assert stored.transitions.order_by("-id").values_list("from_state", "to_state", "actor", "reason")[0] == (
        S.ON_HOLD_REVIEW,
        S.REJECTED,
        "user:7",
        "review_rejected: Not our employee",
    )
    event = OutboxEvent.objects.filter(destination="ems.endorsements").order_by("-id")[0]
    assert OutboxEvent.objects.filter(destination="ems.endorsements").count() == events_before + 1
    assert event.key == held.tracking_id
    assert (event.payload["type"], event.payload["data"]["rejection_reasons"]) == (
        "endorsement.rejected",
        stored.rejection_reasons,
    )
    assert OutboxEvent.objects.filter(destination="audit_logs", payload__actor="user:7").exists()
    # the insurer never saw it, and no money was locked for it
    assert not Hold.objects.filter(reference=held.tracking_id).exists()


def test_a_hold_is_all_or_nothing_and_needs_a_reason(sandbox):
    policy = policy_at(rest_insurer_at(sandbox))
    first, second = validated(policy, premium=1_000_00), validated(policy, premium=2_000_00)
    review.reviews_hold(endorsement_ids=[first.pk], reason="velocity_breaker", actor="analytics:velocity")
    before = snapshot(first, second)
    # one of the two is no longer VALIDATED: the whole call is refused
    with pytest.raises(IllegalTransition):
        review.reviews_hold(endorsement_ids=[first.pk, second.pk], reason="again", actor="analytics:velocity")
    with pytest.raises(review.ReviewReasonRequired):
        review.reviews_hold(endorsement_ids=[second.pk], reason="  ", actor="analytics:velocity")
    assert snapshot(first, second) == before
    assert states(first, second) == [S.ON_HOLD_REVIEW, S.VALIDATED]


def test_approving_or_rejecting_what_is_not_on_review_hold_changes_nothing(sandbox):
    policy = policy_at(rest_insurer_at(sandbox))
    on_hold, waiting = validated(policy, premium=1_000_00), validated(policy, premium=2_000_00)
    review.reviews_hold(endorsement_ids=[on_hold.pk], reason="velocity_breaker", actor="analytics:velocity")
    before = snapshot(on_hold, waiting)

    with pytest.raises(IllegalTransition) as refused:
        review.reviews_approve(endorsement_ids=[on_hold.pk, waiting.pk], actor="user:7")
    assert [d.field for d in refused.value.details] == [waiting.tracking_id]
    with pytest.raises(IllegalTransition):
        review.reviews_reject(endorsement_ids=[waiting.pk], actor="user:7", reason="no")
    with pytest.raises(review.ReviewReasonRequired):
        review.reviews_reject(endorsement_ids=[on_hold.pk], actor="user:7", reason="")
    with pytest.raises(EndorsementNotFound):
        review.reviews_approve(endorsement_ids=[on_hold.pk, 10**12], actor="user:7")

    assert snapshot(on_hold, waiting) == before
