"""endorsements/migrations/0009: a file's row's intake state moves from the row into its
history as one compact step, on a database with rows; nothing else is lost."""

import datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("endorsements", "0008_batch_row_error_tracking_id")]
AFTER = [("endorsements", "0009_intake_steps_in_history")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_intake_states_become_compact_history_steps_and_come_back_on_reverse():
    # given, before the migration, a file's two rows decided at intake and a single request
    apps = _migrate(BEFORE)
    employer = apps.get_model("endorsements", "Employer").objects.create(code="m", name="M")
    batch = apps.get_model("endorsements", "EndorsementBatch").objects.create(
        employer=employer, source="CSV", file_format="CSV"
    )
    request_model = apps.get_model("endorsements", "EndorsementRequest")
    transition_model = apps.get_model("endorsements", "EndorsementTransition")
    common = {
        "employer": employer,
        "type": "ADD",
        "member_data": {},
        "effective_date": datetime.date(2026, 4, 1),
    }
    good = request_model.objects.create(
        **common, tracking_id="END-1", batch=batch, row_number=1, state="CANCELLED", intake_state="VALIDATED"
    )
    duplicate = request_model.objects.create(
        **common,
        tracking_id="END-2",
        batch=batch,
        row_number=2,
        state="REJECTED",
        intake_state="REJECTED",
        rejection_reasons=[{"field": "", "code": "duplicate", "message": "Duplicate of END-1."}],
    )
    single = request_model.objects.create(**common, tracking_id="END-3", state="RECEIVED")
    transition_model.objects.create(
        endorsement=good, from_state="VALIDATED", to_state="CANCELLED", actor="ops:1"
    )
    transition_model.objects.create(endorsement=single, from_state="", to_state="RECEIVED", actor="client:1")

    # when the migration runs
    apps = _migrate(AFTER)

    # then each intake state is one compact step at the row's arrival; the other records stay
    transition_model = apps.get_model("endorsements", "EndorsementTransition")
    rows = transition_model.objects.order_by("endorsement_id", "id")
    assert [(t.endorsement_id, t.from_state, t.to_state, t.actor, t.reason) for t in rows] == [
        (good.pk, "VALIDATED", "CANCELLED", "ops:1", ""),
        (good.pk, "", "VALIDATED", f"batch:{batch.pk}", ""),
        (duplicate.pk, "", "REJECTED", f"batch:{batch.pk}", "duplicate"),
        (single.pk, "", "RECEIVED", "client:1", ""),
    ]
    assert rows.get(endorsement_id=duplicate.pk).at == duplicate.received_at
    request_model = apps.get_model("endorsements", "EndorsementRequest")
    assert sorted(request_model.objects.values_list("tracking_id", "state")) == [
        ("END-1", "CANCELLED"),
        ("END-2", "REJECTED"),
        ("END-3", "RECEIVED"),
    ]

    # when it is reversed, the rows hold their intake states again and the steps are gone
    apps = _migrate(BEFORE)
    request_model = apps.get_model("endorsements", "EndorsementRequest")
    assert sorted(request_model.objects.values_list("tracking_id", "intake_state")) == [
        ("END-1", "VALIDATED"),
        ("END-2", "REJECTED"),
        ("END-3", ""),
    ]
    assert apps.get_model("endorsements", "EndorsementTransition").objects.count() == 2
    _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
