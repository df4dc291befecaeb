"""`endorsements/pipeline/funds.py`: fund lock per account, park-and-wake oldest first, and the
hold kept while the insurer has the request."""

import datetime

import pytest
from django.utils import timezone

from endorsements.pipeline import funds, scheduler
from ledger import services as ledger
from ledger.models import Account, Hold, ParkedRequest
from tests.pipeline.conftest import S, account_of, fund, policy_at, rest_insurer_at, states, validated

pytestmark = pytest.mark.django_db


def balances(policy) -> tuple[int, int]:
    account = Account.objects.get(pk=account_of(policy).pk)
    return account.posted, account.held


def test_debits_that_fit_lock_and_the_rest_park_in_order(sandbox, approver):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 3_000_00, approver)
    first, too_big, small_behind = (
        validated(policy, premium=2_000_00),
        validated(policy, premium=1_500_00),
        validated(policy, premium=500_00),
    )

    closed = scheduler.window_close(insurer_id=insurer.pk)

    # FIFO, no overtaking: the small one waits behind the one that does not fit
    assert states(first, too_big, small_behind) == [S.SENT, S.ON_HOLD_FUNDS, S.ON_HOLD_FUNDS]
    assert sorted(closed.parked) == sorted([too_big.pk, small_behind.pk])
    assert balances(policy) == (3_000_00, 2_000_00)
    assert list(
        ParkedRequest.objects.filter(state=ParkedRequest.State.PARKED)
        .order_by("id")
        .values_list("reference", "amount")
    ) == [(too_big.tracking_id, 1_500_00), (small_behind.tracking_id, 500_00)]


def test_a_top_up_wakes_the_parked_oldest_first_into_the_next_window(
    sandbox, approver, django_capture_on_commit_callbacks
):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    older, newer = validated(policy, premium=1_000_00), validated(policy, premium=1_000_00)
    scheduler.window_close(insurer_id=insurer.pk)
    assert states(older, newer) == [S.ON_HOLD_FUNDS, S.ON_HOLD_FUNDS]

    with django_capture_on_commit_callbacks(execute=True):  # the ledger's funds handler, after commit
        fund(policy, 1_500_00, approver)  # room for one: the older

    assert states(older, newer) == [S.FUND_LOCKED, S.ON_HOLD_FUNDS]
    closed = scheduler.window_close(insurer_id=insurer.pk)
    assert states(older, newer) == [S.SENT, S.ON_HOLD_FUNDS]
    assert closed.credits_dispatch_id is None
    assert balances(policy) == (1_500_00, 1_000_00)


def test_a_lost_wake_is_caught_up_by_the_next_close(sandbox, approver):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    request = validated(policy, premium=1_000_00)
    scheduler.window_close(insurer_id=insurer.pk)

    from ledger.handlers import register_funds_handler, unregister_funds_handler

    unregister_funds_handler(funds.funds_event)
    try:
        fund(policy, 1_000_00, approver)
    finally:
        register_funds_handler(funds.funds_event)
    assert states(request) == [S.ON_HOLD_FUNDS]

    scheduler.windows_close_due()
    scheduler.window_close(insurer_id=insurer.pk)

    assert states(request) == [S.SENT]


def test_the_hold_is_exempt_from_expiry_once_sent(sandbox, approver):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request = validated(policy, premium=1_000_00)

    scheduler.window_close(insurer_id=insurer.pk)

    hold = Hold.objects.get(reference=request.tracking_id)
    assert hold.expires_at == ledger.HOLD_NEVER_EXPIRES
    assert ledger.hold_expire(now=timezone.now() + datetime.timedelta(days=3650)) == 0
    hold.refresh_from_db()
    assert (hold.state, states(request)) == (Hold.State.PENDING, [S.SENT])


def test_a_hold_that_expired_before_sending_parks_again(sandbox, approver):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request = validated(policy, premium=1_000_00)
    request.policy = policy
    funds.debits_lock(endorsements=[request])
    assert states(request) == [S.FUND_LOCKED]
    ledger.hold_expire(now=timezone.now() + datetime.timedelta(days=400))
    # the money it had went to another request meanwhile
    ledger.hold_place(
        account_id=account_of(policy).pk, amount=1_000_00, reference="OTHER-1", idempotency_key="other-1"
    )

    closed = scheduler.window_close(insurer_id=insurer.pk)

    assert closed.debits_dispatch_id is None
    assert states(request) == [S.ON_HOLD_FUNDS]
    assert request.transitions.order_by("-id").values_list("from_state", "to_state", "reason")[0] == (
        S.FUND_LOCKED,
        S.ON_HOLD_FUNDS,
        "hold_expired",
    )
    assert ParkedRequest.objects.get(reference=request.tracking_id).state == ParkedRequest.State.PARKED


def test_a_hold_that_expired_before_sending_is_renewed_when_it_fits(sandbox, approver):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    request = validated(policy, premium=1_000_00)
    request.policy = policy
    funds.debits_lock(endorsements=[request])
    ledger.hold_expire(now=timezone.now() + datetime.timedelta(days=400))

    scheduler.window_close(insurer_id=insurer.pk)  # re-held, waits for the next window
    assert states(request) == [S.FUND_LOCKED]
    scheduler.window_close(insurer_id=insurer.pk)

    assert states(request) == [S.SENT]
    assert list(
        Hold.objects.filter(reference=request.tracking_id).order_by("id").values_list("state", flat=True)
    ) == [
        Hold.State.EXPIRED,
        Hold.State.PENDING,
    ]
    assert balances(policy) == (1_000_00, 1_000_00)


def test_the_wake_is_safe_twice(sandbox, approver, django_capture_on_commit_callbacks):
    insurer = rest_insurer_at(sandbox)
    policy = policy_at(insurer)
    request = validated(policy, premium=1_000_00)
    scheduler.window_close(insurer_id=insurer.pk)
    with django_capture_on_commit_callbacks(execute=True):
        fund(policy, 1_000_00, approver)
    history = request.transitions.count()

    assert funds.parked_placed(tracking_ids=[request.tracking_id]) == []

    assert states(request) == [S.FUND_LOCKED]
    assert request.transitions.count() == history
