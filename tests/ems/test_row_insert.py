"""`ems.row_insert`: one INSERT that stores what `Model.save()` would, alone or with other statements."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from ems.models import OutboxEvent
from ems.outbox import KafkaEvent, _statements_in_turn, outbox_write
from ems.row_insert import row_insert_statement
from endorsements.models import EndorsementRequest, EndorsementTransition
from tests.factories import EmployerFactory, PolicyFactory

pytestmark = pytest.mark.django_db

HISTORY_COLUMNS = (
    "INSERT INTO endorsements_endorsementtransition (endorsement_id, from_state, to_state, actor, reason, at)"
)


def _request(employer, **fields) -> EndorsementRequest:
    return EndorsementRequest(
        employer_id=employer.pk,
        type="ADD",
        member_data={"employee_code": "E1", "relation": "SELF"},
        effective_date="2026-04-01",
        content_hash="h" * 64,
        member_key="E1|SELF",
        source="API",
        **fields,
    )


def _execute(insert) -> None:
    with connection.cursor() as cursor:
        cursor.execute(*insert.statement)
        insert.finish(cursor.fetchone())


def test_a_row_is_stored_with_its_defaults_in_one_statement():
    # given an unsaved request that leaves its defaults (tracking id, state, timestamps) unset
    request = _request(EmployerFactory())
    # when
    with CaptureQueriesContext(connection) as queries:
        _execute(row_insert_statement(request))
    # then one statement stored it, and the instance knows its id
    assert len(queries) == 1
    assert request.pk is not None and not request._state.adding
    stored = EndorsementRequest.objects.get(pk=request.pk)
    assert stored.tracking_id == request.tracking_id and stored.tracking_id.startswith("END-")
    assert stored.state == "RECEIVED"
    assert stored.member_data == {"employee_code": "E1", "relation": "SELF"}
    assert str(stored.effective_date) == "2026-04-01"
    assert stored.rejection_reasons == [] and stored.attempts == 0 and stored.policy_id is None
    assert stored.received_at == request.received_at is not None
    assert stored.updated_at == request.updated_at is not None


@pytest.mark.parametrize("number, found", [("pol-7", True), ("POL-8", False)])
def test_a_computed_field_takes_the_value_its_subquery_finds_in_the_same_statement(number, found):
    policy = PolicyFactory(number="POL-7")
    request = _request(policy.employer)
    insert = row_insert_statement(
        request,
        computed={
            "policy_id": (
                "SELECT id FROM endorsements_policy WHERE employer_id = %s AND UPPER(number) = UPPER(%s)",
                [policy.employer_id, number],
            )
        },
    )
    with CaptureQueriesContext(connection) as queries:
        _execute(insert)
    assert len(queries) == 1
    expected = policy.pk if found else None
    assert request.policy_id == expected
    assert EndorsementRequest.objects.get(pk=request.pk).policy_id == expected


def test_a_computed_field_must_be_a_column_of_the_model():
    with CaptureQueriesContext(connection) as queries, pytest.raises(ValueError, match="no column"):
        row_insert_statement(_request(EmployerFactory()), computed={"no_such_id": ("SELECT 1", [])})
    assert not [q for q in queries if "endorsements_endorsementrequest" in q["sql"]]
    assert not EndorsementRequest.objects.exists()


def _insert_with_history(actor: str):
    """(employer, unsaved request, its RowInsert, a history INSERT reading `first_row`)."""
    employer = EmployerFactory()
    request = _request(employer)
    history = (f"{HISTORY_COLUMNS} SELECT id, '', 'RECEIVED', %s, '', now() FROM first_row", [actor])
    return employer, request, row_insert_statement(request), history


def test_outbox_write_returns_the_first_row_and_together_with_reads_it():
    # given a new row's INSERT and a history row that needs its id
    employer, request, insert, history = _insert_with_history("together")
    event = KafkaEvent(topic="t", key="k", event_type="e", employer_id=employer.pk, data={})
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        insert.finish(outbox_write(events=[event], first=insert.statement, together_with=history))
    # then one round trip wrote all three, and the instance has the new id
    assert len(queries) == 1
    assert EndorsementTransition.objects.get().endorsement_id == request.pk
    assert EndorsementTransition.objects.get().actor == "together"
    assert OutboxEvent.objects.get().key == "k"


def test_without_ctes_the_statements_run_in_turn_with_first_row_as_values():
    # The path other databases (SQLite for `make run`) take, run here on PostgreSQL.
    _, request, insert, history = _insert_with_history("in-turn")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        insert.finish(_statements_in_turn(insert.statement, history))
    assert len(queries) == 2
    assert EndorsementTransition.objects.get().endorsement_id == request.pk
    assert EndorsementTransition.objects.get().actor == "in-turn"
