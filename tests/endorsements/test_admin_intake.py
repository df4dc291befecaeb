"""The admin's door into intake: an operator sends one endorsement, or a file, for an employer.

Both pages only collect input and call the services the API and the portal call, so the
same checks, duplicate detection, audit and background validation apply.
"""

import csv
import io
import json

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from ems.models import OutboxEvent
from endorsements.models import EndorsementBatch, EndorsementRequest, EndorsementTransition
from tests.factories import EmployerFactory, UserFactory

pytestmark = pytest.mark.django_db

SEND_URL = reverse("admin:endorsements_endorsementrequest_add")
UPLOAD_URL = reverse("admin:endorsements_endorsementbatch_add")


@pytest.fixture
def operator(client):
    user = UserFactory(username="test-operator", is_staff=True)
    user.groups.add(Group.objects.get(name="ops_operator"))
    client.force_login(user)
    client.user = user
    return client


def nothing_written(media_root=None) -> None:
    assert EndorsementRequest.objects.count() == 0
    assert EndorsementTransition.objects.count() == 0
    assert EndorsementBatch.objects.count() == 0
    assert OutboxEvent.objects.count() == 0  # no event, no audit record
    if media_root is not None:
        assert [p for p in media_root.rglob("*") if p.is_file()] == []


def form_data(book, **overrides) -> dict:
    return {"employer": book.employer.pk, **book.add_row(**overrides)}


def csv_file(rows: list[dict], name: str = "people.csv") -> SimpleUploadedFile:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return SimpleUploadedFile(name, out.getvalue().encode(), content_type="text/csv")


def test_the_send_page_offers_every_file_column_and_the_employer(operator, book):
    response = operator.get(SEND_URL)
    html = response.content.decode()
    assert response.status_code == 200
    for column in ("employer", "action", "employee_code", "relation", "effective_date", "sum_insured"):
        assert f'<label for="id_{column}"' in html
    assert '<option value="CORRECTION">CORRECTION</option>' in html
    # the change list offers the page
    assert (
        f'href="{SEND_URL}"'
        in operator.get(reverse("admin:endorsements_endorsementrequest_changelist")).content.decode()
    )


def test_an_operator_sends_an_addition_that_is_validated_like_an_api_one(
    operator, book, django_capture_on_commit_callbacks
):
    # when the operator sends a valid addition for the employer
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(SEND_URL, form_data(book))
    # then it is stored from the admin, validated in the background and priced
    endorsement = EndorsementRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:endorsements_endorsementrequest_change", args=[endorsement.pk]
    )
    assert (endorsement.employer_id, endorsement.source, endorsement.state) == (
        book.employer.pk,
        "ADMIN",
        "VALIDATED",
    )
    assert endorsement.premium_amount > 0
    received = EndorsementTransition.objects.get(endorsement=endorsement, to_state="RECEIVED")
    assert received.actor == f"user:{operator.user.pk}"
    page = operator.get(response["Location"]).content.decode()
    assert f"Endorsement {endorsement.tracking_id} received; it is being validated." in page


def test_a_value_the_service_refuses_is_shown_on_its_field_and_nothing_is_stored(operator, book):
    response = operator.post(SEND_URL, form_data(book, date_of_birth="31/02/1990", phone="98123"))
    html = response.content.decode()
    assert response.status_code == 422
    nothing_written()
    field_errors = response.context["form"].errors
    assert "(date_format)" in field_errors["date_of_birth"][0]
    assert "(phone_invalid)" in field_errors["phone"][0]
    assert "31/02/1990" in html  # what was typed stays in the form


def test_a_business_rule_rejects_an_admin_endorsement_as_any_other(
    operator, book, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        operator.post(SEND_URL, form_data(book, plan_code="PLATINUM"))
    endorsement = EndorsementRequest.objects.get()
    assert endorsement.state == "REJECTED"
    assert [r["code"] for r in endorsement.rejection_reasons] == ["plan_not_found"]


def test_the_same_endorsement_sent_twice_is_a_duplicate_naming_the_first(
    operator, book, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        operator.post(SEND_URL, form_data(book))
    with django_capture_on_commit_callbacks(execute=True):
        operator.post(SEND_URL, form_data(book))
    first, second = EndorsementRequest.objects.order_by("pk")
    assert (first.state, second.state) == ("VALIDATED", "REJECTED")
    assert second.rejection_reasons[0]["code"] == "duplicate"
    assert first.tracking_id in second.rejection_reasons[0]["message"]


def test_an_operator_uploads_a_file_for_an_employer(operator, book, django_capture_on_commit_callbacks):
    rows = [book.add_row(employee_code="E1"), book.add_row(employee_code="E2", date_of_birth="1990-13-01")]
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(UPLOAD_URL, {"employer": book.employer.pk, "file": csv_file(rows)})
    batch = EndorsementBatch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:endorsements_endorsementbatch_change", args=[batch.pk])
    batch.refresh_from_db()
    assert (batch.employer_id, batch.source, batch.uploaded_by_id, batch.file_name) == (
        book.employer.pk,
        "ADMIN",
        operator.user.pk,
        "people.csv",
    )
    assert (batch.state, batch.rows_total, batch.accepted_count, batch.rejected_count) == (
        "COMPLETED",
        2,
        1,
        1,
    )
    assert list(batch.row_errors.values_list("row_number", "column", "code")) == [
        (3, "date_of_birth", "date_invalid")
    ]


def test_a_file_the_service_refuses_is_explained_and_no_batch_is_made(operator, book):
    header_only = SimpleUploadedFile(
        "people.csv", b"action,employee_code,relation,effective_date,policy_number\r\n"
    )
    response = operator.post(UPLOAD_URL, {"employer": book.employer.pk, "file": header_only})
    assert response.status_code == 422
    assert "The file has a header but no data rows." in response.content.decode()
    assert EndorsementBatch.objects.count() == 0


def test_a_viewer_can_neither_open_nor_post_the_intake_pages(client, book):
    viewer = UserFactory(username="test-viewer", is_staff=True)
    viewer.groups.add(Group.objects.get(name="ops_viewer"))
    client.force_login(viewer)
    assert client.get(SEND_URL).status_code == 403
    assert client.post(SEND_URL, form_data(book)).status_code == 403
    assert (
        client.post(
            UPLOAD_URL, {"employer": book.employer.pk, "file": csv_file([book.add_row()])}
        ).status_code
        == 403
    )
    nothing_written()


def test_an_operator_uploads_a_json_array_and_a_file_of_unknown_format_is_refused(
    operator, book, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.MEDIA_ROOT = tmp_path
    rows = SimpleUploadedFile(
        "people.json", json.dumps([book.add_row()]).encode(), content_type="application/json"
    )
    with django_capture_on_commit_callbacks(execute=True):
        operator.post(UPLOAD_URL, {"employer": book.employer.pk, "file": rows})
    batch = EndorsementBatch.objects.get()
    assert (batch.file_format, batch.state, batch.accepted_count) == ("JSON", "COMPLETED", 1)
    spreadsheet = SimpleUploadedFile("people.xlsx", b"PK\x03\x04", content_type="application/octet-stream")
    response = operator.post(UPLOAD_URL, {"employer": book.employer.pk, "file": spreadsheet})
    assert response.status_code == 422
    assert "Say the format (CSV or JSON)" in response.content.decode()
    assert list(EndorsementBatch.objects.values_list("pk", flat=True)) == [batch.pk]
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1  # the JSON file only


def test_the_employer_is_chosen_by_the_admins_autocomplete(operator, book):
    EmployerFactory(code="OTHER", name="Other Ltd")
    page = operator.get(SEND_URL).content.decode()
    assert 'class="admin-autocomplete"' in page and "data-ajax--url" in page
    found = operator.get(
        reverse("admin:autocomplete"),
        {
            "app_label": "endorsements",
            "model_name": "endorsementrequest",
            "field_name": "employer",
            "term": book.employer.code,
        },
    )
    assert found.status_code == 200
    assert [r["id"] for r in found.json()["results"]] == [str(book.employer.pk)]


def test_save_as_new_on_a_request_page_cannot_bypass_the_intake_page(
    operator, book, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        operator.post(SEND_URL, form_data(book))
    endorsement = EndorsementRequest.objects.get()
    change = reverse("admin:endorsements_endorsementrequest_change", args=[endorsement.pk])
    before = (EndorsementTransition.objects.count(), OutboxEvent.objects.count())
    response = operator.post(change, {"_saveasnew": "Save as new", "type": "ADD"})
    assert response.status_code == 403
    assert list(EndorsementRequest.objects.values_list("pk", "state")) == [(endorsement.pk, "VALIDATED")]
    assert (EndorsementTransition.objects.count(), OutboxEvent.objects.count()) == before
