"""ledger.parking: ops' parked_wake and parked_cancel, and the FIFO rule behind them."""

import pytest
from django.db import connection

from ledger import parking
from ledger.errors import ParkedRequestAlreadyResolved
from ledger.models import Entry
from tests.ledger.conftest import balances, fund, place

pytestmark = pytest.mark.django_db


def test_parked_wake_places_what_fits_now(account, approver):
    fund(account, 10_000, approver)
    place(account, 20_000, "big")
    # money that arrived without waking (a raw correction, say) is found by the sweep's wake
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Entry._meta.db_table} (account_id, kind, amount, reference, idempotency_key, memo,"
            " created_at)"
            " VALUES (%s, 'ADJUSTMENT', 10000, 'fix', 'fix-1', '', now())",
            [account.pk],
        )
    placements = parking.parked_wake(account_id=account.pk)
    assert [(p.parked, p.hold.amount) for p in placements] == [(False, 20_000)]
    assert balances(account) == (20_000, 20_000, 0)
    assert parking.parked_wake(account_id=account.pk) == []


def test_cancelling_the_head_of_the_queue_lets_the_next_through(account, approver):
    fund(account, 10_000, approver)
    big = place(account, 20_000, "big")
    small = place(account, 5_000, "small")
    parking.parked_cancel(parked_request_id=big.parked_request.pk, reason="employee left", actor="user:1")
    big.parked_request.refresh_from_db()
    small.parked_request.refresh_from_db()
    assert (big.parked_request.state, big.parked_request.cancel_reason) == ("CANCELLED", "employee left")
    assert small.parked_request.state == "PLACED"
    with pytest.raises(ParkedRequestAlreadyResolved):
        parking.parked_cancel(parked_request_id=big.parked_request.pk, reason="again", actor="user:1")
