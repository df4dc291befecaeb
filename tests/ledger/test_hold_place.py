"""ledger.services.hold_place: place, or park behind the queue (handlers hear it after commit)."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from ledger import services
from ledger.errors import (
    AccountNotFound,
    AmountInvalid,
    HoldExpiryInvalid,
    IdempotencyConflict,
)
from ledger.handlers import register_funds_handler, unregister_funds_handler
from ledger.models import Hold, ParkedRequest
from tests.ledger.conftest import balances, fund, ledger_events, place, snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def funds_calls():
    calls = []

    def record(reference, event):
        calls.append((reference, str(event), event.hold_id))

    register_funds_handler(record)
    yield calls
    unregister_funds_handler(record)


def test_a_hold_that_fits_is_placed(account, approver):
    fund(account, 100_000, approver)
    placement = place(account, 40_000, "h1")
    assert not placement.parked
    assert (placement.hold.state, placement.hold.amount, placement.reference) == ("PENDING", 40_000, "REF-h1")
    assert placement.hold.expires_at > timezone.now() + timedelta(days=14)
    assert balances(account) == (100_000, 40_000, 60_000)
    assert ledger_events(account)[-1] == "ledger.hold_placed"


def test_a_repeat_returns_the_first_hold_and_different_data_is_refused(account, approver):
    fund(account, 100_000, approver)
    first = place(account, 40_000, "h1")
    assert place(account, 40_000, "h1").hold.pk == first.hold.pk
    before = snapshot(account)
    with pytest.raises(IdempotencyConflict):
        place(account, 40_001, "h1")
    with pytest.raises(IdempotencyConflict):
        place(account, 40_000, "h1", reference="OTHER")
    assert snapshot(account) == before


def test_a_hold_that_does_not_fit_parks_and_the_handler_hears_it_after_commit(
    account, approver, funds_calls, django_capture_on_commit_callbacks
):
    fund(account, 10_000, approver)
    with django_capture_on_commit_callbacks(execute=True):
        placement = place(account, 15_000, "h1", reference="END-1")
    assert placement.parked
    assert (placement.parked_request.state, placement.parked_request.amount) == ("PARKED", 15_000)
    assert balances(account) == (10_000, 0, 10_000)
    assert funds_calls == [("END-1", "parked", None)]
    # a repeat returns the parked request, and nothing new is parked
    assert place(account, 15_000, "h1", reference="END-1").parked_request.pk == placement.parked_request.pk
    assert ParkedRequest.objects.count() == 1
    # when money arrives the request gets its hold and the handler is told which
    with django_capture_on_commit_callbacks(execute=True):
        fund(account, 5_000, approver, key="more")
    hold = Hold.objects.get(reference="END-1")
    assert funds_calls[-1] == ("END-1", "placed", hold.pk)
    # and a repeat of the original call now returns that hold
    again = place(account, 15_000, "h1", reference="END-1")
    assert (again.parked, again.hold.pk) == (False, hold.pk)


def test_handlers_are_not_called_when_the_transaction_rolls_back(account, funds_calls):
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        place(account, 15_000, "h1")
        raise RuntimeError("caller failed")
    assert funds_calls == []
    assert ParkedRequest.objects.count() == 0


def test_a_new_request_parks_behind_waiting_ones_even_if_it_fits(account, approver):
    fund(account, 10_000, approver)
    place(account, 20_000, "big")
    small = place(account, 1_000, "small")
    assert small.parked
    assert list(ParkedRequest.objects.order_by("id").values_list("idempotency_key", flat=True)) == [
        "big",
        "small",
    ]


def test_the_parked_expiry_is_carried_to_the_hold(account, approver):
    expires = timezone.now() + timedelta(days=3)
    parked = place(account, 5_000, "h1", expires_at=expires)
    fund(account, 5_000, approver)
    parked.parked_request.refresh_from_db()
    assert parked.parked_request.hold.expires_at == expires


@pytest.mark.parametrize(
    "expires_at",
    [timezone.now() - timedelta(seconds=1), datetime(2030, 1, 1), "2030-01-01"],
)
def test_a_past_or_naive_expiry_is_refused(account, expires_at):
    before = snapshot(account)
    with pytest.raises(HoldExpiryInvalid) as error:
        place(account, 100, "h1", expires_at=expires_at)
    assert (error.value.code, error.value.status) == ("hold_expiry_invalid", 422)
    assert snapshot(account) == before


@pytest.mark.parametrize("amount", [0, -1, 2.5, "5", None, 10**13])
def test_bad_amounts_are_refused(account, amount):
    before = snapshot(account)
    with pytest.raises(AmountInvalid):
        place(account, amount, "h1")
    assert snapshot(account) == before


def test_an_unknown_account_is_404(db):
    with pytest.raises(AccountNotFound):
        services.hold_place(account_id=987_654, amount=1, reference="r", idempotency_key="k")
