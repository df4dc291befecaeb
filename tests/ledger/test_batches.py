"""ledger.batches: a window's captures, releases and refunds on one account, under one lock.

Worked examples with hand-computed paise (posted, held, available after each call), the
idempotency contract shared with the single services, all-or-nothing refusals that leave
everything as it was, and a statement count that does not grow with the batch.
"""

import multiprocessing
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ems.models import OutboxEvent
from ledger import batches, services
from ledger.errors import (
    AmountInvalid,
    BatchInvalid,
    CaptureExceedsHold,
    HoldAlreadyResolved,
    HoldNotFound,
    IdempotencyConflict,
    ReferenceInvalid,
)
from ledger.models import Entry, Hold, ParkedRequest
from tests.factories import AccountFactory
from tests.ledger import batch_worker
from tests.ledger.conftest import (
    APPROVER_CODENAMES,
    balances,
    fund,
    invariants_hold,
    ledger_events,
    place,
    snapshot,
    user_with_ledger_permissions,
)
from tests.ledger.test_concurrency import database_url

pytestmark = pytest.mark.django_db

ACTOR = "system:test"


def holds_placed(account, *amounts, prefix="a"):
    """Place one hold per amount with reference END-<prefix><i>; returns the holds in order."""
    placements = services.holds_place_batch(
        account_id=account.pk,
        requests=[
            {"amount": amount, "reference": f"END-{prefix}{i}", "idempotency_key": f"{prefix}{i}"}
            for i, amount in enumerate(amounts)
        ],
    )
    assert not any(p.parked for p in placements)
    return [p.hold for p in placements]


def capture(account, *captures):
    return batches.holds_capture_batch(account_id=account.pk, captures=list(captures), actor=ACTOR)


def batch_data(account, event_type):
    """The `data` of the one outbox event of this type for the account."""
    (payload,) = OutboxEvent.objects.filter(
        destination="ems.ledger", key=str(account.pk), payload__type=event_type
    ).values_list("payload", flat=True)
    return payload["data"]


def audit_actions():
    return list(
        OutboxEvent.objects.filter(destination="audit_logs")
        .order_by("id")
        .values_list("payload__action", flat=True)
    )


# --- captures -------------------------------------------------------------------------------


def test_captures_by_reference_and_by_id_whole_and_partial(account, approver):
    # Given ₹10,000.00 and holds of ₹2,500.00, ₹1,200.50 and ₹800.00
    fund(account, 1_000_000, approver)
    first, second, third = holds_placed(account, 250_000, 120_050, 80_000)
    assert balances(account) == (1_000_000, 450_050, 549_950)

    # When one batch captures the first whole (by reference), ₹1,000.00 of the second (by id)
    # and ₹799.99 of the third (by reference)
    result = capture(
        account,
        {"reference": "END-a0", "idempotency_key": "c0"},
        {"hold_id": second.pk, "amount": 100_000, "idempotency_key": "c1"},
        {"reference": "END-a2", "amount": 79_999, "idempotency_key": "c2"},
    )

    # Then posted falls by 2,500.00 + 1,000.00 + 799.99 = 4,299.99, nothing stays held,
    # and the 200.50 + 0.01 not captured is available again
    assert [h.pk for h in result] == [first.pk, second.pk, third.pk]
    assert [(h.state, h.captured_amount) for h in result] == [
        ("CAPTURED", 250_000),
        ("CAPTURED", 100_000),
        ("CAPTURED", 79_999),
    ]
    assert balances(account) == (570_001, 0, 570_001)
    entries = list(Entry.objects.filter(account=account, kind="CAPTURE").order_by("id"))
    assert [(e.amount, e.reference, e.idempotency_key, e.hold_id, e.balance_after) for e in entries] == [
        (-250_000, "END-a0", "capture:c0", first.pk, 750_000),
        (-100_000, "END-a1", "capture:c1", second.pk, 650_000),
        (-79_999, "END-a2", "capture:c2", third.pk, 570_001),
    ]
    assert list(
        Hold.objects.filter(account=account).order_by("id").values_list("state", "captured_amount")
    ) == [
        ("CAPTURED", 250_000),
        ("CAPTURED", 100_000),
        ("CAPTURED", 79_999),
    ]
    # and one event and one audit record cover the batch, with each hold's figures
    assert ledger_events(account)[-1] == "ledger.holds_batch_captured"
    assert ledger_events(account).count("ledger.holds_batch_captured") == 1
    assert audit_actions().count("ledger.holds_batch_captured") == 1
    data = batch_data(account, "ledger.holds_batch_captured")
    assert (data["posted"], data["held"], data["available"]) == (570_001, 0, 570_001)
    fields = ("hold_id", "reference", "amount", "captured_amount", "entry_id", "balance_after")
    assert [tuple(hold[f] for f in fields) for hold in data["holds"]] == [
        (first.pk, "END-a0", 250_000, 250_000, entries[0].pk, 750_000),
        (second.pk, "END-a1", 120_050, 100_000, entries[1].pk, 650_000),
        (third.pk, "END-a2", 80_000, 79_999, entries[2].pk, 570_001),
    ]
    assert all(set(hold) == set(fields) for hold in data["holds"])
    assert invariants_hold(account)


def test_a_partial_capture_wakes_the_queue_once(account, approver):
    # Given ₹1,000.00, a hold of ₹900.00 and a request of ₹300.00 parked behind it
    fund(account, 100_000, approver)
    (hold,) = holds_placed(account, 90_000)
    parked = place(account, 30_000, "waiting").parked_request
    assert parked is not None
    assert balances(account) == (100_000, 90_000, 10_000)

    # When the insurer confirms ₹700.00 of the hold
    capture(account, {"hold_id": hold.pk, "amount": 70_000, "idempotency_key": "c"})

    # Then ₹200.00 returns, ₹300.00 is available and the parked request takes it
    parked.refresh_from_db()
    assert parked.state == ParkedRequest.State.PLACED
    assert parked.hold.amount == 30_000
    assert balances(account) == (30_000, 30_000, 0)
    assert ledger_events(account)[-2:] == ["ledger.holds_batch_captured", "ledger.hold_placed"]
    assert invariants_hold(account)


def test_a_repeated_batch_returns_the_first_result_and_writes_nothing(account, approver):
    fund(account, 100_000, approver)
    first, second = holds_placed(account, 40_000, 30_000)
    captures = [
        {"reference": "END-a0", "idempotency_key": "c0"},
        {"reference": "END-a1", "amount": 25_000, "idempotency_key": "c1"},
    ]
    batches.holds_capture_batch(account_id=account.pk, captures=captures, actor=ACTOR)
    before = snapshot(account)
    assert before["posted"] == 35_000

    again = batches.holds_capture_batch(account_id=account.pk, captures=captures, actor=ACTOR)

    assert [(h.pk, h.state, h.captured_amount) for h in again] == [
        (first.pk, "CAPTURED", 40_000),
        (second.pk, "CAPTURED", 25_000),
    ]
    assert snapshot(account) == before


def test_a_batch_repeats_a_single_capture_with_the_same_key_and_adds_the_new_ones(account, approver):
    # Given a hold captured alone (hold_capture, key "c0") and one still pending
    fund(account, 100_000, approver)
    first, second = holds_placed(account, 40_000, 30_000)
    services.hold_capture(hold_id=first.pk, amount=10_000, idempotency_key="c0")
    assert balances(account) == (90_000, 30_000, 60_000)

    # When a batch sends that capture again with the new one
    result = capture(
        account,
        {"reference": "END-a0", "amount": 10_000, "idempotency_key": "c0"},
        {"reference": "END-a1", "idempotency_key": "c1"},
    )

    # Then the first is the same capture (one entry), the second is new
    assert [(h.pk, h.captured_amount) for h in result] == [(first.pk, 10_000), (second.pk, 30_000)]
    assert Entry.objects.filter(account=account, idempotency_key="capture:c0").count() == 1
    assert balances(account) == (60_000, 0, 60_000)
    assert batch_data(account, "ledger.holds_batch_captured")["holds"][0]["hold_id"] == second.pk


def test_a_different_amount_under_the_same_key_is_a_conflict_and_nothing_is_written(account, approver):
    fund(account, 100_000, approver)
    _, second = holds_placed(account, 40_000, 30_000)
    capture(account, {"reference": "END-a0", "idempotency_key": "c0"})
    before = snapshot(account)

    # the same key for less, beside a capture that alone would be fine
    with pytest.raises(IdempotencyConflict) as error:
        capture(
            account,
            {"hold_id": second.pk, "idempotency_key": "c1"},
            {"reference": "END-a0", "amount": 39_999, "idempotency_key": "c0"},
        )
    assert error.value.details[0].field == "captures[1].idempotency_key"
    # the same key naming another hold
    with pytest.raises(IdempotencyConflict):
        capture(account, {"hold_id": second.pk, "idempotency_key": "c0"})
    assert snapshot(account) == before


def test_a_resolved_hold_refuses_the_whole_batch_naming_its_reference(account, approver):
    # Given a pending hold and one the insurer rejected (released)
    fund(account, 100_000, approver)
    pending, rejected = holds_placed(account, 40_000, 30_000)
    services.hold_release(hold_id=rejected.pk, reason="insurer rejected")
    before = snapshot(account)
    assert (before["posted"], before["held"]) == (100_000, 40_000)

    with pytest.raises(HoldAlreadyResolved) as error:
        capture(
            account,
            {"reference": "END-a0", "idempotency_key": "c0"},
            {"reference": "END-a1", "idempotency_key": "c1"},
        )

    assert "END-a1" in error.value.message
    assert error.value.details[0].field == "captures[1]"
    assert "RELEASED" in error.value.details[0].message
    # nothing written: no entry, the pending hold still pending, no outbox row
    assert snapshot(account) == before
    pending.refresh_from_db()
    assert pending.state == Hold.State.PENDING


def test_a_hold_captured_under_another_key_is_already_resolved(account, approver):
    fund(account, 100_000, approver)
    (hold,) = holds_placed(account, 40_000)
    services.hold_capture(hold_id=hold.pk, idempotency_key="first")
    before = snapshot(account)
    with pytest.raises(HoldAlreadyResolved):
        capture(account, {"hold_id": hold.pk, "idempotency_key": "second"})
    assert snapshot(account) == before


def test_captures_that_cannot_be_made_refuse_the_batch_and_change_nothing(account, approver):
    fund(account, 100_000, approver)
    holds_placed(account, 40_000, 30_000)
    other = AccountFactory()
    fund(other, 50_000, approver, key="other")
    (foreign,) = holds_placed(other, 10_000, prefix="o")
    before, other_before = snapshot(account), snapshot(other)

    ok = {"reference": "END-a0", "idempotency_key": "ok"}
    with pytest.raises(CaptureExceedsHold) as error:
        capture(account, ok, {"reference": "END-a1", "amount": 30_001, "idempotency_key": "k"})
    assert error.value.details[0].field == "captures[1].amount"
    with pytest.raises(HoldNotFound) as error:
        capture(account, ok, {"reference": "END-nowhere", "idempotency_key": "k"})
    assert "END-nowhere" in error.value.message
    with pytest.raises(HoldNotFound):  # another account's hold
        capture(account, ok, {"hold_id": foreign.pk, "idempotency_key": "k"})
    with pytest.raises(BatchInvalid):  # one hold twice, by reference and by id
        capture(account, ok, {"hold_id": Hold.objects.get(reference="END-a0").pk, "idempotency_key": "k"})
    with pytest.raises(BatchInvalid):
        capture(account, ok, {"reference": "END-a0", "idempotency_key": "k"})
    with pytest.raises(BatchInvalid):
        capture(account, ok, {"reference": "END-a1", "idempotency_key": "ok"})
    with pytest.raises(BatchInvalid):
        capture(account, ok, {"reference": "END-a1", "hold_id": 1, "idempotency_key": "k"})
    with pytest.raises(BatchInvalid):
        capture(account)
    with pytest.raises(AmountInvalid) as error:
        capture(account, ok, {"reference": "END-a1", "amount": 0, "idempotency_key": "k"})
    assert error.value.details[0].field == "captures[1].amount"
    assert snapshot(account) == before
    assert snapshot(other) == other_before


def test_a_capture_batch_takes_a_constant_number_of_statements(account, approver):
    fund(account, 10_000_000, approver)
    holds_placed(account, *[100] * 55, prefix="h")

    def captures(indexes):
        return [
            {"reference": f"END-h{i}", "amount": 100 - i % 2, "idempotency_key": f"c{i}"} for i in indexes
        ]

    with CaptureQueriesContext(connection) as small:
        batches.holds_capture_batch(account_id=account.pk, captures=captures(range(5)), actor=ACTOR)
    with CaptureQueriesContext(connection) as large:
        batches.holds_capture_batch(account_id=account.pk, captures=captures(range(5, 55)), actor=ACTOR)

    assert len(large.captured_queries) == len(small.captured_queries)
    assert Entry.objects.filter(account=account, kind="CAPTURE").count() == 55
    # 55 holds of 1.00, of which 27 captured for 0.99
    assert balances(account) == (10_000_000 - 5_500 + 27, 0, 10_000_000 - 5_500 + 27)


# --- releases -------------------------------------------------------------------------------


def test_a_release_batch_releases_holds_cancels_parked_requests_and_wakes_once(account, approver):
    # Given ₹500.00, holds of ₹200.00 (A) and ₹150.00 (B), and parked ₹400.00 (C), then ₹300.00 (D)
    fund(account, 50_000, approver)
    hold_a, hold_b = holds_placed(account, 20_000, 15_000)
    parked_c = place(account, 40_000, "c", reference="END-c").parked_request
    parked_d = place(account, 30_000, "d", reference="END-d").parked_request
    assert balances(account) == (50_000, 35_000, 15_000)

    # When the insurer rejects A and C (and a reference with nothing is named too)
    release = batches.holds_release_batch(
        account_id=account.pk,
        references=["END-a0", "END-c", "END-none"],
        reason="insurer rejected",
        actor=ACTOR,
    )

    # Then A is released, C cancelled, and D (₹300.00) fits in the ₹350.00 now available
    assert [h.pk for h in release.holds] == [hold_a.pk]
    assert [p.pk for p in release.parked_requests] == [parked_c.pk]
    hold_a.refresh_from_db()
    parked_c.refresh_from_db()
    parked_d.refresh_from_db()
    assert (hold_a.state, parked_c.state, parked_c.cancel_reason) == (
        "RELEASED",
        "CANCELLED",
        "insurer rejected",
    )
    assert parked_d.state == ParkedRequest.State.PLACED
    assert balances(account) == (50_000, 45_000, 5_000)
    assert ledger_events(account)[-2:] == ["ledger.holds_batch_released", "ledger.hold_placed"]
    data = batch_data(account, "ledger.holds_batch_released")
    assert data["holds"] == [{"hold_id": hold_a.pk, "reference": "END-a0", "amount": 20_000}]
    assert data["parked_cancelled"] == [
        {"parked_request_id": parked_c.pk, "reference": "END-c", "amount": 40_000}
    ]
    assert audit_actions().count("ledger.holds_batch_released") == 1

    # When the same release comes again, nothing changes
    before = snapshot(account)
    again = batches.holds_release_batch(
        account_id=account.pk,
        references=["END-a0", "END-c", "END-none"],
        reason="insurer rejected",
        actor=ACTOR,
    )
    assert (again.holds, again.parked_requests) == ([], [])
    assert snapshot(account) == before
    assert hold_b.pk in Hold.objects.filter(state="PENDING").values_list("pk", flat=True)
    assert invariants_hold(account)


def test_a_release_batch_takes_a_constant_number_of_statements_and_refuses_bad_references(account, approver):
    fund(account, 10_000_000, approver)
    holds_placed(account, *[100] * 55, prefix="h")
    with CaptureQueriesContext(connection) as small:
        batches.holds_release_batch(
            account_id=account.pk, references=[f"END-h{i}" for i in range(5)], reason="", actor=ACTOR
        )
    with CaptureQueriesContext(connection) as large:
        batches.holds_release_batch(
            account_id=account.pk, references=[f"END-h{i}" for i in range(5, 55)], reason="", actor=ACTOR
        )
    assert len(large.captured_queries) == len(small.captured_queries)
    assert balances(account) == (10_000_000, 0, 10_000_000)

    before = snapshot(account)
    with pytest.raises(ReferenceInvalid):
        batches.holds_release_batch(account_id=account.pk, references=["END-h0", ""], reason="", actor=ACTOR)
    with pytest.raises(BatchInvalid):
        batches.holds_release_batch(account_id=account.pk, references=[], reason="", actor=ACTOR)
    assert snapshot(account) == before


# --- refunds --------------------------------------------------------------------------------


def test_refunds_post_in_order_and_wake_the_queue_once(account, approver):
    # Given ₹100.00, a hold of ₹80.00 and a parked request of ₹500.00
    fund(account, 10_000, approver)
    holds_placed(account, 8_000)
    parked = place(account, 50_000, "big").parked_request
    assert balances(account) == (10_000, 8_000, 2_000)

    # When the insurer confirms refunds of ₹299.99 and ₹200.01
    entries = batches.refunds_post_batch(
        account_id=account.pk,
        refunds=[
            {"amount": 29_999, "reference": "END-del1", "idempotency_key": "r1"},
            {"amount": 20_001, "reference": "END-del2", "idempotency_key": "r2"},
        ],
        actor=ACTOR,
    )

    # Then posted is 600.00, and the ₹500.00 request takes what is now available
    assert [(e.kind, e.amount, e.reference, e.idempotency_key, e.balance_after) for e in entries] == [
        ("REFUND", 29_999, "END-del1", "refund:r1", 39_999),
        ("REFUND", 20_001, "END-del2", "refund:r2", 60_000),
    ]
    assert list(Entry.objects.filter(kind="REFUND").order_by("id").values_list("pk", "balance_after")) == [
        (entries[0].pk, 39_999),
        (entries[1].pk, 60_000),
    ]
    parked.refresh_from_db()
    assert parked.state == ParkedRequest.State.PLACED
    assert balances(account) == (60_000, 58_000, 2_000)
    assert ledger_events(account)[-2:] == ["ledger.refunds_batch_posted", "ledger.hold_placed"]
    assert batch_data(account, "ledger.refunds_batch_posted")["entries"] == [
        {"entry_id": entries[0].pk, "amount": 29_999, "reference": "END-del1", "balance_after": 39_999},
        {"entry_id": entries[1].pk, "amount": 20_001, "reference": "END-del2", "balance_after": 60_000},
    ]
    assert audit_actions().count("ledger.refunds_batch_posted") == 1
    assert invariants_hold(account)


def test_a_refund_batch_shares_its_keys_with_refund_post(account, approver):
    # Given a refund posted alone with key "r1"
    fund(account, 10_000, approver)
    single = services.refund_post(
        account_id=account.pk, amount=5_000, reference="END-del1", idempotency_key="r1"
    )

    # When a batch repeats it beside a new one, and then repeats the whole batch
    refunds = [
        {"amount": 5_000, "reference": "END-del1", "idempotency_key": "r1"},
        {"amount": 700, "reference": "END-del2", "idempotency_key": "r2"},
    ]
    entries = batches.refunds_post_batch(account_id=account.pk, refunds=refunds, actor=ACTOR)
    before = snapshot(account)
    again = batches.refunds_post_batch(account_id=account.pk, refunds=refunds, actor=ACTOR)

    # Then "r1" is the one refund, "r2" was posted once
    assert entries[0].pk == single.pk
    assert [e.pk for e in again] == [e.pk for e in entries]
    assert snapshot(account) == before
    assert balances(account) == (15_700, 0, 15_700)
    # and refund_post sees the batch's refund as its own
    assert services.refund_post(
        account_id=account.pk, amount=700, reference="END-del2", idempotency_key="r2"
    ).pk == (entries[1].pk)


def test_refunds_that_cannot_be_posted_refuse_the_batch_and_change_nothing(account, approver):
    fund(account, 10_000, approver)
    services.refund_post(account_id=account.pk, amount=5_000, reference="END-del1", idempotency_key="r1")
    before = snapshot(account)

    def refund(*refunds):
        return batches.refunds_post_batch(account_id=account.pk, refunds=list(refunds), actor=ACTOR)

    new = {"amount": 100, "reference": "END-new", "idempotency_key": "new"}
    with pytest.raises(IdempotencyConflict) as error:
        refund(new, {"amount": 5_001, "reference": "END-del1", "idempotency_key": "r1"})
    assert error.value.details[0].field == "refunds[1].idempotency_key"
    with pytest.raises(IdempotencyConflict):
        refund(new, {"amount": 5_000, "reference": "END-other", "idempotency_key": "r1"})
    with pytest.raises(AmountInvalid) as error:
        refund(new, {"amount": -5, "reference": "END-x", "idempotency_key": "x"})
    assert error.value.details[0].field == "refunds[1].amount"
    with pytest.raises(BatchInvalid):
        refund(new, {**new, "amount": 200})
    with pytest.raises(BatchInvalid):
        refund()
    with pytest.raises(BatchInvalid):
        refund(new, "not a mapping")
    assert snapshot(account) == before


def test_a_refund_batch_takes_a_constant_number_of_statements(account, approver):
    fund(account, 10_000, approver)

    def refunds(indexes):
        return [{"amount": 100 + i, "reference": f"END-d{i}", "idempotency_key": f"r{i}"} for i in indexes]

    with CaptureQueriesContext(connection) as small:
        batches.refunds_post_batch(account_id=account.pk, refunds=refunds(range(5)), actor=ACTOR)
    with CaptureQueriesContext(connection) as large:
        batches.refunds_post_batch(account_id=account.pk, refunds=refunds(range(5, 55)), actor=ACTOR)
    assert len(large.captured_queries) == len(small.captured_queries)
    # 55 refunds of 1.00 + i paise: 5,500 + (0 + ... + 54) = 5,500 + 1,485
    assert balances(account) == (10_000 + 5_500 + 1_485, 0, 10_000 + 5_500 + 1_485)


def test_the_batch_services_are_the_ledger_services_too():
    assert services.holds_capture_batch is batches.holds_capture_batch
    assert services.holds_release_batch is batches.holds_release_batch
    assert services.refunds_post_batch is batches.refunds_post_batch


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_processes_capturing_refunding_and_releasing_in_batches_at_once_account_for_every_paisa():
    # Given one account with ₹1,00,000.00, each worker's own 30 holds, 8 holds every worker
    # captures with the same keys and 6 every worker races for with its own keys
    approver = user_with_ledger_permissions(*APPROVER_CODENAMES, is_staff=True)
    account = AccountFactory()
    fund(account, 10_000_000, approver, key="seed")
    workers = 4
    requests = [
        {"amount": batch_worker.own_amount(i), "reference": f"W{w}-{i}", "idempotency_key": f"H-W{w}-{i}"}
        for w in range(workers)
        for i in range(batch_worker.OWN_HOLDS)
    ]
    requests += [
        {"amount": 2_000, "reference": f"S-{i}", "idempotency_key": f"H-S-{i}"}
        for i in range(batch_worker.SHARED_HOLDS)
    ]
    requests += [
        {"amount": 3_000, "reference": f"T-{i}", "idempotency_key": f"H-T-{i}"}
        for i in range(batch_worker.RACED_HOLDS)
    ]
    assert not any(p.parked for p in services.holds_place_batch(account_id=account.pk, requests=requests))

    # When the workers run their batches all at once
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    processes = [
        context.Process(
            target=batch_worker.batch_worker,
            args=(database_url(), settings.REDIS_URL, w, account.pk, ready, start, results),
            daemon=True,
        )
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)  # every child has set Django up: they start together
    start.set()
    reports = [results.get(timeout=150) for _ in processes]
    for process in processes:
        process.join(timeout=30)

    # Then no worker saw an error (deadlocks and serialization failures are retried inside)
    records = [record for report in reports for record in report]
    assert [r["error"] for r in records if r["op"] == "error"] == []
    # and every worker got the same result for the shared captures, made once
    shared = {tuple(map(tuple, r["holds"])) for r in records if r["op"] == "shared"}
    assert len(shared) == 1
    assert [amount for _, amount in shared.pop()] == [2_000] * batch_worker.SHARED_HOLDS
    # and exactly one worker's batch won the raced holds; the others were refused whole
    raced = Counter(r["outcome"] for r in records if r["op"] == "raced")
    assert raced == {"captured": 1, "hold_already_resolved": workers - 1}
    (winner,) = [r["worker"] for r in records if r["op"] == "raced" and r["outcome"] == "captured"]

    # and the ledger equals the plan, to the paisa
    own = sum(batch_worker.own_captured(i) for i in range(20)) * workers
    refunded = sum(500 + j for j in range(batch_worker.REFUNDS_PER_BATCH)) * 2 * workers
    posted = (
        10_000_000 - own - 2_000 * batch_worker.SHARED_HOLDS - 3_000 * batch_worker.RACED_HOLDS + refunded
    )
    assert balances(account) == (posted, 0, posted)
    assert invariants_hold(account)
    keys = set(Entry.objects.filter(account=account).values_list("idempotency_key", flat=True))
    assert keys == (
        {f"topup:{account.topups.get().pk}"}
        | {f"capture:C-w{w}-{i}" for w in range(workers) for i in range(20)}
        | {f"capture:S-{i}" for i in range(batch_worker.SHARED_HOLDS)}
        | {f"capture:T-{i}-w{winner}" for i in range(batch_worker.RACED_HOLDS)}
        | {f"refund:R-w{w}-{r}-{j}" for w in range(workers) for r in range(2) for j in range(5)}
    )
    assert Counter(Hold.objects.filter(account=account).values_list("state", flat=True)) == {
        "CAPTURED": 20 * workers + batch_worker.SHARED_HOLDS + batch_worker.RACED_HOLDS,
        "RELEASED": 10 * workers,
    }
    # and each batch that wrote has one event and one audit record
    kafka = Counter(
        OutboxEvent.objects.filter(destination="ems.ledger").values_list("payload__type", flat=True)
    )
    audit = Counter(
        OutboxEvent.objects.filter(destination="audit_logs").values_list("payload__action", flat=True)
    )
    assert kafka == audit
    assert kafka["ledger.holds_batch_captured"] == 2 * workers + 1 + 1
    assert kafka["ledger.refunds_batch_posted"] == 2 * workers
    assert kafka["ledger.holds_batch_released"] == workers
