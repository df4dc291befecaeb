"""The portal's "Policies and plans" page and the template whose example rows use them
(`endorsements.upload_template`): uploading the template unchanged adds nobody."""

import csv
import datetime
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from endorsements.columns import COLUMNS
from endorsements.models import EndorsementBatch, EndorsementRequest, Member, Plan
from tests.factories import EmployerFactory, InsurerFactory, PolicyFactory, hr_user_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def hr(portal_hr):
    return portal_hr


def template_rows(hr) -> list[list[str]]:
    response = hr.get("/portal/template.csv")
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_the_page_lists_each_policy_with_its_rules_and_plans(hr, django_assert_max_num_queries):
    # given the employer's policy (GHP-2026-001, plan GOLD) and another employer's
    book = hr.book
    book.policy.insurer.name = "Star Health"
    book.policy.insurer.save(update_fields=["name"])
    Plan.objects.create(policy=book.policy, code="BASIC", name="Basic", sum_insured_options=[200000])
    PolicyFactory(employer=EmployerFactory(), number="NOT-MINE")
    # when HR opens the page
    with django_assert_max_num_queries(6):
        response = hr.get("/portal/policies/")
    html = response.content.decode()
    # then it shows the policy's insurer, period, limits and windows, and each plan
    assert response.status_code == 200
    policy = book.policy
    assert f"Policy <code>{policy.number}</code>" in html
    assert "<dt>Insurer</dt><dd>Star Health</dd>" in html
    assert f"<dd>{policy.start_date:%Y-%m-%d} to {policy.end_date:%Y-%m-%d}</dd>" in html
    assert f"<dt>Backdating limit</dt><dd>{policy.backdating_limit_days} days</dd>" in html
    assert f"A new joiner: within {policy.joiner_window_days} days of <code>date_of_joining</code>." in html
    assert f"A newborn: within {policy.newborn_window_days} days of the birth" in html
    assert '<th scope="row"><code>GOLD</code></th>' in html
    assert "₹300,000.00, ₹500,000.00" in html
    assert "in the file: <code>300000</code>, <code>500000</code>" in html
    limits = [
        "<code>SELF</code> 18–65",
        "<code>SPOUSE</code> 18–65",
        "<code>CHILD</code> 0–25",
        "<code>PARENT</code> 35–80",
    ]
    assert "; ".join(limits) in html
    assert html.index("<code>BASIC</code>") < html.index("<code>GOLD</code>")
    assert "NOT-MINE" not in html
    assert 'href="/portal/policies/" aria-current="page"' in html


def test_an_employer_without_a_policy_is_told_so(client):
    client.force_login(hr_user_create(employer=EmployerFactory()))
    assert "Your employer has no policy yet." in client.get("/portal/policies/").content.decode()


def test_the_templates_example_rows_use_the_employers_policy_and_plan(hr):
    today = hr.book.today.isoformat()
    lines = hr.get("/portal/template.csv").content.decode().split("\r\n")
    assert lines == [
        ",".join(COLUMNS),
        "ADD,EXAMPLE-1001,SELF,Asha,Rao,1990-01-15,F,asha.rao@example.com,+919812345678,"
        f"{today},,{today},GHP-2026-001,GOLD,300000",
        f"DELETE,EXAMPLE-0042,SELF,,,,,,,,,{today},GHP-2026-001,,",
        f"CORRECTION,EXAMPLE-1001,SELF,,,,,asha@example.com,,,,{today},GHP-2026-001,,",
        "",
    ]


def test_an_ended_policy_gives_way_to_the_running_one_and_dates_stay_inside_its_period(hr):
    book = hr.book
    PolicyFactory(
        employer=book.employer,
        insurer=InsurerFactory(),
        number="OLD-2020",
        start_date=datetime.date(2020, 1, 1),
        end_date=datetime.date(2020, 12, 31),
    )
    assert {row[12] for row in template_rows(hr)[1:]} == {"GHP-2026-001"}


def test_the_template_uploaded_unchanged_is_refused_and_adds_nobody(hr):
    content = hr.get("/portal/template.csv").content
    response = hr.post("/portal/", {"file": SimpleUploadedFile("endorsements-template.csv", content)})
    html = response.content.decode()
    assert response.status_code == 422
    assert (
        "This file holds only the template&#x27;s example rows (employee codes starting with EXAMPLE-): "
        "replace them with your own changes, then upload it."
    ) in html
    assert EndorsementBatch.objects.count() == 0
    assert EndorsementRequest.objects.count() == 0
    assert Member.objects.count() == 0


def test_an_example_row_left_beside_real_ones_is_refused_on_its_own(hr, django_capture_on_commit_callbacks):
    # given the template with one real row added under its examples
    book = hr.book
    rows = template_rows(hr)
    real = book.add_row(employee_code="E77")
    rows.append([real.get(column, "") for column in COLUMNS])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    # when it is uploaded
    with django_capture_on_commit_callbacks(execute=True):
        response = hr.post("/portal/", {"file": SimpleUploadedFile("people.csv", buffer.getvalue().encode())})
    # then the real row goes on and each example row is reported as one
    assert response.status_code == 302
    batch = EndorsementBatch.objects.get()
    assert (batch.accepted_count, batch.rejected_count) == (1, 3)
    assert list(batch.row_errors.order_by("row_number").values_list("row_number", "code")) == [
        (2, "example_row"),
        (3, "example_row"),
        (4, "example_row"),
    ]
    assert list(EndorsementRequest.objects.values_list("member_data__employee_code", flat=True)) == ["E77"]
