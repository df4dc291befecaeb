"""ledger.services.refund_post and hold_expire."""

from datetime import timedelta

import pytest
from django.utils import timezone

from ledger import services
from ledger.errors import AmountInvalid, IdempotencyConflict
from ledger.models import Entry, Hold
from tests.ledger.conftest import balances, fund, snapshot

pytestmark = pytest.mark.django_db


def test_a_refund_is_idempotent(account):
    first = services.refund_post(
        account_id=account.pk, amount=12_000, reference="END-5", idempotency_key="r5"
    )
    again = services.refund_post(
        account_id=account.pk, amount=12_000, reference="END-5", idempotency_key="r5"
    )
    assert again.pk == first.pk
    assert Entry.objects.count() == 1
    before = snapshot(account)
    with pytest.raises(IdempotencyConflict):
        services.refund_post(account_id=account.pk, amount=12_001, reference="END-5", idempotency_key="r5")
    with pytest.raises(AmountInvalid):
        services.refund_post(account_id=account.pk, amount=-5, reference="END-6", idempotency_key="r6")
    assert snapshot(account) == before


def test_a_refund_wakes_the_queue(account):
    parked = services.hold_place(
        account_id=account.pk, amount=10_000, reference="END-1", idempotency_key="h1"
    )
    services.refund_post(account_id=account.pk, amount=12_000, reference="END-5", idempotency_key="r5")
    parked.parked_request.refresh_from_db()
    assert parked.parked_request.state == "PLACED"
    assert balances(account) == (12_000, 10_000, 2_000)


def test_expiry_leaves_live_and_resolved_holds_alone(account, approver):
    fund(account, 100_000, approver)
    now = timezone.now()
    soon = now + timedelta(minutes=5)
    expiring = services.hold_place(
        account_id=account.pk, amount=1_000, reference="A", idempotency_key="a", expires_at=soon
    ).hold
    live = services.hold_place(account_id=account.pk, amount=2_000, reference="B", idempotency_key="b").hold
    captured = services.hold_place(
        account_id=account.pk, amount=3_000, reference="C", idempotency_key="c", expires_at=soon
    ).hold
    services.hold_capture(hold_id=captured.pk, idempotency_key="cc")
    assert services.hold_expire(now=soon + timedelta(seconds=1)) == 1
    states = dict(Hold.objects.values_list("pk", "state"))
    assert states == {expiring.pk: "EXPIRED", live.pk: "PENDING", captured.pk: "CAPTURED"}
    assert balances(account) == (97_000, 2_000, 95_000)
    assert services.hold_expire(now=soon + timedelta(seconds=2)) == 0
