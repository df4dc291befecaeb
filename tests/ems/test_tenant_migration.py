"""The tenant's move into `ems` (`endorsements/0009_tenants_moved_to_ems`) keeps every row.

The database is taken back to the state before the move, rows are written through the
historical `endorsements` models, then it is migrated forward and the rows are read back
through `ems.models`, with the ledger account and the policy still joined to their
employer, and the moved models' permissions (and a group's grant) kept under `ems`.
"""

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from ems.models import ApiClient, Employer, EmployerMembership
from endorsements.models import Policy
from ledger.models import Account
from tests.migration_steps import leaf_nodes, migrate_to

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_MOVE = ("endorsements", "0008_batch_row_error_tracking_id")
MOVE = ("endorsements", "0009_tenants_moved_to_ems")


@pytest.fixture
def before_the_move():
    """Apps as they were before the move; the database is fully migrated again afterwards."""
    executor = migrate_to([BEFORE_MOVE])
    try:
        others = [node for node in executor.loader.graph.leaf_nodes() if node[0] != BEFORE_MOVE[0]]
        yield executor.loader.project_state([*others, BEFORE_MOVE]).apps
    finally:
        migrate_to(leaf_nodes())


def test_rows_written_before_the_move_are_read_through_the_platform_models(before_the_move):
    old = before_the_move
    # given: a tenant, its HR user and API client, written through the historical models
    employer = old.get_model("endorsements", "Employer").objects.create(code="acme", name="Acme")
    user = old.get_model("auth", "User").objects.create(username="hr.acme")
    membership = old.get_model("endorsements", "EmployerMembership").objects.create(
        user=user, employer=employer
    )
    client = old.get_model("endorsements", "ApiClient").objects.create(
        employer=employer, name="HRIS", client_id="cli_before", secret_hash="0" * 64
    )
    insurer = old.get_model("insurers", "Insurer").objects.create(
        code="ins", name="Insurer", protocol="REST", webhook_secret_primary="whsec"
    )
    account = old.get_model("ledger", "Account").objects.create(employer_id=employer.pk, insurer=insurer)
    policy = old.get_model("endorsements", "Policy").objects.create(
        employer=employer, insurer=insurer, number="P-1", start_date="2026-01-01", end_date="2026-12-31"
    )
    old_permission = Permission.objects.get(
        content_type__app_label="endorsements", codename="change_apiclient"
    )
    operators = Group.objects.get(name="ops_operator")
    assert operators.permissions.filter(pk=old_permission.pk).exists()

    # when
    migrate_to(leaf_nodes())

    # then: the same rows, through the platform's models
    moved = Employer.objects.get(pk=employer.pk)
    assert (moved.code, moved.name) == ("acme", "Acme")
    assert EmployerMembership.objects.get(pk=membership.pk).employer == moved
    assert EmployerMembership.objects.get(pk=membership.pk).user.username == "hr.acme"
    moved_client = ApiClient.objects.get(client_id="cli_before")
    assert (moved_client.pk, moved_client.employer_id, moved_client.secret_hash) == (
        client.pk,
        moved.pk,
        "0" * 64,
    )
    # and the ledger account and the policy still join their employer
    assert Account.objects.select_related("employer").get(pk=account.pk).employer.code == "acme"
    assert list(Account.objects.filter(employer__code="acme").values_list("pk", flat=True)) == [account.pk]
    assert Policy.objects.select_related("employer").get(pk=policy.pk).employer == moved
    assert list(moved.accounts.values_list("pk", flat=True)) == [account.pk]
    # and the permission is the same row, now labelled ems, still granted
    permission = Permission.objects.get(pk=old_permission.pk)
    assert (permission.content_type.app_label, permission.codename) == ("ems", "change_apiclient")
    assert operators.permissions.filter(pk=permission.pk).exists()
    assert not ContentType.objects.filter(
        app_label="endorsements", model__in=["employer", "apiclient"]
    ).exists()


def test_the_move_is_reversible_without_touching_the_tables(before_the_move):
    # given: the state before the move (the fixture went back through 0009)
    tables = set(connection.introspection.table_names())
    assert {"endorsements_employer", "endorsements_employermembership", "endorsements_apiclient"} <= tables
    assert ContentType.objects.filter(app_label="endorsements", model="apiclient").exists()
    # when
    migrate_to(leaf_nodes())
    # then: the same tables, the content type back under ems
    assert set(connection.introspection.table_names()) == tables
    assert ContentType.objects.filter(app_label="ems", model="apiclient").exists()
    assert MOVE in MigrationExecutor(connection).loader.applied_migrations
