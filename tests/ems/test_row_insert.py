"""`ems.row_insert.row_insert`: one INSERT that stores what `Model.save()` would."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ems.row_insert import row_insert
from endorsements.models import EndorsementRequest
from tests.factories import EmployerFactory

pytestmark = pytest.mark.django_db


def test_a_row_is_stored_with_its_defaults_in_one_statement():
    # given an unsaved request that leaves its defaults (tracking id, state, timestamps) unset
    employer = EmployerFactory()
    request = EndorsementRequest(
        employer_id=employer.pk,
        type="ADD",
        member_data={"employee_code": "E1", "relation": "SELF"},
        effective_date="2026-04-01",
        content_hash="h" * 64,
        member_key="E1|SELF",
        source="API",
    )
    # when
    with CaptureQueriesContext(connection) as queries:
        row_insert(request)
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
