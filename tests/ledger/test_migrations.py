"""ledger/migrations/0005_requested_by_principal: an adjustment's maker becomes a principal.

On a database with rows: migrate back to 0004, write adjustments the old way (a user
foreign key), migrate forward, and every row names the same user as `user:<id>`, with
its decision kept; the way back restores the foreign keys.
"""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from ledger.models import Adjustment
from tests.factories import AccountFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("ledger", "0004_held_by_statement_triggers")]
AFTER = [("ledger", "0005_requested_by_principal")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def at_0004():
    old_apps = migrate(BEFORE)
    yield old_apps
    executor = MigrationExecutor(connection)
    migrate(executor.loader.graph.leaf_nodes())


def test_adjustment_makers_become_principals_and_come_back(at_0004):
    account = AccountFactory()
    maker, checker = UserFactory(), UserFactory()
    OldAdjustment = at_0004.get_model("ledger", "Adjustment")
    pending = OldAdjustment.objects.create(
        account_id=account.pk,
        amount=-500,
        reason="bank charge",
        idempotency_key="a1",
        requested_by_id=maker.pk,
    )
    rejected = OldAdjustment.objects.create(
        account_id=account.pk,
        amount=700,
        reason="duplicate",
        idempotency_key="a2",
        requested_by_id=maker.pk,
        state="REJECTED",
        decided_by_id=checker.pk,
        decision_note="no",
    )

    migrate(AFTER)

    rows = set(Adjustment.objects.values_list("pk", "requested_by", "state", "decided_by", "amount"))
    assert rows == {
        (pending.pk, f"user:{maker.pk}", "PENDING", None, -500),
        (rejected.pk, f"user:{maker.pk}", "REJECTED", checker.pk, 700),
    }
    with pytest.raises(IntegrityError), transaction.atomic():
        Adjustment.objects.filter(pk=pending.pk).update(decided_by=maker)
    assert Adjustment.objects.get(pk=pending.pk).decided_by_id is None

    old_apps = migrate(BEFORE)
    back = old_apps.get_model("ledger", "Adjustment").objects
    assert set(back.values_list("pk", "requested_by_id", "decided_by_id")) == {
        (pending.pk, maker.pk, None),
        (rejected.pk, maker.pk, checker.pk),
    }
