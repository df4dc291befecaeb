"""A corrected request that names the rejected one (`resubmits`): `services.endorsement_submit`
through `POST /api/v1/endorsements/`, and what HR reads back in the API and the portal."""

import pytest

from endorsements.models import EndorsementRequest, EndorsementState
from endorsements.transitions import endorsement_transition
from tests.factories import EmployerFactory, api_client_create, hr_user_create

S = EndorsementState
URL = "/api/v1/endorsements/"
pytestmark = pytest.mark.django_db


def insurer_rejected(api, book, capture) -> EndorsementRequest:
    """An ADD the insurer refused (moved there the way the confirmation service does)."""
    with capture(execute=True):
        response = api.post(URL, book.add_row(employee_code="REJ-1"), format="json")
    request = EndorsementRequest.objects.get(tracking_id=response.json()["tracking_id"])
    endorsement_transition(endorsement=request, to_state=S.SENT, actor="pipeline:scheduler", follow_up=False)
    endorsement_transition(
        endorsement=request,
        to_state=S.INSURER_REJECTED,
        actor="pipeline:confirmation",
        reason="member_refused: The insurer refuses cover for this member.",
        changes={
            request.pk: {
                "rejection_reasons": [
                    {
                        "field": "",
                        "code": "member_refused",
                        "message": "The insurer refuses cover for this member.",
                    }
                ]
            }
        },
        follow_up=False,
    )
    return request


def test_a_corrected_request_names_the_rejected_one(api, book, django_capture_on_commit_callbacks):
    rejected = insurer_rejected(api, book, django_capture_on_commit_callbacks)
    detail = api.get(f"{URL}{rejected.tracking_id}").json()
    assert detail["state"] == S.INSURER_REJECTED
    assert detail["rejection_reasons"] == [
        {"field": "", "code": "member_refused", "message": "The insurer refuses cover for this member."}
    ]

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            URL, {**book.add_row(employee_code="E-9"), "resubmits": rejected.tracking_id}, format="json"
        )

    assert response.status_code == 201, response.json()
    corrected = EndorsementRequest.objects.get(tracking_id=response.json()["tracking_id"])
    assert corrected.resubmission_of_id == rejected.pk
    assert corrected.state == S.VALIDATED
    assert "resubmits" not in corrected.member_data
    assert api.get(f"{URL}{corrected.tracking_id}").json()["resubmission_of"] == rejected.tracking_id


@pytest.mark.parametrize("target", ["live", "unknown", "other_employer"])
def test_only_ones_own_rejected_request_can_be_resubmitted(
    api, book, django_capture_on_commit_callbacks, target
):
    with django_capture_on_commit_callbacks(execute=True):
        live = api.post(URL, book.add_row(employee_code="E-1"), format="json").json()["tracking_id"]
    if target == "other_employer":
        stranger = EmployerFactory()
        client, _ = api_client_create(employer=stranger)
        theirs = EndorsementRequest.objects.get(tracking_id=live)
        EndorsementRequest.objects.filter(pk=theirs.pk).update(employer=stranger, state=S.INSURER_REJECTED)
    names = {"live": live, "unknown": "END-NOPE", "other_employer": live}[target]
    before = EndorsementRequest.objects.count()

    response = api.post(URL, {**book.add_row(employee_code="E-2"), "resubmits": names}, format="json")

    assert response.status_code == 422
    error = response.json()["error"]
    assert [(d["field"], d["code"]) for d in error["details"]] == [("resubmits", "resubmission_invalid")]
    assert EndorsementRequest.objects.count() == before


def test_the_portal_shows_the_insurers_reason(api, book, client, django_capture_on_commit_callbacks):
    rejected = insurer_rejected(api, book, django_capture_on_commit_callbacks)
    client.force_login(hr_user_create(employer=book.employer))

    page = client.get(f"/portal/endorsements/{rejected.tracking_id}/").content.decode()

    assert "The insurer rejected it" in page
    assert "The insurer refuses cover for this member." in page
    assert rejected.tracking_id in page and "resubmits" in page


def test_a_files_row_names_the_rejected_request_in_its_resubmits_column(
    api, book, django_capture_on_commit_callbacks
):
    from tests.endorsements.test_batch_submit import csv_text, send

    rejected = insurer_rejected(api, book, django_capture_on_commit_callbacks)
    corrected = {**book.add_row(employee_code="E-7"), "resubmits": rejected.tracking_id}
    stray = {**book.add_row(employee_code="E-8"), "resubmits": "END-NOT-MINE"}
    plain = {**book.add_row(employee_code="E-9"), "resubmits": ""}

    response = send(api, django_capture_on_commit_callbacks, csv_text([corrected, stray, plain]).encode())

    assert response.status_code == 202, response.json()
    rows = {
        e.member_data["employee_code"]: e
        for e in EndorsementRequest.objects.filter(batch_id=response.json()["batch_id"])
    }
    assert (rows["E-7"].state, rows["E-7"].resubmission_of_id) == (S.VALIDATED, rejected.pk)
    assert "resubmits" not in rows["E-7"].member_data
    assert rows["E-8"].state == S.REJECTED
    assert [r["code"] for r in rows["E-8"].rejection_reasons] == ["resubmission_invalid"]
    assert (rows["E-9"].state, rows["E-9"].resubmission_of_id) == (S.VALIDATED, None)
