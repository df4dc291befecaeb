"""`endorsements/pipeline/dead_letters.py`: a FAILED request retried through a new dispatch
reaches the real sandbox insurer with the same item key; the stuck rule lists what waited
too long and nothing else."""

import datetime

import pytest
from django.utils import timezone

from endorsements.models import EndorsementTransition
from endorsements.pipeline import dead_letters, funds
from insurers.models import Dispatch, DispatchItem
from tests.factories import InsurerFactory
from tests.insurers.gateway_items import sandbox_received
from tests.pipeline.conftest import S, fund, policy_at, rest_insurer_at, states, validated
from tests.pipeline.dead_letter_helpers import failed_debit, footprint, ledger_state, run_queued, sent_debit
from tests.pipeline.test_sending import MAKERS

pytestmark = pytest.mark.django_db
OPS = "user:ops-1"
Result = DispatchItem.Result


@pytest.mark.parametrize("protocol", ["REST", "SOAP"])
def test_a_retry_sends_a_failed_request_again_in_a_new_dispatch_with_the_same_item_key(
    sandbox, approver, django_capture_on_commit_callbacks, protocol
):
    # given a debit the insurer refused (500s, faults) until its one attempt was spent
    insurer = MAKERS[protocol](sandbox, retry_max_attempts=1)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request, failed_dispatch_id = failed_debit(
        sandbox, insurer, policy, django_capture_on_commit_callbacks, premium=300_00
    )
    failed_key = Dispatch.objects.get(pk=failed_dispatch_id).idempotency_key
    assert sandbox_received(sandbox, failed_key) == []
    # when ops retry it (the send runs on insurer_io after commit: eager here)
    with django_capture_on_commit_callbacks() as queued:
        result = dead_letters.dead_letters_retry(endorsement_ids=[request.pk], actor=OPS)
    run_queued(queued)
    # then a new dispatch carried it, the next generation of the dispatch key, the item's own key
    assert ([e.pk for e in result.sent], result.refused) == ([request.pk], {})
    (dispatch_id,) = result.dispatch_ids
    dispatch = Dispatch.objects.get(pk=dispatch_id)
    assert dispatch_id != failed_dispatch_id
    assert dispatch.idempotency_key == f"{failed_key}-g2"
    assert (dispatch.state, dispatch.attempts) == (Dispatch.State.COMPLETED, 1)
    item = dispatch.items.get()
    assert (item.idempotency_key, item.result, item.insurer_premium) == (
        f"itm-{request.tracking_id}",
        Result.CONFIRMED,
        300_00,
    )
    assert sandbox_received(sandbox, dispatch.idempotency_key) == [
        (f"itm-{request.tracking_id}", request.tracking_id, "confirmed")
    ]
    # and the request is SENT again with its hold kept, one audited move by the operator
    request.refresh_from_db()
    assert (request.state, request.dispatch_id, request.attempts, request.last_error) == (
        S.SENT,
        dispatch_id,
        1,
        "",
    )
    assert request.closed_at is None
    money = ledger_state(policy)
    assert (money["posted"], money["held"], money["holds"]) == (
        1_000_00,
        300_00,
        [(request.tracking_id, 300_00, "PENDING")],
    )
    moves = EndorsementTransition.objects.filter(endorsement=request, from_state=S.FAILED)
    assert list(moves.values_list("to_state", "actor")) == [(S.SENT, OPS)]


@pytest.mark.parametrize("protocol", ["REST", "SOAP"])
def test_a_retry_of_a_request_the_insurer_already_has_is_answered_the_same(
    sandbox, approver, django_capture_on_commit_callbacks, protocol
):
    # given a debit the sandbox confirmed, whose answer was lost on the way back
    insurer = MAKERS[protocol](sandbox, retry_max_attempts=1)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request, failed_dispatch_id = failed_debit(
        sandbox, insurer, policy, django_capture_on_commit_callbacks, premium=300_00, insurer_keeps_it=True
    )
    failed_key = Dispatch.objects.get(pk=failed_dispatch_id).idempotency_key
    first = sandbox_received(sandbox, failed_key)
    assert first == [(f"itm-{request.tracking_id}", request.tracking_id, "confirmed")]
    # when ops retry it
    with django_capture_on_commit_callbacks() as queued:
        result = dead_letters.dead_letters_retry(endorsement_ids=[request.pk], actor=OPS)
    run_queued(queued)
    # then the insurer recognised the item key: the same answer, acted on once (its row keeps
    # the first dispatch's key)
    dispatch = Dispatch.objects.get(pk=result.dispatch_ids[0])
    assert dispatch.items.get().result == Result.CONFIRMED
    assert sandbox_received(sandbox, failed_key) == first
    assert sandbox_received(sandbox, dispatch.idempotency_key) == []
    assert states(request) == [S.SENT]


def test_only_failed_requests_are_retried_and_a_refusal_changes_nothing(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    sent = sent_debit(policy, premium=300_00)
    waiting = validated(policy, premium=200_00)
    before = footprint(sent, waiting), ledger_state(policy), Dispatch.objects.count()

    result = dead_letters.dead_letters_retry(endorsement_ids=[sent.pk, waiting.pk], actor=OPS)

    assert (result.sent, result.dispatch_ids) == ([], [])
    assert {ref: (e.code, e.status) for ref, e in result.refused.items()} == {
        sent.tracking_id: ("endorsement_not_retryable", 409),
        waiting.tracking_id: ("endorsement_not_retryable", 409),
    }
    assert f"{sent.tracking_id} is SENT" in result.refused[sent.tracking_id].message
    assert (footprint(sent, waiting), ledger_state(policy), Dispatch.objects.count()) == before


def test_the_retry_budget_is_every_timeout_and_every_backoff_ceiling(settings):
    settings.PIPELINE_RETRY_CAP_SECONDS = 3
    insurer = InsurerFactory.build(retry_base_seconds=1, retry_max_attempts=4, request_timeout_seconds=2)
    # waits after attempts 1..3: min(3, 1), min(3, 2), min(3, 4); four timeouts of 2 s
    assert dead_letters.retry_budget_seconds(insurer) == 1 + 2 + 3 + 4 * 2


def test_the_list_holds_failed_requests_and_those_stuck_past_their_stage(
    sandbox, approver, django_capture_on_commit_callbacks, settings
):
    settings.PIPELINE_STUCK_GRACE_SECONDS = 10
    settings.PIPELINE_STUCK_SENT_SECONDS = 100
    # given a 1 s window (a FUND_LOCKED request is stuck after 2 × 1 + 10 s) and one attempt
    # of 2 s (a SENT one after 2 + 100 s)
    insurer = rest_insurer_at(sandbox, retry_max_attempts=1, dispatch_window_seconds=1)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    failed, _ = failed_debit(sandbox, insurer, policy, django_capture_on_commit_callbacks, premium=100_00)
    sent = sent_debit(policy, premium=100_00)
    locked = validated(policy, premium=100_00)
    funds.debits_lock(endorsements=[locked])
    parked = validated(policy, premium=900_00)
    funds.debits_lock(endorsements=[parked])
    assert states(failed, sent, locked, parked) == [S.FAILED, S.SENT, S.FUND_LOCKED, S.ON_HOLD_FUNDS]
    now = timezone.now()

    def listed(after_seconds: float) -> list[int]:
        moment = now + datetime.timedelta(seconds=after_seconds)
        return sorted(dead_letters.dead_letters(now=moment).values_list("pk", flat=True))

    # then at once only the FAILED one; past 12 s the FUND_LOCKED one; past 102 s the SENT one;
    # the parked one never (it waits for money, in the ledger's queue)
    assert listed(0) == [failed.pk]
    assert listed(13) == sorted([failed.pk, locked.pk])
    assert listed(103) == sorted([failed.pk, locked.pk, sent.pk])
    assert listed(10**6) == sorted([failed.pk, locked.pk, sent.pk])
    sent.refresh_from_db()
    text = dead_letters.stuck_text(sent, now=sent.sent_at + datetime.timedelta(seconds=150))
    assert text == "SENT for 2 min 30 s (limit 1 min 42 s)"


def test_a_retry_over_sftp_uploads_the_request_again_under_its_item_key(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = MAKERS["SFTP"](sandbox, retry_max_attempts=1)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request, failed_dispatch_id = failed_debit(
        sandbox, insurer, policy, django_capture_on_commit_callbacks, premium=300_00
    )

    with django_capture_on_commit_callbacks() as queued:
        result = dead_letters.dead_letters_retry(endorsement_ids=[request.pk], actor=OPS)
    run_queued(queued)

    dispatch = Dispatch.objects.get(pk=result.dispatch_ids[0])
    failed_key = Dispatch.objects.get(pk=failed_dispatch_id).idempotency_key
    assert (dispatch.idempotency_key, dispatch.state, dispatch.attempts) == (
        f"{failed_key}-g2",
        Dispatch.State.SENT,
        1,
    )
    # the file is up; the answer comes later in a response file
    assert list(dispatch.items.values_list("idempotency_key", "result", "is_live")) == [
        (f"itm-{request.tracking_id}", Result.PENDING, True)
    ]
    assert states(request) == [S.SENT]
