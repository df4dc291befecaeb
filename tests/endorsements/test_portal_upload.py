"""The portal's upload page: the form, the column guide and the CSV template."""

import csv
import io

import pytest

from endorsements.models import EndorsementBatch
from tests.factories import BatchFactory, EmployerFactory, PlanFactory, PolicyFactory, hr_user_create

pytestmark = pytest.mark.django_db

TEMPLATE_HEADER = (
    "action,employee_code,relation,first_name,last_name,date_of_birth,gender,email,phone,"
    "date_of_joining,event_date,effective_date,policy_number,plan_code,sum_insured\r\n"
)


@pytest.fixture
def hr(client):
    employer = EmployerFactory()
    client.force_login(hr_user_create(employer=employer))
    client.employer = employer
    return client


def test_without_a_policy_the_template_is_the_header_row_of_every_column(hr):
    response = hr.get("/portal/template.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="endorsements-template.csv"'
    assert response.content.decode() == TEMPLATE_HEADER


def test_the_upload_page_has_the_form_the_template_link_and_the_guide(hr):
    response = hr.get("/portal/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'enctype="multipart/form-data"' in html
    assert '<label for="id_file">CSV file</label>' in html
    assert 'aria-describedby="id_file_helptext"' in html
    assert 'href="/portal/template.csv"' in html
    assert '<caption id="guide-caption">What each column needs, by action</caption>' in html
    for column in TEMPLATE_HEADER.strip().split(","):
        assert f"<code>{column}</code>" in html, column


def test_the_guides_example_rows_have_every_column_in_the_employers_own_codes(hr):
    # given an employer with a policy and a plan
    policy = PolicyFactory(employer=hr.employer, number="GHP-ACME-7")
    PlanFactory(policy=policy, code="SILVER", sum_insured_options=[300000, 500000])
    # then the guide's example rows name them, and example employees
    html = hr.get("/portal/").content.decode()
    example = html.split('aria-label="Example CSV">', 1)[1].split("</pre>", 1)[0]
    rows = list(csv.reader(io.StringIO(example)))
    assert [len(row) for row in rows] == [15, 15, 15, 15]
    assert ",".join(rows[0]) + "\r\n" == TEMPLATE_HEADER
    assert [(row[0], row[1], row[12], row[13], row[14]) for row in rows[1:]] == [
        ("ADD", "EXAMPLE-1001", "GHP-ACME-7", "SILVER", "300000"),
        ("DELETE", "EXAMPLE-0042", "GHP-ACME-7", "", ""),
        ("CORRECTION", "EXAMPLE-1001", "GHP-ACME-7", "", ""),
    ]
    assert "POL-00001" not in html


def test_a_file_that_is_not_csv_is_refused_before_anything_is_stored(hr):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("people.xlsx", b"PK\x03\x04binary", content_type="application/vnd.ms-excel")
    response = hr.post("/portal/", {"file": upload})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Choose a .csv file (the template is one)." in html
    assert 'aria-invalid="true"' in html
    assert EndorsementBatch.objects.count() == 0


def test_posting_no_file_is_refused(hr):
    response = hr.post("/portal/", {})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert EndorsementBatch.objects.count() == 0


def test_the_upload_page_lists_only_this_employers_recent_uploads_newest_first(
    hr, django_assert_max_num_queries
):
    mine = [
        EndorsementBatch.objects.create(
            employer=hr.employer, source="CSV", file_format="CSV", file_name=f"joiners-{n}.csv", rows_total=n
        )
        for n in range(12)
    ]
    EndorsementBatch.objects.create(
        employer=EmployerFactory(), source="CSV", file_format="CSV", file_name="someone-elses.csv"
    )
    with django_assert_max_num_queries(6):
        response = hr.get("/portal/")
    html = response.content.decode()
    assert "Your last 10 uploads" in html
    assert "someone-elses.csv" not in html
    shown = [batch for batch in mine if f">{batch.file_name}</a>" in html]
    assert shown == mine[2:]
    assert html.index("joiners-11.csv") < html.index("joiners-2.csv")
    assert f'href="/portal/batches/{mine[11].pk}/"' in html


def test_the_upload_page_says_when_there_are_no_uploads(hr):
    assert "No uploads yet." in hr.get("/portal/").content.decode()


def test_an_upload_in_progress_lists_its_rows_checked_as_the_batch_page_does(hr):
    BatchFactory(employer=hr.employer, rows_expected=20_000, accepted_count=4_800, progress=24)
    html = hr.get("/portal/").content.decode()
    assert "<td>4,800 of about 20,000 checked</td>" in html
