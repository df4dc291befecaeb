"""Worked examples with hand-computed figures (minor units: ₹1 = 100 paise)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from ems.tenancy import Caller
from ledger import approvals, selectors, services
from ledger.models import Entry, Hold
from tests.ledger.conftest import balances, fund, invariants_hold, ledger_events

pytestmark = pytest.mark.django_db


def hr_caller(account) -> Caller:
    return Caller(kind="client", employer_id=account.employer_id, principal="client:test")


def test_topup_then_two_holds_then_one_capture_and_one_release(account, approver):
    # Given ₹10,000 topped up and approved
    fund(account, 1_000_000, approver)
    assert balances(account) == (1_000_000, 0, 1_000_000)

    # When two joiners' premiums are held: ₹3,000 and ₹4,500
    first = services.hold_place(
        account_id=account.pk, amount=300_000, reference="END-1", idempotency_key="h1"
    )
    second = services.hold_place(
        account_id=account.pk, amount=450_000, reference="END-2", idempotency_key="h2"
    )
    # Then ₹7,500 is held and ₹2,500 is still available
    assert balances(account) == (1_000_000, 750_000, 250_000)

    # When the insurer confirms the first and rejects the second
    services.hold_capture(hold_id=first.hold.pk, idempotency_key="c1")
    services.hold_release(hold_id=second.hold.pk, reason="insurer rejected")

    # Then ₹3,000 left the account and nothing is held: ₹7,000 posted and available
    assert balances(account) == (700_000, 0, 700_000)
    first.hold.refresh_from_db()
    second.hold.refresh_from_db()
    assert (first.hold.state, first.hold.captured_amount) == (Hold.State.CAPTURED, 300_000)
    assert second.hold.state == Hold.State.RELEASED
    # and the history shows the running balance on each entry, newest first
    rows = [selectors.history_row(r) for r in selectors.history(caller=hr_caller(account), kind="CAPTURE")]
    assert [(r["amount"], r["balance_after"]) for r in rows] == [(-300_000, 700_000)]
    entries = list(
        Entry.objects.filter(account=account).order_by("id").values_list("kind", "amount", "balance_after")
    )
    assert entries == [("TOPUP", 1_000_000, 1_000_000), ("CAPTURE", -300_000, 700_000)]
    assert ledger_events(account) == [
        "ledger.topup_requested",
        "ledger.topup_approved",
        "ledger.hold_placed",
        "ledger.hold_placed",
        "ledger.hold_captured",
        "ledger.hold_released",
    ]
    assert invariants_hold(account)


def test_partial_capture_returns_the_rest_to_available(account, approver):
    # Given ₹8,000 posted and a ₹6,000 hold
    fund(account, 800_000, approver)
    placed = services.hold_place(
        account_id=account.pk, amount=600_000, reference="END-7", idempotency_key="h7"
    )
    assert balances(account) == (800_000, 600_000, 200_000)
    # When the insurer prices it at ₹5,500
    hold = services.hold_capture(hold_id=placed.hold.pk, amount=550_000, idempotency_key="c7")
    # Then ₹5,500 is posted out and the ₹500 difference is available again: ₹2,500
    assert (hold.state, hold.captured_amount) == (Hold.State.CAPTURED, 550_000)
    assert balances(account) == (250_000, 0, 250_000)
    assert hold.capture_entry.amount == -550_000
    assert invariants_hold(account)


def test_refund_of_a_confirmed_deletion_is_a_credit(account, approver):
    # Given ₹1,000 posted
    fund(account, 100_000, approver)
    # When the insurer confirms a deletion refunding ₹1,200
    entry = services.refund_post(
        account_id=account.pk, amount=120_000, reference="END-9", idempotency_key="r9"
    )
    # Then ₹2,200 is posted, the entry says so
    assert (entry.kind, entry.amount, entry.balance_after) == ("REFUND", 120_000, 220_000)
    assert balances(account) == (220_000, 0, 220_000)


def test_adjustment_is_a_new_entry_approved_by_someone_else(account, approver, second_approver):
    # Given ₹1,000 posted
    fund(account, 100_000, approver)
    # When finance asks for a ₹250 debit correction and a second approver approves it
    adjustment = approvals.adjustment_request(
        account_id=account.pk,
        amount=-25_000,
        reason="bank charge",
        idempotency_key="a1",
        requested_by=f"user:{approver.pk}",
    )
    assert balances(account) == (100_000, 0, 100_000)
    adjustment = approvals.adjustment_decide(
        adjustment_id=adjustment.pk, approver=second_approver, approve=True
    )
    # Then ₹750 is posted and the correction is its own ADJUSTMENT entry
    assert (adjustment.entry.kind, adjustment.entry.amount, adjustment.entry.balance_after) == (
        "ADJUSTMENT",
        -25_000,
        75_000,
    )
    assert balances(account) == (75_000, 0, 75_000)


def test_expiry_returns_the_hold_and_wakes_the_queue(account, approver):
    # Given ₹1,000 posted, a ₹700 hold expiring in an hour and a ₹500 request parked behind it
    fund(account, 100_000, approver)
    now = timezone.now()
    expiring = services.hold_place(
        account_id=account.pk,
        amount=70_000,
        reference="END-11",
        idempotency_key="h11",
        expires_at=now + timedelta(hours=1),
    )
    waiting = services.hold_place(
        account_id=account.pk, amount=50_000, reference="END-12", idempotency_key="h12"
    )
    assert waiting.parked
    assert balances(account) == (100_000, 70_000, 30_000)
    # When the sweeper runs after the expiry
    assert services.hold_expire(now=now + timedelta(hours=1, seconds=1)) == 1
    # Then the ₹700 hold is EXPIRED and the ₹500 request got its hold: ₹500 available
    expiring.hold.refresh_from_db()
    waiting.parked_request.refresh_from_db()
    assert expiring.hold.state == Hold.State.EXPIRED
    assert waiting.parked_request.state == "PLACED"
    assert waiting.parked_request.hold.amount == 50_000
    assert balances(account) == (100_000, 50_000, 50_000)
    assert invariants_hold(account)


def test_park_and_wake_oldest_first_without_overtaking(account, approver):
    # Given ₹1,000 available
    fund(account, 100_000, approver, key="t1")
    # When ₹800 fits, then ₹500 does not and parks, then ₹100 would fit but parks behind it
    placed = services.hold_place(account_id=account.pk, amount=80_000, reference="A", idempotency_key="a")
    big = services.hold_place(account_id=account.pk, amount=50_000, reference="B", idempotency_key="b")
    small = services.hold_place(account_id=account.pk, amount=10_000, reference="C", idempotency_key="c")
    assert (placed.parked, big.parked, small.parked) == (False, True, True)
    assert balances(account) == (100_000, 80_000, 20_000)
    # When ₹400 more arrives: available ₹600 places ₹500 (₹100 left) then ₹100 (₹0 left)
    fund(account, 40_000, approver, key="t2")
    big.parked_request.refresh_from_db()
    small.parked_request.refresh_from_db()
    assert (big.parked_request.state, small.parked_request.state) == ("PLACED", "PLACED")
    assert big.parked_request.hold_id < small.parked_request.hold_id
    assert balances(account) == (140_000, 140_000, 0)
