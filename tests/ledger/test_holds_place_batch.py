"""ledger.services.holds_place_batch: a dispatch under one lock, one hold row per debit."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ems.models import OutboxEvent
from ledger import services
from ledger.errors import AmountInvalid, BatchInvalid
from ledger.models import Hold, ParkedRequest
from tests.ledger.conftest import balances, fund, invariants_hold, ledger_events, snapshot

pytestmark = pytest.mark.django_db


def debits(*amounts, prefix="d"):
    return [
        {"amount": amount, "reference": f"END-{prefix}{i}", "idempotency_key": f"{prefix}{i}"}
        for i, amount in enumerate(amounts)
    ]


def test_places_in_order_and_parks_from_the_first_that_does_not_fit(account, approver):
    fund(account, 10_000, approver)
    results = services.holds_place_batch(account_id=account.pk, requests=debits(3_000, 4_000, 5_000, 1_000))
    # 3,000 + 4,000 fit (3,000 left); 5,000 does not and parks; 1,000 would fit but parks behind it
    assert [(r.parked, r.reference) for r in results] == [
        (False, "END-d0"),
        (False, "END-d1"),
        (True, "END-d2"),
        (True, "END-d3"),
    ]
    assert results[0].hold.pk < results[1].hold.pk
    assert balances(account) == (10_000, 7_000, 3_000)
    assert ledger_events(account)[-1] == "ledger.holds_batch_placed"
    assert ledger_events(account).count("ledger.holds_batch_placed") == 1
    assert invariants_hold(account)


def test_a_batch_takes_a_constant_number_of_queries(account, approver):
    fund(account, 10_000_000, approver)
    with CaptureQueriesContext(connection) as small:
        services.holds_place_batch(account_id=account.pk, requests=debits(*[100] * 5, prefix="a"))
    with CaptureQueriesContext(connection) as large:
        services.holds_place_batch(account_id=account.pk, requests=debits(*[100] * 200, prefix="b"))
    assert len(large.captured_queries) == len(small.captured_queries)
    assert Hold.objects.count() == 205


def test_a_repeated_batch_returns_the_first_results(account, approver):
    fund(account, 5_000, approver)
    first = services.holds_place_batch(account_id=account.pk, requests=debits(3_000, 4_000))
    events = OutboxEvent.objects.count()
    again = services.holds_place_batch(account_id=account.pk, requests=debits(3_000, 4_000))
    assert [(r.parked, (r.hold or r.parked_request).pk) for r in again] == [
        (r.parked, (r.hold or r.parked_request).pk) for r in first
    ]
    assert OutboxEvent.objects.count() == events
    assert (Hold.objects.count(), ParkedRequest.objects.count()) == (1, 1)


def test_a_batch_parks_behind_requests_already_waiting(account, approver):
    fund(account, 5_000, approver)
    services.hold_place(account_id=account.pk, amount=9_000, reference="OLD", idempotency_key="old")
    results = services.holds_place_batch(account_id=account.pk, requests=debits(100))
    assert results[0].parked


def test_one_bad_request_refuses_the_whole_batch(account, approver):
    fund(account, 5_000, approver)
    before = snapshot(account)
    requests = debits(100, 200)
    requests[1]["amount"] = 0
    with pytest.raises(AmountInvalid) as error:
        services.holds_place_batch(account_id=account.pk, requests=requests)
    assert error.value.details[0].field == "requests[1].amount"
    with pytest.raises(BatchInvalid):
        services.holds_place_batch(account_id=account.pk, requests=[])
    with pytest.raises(BatchInvalid):
        services.holds_place_batch(account_id=account.pk, requests=debits(1, 2) + debits(3))
    assert snapshot(account) == before
