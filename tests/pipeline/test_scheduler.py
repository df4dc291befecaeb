"""`endorsements/pipeline/scheduler.py`: tumbling windows per insurer, credits before debits."""

import datetime

import pytest
from django.utils import timezone

from endorsements.models import EndorsementRequest
from endorsements.pipeline import gates, scheduler
from insurers.models import Dispatch, DispatchItem
from ledger.models import Hold
from tests.pipeline.conftest import S, fund, policy_at, rest_insurer_at, states, validated

pytestmark = pytest.mark.django_db


def backdate(requests, seconds: int) -> None:
    # received then too: no state is reached before arrival (a CHECK)
    then = timezone.now() - datetime.timedelta(seconds=seconds)
    EndorsementRequest.objects.filter(pk__in=[r.pk for r in requests]).update(
        received_at=then, validated_at=then
    )


def test_a_window_closes_on_time_not_before(sandbox, approver):
    insurer = rest_insurer_at(sandbox, dispatch_window_seconds=30, dispatch_batch_size=100)
    policy = policy_at(insurer)
    fund(policy, 10_000_00, approver)
    first, second = validated(policy, premium=1_000_00), validated(policy, premium=2_000_00)

    assert scheduler.windows_close_due() == []
    assert states(first, second) == [S.VALIDATED, S.VALIDATED]

    backdate([first], 31)
    (closed,) = [c for c in scheduler.windows_close_due() if c.insurer_id == insurer.pk]

    assert states(first, second) == [S.SENT, S.SENT]
    assert closed.credits_dispatch_id is None
    dispatch = Dispatch.objects.get(pk=closed.debits_dispatch_id)
    assert list(dispatch.items.order_by("id").values_list("reference", flat=True)) == [
        first.tracking_id,
        second.tracking_id,
    ]
    assert set(
        EndorsementRequest.objects.filter(pk__in=[first.pk, second.pk]).values_list("dispatch_id", flat=True)
    ) == {dispatch.pk}


def test_a_window_closes_on_size_with_the_oldest_and_the_rest_waits(sandbox, approver):
    insurer = rest_insurer_at(sandbox, dispatch_window_seconds=3600, dispatch_batch_size=2)
    policy = policy_at(insurer)
    fund(policy, 10_000_00, approver)
    requests = [validated(policy, premium=1_000_00) for _ in range(3)]
    backdate(requests[:1], 5)  # the oldest

    closed = scheduler.windows_full_close(endorsement_ids=[r.pk for r in requests])

    assert len(closed) == 1
    sent = set(
        DispatchItem.objects.filter(dispatch_id=closed[0].debits_dispatch_id).values_list(
            "reference", flat=True
        )
    )
    assert states(*requests).count(S.SENT) == 2
    assert requests[0].tracking_id in sent
    assert len(sent) == 2
    # one left: the window is not full, and it is not old enough
    assert scheduler.windows_full_close(endorsement_ids=[r.pk for r in requests]) == []


def test_credits_go_first_fifo_and_a_window_makes_at_most_two_dispatches(sandbox, approver):
    insurer = rest_insurer_at(sandbox, dispatch_window_seconds=1, dispatch_batch_size=100)
    policy = policy_at(insurer)
    fund(policy, 10_000_00, approver)
    add_1 = validated(policy, premium=1_500_00)
    delete_1 = validated(policy, premium=-800_00, kind="DELETE")
    correction_down = validated(policy, premium=-120_00, kind="CORRECTION")
    zero_change = validated(policy, premium=0, kind="CORRECTION")
    add_2 = validated(policy, premium=2_500_00)

    closed = scheduler.window_close(insurer_id=insurer.pk)

    assert len(closed.dispatch_ids) == 2
    credits = Dispatch.objects.get(pk=closed.credits_dispatch_id)
    debits = Dispatch.objects.get(pk=closed.debits_dispatch_id)
    assert credits.pk < debits.pk
    assert list(credits.items.order_by("id").values_list("reference", "kind")) == [
        (delete_1.tracking_id, "DELETE"),
        (correction_down.tracking_id, "CORRECTION"),
        (zero_change.tracking_id, "CORRECTION"),
    ]
    assert list(debits.items.order_by("id").values_list("reference", flat=True)) == [
        add_1.tracking_id,
        add_2.tracking_id,
    ]
    # REST answers inline: the credits were answered before the debits locked any funds
    answered = credits.items.values_list("result_at", flat=True)
    first_hold = Hold.objects.filter(reference__in=[add_1.tracking_id, add_2.tracking_id]).order_by(
        "created_at"
    )[0]
    assert all(at is not None and at <= first_hold.created_at for at in answered)
    assert set(credits.items.values_list("result", flat=True)) == {DispatchItem.Result.CONFIRMED}
    # the credits were confirmed (refunds posted) in the close; the debits wait for their send
    assert states(add_1, delete_1, correction_down, zero_change, add_2) == [
        S.SENT,
        S.CONFIRMED,
        S.CONFIRMED,
        S.CONFIRMED,
        S.SENT,
    ]
    # the window is empty now: a second close makes nothing
    again = scheduler.window_close(insurer_id=insurer.pk)
    assert again.dispatch_ids == []


def test_a_gate_holds_requests_for_review_before_fund_lock(sandbox, approver):
    insurer = rest_insurer_at(sandbox, dispatch_window_seconds=1)
    policy = policy_at(insurer)
    fund(policy, 10_000_00, approver)
    suspicious, fine = validated(policy, premium=9_000_00), validated(policy, premium=1_000_00)

    def velocity(endorsements):
        return {e.pk: "velocity_breaker" for e in endorsements if e.pk == suspicious.pk}

    gates.gate_register(velocity)
    try:
        closed = scheduler.window_close(insurer_id=insurer.pk)
    finally:
        gates.gate_unregister(velocity)

    assert closed.held == [suspicious.pk]
    assert states(suspicious, fine) == [S.ON_HOLD_REVIEW, S.SENT]
    assert not Hold.objects.filter(reference=suspicious.tracking_id).exists()
    assert suspicious.transitions.order_by("-id").values_list("to_state", "reason")[0] == (
        S.ON_HOLD_REVIEW,
        "velocity_breaker",
    )


def test_windows_are_per_insurer(sandbox, approver):
    one, other = rest_insurer_at(sandbox), rest_insurer_at(sandbox)
    policy_one, policy_other = policy_at(one), policy_at(other)
    fund(policy_one, 5_000_00, approver)
    fund(policy_other, 5_000_00, approver)
    mine, theirs = validated(policy_one, premium=1_000_00), validated(policy_other, premium=1_000_00)

    scheduler.window_close(insurer_id=one.pk)

    assert states(mine, theirs) == [S.SENT, S.VALIDATED]


def _close_queries(sandbox, approver, count: int) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    insurer = rest_insurer_at(sandbox, dispatch_batch_size=1000)
    policy = policy_at(insurer)
    fund(policy, 1_000_000_00, approver)
    requests = [validated(policy, premium=1_000_00) for _ in range(count)]
    with CaptureQueriesContext(connection) as queries:
        closed = scheduler.window_close(insurer_id=insurer.pk)
    assert len(closed.sent) == count
    assert states(*requests) == [S.SENT] * count
    return len(queries)


def test_a_close_is_set_based_its_statements_do_not_grow_with_the_window(sandbox, approver):
    assert _close_queries(sandbox, approver, 3) == _close_queries(sandbox, approver, 40)


def test_with_batching_off_every_request_is_a_dispatch_of_its_own(
    sandbox, approver, settings, django_capture_on_commit_callbacks
):
    settings.PIPELINE_BATCHING = False
    insurer = rest_insurer_at(sandbox, dispatch_window_seconds=1, dispatch_batch_size=100)
    policy = policy_at(insurer)
    fund(policy, 10_000_00, approver)
    requests = [validated(policy, premium=1_000_00) for _ in range(3)]
    requests.append(validated(policy, premium=-500_00, kind="DELETE"))

    with django_capture_on_commit_callbacks(execute=True):
        closed = scheduler.window_close(insurer_id=insurer.pk)

    assert (len(closed.credits_dispatch_ids), len(closed.debits_dispatch_ids)) == (1, 3)
    items = DispatchItem.objects.filter(dispatch_id__in=closed.dispatch_ids)
    assert sorted(items.values_list("dispatch_id", flat=True)) == sorted(closed.dispatch_ids)
    assert states(*requests) == [S.CONFIRMED] * 4
