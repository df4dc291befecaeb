"""An HR user's upload in a real browser, against uvicorn, Redis and a real Celery worker.

The worker is started only once the batch page is watching, so the progress the page
shows is the progress the worker reports: over the websocket in the first test, by
polling the status URL in the second (the socket blocked).
"""

import csv
import datetime
import io

import pytest
from django.utils import timezone

from endorsements.models import EndorsementBatch
from tests.factories import (
    BatchFactory,
    EmployerFactory,
    PlanFactory,
    PlanRateFactory,
    PolicyFactory,
    hr_user_create,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "pass-Word-123"
PROCESSING_TIMEOUT_MS = 45_000


@pytest.fixture
def hr_user():
    employer = EmployerFactory(name="Acme Textiles")
    today = datetime.date.today()
    policy = PolicyFactory(
        employer=employer,
        number="POL-ACME",
        start_date=today - datetime.timedelta(days=100),
        end_date=today + datetime.timedelta(days=264),
    )
    plan = PlanFactory(policy=policy, code="GOLD", sum_insured_options=[500000])
    PlanRateFactory(plan=plan, relation="SELF", age_from=18, age_to=65, sum_insured=500000)
    return hr_user_create(employer=employer, username="asha")


def log_in(page) -> None:
    page.goto("/portal/login/")
    page.get_by_label("Username").fill("asha")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/")


def download_template_header(page) -> list[str]:
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the CSV template").click()
    with open(download_info.value.path(), encoding="utf-8", newline="") as template:
        return next(csv.reader(template))


def people_csv(header: list[str]) -> bytes:
    """One good row and two bad ones: an impossible date; an unknown gender (with a formula for a name)."""
    rows = [
        {"first_name": "Asha", "employee_code": "E100", "date_of_birth": "1990-01-15"},
        {"first_name": "Ravi", "employee_code": "E101", "date_of_birth": "1988-02-30"},
        {
            "first_name": '=HYPERLINK("http://x")',
            "employee_code": "E102",
            "date_of_birth": "1991-03-03",
            "gender": "Q",
        },
    ]
    return joiners_csv(header, rows)


def joiners_csv(header: list[str], rows: list[dict]) -> bytes:
    """ADDs of new joiners on POL-ACME's GOLD plan today: each row's cells over the defaults."""
    today = datetime.date.today().isoformat()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                "action": "ADD",
                "relation": "SELF",
                "last_name": "Rao",
                "gender": "F",
                "date_of_joining": today,
                "effective_date": today,
                "policy_number": "POL-ACME",
                "plan_code": "GOLD",
                "sum_insured": "500000",
                **row,
            }
        )
    return buffer.getvalue().encode()


def upload(page, content: bytes) -> int:
    page.get_by_label("CSV file").set_input_files(
        files=[{"name": "people.csv", "mimeType": "text/csv", "buffer": content}]
    )
    page.get_by_role("button", name="Upload and process").click()
    page.wait_for_url("**/portal/batches/*/")
    return int(page.url.rstrip("/").rsplit("/", 1)[1])


def wait_until_finished(page) -> None:
    page.wait_for_selector('#batch-progress[data-state="COMPLETED"]', timeout=PROCESSING_TIMEOUT_MS)
    page.wait_for_selector('#batch-progress[data-errors-loaded="true"]')


def assert_finished_page(page) -> None:
    assert page.locator("#batch-progress-bar").evaluate("bar => bar.value") == 100
    assert page.locator('[data-field="progress"]').text_content() == "100"
    assert page.get_by_role("status").text_content() == "Finished: 1 accepted, 2 rejected, 0 duplicates."
    errors = page.get_by_role("table", name="2 errors")
    assert errors.is_visible()
    cells = errors.locator("tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.textContent.trim()))"
    )
    assert [tuple(row[:3]) for row in cells] == [("3", "—", "date_of_birth"), ("4", "—", "gender")]


def test_the_progress_bar_follows_the_websocket_to_the_error_report(page, hr_user, celery_worker):
    # given a logged-in HR user with the template
    log_in(page)
    header = download_template_header(page)
    assert header[:3] == ["action", "employee_code", "relation"]
    page.screenshot(path="/tmp/portal-upload.png", full_page=True)
    # when they upload a file with good and bad rows and the batch page is connected
    batch_id = upload(page, people_csv(header))
    page.wait_for_selector('#batch-progress[data-transport="websocket"]')
    assert page.locator("#batch-progress").get_attribute("data-state") == "RECEIVED"
    celery_worker()
    # then the bar reaches 100% from websocket messages and the error table appears in place
    wait_until_finished(page)
    root = page.locator("#batch-progress")
    assert root.get_attribute("data-transport") == "websocket"
    assert root.get_attribute("data-last-source") == "websocket"
    assert_finished_page(page)
    page.screenshot(path="/tmp/portal-batch.png", full_page=True)
    batch = EndorsementBatch.objects.get(pk=batch_id)
    assert (batch.state, batch.accepted_count, batch.rejected_count) == ("COMPLETED", 1, 2)
    # and the error report downloads with the formula made harmless
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the error report (CSV)").click()
    download = download_info.value
    assert download.suggested_filename == f"batch-{batch_id}-errors.csv"
    with open(download.path(), encoding="utf-8", newline="") as report:
        lines = list(csv.DictReader(report))
    assert [line["row_number"] for line in lines] == ["3", "4"]
    assert lines[1]["first_name"] == '\'=HYPERLINK("http://x")'
    assert lines[0]["errors"].startswith("date_of_birth: ")


def test_with_the_websocket_blocked_polling_completes_the_progress(page, hr_user, celery_worker):
    # given a browser whose websocket connections are refused
    page.route_web_socket("**/ws/notifications/", lambda socket: socket.close(code=1011, reason="blocked"))
    log_in(page)
    header = download_template_header(page)
    # when they upload and the batch page falls back to polling
    upload(page, people_csv(header))
    page.wait_for_selector('#batch-progress[data-transport="polling"]')
    celery_worker()
    # then polling carries the bar to 100% and the error table appears
    wait_until_finished(page)
    root = page.locator("#batch-progress")
    assert root.get_attribute("data-transport") == "polling"
    assert root.get_attribute("data-last-source") == "poll"
    assert_finished_page(page)


def test_the_words_beside_the_bar_follow_it_as_the_batch_moves(page, hr_user):
    # given a large file part-way through (4,800 of about 20,000 rows decided), watched by polling
    employer = hr_user.employer_membership.employer
    batch = BatchFactory(
        employer=employer,
        file_name="big.csv",
        rows_expected=20_000,
        rows_parsed=6_000,
        accepted_count=4_700,
        rejected_count=100,
        progress=24,
    )
    page.route_web_socket("**/ws/notifications/", lambda socket: socket.close(code=1011, reason="blocked"))
    log_in(page)
    page.goto(f"/portal/batches/{batch.pk}/")
    page.wait_for_selector('#batch-progress[data-transport="polling"]')
    # then the bar, the sentence and the rows say the same
    assert page.locator("#batch-progress-bar").evaluate("bar => bar.value") == 24
    assert page.locator("#batch-status-text").text_content() == (
        "Processing: 24% done, 4,800 of about 20,000 rows checked."
    )
    assert page.locator('[data-field="rows_checked_text"]').text_content() == "4,800 of about 20,000"
    # when the file has been read whole and more rows are decided
    EndorsementBatch.objects.filter(pk=batch.pk).update(
        rows_total=19_800, parsed_at=timezone.now(), accepted_count=11_780, progress=60
    )
    page.wait_for_function("document.getElementById('batch-progress-bar').value === 60")
    # then the words moved with the bar
    assert page.locator("#batch-status-text").text_content() == (
        "Processing: 60% done, 11,880 of 19,800 rows checked."
    )
    assert page.locator('[data-field="rows_checked_text"]').text_content() == "11,880 of 19,800"
    assert page.locator('[data-field="progress"]').text_content() == "60"
