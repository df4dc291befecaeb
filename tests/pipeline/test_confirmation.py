"""`endorsements/pipeline/confirmation.py`: the insurer's answer becomes state and money, once.

Worked examples against the real sandbox insurer (REST, inline answers unless a test says
otherwise). The sandbox prices debits in whole rupees rounded half up and refunds rounded
down, so its figures differ from ours by design: ₹1,234.50 is charged ₹1,235.00 (50 paise
more), ₹1,234.20 is charged ₹1,234.00 (20 paise less), a ₹500.70 refund is ₹500.00.
"""

import pytest

from endorsements.models import EndorsementRequest
from endorsements.pipeline import confirmation, scheduler, sending
from insurers import services as gateway
from insurers.adapters.base import CONFIRMED, ItemResult
from insurers.models import Dispatch, DispatchItem
from ledger.models import Account, Entry, Hold, ParkedRequest
from tests.pipeline.conftest import S, account_of, fund, policy_at, rest_insurer_at, states, validated

pytestmark = pytest.mark.django_db


def close(insurer, capture):
    with capture(execute=True):
        return scheduler.window_close(insurer_id=insurer.pk)


def balances(policy) -> tuple[int, int, int]:
    account = Account.objects.get(pk=account_of(policy).pk)
    return account.posted, account.held, account.posted - account.held


def test_a_debit_priced_lower_captures_the_insurers_figure_and_the_rest_returns(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    joiner = validated(policy, premium=1_234_20)

    close(insurer, django_capture_on_commit_callbacks)

    joiner.refresh_from_db()
    assert joiner.state == S.CONFIRMED
    assert joiner.insurer_premium == 1_234_00
    assert joiner.insurer_reference.startswith("INS-")
    assert joiner.insurer_member_id
    assert joiner.discrepancy == {"premium": {"ours": 1_234_20, "insurer": 1_234_00}}
    assert balances(policy) == (5_000_00 - 1_234_00, 0, 3_766_00)
    hold = Hold.objects.get(reference=joiner.tracking_id)
    assert (hold.state, hold.amount) == (Hold.State.CAPTURED, 1_234_20)
    assert list(Entry.objects.filter(reference=joiner.tracking_id).values_list("kind", "amount")) == [
        (Entry.Kind.CAPTURE, -1_234_00)
    ]


def test_a_debit_priced_higher_captures_the_difference_under_its_own_reference(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    joiner = validated(policy, premium=1_234_50)

    close(insurer, django_capture_on_commit_callbacks)

    joiner.refresh_from_db()
    assert joiner.state == S.CONFIRMED
    assert joiner.discrepancy == {"premium": {"ours": 1_234_50, "insurer": 1_235_00}}
    assert balances(policy) == (5_000_00 - 1_235_00, 0, 3_765_00)
    captured = dict(Entry.objects.filter(kind=Entry.Kind.CAPTURE).values_list("reference", "amount"))
    assert captured == {joiner.tracking_id: -1_234_50, f"{joiner.tracking_id}/diff": -50}


def test_a_difference_that_does_not_fit_parks_and_is_captured_when_funds_arrive(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_234_50, approver)  # exactly our price: the insurer's 50 paise more do not fit
    joiner = validated(policy, premium=1_234_50)

    close(insurer, django_capture_on_commit_callbacks)

    joiner.refresh_from_db()
    assert joiner.state == S.CONFIRMED
    assert joiner.discrepancy == {
        "premium": {"ours": 1_234_50, "insurer": 1_235_00},
        "difference_parked": 50,
    }
    assert balances(policy) == (0, 0, 0)  # never below zero
    parked = ParkedRequest.objects.get(reference=f"{joiner.tracking_id}/diff")
    assert (parked.state, parked.amount) == (ParkedRequest.State.PARKED, 50)

    with django_capture_on_commit_callbacks(execute=True):
        fund(policy, 10_00, approver)

    assert balances(policy) == (10_00 - 50, 0, 9_50)
    assert Entry.objects.get(reference=f"{joiner.tracking_id}/diff").amount == -50


def test_a_confirmed_deletion_posts_the_insurers_refund(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    leaver = validated(policy, premium=-500_70, kind="DELETE")

    close(insurer, django_capture_on_commit_callbacks)

    leaver.refresh_from_db()
    assert leaver.state == S.CONFIRMED
    assert leaver.insurer_premium == -500_00
    assert leaver.discrepancy == {"premium": {"ours": -500_70, "insurer": -500_00}}
    assert balances(policy) == (1_500_00, 0, 1_500_00)
    assert list(Entry.objects.filter(reference=leaver.tracking_id).values_list("kind", "amount")) == [
        (Entry.Kind.REFUND, 500_00)
    ]


def test_a_refund_in_the_window_pays_for_an_addition_of_the_same_window(
    sandbox, approver, django_capture_on_commit_callbacks
):
    """Credits first: the account cannot afford the joiner until the leaver's refund posts."""
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 100_00, approver)
    joiner = validated(policy, premium=600_00)
    leaver = validated(policy, premium=-800_00, kind="DELETE")

    close(insurer, django_capture_on_commit_callbacks)

    assert states(leaver, joiner) == [S.CONFIRMED, S.CONFIRMED]
    assert balances(policy) == (100_00 + 800_00 - 600_00, 0, 300_00)


def test_a_rejection_releases_the_hold_and_keeps_the_insurers_reason(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    refused = validated(policy, premium=1_000_00, code="REJ001")

    close(insurer, django_capture_on_commit_callbacks)

    refused.refresh_from_db()
    assert refused.state == S.INSURER_REJECTED
    assert refused.closed_at is not None
    assert [r["code"] for r in refused.rejection_reasons] == ["member_refused"]
    assert "REJ" in refused.rejection_reasons[0]["message"]
    assert Hold.objects.get(reference=refused.tracking_id).state == Hold.State.RELEASED
    assert balances(policy) == (5_000_00, 0, 5_000_00)
    assert not Entry.objects.filter(reference=refused.tracking_id).exists()


def test_answers_applied_twice_or_out_of_order_move_money_once(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    joiner = validated(policy, premium=1_234_20)
    close(insurer, django_capture_on_commit_callbacks)
    item = DispatchItem.objects.get(reference=joiner.tracking_id)
    entries = Entry.objects.count()

    again = confirmation.endorsements_confirm(tracking_ids=[joiner.tracking_id])
    swept = confirmation.confirmations_catch_up()
    # the same answer delivered again by the insurer (a duplicate webhook) changes no item
    replay = gateway.item_results_record(
        insurer=insurer,
        results=[ItemResult(reference=joiner.tracking_id, outcome=CONFIRMED, insurer_premium=9_999_00)],
        source="webhook",
    )

    assert (again.confirmed, swept.confirmed, replay) == ([], [], [])
    assert Entry.objects.count() == entries
    assert balances(policy) == (5_000_00 - 1_234_00, 0, 3_766_00)
    item.refresh_from_db()
    assert item.insurer_premium == 1_234_00


def test_a_late_answer_confirms_a_failed_request(sandbox, approver, django_capture_on_commit_callbacks):
    """We gave up (retries exhausted); the insurer's confirmation arrives after all."""
    insurer = rest_insurer_at(sandbox, retry_max_attempts=1)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    joiner = validated(policy, premium=1_000_00)
    sandbox.switches(error_rate=1.0)
    close(insurer, django_capture_on_commit_callbacks)
    assert states(joiner) == [S.FAILED]
    assert balances(policy) == (5_000_00, 1_000_00, 4_000_00)  # the insurer may have it: still held

    with django_capture_on_commit_callbacks(execute=True):
        gateway.item_results_record(
            insurer=insurer,
            results=[
                ItemResult(
                    reference=joiner.tracking_id,
                    outcome=CONFIRMED,
                    insurer_reference="INS-LATE",
                    insurer_member_id="M-LATE",
                    insurer_premium=1_000_00,
                )
            ],
            source="webhook",
        )

    joiner.refresh_from_db()
    assert (joiner.state, joiner.insurer_member_id, joiner.closed_at) == (S.CONFIRMED, "M-LATE", None)
    assert joiner.discrepancy == {}
    assert balances(policy) == (4_000_00, 0, 4_000_00)


def test_a_lost_handler_call_is_caught_up_by_the_sweep(sandbox, approver, django_capture_on_commit_callbacks):
    """The worker died between the gateway's commit and the confirmation: the sweep applies it."""
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 5_000_00, approver)
    joiner = validated(policy, premium=1_000_00)
    with django_capture_on_commit_callbacks(execute=False):  # no after-commit work runs
        closed = scheduler.window_close(insurer_id=insurer.pk)
    sending.dispatches_send(dispatch_ids=closed.dispatch_ids)  # its handler call is queued, never run
    assert states(joiner) == [S.SENT]
    assert Dispatch.objects.get(pk=closed.debits_dispatch_id).state == Dispatch.State.COMPLETED

    swept = confirmation.confirmations_catch_up()

    assert swept.confirmed == [joiner.tracking_id]
    assert EndorsementRequest.objects.get(pk=joiner.pk).state == S.CONFIRMED
    assert balances(policy) == (4_000_00, 0, 4_000_00)


def test_a_difference_that_fits_is_captured_even_while_unsent_requests_wait(
    sandbox, approver, django_capture_on_commit_callbacks
):
    """The difference is owed for confirmed cover: it does not queue behind a parked addition."""
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_300_00, approver)
    joiner = validated(policy, premium=1_234_50)  # the insurer charges 1,235.00
    waiting = validated(policy, premium=900_00)  # does not fit once the joiner is held

    close(insurer, django_capture_on_commit_callbacks)

    assert states(joiner, waiting) == [S.CONFIRMED, S.ON_HOLD_FUNDS]
    joiner.refresh_from_db()
    assert "difference_parked" not in joiner.discrepancy
    assert balances(policy) == (1_300_00 - 1_235_00, 0, 65_00)
    assert ParkedRequest.objects.get(reference=waiting.tracking_id).state == ParkedRequest.State.PARKED
