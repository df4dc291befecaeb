"""The portal's batch pages: upload through the form, progress, the error table and report."""

import datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from endorsements.models import BatchRowError, EndorsementBatch, EndorsementRequest
from tests.factories import EmployerFactory, PlanFactory, PlanRateFactory, PolicyFactory, hr_user_create

pytestmark = pytest.mark.django_db

HEADER = (
    "action,employee_code,relation,first_name,last_name,date_of_birth,gender,email,phone,"
    "date_of_joining,event_date,effective_date,policy_number,plan_code,sum_insured"
)


@pytest.fixture
def hr(client):
    employer = EmployerFactory()
    client.force_login(hr_user_create(employer=employer))
    client.employer = employer
    return client


def batch_create(employer, **fields) -> EndorsementBatch:
    values = {
        "employer": employer,
        "source": "CSV",
        "file_format": "CSV",
        "file_name": "people.csv",
        "state": EndorsementBatch.State.PROCESSING,
        "rows_total": 0,
        "progress": 40,
    }
    values.update(fields)
    return EndorsementBatch.objects.create(**values)


def completed_batch(employer, *, errors: int = 2) -> EndorsementBatch:
    batch = batch_create(
        employer,
        state=EndorsementBatch.State.COMPLETED,
        rows_total=errors + 1,
        accepted_count=1,
        rejected_count=errors,
        progress=100,
    )
    BatchRowError.objects.bulk_create(
        BatchRowError(
            batch=batch,
            row_number=row,
            column="effective_date",
            code="date_invalid",
            message="effective_date must be a real date as YYYY-MM-DD.",
            raw={"action": "ADD", "employee_code": f"E{row}", "first_name": '=HYPERLINK("x")'},
        )
        for row in range(3, 3 + errors)
    )
    return batch


def test_a_batch_in_progress_shows_the_live_progress_bar(hr):
    batch = batch_create(hr.employer, rows_total=10, accepted_count=3, rejected_count=1)
    response = hr.get(f"/portal/batches/{batch.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<progress id="batch-progress-bar" max="100" value="40">40%</progress>' in html
    assert 'role="status" aria-live="polite"' in html
    assert f'data-status-url="/portal/batches/{batch.pk}/status"' in html
    assert 'data-socket-path="/ws/notifications/"' in html
    assert "/static/portal/batch.js" in html
    assert "The rows with errors will be listed here when processing finishes." in html
    assert "Download the error report" not in html


def test_the_page_opens_the_websocket_where_notifications_socket_url_says(hr, settings):
    # given a websocket server on a port of its own (make run's `ws` process)
    settings.NOTIFICATIONS_SOCKET_URL = "ws://127.0.0.1:8001/ws/notifications/"
    batch = batch_create(hr.employer, rows_total=10, accepted_count=3, rejected_count=1)
    html = hr.get(f"/portal/batches/{batch.pk}/").content.decode()
    assert 'data-socket-path="ws://127.0.0.1:8001/ws/notifications/"' in html


def test_the_status_endpoint_gives_the_counts_the_websocket_sends(hr):
    batch = batch_create(hr.employer, rows_total=10, accepted_count=3, rejected_count=1, duplicate_count=2)
    response = hr.get(f"/portal/batches/{batch.pk}/status")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    assert response.json() == {
        "batch_id": batch.pk,
        "state": "PROCESSING",
        "progress": 40,
        "rows_total": 10,
        "accepted_count": 3,
        "rejected_count": 1,
        "duplicate_count": 2,
        "rows_done": 6,
        "rows_expected": 6,
        "rows_checked_text": "6 of about 6",
        "status_text": "Processing: 40% done, 6 of about 6 rows checked.",
        "failure_reason": "",
    }


def test_the_words_beside_the_bar_say_the_bars_figure_and_the_rows_behind_it(hr):
    # given a 20,000-row file being read: 4,800 rows decided, the file not yet read whole
    batch = batch_create(
        hr.employer,
        rows_expected=20_000,
        rows_parsed=6_000,
        accepted_count=4_700,
        rejected_count=100,
        progress=24,
    )
    # when the page and the status URL are read
    html = hr.get(f"/portal/batches/{batch.pk}/").content.decode()
    status = hr.get(f"/portal/batches/{batch.pk}/status").json()
    # then the bar, the sentence and the rows agree
    sentence = "Processing: 24% done, 4,800 of about 20,000 rows checked."
    assert '<progress id="batch-progress-bar" max="100" value="24">24%</progress>' in html
    assert f'<p id="batch-status-text" class="status-text" data-field="status_text">{sentence}</p>' in html
    assert '<dd data-field="rows_checked_text">4,800 of about 20,000</dd>' in html
    assert (status["progress"], status["status_text"], status["rows_done"], status["rows_expected"]) == (
        24,
        sentence,
        4_800,
        20_000,
    )


def test_once_the_file_is_read_whole_its_rows_are_no_longer_an_estimate(hr):
    from django.utils import timezone

    batch = batch_create(
        hr.employer, rows_total=8, rows_expected=10, parsed_at=timezone.now(), accepted_count=2, progress=25
    )
    status = hr.get(f"/portal/batches/{batch.pk}/status").json()
    assert status["status_text"] == "Processing: 25% done, 2 of 8 rows checked."
    assert status["rows_checked_text"] == "2 of 8"


def test_a_finished_and_a_failed_batch_say_so_in_the_same_place(hr):
    done = completed_batch(hr.employer, errors=2)
    failed = batch_create(
        hr.employer, state=EndorsementBatch.State.FAILED, failure_reason="The file vanished."
    )
    assert hr.get(f"/portal/batches/{done.pk}/status").json()["status_text"] == (
        "Finished: 1 accepted, 2 rejected, 0 duplicates."
    )
    assert hr.get(f"/portal/batches/{failed.pk}/status").json()["status_text"] == (
        "The file could not be processed: The file vanished."
    )


def test_a_completed_batch_lists_its_row_errors_with_the_report_link(hr):
    batch = completed_batch(hr.employer, errors=2)
    response = hr.get(f"/portal/batches/{batch.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "/static/portal/batch.js" not in html
    assert f'href="/portal/batches/{batch.pk}/errors.csv" download' in html
    assert '<caption id="errors-caption">2 errors</caption>' in html
    assert html.count("<code>date_invalid</code>") == 2
    assert '<td class="num">3</td>' in html and '<td class="num">4</td>' in html
    assert f'href="/portal/endorsements/?batch={batch.pk}"' in html


def test_the_error_report_downloads_as_csv_with_formulas_escaped(hr):
    batch = completed_batch(hr.employer, errors=1)
    response = hr.get(f"/portal/batches/{batch.pk}/errors.csv")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="batch-{batch.pk}-errors.csv"'
    lines = b"".join(response.streaming_content).decode().split("\r\n")
    assert lines[0] == f"row_number,tracking_id,{HEADER},errors"
    assert lines[1] == (
        '3,,ADD,E3,,"\'=HYPERLINK(""x"")",,,,,,,,,,,,'
        "effective_date: date_invalid: effective_date must be a real date as YYYY-MM-DD."
    )
    assert lines[2:] == [""]


def test_another_employers_batch_is_not_found(hr):
    theirs = completed_batch(EmployerFactory())
    for path in ("/", "/status", "/errors.csv"):
        assert hr.get(f"/portal/batches/{theirs.pk}{path}").status_code == 404, path
    assert hr.get("/portal/batches/999999/").status_code == 404


def test_the_error_table_is_paginated_with_bounded_queries(hr, settings, django_assert_max_num_queries):
    settings.PORTAL_PAGE_SIZE = 2
    small = completed_batch(hr.employer, errors=3)
    large = completed_batch(hr.employer, errors=30)
    # session, user, membership+employer, batch, batch (batch_errors checks scope), count, page
    with django_assert_max_num_queries(7):
        first = hr.get(f"/portal/batches/{small.pk}/")
    with django_assert_max_num_queries(7):
        last = hr.get(f"/portal/batches/{large.pk}/?page=15")
    assert "page 1 of 2" in first.content.decode()
    html = last.content.decode()
    assert "30 errors, page 15 of 15" in html
    assert '<td class="num">31</td>' in html and '<td class="num">32</td>' in html
    assert '<a href="?page=14" rel="prev">Previous</a>' in html


# --- uploading through the portal ----------------------------------------------------------


@pytest.fixture
def policy(hr):
    today = datetime.date.today()
    policy = PolicyFactory(
        employer=hr.employer,
        number="POL-PORTAL",
        start_date=today - datetime.timedelta(days=100),
        end_date=today + datetime.timedelta(days=264),
    )
    plan = PlanFactory(policy=policy, code="GOLD", sum_insured_options=[500000])
    PlanRateFactory(plan=plan, relation="SELF", age_from=18, age_to=65, sum_insured=500000)
    return policy


def upload_file(rows: list[str], name: str = "people.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, ("\r\n".join([HEADER, *rows]) + "\r\n").encode(), content_type="text/csv")


def test_uploading_a_file_accepts_good_rows_and_reports_bad_ones(
    hr, policy, django_capture_on_commit_callbacks
):
    # given a file with one good row, two rows that fail their format checks and one that
    # breaks a business rule
    today = datetime.date.today().isoformat()
    rows = [
        f"ADD,E100,SELF,Asha,Rao,1990-01-15,F,asha@example.com,+919812345678,{today},,{today},POL-PORTAL,GOLD,500000",
        f"ADD,E101,SELF,Ravi,Kumar,1988-02-30,M,,,{today},,{today},POL-PORTAL,GOLD,500000",
        f"ADD,E102,SELF,,Iyer,1991-03-03,F,,,{today},,{today},POL-PORTAL,GOLD,500000",
        f"ADD,E103,SELF,Meera,Nair,1992-04-04,F,,,{today},,{today},POL-PORTAL,PLATINUM,500000",
    ]
    # when the HR user uploads it (processing runs eagerly once the upload commits)
    with django_capture_on_commit_callbacks(execute=True):
        response = hr.post("/portal/", {"file": upload_file(rows)})
    # then they are taken to the batch, which accepted one row and reported three
    batch = EndorsementBatch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/portal/batches/{batch.pk}/"
    batch.refresh_from_db()
    assert (batch.employer_id, batch.file_name, batch.source) == (hr.employer.pk, "people.csv", "CSV")
    assert (batch.state, batch.rows_total, batch.accepted_count, batch.rejected_count) == (
        "COMPLETED",
        4,
        1,
        3,
    )
    stored = dict(EndorsementRequest.objects.values_list("member_data__employee_code", "state"))
    assert stored == {"E100": "VALIDATED", "E103": "REJECTED"}
    page = hr.get(response["Location"]).content.decode()
    assert '<caption id="errors-caption">3 errors</caption>' in page
    assert '<td class="num">3</td>' in page and '<td class="num">4</td>' in page
    # the rule-broken row was stored: its tracking id links to its endorsement; the rows that
    # failed their format checks were never stored and have none
    rejected = EndorsementRequest.objects.get(member_data__employee_code="E103")
    assert (
        f'<td class="num">5</td><td><a href="/portal/endorsements/{rejected.tracking_id}/">'
        f"<code>{rejected.tracking_id}</code></a></td>"
    ) in page
    assert page.count('title="The row failed its format checks, so no endorsement was stored">—</span>') == 2
    assert hr.get(f"/portal/endorsements/{rejected.tracking_id}/").status_code == 200


def test_a_file_the_service_refuses_shows_its_message_and_stores_nothing(hr):
    response = hr.post("/portal/", {"file": upload_file([])})
    assert response.status_code == 422
    assert "The file has a header but no data rows." in response.content.decode()
    assert EndorsementBatch.objects.count() == 0
    assert EndorsementRequest.objects.count() == 0


def test_a_bad_header_is_explained_column_by_column(hr):
    content = b"action,employee_code,relation,salary,relation\r\nADD,E1,SELF,10,SELF\r\n"
    upload = SimpleUploadedFile("people.csv", content, content_type="text/csv")
    response = hr.post("/portal/", {"file": upload})
    html = response.content.decode()
    assert response.status_code == 422
    assert "The header row is not valid." in html
    assert "Unknown column &#x27;salary&#x27;." in html
    assert "Column &#x27;relation&#x27; appears more than once." in html
    assert "Required column &#x27;effective_date&#x27; is missing." in html
    assert EndorsementBatch.objects.count() == 0


def test_a_file_over_the_size_limit_is_refused_with_413(hr, policy, settings):
    settings.UPLOAD_MAX_BYTES = 200
    today = datetime.date.today().isoformat()
    row = f"ADD,E100,SELF,Asha,Rao,1990-01-15,F,,,{today},,{today},POL-PORTAL,GOLD,500000"
    response = hr.post("/portal/", {"file": upload_file([row, row])})
    assert response.status_code == 413
    assert "The file is larger than the limit of 200 bytes." in response.content.decode()
    assert EndorsementBatch.objects.count() == 0
