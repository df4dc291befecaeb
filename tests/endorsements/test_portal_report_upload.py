"""The error report round trip through the portal: download the rejected rows, fix them,
upload the report as it is (intake, `endorsements.intake`, knows one of its own reports)."""

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from endorsements.columns import COLUMNS
from endorsements.models import EndorsementBatch, EndorsementRequest, Member

pytestmark = pytest.mark.django_db


@pytest.fixture
def hr(portal_hr):
    return portal_hr


def csv_file(header: list[str], rows: list[dict], name: str = "people.csv") -> SimpleUploadedFile:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return SimpleUploadedFile(name, buffer.getvalue().encode(), content_type="text/csv")


def upload(hr, upload_file, capture) -> EndorsementBatch:
    with capture(execute=True):
        response = hr.post("/portal/", {"file": upload_file})
    assert response.status_code == 302, response.content.decode()
    return EndorsementBatch.objects.get(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[1]))


def report_rows(hr, batch) -> tuple[list[str], list[dict]]:
    response = hr.get(f"/portal/batches/{batch.pk}/errors.csv")
    reader = csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode()))
    return list(reader.fieldnames), list(reader)


def test_the_downloaded_report_fixed_and_uploaded_again_is_accepted_row_by_row(
    hr, django_capture_on_commit_callbacks
):
    # given a file whose two rows have bad dates, with a phone and a name a spreadsheet would
    # take for formulas (the report escapes them)
    book = hr.book
    rows = [
        book.add_row(employee_code="E1", date_of_birth="1990-02-30"),
        book.add_row(
            employee_code="E2", first_name="'=Kiran", phone="+919800000002", date_of_birth="1991-13-01"
        ),
        book.add_row(employee_code="E3"),
    ]
    first = upload(hr, csv_file(list(COLUMNS), rows), django_capture_on_commit_callbacks)
    first.refresh_from_db()
    assert (first.accepted_count, first.rejected_count) == (1, 2)
    header, report = report_rows(hr, first)
    assert header == ["row_number", "tracking_id", *COLUMNS, "errors"]
    assert [(line["row_number"], line["phone"], line["first_name"]) for line in report] == [
        ("2", "'+919812345678", "Asha"),
        ("3", "'+919800000002", "''=Kiran"),
    ]
    # when HR corrects the dates in the report and uploads it unchanged otherwise
    report[0]["date_of_birth"] = "1990-02-28"
    report[1]["date_of_birth"] = "1991-12-01"
    second = upload(hr, csv_file(header, report, "fixed.csv"), django_capture_on_commit_callbacks)
    # then every corrected row is accepted, with exactly the cells the first file had
    second.refresh_from_db()
    assert (second.state, second.rows_total, second.accepted_count, second.rejected_count) == (
        "COMPLETED",
        2,
        2,
        0,
    )
    stored = {
        r.member_data["employee_code"]: (r.state, r.member_data["phone"], r.member_data["first_name"])
        for r in EndorsementRequest.objects.filter(batch=second)
    }
    assert stored == {
        "E1": ("VALIDATED", "+919812345678", "Asha"),
        "E2": ("VALIDATED", "+919800000002", "'=Kiran"),
    }
    assert report_rows(hr, second)[1] == []


def test_a_report_row_still_wrong_is_reported_again_with_the_reports_own_columns_ignored(
    hr, django_capture_on_commit_callbacks
):
    # given a report whose row is uploaded again unfixed
    book = hr.book
    first = upload(
        hr,
        csv_file(list(COLUMNS), [book.add_row(employee_code="E1", gender="Q")]),
        django_capture_on_commit_callbacks,
    )
    header, report = report_rows(hr, first)
    # when it is uploaded again as it is
    second = upload(hr, csv_file(header, report), django_capture_on_commit_callbacks)
    # then the row fails on its gender again (not on its phone or the report's columns)
    _, again = report_rows(hr, second)
    assert [(line["row_number"], line["phone"], line["errors"]) for line in again] == [
        ("2", "'+919812345678", report[0]["errors"]),
    ]
    assert report[0]["errors"].startswith("gender: ")


@pytest.mark.parametrize(
    ("extra", "unknown"),
    [
        (["row_number"], ["row_number"]),
        (["tracking_id", "errors"], ["tracking_id", "errors"]),
        (["row_number", "tracking_id"], ["row_number", "tracking_id"]),
    ],
)
def test_a_file_that_is_not_one_of_our_reports_keeps_refusing_their_columns(hr, extra, unknown):
    book = hr.book
    row = {**book.add_row(), **dict.fromkeys(extra, "2")}
    response = hr.post("/portal/", {"file": csv_file([*extra, *COLUMNS], [row])})
    html = response.content.decode()
    assert response.status_code == 422
    for name in unknown:
        assert f"Unknown column &#x27;{name}&#x27;." in html
    assert EndorsementBatch.objects.count() == 0
    assert Member.objects.count() == 0


def test_in_any_other_file_an_apostrophe_is_data_and_a_formula_is_stored_as_text(
    hr, django_capture_on_commit_callbacks
):
    book = hr.book
    rows = [
        book.add_row(employee_code="E1", first_name="'+Asha"),
        book.add_row(employee_code="E2", first_name="=HYPERLINK(1)", date_of_birth="x"),
    ]
    batch = upload(hr, csv_file(list(COLUMNS), rows), django_capture_on_commit_callbacks)
    assert EndorsementRequest.objects.get(batch=batch).member_data["first_name"] == "'+Asha"
    assert [line["first_name"] for line in report_rows(hr, batch)[1]] == ["'=HYPERLINK(1)"]
