"""`endorsements/pipeline/sending.py`: sends through the gateway against the real sandbox insurer,
retries transient failures with backoff under the same idempotency key, and dead-letters."""

import datetime

import pytest
from celery import current_app
from django.utils import timezone

from endorsements.errors import IllegalTransition
from endorsements.models import EndorsementRequest, EndorsementTransition
from endorsements.pipeline import scheduler, sending
from endorsements.transitions import endorsement_transition
from insurers.models import Dispatch, DispatchItem
from tests.insurers.gateway_items import sandbox_received
from tests.pipeline.conftest import (
    S,
    fund,
    policy_at,
    rest_insurer_at,
    sftp_insurer,
    soap_insurer_at,
    states,
    validated,
)

pytestmark = pytest.mark.django_db
Result = DispatchItem.Result
MAKERS = {"REST": rest_insurer_at, "SOAP": soap_insurer_at, "SFTP": sftp_insurer}


def close_and_send(insurer, capture):
    with capture(execute=True):  # the send is queued after commit (eager Celery here)
        return scheduler.window_close(insurer_id=insurer.pk)


@pytest.mark.parametrize("protocol", ["REST", "SOAP", "SFTP"])
def test_a_window_is_sent_over_each_protocol(sandbox, approver, django_capture_on_commit_callbacks, protocol):
    insurer = MAKERS[protocol](sandbox)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    leaver = validated(policy, premium=-600_00, kind="DELETE")
    joiner = validated(policy, premium=1_234_50)

    closed = close_and_send(insurer, django_capture_on_commit_callbacks)

    # REST and SOAP answer inline (confirmed at once); SFTP answers later in a response file
    answered = S.SENT if protocol == "SFTP" else S.CONFIRMED
    assert states(leaver, joiner) == [answered, answered]
    for dispatch_id, request in ((closed.credits_dispatch_id, leaver), (closed.debits_dispatch_id, joiner)):
        dispatch = Dispatch.objects.get(pk=dispatch_id)
        assert dispatch.attempts == 1
        assert dispatch.state in (Dispatch.State.SENT, Dispatch.State.COMPLETED)
        item = dispatch.items.get()
        assert item.reference == request.tracking_id
        assert item.payload["premium"] == request.premium_amount
        if protocol == "SFTP":  # the answer comes later in a response file
            assert item.result == Result.PENDING
        else:
            assert item.result == Result.CONFIRMED
            assert [(r[1], r[2]) for r in sandbox_received(sandbox, dispatch.idempotency_key)] == [
                (request.tracking_id, "confirmed")
            ]
    joiner_item = DispatchItem.objects.get(reference=joiner.tracking_id)
    if protocol != "SFTP":
        assert joiner_item.insurer_premium == 1_235_00  # the sandbox prices in whole rupees


def _due_now(dispatch_id: int) -> None:
    """Let the stored next attempt time pass (instead of waiting for it)."""
    Dispatch.objects.filter(pk=dispatch_id).update(
        next_attempt_at=timezone.now() - datetime.timedelta(seconds=1)
    )


@pytest.mark.parametrize(
    ("switches", "code", "at_least_s"),
    [
        ({"error_rate": 1.0}, "insurer_server_error", 0),
        ({"throttle_rate": 1.0, "retry_after_seconds": 7}, "", 7),
        ({"timeout_rate": 1.0, "timeout_seconds": 5}, "", 0),
        ({"lose_response_rate": 1.0}, "insurer_server_error", 0),
    ],
    ids=["500", "429-retry-after", "timeout", "lost-response"],
)
def test_a_transient_failure_retries_later_with_the_same_key(
    sandbox, approver, django_capture_on_commit_callbacks, switches, code, at_least_s
):
    insurer = rest_insurer_at(sandbox, retry_base_seconds=2, retry_max_attempts=5)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    joiner = validated(policy, premium=1_000_00)
    sandbox.switches(**switches)
    before = timezone.now()

    closed = close_and_send(insurer, django_capture_on_commit_callbacks)

    dispatch = Dispatch.objects.get(pk=closed.debits_dispatch_id)
    key = dispatch.idempotency_key
    assert (dispatch.state, dispatch.attempts) == (Dispatch.State.PENDING, 1)
    assert dispatch.next_attempt_at >= before + datetime.timedelta(seconds=at_least_s)
    assert dispatch.next_attempt_at <= timezone.now() + datetime.timedelta(seconds=max(at_least_s, 2))
    joiner.refresh_from_db()
    assert (joiner.state, joiner.attempts) == (S.SENT, 1)
    assert joiner.last_error and (not code or joiner.last_error.startswith(code))
    sent_moves = EndorsementTransition.objects.filter(endorsement=joiner, to_state=S.SENT).count()
    assert sent_moves == 1
    # not due yet (full jitter may draw a delay near zero: push it out): the sweep leaves it alone
    Dispatch.objects.filter(pk=dispatch.pk).update(
        next_attempt_at=timezone.now() + datetime.timedelta(seconds=60)
    )
    assert sending.dispatches_send_due() == {}

    sandbox.reset()
    _due_now(dispatch.pk)
    assert sending.dispatches_send_due() == {dispatch.pk: "sent"}

    dispatch.refresh_from_db()
    assert (dispatch.idempotency_key, dispatch.attempts) == (key, 2)
    assert dispatch.items.get().result == Result.CONFIRMED
    # the insurer acted once, whatever it saw before
    assert [(r[1], r[2]) for r in sandbox_received(sandbox, key)] == [(joiner.tracking_id, "confirmed")]
    joiner.refresh_from_db()
    assert (joiner.state, joiner.attempts, joiner.premium_amount) == (S.SENT, 2, 1_000_00)


def test_exhausted_retries_fail_the_dispatch_and_its_requests(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox, retry_base_seconds=1, retry_max_attempts=2)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    first, second = validated(policy, premium=1_000_00), validated(policy, premium=2_000_00)
    sandbox.switches(error_rate=1.0)

    closed = close_and_send(insurer, django_capture_on_commit_callbacks)
    _due_now(closed.debits_dispatch_id)
    assert sending.dispatches_send_due() == {closed.debits_dispatch_id: "failed"}

    dispatch = Dispatch.objects.get(pk=closed.debits_dispatch_id)
    assert (dispatch.state, dispatch.attempts, dispatch.next_attempt_at) == (Dispatch.State.FAILED, 2, None)
    assert not dispatch.items.filter(is_live=True).exists()
    for request in EndorsementRequest.objects.filter(pk__in=[first.pk, second.pk]):
        assert (request.state, request.attempts) == (S.FAILED, 2)
        assert request.last_error.startswith("insurer_server_error")
        assert list(request.transitions.order_by("id").values_list("to_state", flat=True))[-2:] == [
            S.SENT,
            S.FAILED,
        ]
    # a dead letter is not sent again by the sweep or a repeated task
    assert sending.dispatches_send_due() == {}
    assert sending.dispatches_send(dispatch_ids=[dispatch.pk]) == {dispatch.pk: "skipped"}
    assert sandbox_received(sandbox, dispatch.idempotency_key) == []


def test_a_permanent_refusal_fails_at_once(sandbox, approver, django_capture_on_commit_callbacks):
    insurer = rest_insurer_at(sandbox, credentials={"bearer_token": "wrong-token"})
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    joiner = validated(policy, premium=1_000_00)

    closed = close_and_send(insurer, django_capture_on_commit_callbacks)

    assert Dispatch.objects.get(pk=closed.debits_dispatch_id).state == Dispatch.State.FAILED
    joiner.refresh_from_db()
    assert (joiner.state, joiner.attempts) == (S.FAILED, 1)
    assert joiner.last_error.startswith("insurer_refused")


def test_sent_to_sent_is_refused_and_writes_nothing(sandbox, approver):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    joiner = validated(policy, premium=1_000_00)
    scheduler.window_close(insurer_id=insurer.pk)
    history = EndorsementTransition.objects.filter(endorsement=joiner).count()

    with pytest.raises(IllegalTransition):
        endorsement_transition(endorsement=joiner, to_state=S.SENT, actor="test")

    assert EndorsementTransition.objects.filter(endorsement=joiner).count() == history
    assert states(joiner) == [S.SENT]


def test_backoff_is_full_jitter_capped_and_never_before_retry_after(settings):
    settings.PIPELINE_RETRY_CAP_SECONDS = 60
    for attempt, ceiling in ((1, 5), (2, 10), (3, 20), (5, 60), (9, 60)):
        draws = [sending.backoff_seconds(attempt=attempt, base_seconds=5) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert len(set(draws)) > 1  # jittered, not a fixed delay
    assert all(sending.backoff_seconds(attempt=1, base_seconds=5, retry_after=30) >= 30 for _ in range(50))


def test_the_pipeline_tasks_are_named_and_routed_to_their_queues():
    route = current_app.amqp.router.route
    queues = {
        name: route({}, name)["queue"].name
        for name in (
            "endorsements.pipeline.send_dispatches",
            "endorsements.pipeline.send_due",
            "endorsements.pipeline.windows_close_due",
            "endorsements.pipeline.windows_full_close",
            "endorsements.pipeline.funds_placed",
        )
    }
    assert queues == {
        "endorsements.pipeline.send_dispatches": "insurer_io",
        "endorsements.pipeline.send_due": "insurer_io",
        "endorsements.pipeline.windows_close_due": "pipeline",
        "endorsements.pipeline.windows_full_close": "pipeline",
        "endorsements.pipeline.funds_placed": "pipeline",
    }
    assert "endorsements.pipeline.send_dispatches" in current_app.tasks


def test_a_repeated_send_task_does_not_call_the_insurer_again(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    validated(policy, premium=1_000_00)
    closed = close_and_send(insurer, django_capture_on_commit_callbacks)

    assert sending.dispatches_send(dispatch_ids=[closed.debits_dispatch_id]) == {
        closed.debits_dispatch_id: "skipped"
    }

    assert Dispatch.objects.get(pk=closed.debits_dispatch_id).attempts == 1
