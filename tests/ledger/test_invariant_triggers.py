"""The database guards the money: raw SQL that tries to break an invariant is refused.

Migration 0003's triggers (0004 moves the upkeep of held to one update per statement) keep
posted == sum(entries) and held == sum(pending holds) by construction, refuse every other
write to those columns, make entries and resolved holds immutable, and make a hold resolve
once. Each test bypasses the ORM and services.
"""

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from ledger import approvals, services
from ledger.models import Account, Adjustment, TopUp
from tests.factories import EmployerFactory, InsurerFactory, UserFactory
from tests.ledger.conftest import balances, fund, invariants_hold, snapshot

pytestmark = pytest.mark.django_db


def raw(sql: str, params: tuple = ()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def refused(sql: str, params: tuple = (), *, immediate: bool = False) -> str:
    """Run `sql` in a savepoint; it must raise IntegrityError. Returns the message."""
    with pytest.raises(IntegrityError) as error, transaction.atomic():
        if immediate:
            raw("SET CONSTRAINTS ALL IMMEDIATE")
        raw(sql, params)
    return str(error.value)


@pytest.fixture
def funded(account, approver):
    fund(account, 100_000, approver)
    placed = services.hold_place(account_id=account.pk, amount=30_000, reference="R1", idempotency_key="h1")
    captured = services.hold_place(account_id=account.pk, amount=20_000, reference="R2", idempotency_key="h2")
    services.hold_capture(hold_id=captured.hold.pk, idempotency_key="c2")
    account.pending_hold_id = placed.hold.pk
    account.captured_hold_id = captured.hold.pk
    return account


def test_entries_cannot_be_updated_or_deleted(funded):
    before = snapshot(funded)
    assert "immutable" in refused(
        "UPDATE ledger_entry SET amount = amount + 1 WHERE account_id = %s", (funded.pk,)
    )
    assert "immutable" in refused("DELETE FROM ledger_entry WHERE account_id = %s", (funded.pk,))
    assert snapshot(funded) == before


def test_posted_and_held_cannot_be_written_directly(funded):
    before = snapshot(funded)
    assert "change only through entries and holds" in refused(
        "UPDATE ledger_account SET posted = posted + 500 WHERE id = %s", (funded.pk,)
    )
    assert "change only through entries and holds" in refused(
        "UPDATE ledger_account SET held = 0 WHERE id = %s", (funded.pk,)
    )
    assert snapshot(funded) == before


def test_an_account_opens_empty(db):
    employer, insurer = EmployerFactory(), InsurerFactory()
    message = refused(
        "INSERT INTO ledger_account (employer_id, insurer_id, currency, posted, held, low_balance_threshold,"
        " created_at) VALUES (%s, %s, 'INR', 500, 0, 0, now())",
        (employer.pk, insurer.pk),
    )
    assert "opens at posted 0" in message
    assert not Account.objects.filter(employer=employer).exists()


def test_a_raw_entry_moves_posted_with_it_and_stamps_the_running_balance(funded):
    # posted == sum(entries) holds by construction: the insert itself moves posted
    raw(
        "INSERT INTO ledger_entry (account_id, kind, amount, reference, idempotency_key, memo,"
        " created_at)"
        " VALUES (%s, 'TOPUP', 700, 'raw', 'raw-1', '', now())",
        (funded.pk,),
    )
    assert balances(funded) == (80_700, 30_000, 50_700)
    with connection.cursor() as cursor:
        cursor.execute("SELECT balance_after FROM ledger_entry WHERE idempotency_key = 'raw-1'")
        assert cursor.fetchone() == (80_700,)
    assert invariants_hold(funded)


def test_an_entry_with_a_false_running_balance_is_refused(funded):
    before = snapshot(funded)
    message = refused(
        "INSERT INTO ledger_entry (account_id, kind, amount, reference, idempotency_key, memo, balance_after,"
        " created_at) VALUES (%s, 'TOPUP', 700, 'raw', 'raw-2', '', 999999, now())",
        (funded.pk,),
    )
    assert "is not the posted balance" in message
    assert snapshot(funded) == before


def test_a_debit_beyond_available_is_refused(funded):
    # available is 50,000: an adjustment entry of -60,000 would leave posted below held
    before = snapshot(funded)
    refused(
        "INSERT INTO ledger_entry (account_id, kind, amount, reference, idempotency_key, memo,"
        " created_at)"
        " VALUES (%s, 'ADJUSTMENT', -60000, 'raw', 'raw-3', '', now())",
        (funded.pk,),
    )
    # and so is a hold bigger than available
    refused(
        "INSERT INTO ledger_hold (account_id, reference, amount, state, idempotency_key, expires_at,"
        " created_at)"
        " VALUES (%s, 'raw', 50001, 'PENDING', 'raw-h', now() + interval '1 day', now())",
        (funded.pk,),
    )
    assert snapshot(funded) == before


ENTRY_COLUMNS = "(account_id, kind, amount, reference, idempotency_key, memo, balance_after, created_at)"


def test_a_many_row_insert_stamps_each_running_balance_and_moves_posted_by_its_total(funded):
    # a batch's entries in one statement (ledger.batches): each carries its own running balance
    raw(
        f"INSERT INTO ledger_entry {ENTRY_COLUMNS} VALUES"
        " (%s, 'TOPUP', 700, 'raw', 'raw-m1', '', NULL, now()),"
        " (%s, 'ADJUSTMENT', -200, 'raw', 'raw-m2', '', NULL, now()),"
        " (%s, 'REFUND', 50, 'raw', 'raw-m3', '', 80550, now())",
        (funded.pk,) * 3,
    )
    assert balances(funded) == (80_550, 30_000, 50_550)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT idempotency_key, balance_after FROM ledger_entry WHERE reference = 'raw' ORDER BY id"
        )
        assert cursor.fetchall() == [("raw-m1", 80_700), ("raw-m2", 80_500), ("raw-m3", 80_550)]
    assert invariants_hold(funded)


def test_a_many_row_insert_is_refused_whole_for_one_false_balance_or_an_overdraft(funded):
    before = snapshot(funded)
    assert "is not the posted balance" in refused(
        f"INSERT INTO ledger_entry {ENTRY_COLUMNS} VALUES"
        " (%s, 'TOPUP', 700, 'raw', 'raw-f1', '', 80700, now()),"
        " (%s, 'TOPUP', 700, 'raw', 'raw-f2', '', 80700, now())",
        (funded.pk,) * 2,
    )
    # posted would end at 20,700 with 30,000 held
    assert "account_available_non_negative" in refused(
        f"INSERT INTO ledger_entry {ENTRY_COLUMNS} VALUES"
        " (%s, 'TOPUP', 700, 'raw', 'raw-o1', '', NULL, now()),"
        " (%s, 'ADJUSTMENT', -60000, 'raw', 'raw-o2', '', NULL, now())",
        (funded.pk,) * 2,
    )
    assert snapshot(funded) == before


def test_a_raw_pending_hold_moves_held_with_it(funded):
    raw(
        "INSERT INTO ledger_hold (account_id, reference, amount, state, idempotency_key, expires_at,"
        " created_at)"
        " VALUES (%s, 'raw', 5000, 'PENDING', 'raw-h2', now() + interval '1 day', now())",
        (funded.pk,),
    )
    assert balances(funded) == (80_000, 35_000, 45_000)
    assert invariants_hold(funded)


def test_a_resolved_hold_is_immutable_and_resolves_once(funded):
    before = snapshot(funded)
    captured = funded.captured_hold_id
    assert "resolves once" in refused("UPDATE ledger_hold SET state = 'RELEASED' WHERE id = %s", (captured,))
    assert "resolves once" in refused(
        "UPDATE ledger_hold SET state = 'PENDING', resolved_at = NULL, captured_amount = NULL WHERE id = %s",
        (captured,),
    )
    assert "resolves once" in refused("UPDATE ledger_hold SET reference = 'x' WHERE id = %s", (captured,))
    assert snapshot(funded) == before


def test_a_pending_hold_changes_only_its_resolution(funded):
    before = snapshot(funded)
    pending = funded.pending_hold_id
    assert "only the resolution" in refused("UPDATE ledger_hold SET amount = 1 WHERE id = %s", (pending,))
    assert "only the resolution" in refused(
        "UPDATE ledger_hold SET account_id = account_id + 1 WHERE id = %s", (pending,)
    )
    assert "never deleted" in refused("DELETE FROM ledger_hold WHERE id = %s", (pending,))
    assert snapshot(funded) == before


def test_a_raw_release_takes_the_hold_out_of_held(funded):
    raw(
        "UPDATE ledger_hold SET state = 'RELEASED', resolved_at = %s WHERE id = %s",
        (timezone.now(), funded.pending_hold_id),
    )
    assert balances(funded) == (80_000, 0, 80_000)
    assert invariants_hold(funded)


def test_a_capture_without_its_entry_is_refused_at_commit(funded):
    before = snapshot(funded)
    message = refused(
        "UPDATE ledger_hold SET state = 'CAPTURED', captured_amount = amount, resolved_at = now()"
        " WHERE id = %s",
        (funded.pending_hold_id,),
        immediate=True,
    )
    assert "has no capture entry" in message
    assert snapshot(funded) == before


def test_a_capture_entry_needs_its_hold_captured_for_the_same_amount(funded):
    before = snapshot(funded)
    message = refused(
        "INSERT INTO ledger_entry (account_id, kind, amount, reference, idempotency_key, memo, hold_id,"
        " created_at)"
        " VALUES (%s, 'CAPTURE', -30000, 'R1', 'raw-c', '', %s, now())",
        (funded.pk, funded.pending_hold_id),
    )
    assert "needs its hold CAPTURED" in message
    assert snapshot(funded) == before


@pytest.mark.parametrize("model", [TopUp, Adjustment])
def test_the_maker_cannot_decide_their_own_request_even_in_raw_sql(account, model):
    maker, checker = UserFactory(), UserFactory()
    fields = {
        "account_id": account.pk,
        "amount": 5_000,
        "idempotency_key": "k1",
        "requested_by": f"user:{maker.pk}",
    }
    if model is TopUp:
        request = approvals.account_topup(**fields, payment_reference="UTR-1")
    else:
        request = approvals.adjustment_request(**fields, reason="missed top-up")
    table = model._meta.db_table
    decide = f"UPDATE {table} SET state = 'REJECTED', decided_by_id = %s, decided_at = now() WHERE id = %s"
    before = snapshot(account)
    assert f"{model._meta.model_name}_maker_is_not_checker" in refused(decide, (maker.pk, request.pk))
    assert snapshot(account) == before
    raw(decide, (checker.pk, request.pk))
    request.refresh_from_db()
    assert (request.state, request.decided_by_id) == ("REJECTED", checker.pk)


def test_a_second_live_topup_with_the_same_reference_is_refused_in_raw_sql(account):
    approvals.account_topup(
        account_id=account.pk,
        amount=5_000,
        payment_reference="UTR-9",
        idempotency_key="k1",
        requested_by="client:test",
    )
    insert = (
        "INSERT INTO ledger_topup (account_id, amount, payment_reference, idempotency_key, state,"
        " requested_by, decision_note, created_at) VALUES (%s, 1, 'UTR-9', %s, %s, 'client:t', '', now())"
    )
    assert "topup_payment_reference_once" in refused(insert, (account.pk, "k2", "PENDING"))
    raw(insert, (account.pk, "k3", "REJECTED"))
    assert TopUp.objects.filter(payment_reference="UTR-9").count() == 2
