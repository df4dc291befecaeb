"""Each state's time is on or after arrival: the CHECK holds against raw SQL, and
endorsements/migrations/0017 repairs the rows that broke it before adding it."""

import datetime

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from endorsements.models import STATE_TIME_FIELDS, EndorsementRequest
from tests.factories import EmployerFactory

BEFORE = [("endorsements", "0016_batch_heartbeat")]
AFTER = [("endorsements", "0017_state_times_after_received")]
RECEIVED = datetime.datetime(2026, 12, 2, 10, 0, tzinfo=datetime.UTC)
EARLIER = RECEIVED - datetime.timedelta(milliseconds=3)


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db
@pytest.mark.parametrize("field", STATE_TIME_FIELDS)
def test_a_state_time_before_arrival_is_refused_even_by_raw_sql(field):
    # given a request received at RECEIVED
    request = EndorsementRequest.objects.create(
        employer=EmployerFactory(), type="ADD", member_data={}, tracking_id="END-T1", source="API"
    )
    EndorsementRequest.objects.filter(pk=request.pk).update(received_at=RECEIVED)
    # when raw SQL stamps a state 3 ms before it, it is refused
    refused = pytest.raises(IntegrityError, match="endorsement_states_after_received")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE endorsements_endorsementrequest SET {field} = %s WHERE id = %s",  # noqa: S608
            [EARLIER, request.pk],
        )
    # and nothing changed; the same moment as arrival is allowed
    assert getattr(EndorsementRequest.objects.get(pk=request.pk), field) is None
    EndorsementRequest.objects.filter(pk=request.pk).update(**{field: RECEIVED})
    assert getattr(EndorsementRequest.objects.get(pk=request.pk), field) == RECEIVED


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_a_late_arrival_back_to_the_rows_earliest_state_time():
    # given, before the migration, a file row received 3 ms after it was decided and closed,
    # and a row in order
    apps = _migrate(BEFORE)
    employer = apps.get_model("ems", "Employer").objects.create(code="m", name="M")
    request_model = apps.get_model("endorsements", "EndorsementRequest")
    common = {"employer": employer, "type": "ADD", "member_data": {}, "source": "CSV"}
    late = request_model.objects.create(**common, tracking_id="END-1", state="REJECTED")
    ordered = request_model.objects.create(**common, tracking_id="END-2", state="VALIDATED")
    request_model.objects.filter(pk=late.pk).update(
        received_at=RECEIVED, closed_at=EARLIER, validated_at=EARLIER + datetime.timedelta(milliseconds=1)
    )
    request_model.objects.filter(pk=ordered.pk).update(
        received_at=RECEIVED, validated_at=RECEIVED + datetime.timedelta(seconds=1)
    )

    # when the migration runs
    apps = _migrate(AFTER)

    # then the late row was received at its earliest state time and the other is unchanged
    request_model = apps.get_model("endorsements", "EndorsementRequest")
    assert request_model.objects.get(pk=late.pk).received_at == EARLIER
    assert request_model.objects.get(pk=late.pk).closed_at == EARLIER
    assert request_model.objects.get(pk=ordered.pk).received_at == RECEIVED
    request_model.objects.all().delete()
    apps.get_model("ems", "Employer").objects.all().delete()
