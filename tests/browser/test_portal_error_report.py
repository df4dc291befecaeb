"""The error report round trip in a real browser: upload a file with bad rows, download the
report, correct its cells, upload the report itself, and every corrected row is accepted."""

import csv
import io

import pytest

from endorsements.columns import COLUMNS
from endorsements.models import EndorsementBatch, EndorsementRequest
from tests.browser.test_portal_batch_flow import hr_user, joiners_csv, log_in, upload, wait_until_finished  # noqa: F401 - hr_user: the fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def people(header: list[str]) -> bytes:
    """Two bad rows whose phones the report escapes (`'+91…`), and a good one."""
    return joiners_csv(
        header,
        [
            {
                "employee_code": "E200",
                "first_name": "Asha",
                "date_of_birth": "1990-01-15",
                "phone": "+919800000200",
            },
            {
                "employee_code": "E201",
                "first_name": "Ravi",
                "date_of_birth": "1988-02-30",
                "phone": "+919800000201",
            },
            {
                "employee_code": "E202",
                "first_name": "Meera",
                "date_of_birth": "1991-03-03",
                "gender": "Q",
                "phone": "+919800000202",
            },
        ],
    )


@pytest.mark.usefixtures("hr_user")
def test_hr_fixes_the_downloaded_report_and_uploads_it_as_it_is(page, celery_worker):
    # given a processed upload with two bad rows
    log_in(page)
    celery_worker()
    first_id = upload(page, people(list(COLUMNS)))
    wait_until_finished(page)
    # when HR downloads the error report and corrects the cells it names
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the error report (CSV)").click()
    with open(download_info.value.path(), encoding="utf-8", newline="") as report:
        reader = csv.DictReader(report)
        header, lines = list(reader.fieldnames), list(reader)
    assert [(line["employee_code"], line["phone"]) for line in lines] == [
        ("E201", "'+919800000201"),
        ("E202", "'+919800000202"),
    ]
    lines[0]["date_of_birth"] = "1988-02-28"
    lines[1]["gender"] = "F"
    fixed = io.StringIO()
    writer = csv.DictWriter(fixed, fieldnames=header, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(lines)
    # and uploads the report itself, its own columns and escapes included
    page.goto("/portal/")
    second_id = upload(page, fixed.getvalue().encode())
    wait_until_finished(page)
    # then every corrected row is accepted, phones as the first file had them
    assert page.get_by_role("status").text_content() == "Finished: 2 accepted, 0 rejected, 0 duplicates."
    assert page.get_by_text("No row had an error.").is_visible()
    second = EndorsementBatch.objects.get(pk=second_id)
    assert (second.state, second.rows_total, second.accepted_count, second.rejected_count) == (
        "COMPLETED",
        2,
        2,
        0,
    )
    stored = EndorsementRequest.objects.filter(batch=second).values_list(
        "member_data__employee_code", "member_data__phone", "state"
    )
    assert sorted(stored) == [("E201", "+919800000201", "VALIDATED"), ("E202", "+919800000202", "VALIDATED")]
    assert EndorsementBatch.objects.get(pk=first_id).accepted_count == 1
