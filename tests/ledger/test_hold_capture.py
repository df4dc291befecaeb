"""ledger.services.hold_capture, hold_release and hold_release_by_reference."""

import pytest

from ledger import services
from ledger.errors import CaptureExceedsHold, HoldAlreadyResolved, HoldNotFound, IdempotencyConflict
from ledger.models import Entry
from tests.ledger.conftest import balances, fund, invariants_hold, snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def hold(account, approver):
    fund(account, 100_000, approver)
    return services.hold_place(
        account_id=account.pk, amount=40_000, reference="END-1", idempotency_key="h1"
    ).hold


def test_capture_more_than_held_is_refused(account, hold):
    before = snapshot(account)
    with pytest.raises(CaptureExceedsHold) as error:
        services.hold_capture(hold_id=hold.pk, amount=40_001, idempotency_key="c1")
    assert (error.value.code, error.value.status) == ("capture_exceeds_hold", 422)
    assert snapshot(account) == before


def test_capture_after_release_is_refused(account, hold):
    services.hold_release(hold_id=hold.pk)
    before = snapshot(account)
    with pytest.raises(HoldAlreadyResolved) as error:
        services.hold_capture(hold_id=hold.pk, idempotency_key="c1")
    assert (error.value.code, error.value.status) == ("hold_already_resolved", 409)
    assert snapshot(account) == before


def test_release_after_capture_is_refused(account, hold):
    services.hold_capture(hold_id=hold.pk, idempotency_key="c1")
    before = snapshot(account)
    with pytest.raises(HoldAlreadyResolved):
        services.hold_release(hold_id=hold.pk)
    with pytest.raises(HoldAlreadyResolved):
        services.hold_capture(hold_id=hold.pk, idempotency_key="c2")
    assert snapshot(account) == before


def test_a_repeated_capture_returns_the_first_result(account, hold):
    first = services.hold_capture(hold_id=hold.pk, amount=30_000, idempotency_key="c1")
    again = services.hold_capture(hold_id=hold.pk, amount=30_000, idempotency_key="c1")
    assert (again.pk, again.captured_amount) == (first.pk, 30_000)
    assert Entry.objects.filter(kind="CAPTURE").count() == 1
    assert balances(account) == (70_000, 0, 70_000)


def test_a_repeated_capture_key_with_a_different_amount_is_refused(account, hold):
    services.hold_capture(hold_id=hold.pk, amount=30_000, idempotency_key="c1")
    before = snapshot(account)
    with pytest.raises(IdempotencyConflict):
        services.hold_capture(hold_id=hold.pk, amount=35_000, idempotency_key="c1")
    with pytest.raises(IdempotencyConflict):
        services.hold_capture(hold_id=hold.pk, idempotency_key="c1")  # full = 40,000 ≠ 30,000
    assert snapshot(account) == before


def test_a_capture_key_reused_for_another_hold_is_refused(account, hold):
    other = services.hold_place(
        account_id=account.pk, amount=1_000, reference="END-2", idempotency_key="h2"
    ).hold
    services.hold_capture(hold_id=hold.pk, idempotency_key="c1")
    before = snapshot(account)
    with pytest.raises(IdempotencyConflict):
        services.hold_capture(hold_id=other.pk, amount=40_000, idempotency_key="c1")
    assert snapshot(account) == before


def test_an_unknown_hold_is_404(db):
    with pytest.raises(HoldNotFound) as error:
        services.hold_capture(hold_id=31337, idempotency_key="c")
    assert (error.value.code, error.value.status) == ("hold_not_found", 404)
    with pytest.raises(HoldNotFound):
        services.hold_release(hold_id=31337)


def test_a_partial_capture_wakes_the_queue(account, hold):
    # available 60,000; a 65,000 request parks; capturing 35,000 of the 40,000 hold frees 5,000
    parked = services.hold_place(
        account_id=account.pk, amount=65_000, reference="END-2", idempotency_key="h2"
    )
    assert parked.parked
    services.hold_capture(hold_id=hold.pk, amount=35_000, idempotency_key="c1")
    parked.parked_request.refresh_from_db()
    assert parked.parked_request.state == "PLACED"
    assert balances(account) == (65_000, 65_000, 0)
    assert invariants_hold(account)


def test_release_by_reference_releases_the_hold_and_cancels_the_parked_request(account, hold):
    parked = services.hold_place(
        account_id=account.pk, amount=90_000, reference="END-2", idempotency_key="h2"
    )
    result = services.hold_release_by_reference(account_id=account.pk, reference="END-1", reason="superseded")
    assert [h.pk for h in result.holds] == [hold.pk]
    # releasing END-1 lets END-2 through
    parked.parked_request.refresh_from_db()
    assert parked.parked_request.state == "PLACED"
    result = services.hold_release_by_reference(account_id=account.pk, reference="END-2", reason="superseded")
    assert [h.reference for h in result.holds] == ["END-2"]
    assert balances(account) == (100_000, 0, 100_000)


def test_release_by_reference_cancels_a_parked_request(account, hold):
    parked = services.hold_place(
        account_id=account.pk, amount=90_000, reference="END-2", idempotency_key="h2"
    )
    result = services.hold_release_by_reference(account_id=account.pk, reference="END-2", reason="superseded")
    assert ([p.pk for p in result.parked_requests], result.holds) == ([parked.parked_request.pk], [])
    parked.parked_request.refresh_from_db()
    assert (parked.parked_request.state, parked.parked_request.cancel_reason) == ("CANCELLED", "superseded")


def test_release_by_reference_is_a_no_op_when_nothing_matches(account, hold):
    before = snapshot(account)
    result = services.hold_release_by_reference(account_id=account.pk, reference="NOPE")
    assert (result.holds, result.parked_requests) == ([], [])
    assert snapshot(account) == before
