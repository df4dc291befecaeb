"""`POST /api/v1/endorsements/batch` (services.batch_submit + batch_process) with every kind of bad file.

Whole-file problems are refused at once (4xx) and write nothing; row problems reject
their row only (row numbers as a spreadsheet shows them: the header is row 1) and the
good rows are still accepted.
"""

import asyncio
import csv
import io
import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.files.uploadedfile import SimpleUploadedFile

from ems.models import OutboxEvent
from ems.notifications import employer_group
from ems.tenancy import Caller
from endorsements import services
from endorsements.errors import UploadTooLarge
from endorsements.models import BatchRowError, EndorsementBatch, EndorsementRequest, EndorsementTransition
from endorsements.policy_book import policy_book_load
from endorsements.services import batches
from endorsements.transitions import endorsement_transition
from tests.endorsements.test_endorsement_submit import other_employer_api
from tests.factories import EmployerFactory, MemberFactory

URL = "/api/v1/endorsements/batch"


def csv_text(rows: list[dict], header: list[str] | None = None, newline: str = "\r\n") -> str:
    header = header or list(rows[0])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator=newline, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def send(api, capture, content: bytes, name: str = "people.csv", **data):
    upload = SimpleUploadedFile(name, content, content_type="text/csv")
    with capture(execute=True):
        return api.post(URL, {"file": upload, **data}, format="multipart")


def states():
    return dict(EndorsementRequest.objects.values_list("row_number", "state"))


def row_errors():
    return list(
        BatchRowError.objects.order_by("row_number", "id").values_list("row_number", "column", "code")
    )


def nothing_written():
    assert EndorsementBatch.objects.count() == 0
    assert EndorsementRequest.objects.count() == 0
    assert OutboxEvent.objects.count() == 0


def refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    nothing_written()
    return error


# --- whole-file refusals ----------------------------------------------------------------------


def test_an_empty_file_is_refused(api, book, django_capture_on_commit_callbacks):
    error = refused(send(api, django_capture_on_commit_callbacks, b""), 422, "file_empty")
    assert error["message"] == "The file is empty."


def test_a_header_without_rows_is_refused(api, book, django_capture_on_commit_callbacks):
    content = csv_text([book.add_row()]).splitlines()[0].encode() + b"\r\n\r\n"
    refused(send(api, django_capture_on_commit_callbacks, content), 422, "file_no_rows")


def test_rows_after_many_blank_lines_are_still_found(api, book, django_capture_on_commit_callbacks):
    header, row = csv_text([book.add_row()]).splitlines()
    content = (header + "\r\n" + ",,,\r\n" * 1500 + row + "\r\n").encode()
    response = send(api, django_capture_on_commit_callbacks, content)
    assert response.status_code == 202
    assert states() == {1502: "VALIDATED"}


def test_a_header_cell_with_bytes_that_are_not_text_is_named_printably(
    api, book, django_capture_on_commit_callbacks
):
    header, row = csv_text([book.add_row()]).splitlines()
    content = (header + ",sal").encode() + b"\xe9ry\r\n" + (row + ",1\r\n").encode()
    error = refused(send(api, django_capture_on_commit_callbacks, content), 422, "header_invalid")
    assert [(d["field"], d["code"]) for d in error["details"]] == [("sal\ufffdry", "column_unknown")]


def test_missing_unknown_and_duplicate_columns_are_each_named(api, book, django_capture_on_commit_callbacks):
    content = (
        b"Action,employee_code,relation,salary,relation,effective_date,\r\nADD,E1,SELF,1,SELF,2026-01-01,\r\n"
    )
    error = refused(send(api, django_capture_on_commit_callbacks, content), 422, "header_invalid")
    assert error["details"] == [
        {"field": "salary", "code": "column_unknown", "message": "Unknown column 'salary'."},
        {
            "field": "relation",
            "code": "column_duplicate",
            "message": "Column 'relation' appears more than once.",
        },
        {"field": "column 7", "code": "column_empty", "message": "Column 7 has no name."},
        {
            "field": "policy_number",
            "code": "column_missing",
            "message": "Required column 'policy_number' is missing.",
        },
    ]


@pytest.mark.parametrize(
    "bom, encoding", [(b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")], ids=["le", "be"]
)
def test_a_utf16_file_with_a_byte_order_mark_is_read_like_a_utf8_one(
    api, book, django_capture_on_commit_callbacks, bom, encoding
):
    # Excel's "Unicode text" and some HRIS exports write UTF-16 with a BOM.
    rows = [
        book.add_row(employee_code="E1"),
        book.add_row(employee_code="E2", first_name="Zoë", last_name="Ñúñez"),
        book.add_row(employee_code="E3", date_of_birth="1990-13-01"),
    ]
    content = bom + csv_text(rows).encode(encoding)
    response = send(api, django_capture_on_commit_callbacks, content)
    assert response.status_code == 202
    assert states() == {2: "VALIDATED", 3: "VALIDATED"}
    assert EndorsementBatch.objects.get().rows_expected == 3  # counted, not the bytes' line ends
    names = EndorsementRequest.objects.get(row_number=3).member_data
    assert (names["first_name"], names["last_name"]) == ("Zoë", "Ñúñez")
    assert row_errors() == [(4, "date_of_birth", "date_invalid")]


def test_a_utf16_file_without_a_byte_order_mark_is_refused(api, book, django_capture_on_commit_callbacks):
    content = csv_text([book.add_row()]).encode("utf-16-le")
    error = refused(send(api, django_capture_on_commit_callbacks, content), 422, "file_encoding_unsupported")
    assert error["message"] == "The file looks like UTF-16 without a byte-order mark; save it as UTF-8 CSV."


def test_a_broken_utf16_unit_rejects_only_its_row(api, book, django_capture_on_commit_callbacks):
    rows = [book.add_row(employee_code="E1"), book.add_row(employee_code="E2", first_name="Ana\udc00")]
    # an unpaired surrogate is not UTF-16 text; surrogatepass writes its two bytes anyway
    content = b"\xff\xfe" + csv_text(rows).encode("utf-16-le", "surrogatepass")
    send(api, django_capture_on_commit_callbacks, content)
    assert states() == {2: "VALIDATED"}
    error = BatchRowError.objects.get()
    assert (error.row_number, error.column, error.code) == (3, "first_name", "encoding_invalid")
    assert error.message == "Contains a byte that cannot be read as text (0x00); save the file as UTF-8."


def test_a_binary_file_named_csv_is_refused(api, book, django_capture_on_commit_callbacks):
    content = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
    refused(send(api, django_capture_on_commit_callbacks, content, name="photo.csv"), 422, "file_not_text")


def test_a_file_over_the_size_limit_is_refused_with_413(
    api, book, settings, django_capture_on_commit_callbacks
):
    settings.UPLOAD_MAX_BYTES = 1000
    content = csv_text([book.add_row(employee_code=f"E{n}") for n in range(10)]).encode()
    error = refused(send(api, django_capture_on_commit_callbacks, content), 413, "payload_too_large")
    assert error["message"] == "The request body is larger than the limit of 1000 bytes."


def test_a_streamed_upload_is_cut_off_at_the_size_limit(book, settings, tmp_path):
    # A body without Content-Length (chunked) is counted as it is stored.
    settings.UPLOAD_MAX_BYTES = 1000
    settings.MEDIA_ROOT = tmp_path
    caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")
    content = csv_text([book.add_row(employee_code=f"E{n}") for n in range(10)]).encode()
    with pytest.raises(UploadTooLarge) as refused_upload:
        services.batch_submit(
            caller=caller, upload=io.BytesIO(content), file_name="big.csv", file_format="CSV"
        )
    assert refused_upload.value.status == 413
    assert refused_upload.value.code == "upload_too_large"
    assert list(tmp_path.rglob("*.csv")) == []
    nothing_written()


def test_more_rows_than_the_row_limit_is_refused(api, book, settings, django_capture_on_commit_callbacks):
    settings.UPLOAD_MAX_ROWS = 3
    content = csv_text([book.add_row(employee_code=f"E{n}") for n in range(4)]).encode()
    error = refused(send(api, django_capture_on_commit_callbacks, content), 422, "too_many_rows")
    assert error["message"] == "The file has 4 rows; the limit is 3."


def test_a_json_body_that_is_not_an_array_is_refused(api, book, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(URL, json.dumps({"rows": [book.add_row()]}), content_type="application/json")
    refused(response, 422, "json_not_array")


def test_malformed_json_is_refused(api, book, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(URL, '[{"action": "ADD"}, {"action": ', content_type="application/json")
    error = refused(response, 422, "json_invalid")
    assert error["message"].startswith("Element 2 is not valid JSON")


# --- files whose good rows go in --------------------------------------------------------------


def test_a_clean_csv_is_accepted_at_once_and_processed(api, book, django_capture_on_commit_callbacks):
    rows = [book.add_row(employee_code=f"E{n}") for n in range(3)]
    response = send(api, django_capture_on_commit_callbacks, csv_text(rows).encode())
    assert response.status_code == 202
    body = response.json()
    assert body["state"] == "RECEIVED"
    batch = api.get(body["links"]["self"]).json()
    assert {
        k: batch[k] for k in ("state", "rows_total", "accepted_count", "rejected_count", "duplicate_count")
    } == {
        "state": "COMPLETED",
        "rows_total": 3,
        "accepted_count": 3,
        "rejected_count": 0,
        "duplicate_count": 0,
    }
    assert batch["progress"] == 100
    assert states() == {2: "VALIDATED", 3: "VALIDATED", 4: "VALIDATED"}
    assert set(EndorsementRequest.objects.values_list("source", flat=True)) == {"CSV"}


def test_a_utf8_bom_and_cr_only_line_ends_are_read(api, book, django_capture_on_commit_callbacks):
    rows = [book.add_row(employee_code=f"E{n}") for n in range(2)]
    content = b"\xef\xbb\xbf" + csv_text(rows, newline="\r").encode()
    assert b"\n" not in content
    send(api, django_capture_on_commit_callbacks, content)
    assert states() == {2: "VALIDATED", 3: "VALIDATED"}


def test_latin1_bytes_reject_only_their_row(api, book, django_capture_on_commit_callbacks):
    rows = [book.add_row(employee_code="E1"), book.add_row(employee_code="E2", first_name="José")]
    content = csv_text(rows).encode("latin-1")
    send(api, django_capture_on_commit_callbacks, content)
    assert states() == {2: "VALIDATED"}
    error = BatchRowError.objects.get()
    assert (error.row_number, error.column, error.code) == (3, "first_name", "encoding_invalid")
    assert error.message == "Contains a byte that cannot be read as text (0xE9); save the file as UTF-8."


def test_quoted_commas_and_newlines_stay_inside_their_field(api, book, django_capture_on_commit_callbacks):
    rows = [
        book.add_row(employee_code="E1", last_name="Rao, Jr."),
        book.add_row(employee_code="E2", last_name="Rao\nSecond line"),
        book.add_row(employee_code="E3"),
    ]
    send(api, django_capture_on_commit_callbacks, csv_text(rows).encode())
    assert states() == {2: "VALIDATED", 4: "VALIDATED"}
    assert EndorsementRequest.objects.get(row_number=2).member_data["last_name"] == "Rao, Jr."
    assert row_errors() == [(3, "last_name", "control_character")]


def test_ragged_rows_are_rejected_alone(api, book, django_capture_on_commit_callbacks):
    text = csv_text([book.add_row(employee_code="E1"), book.add_row(employee_code="E2")])
    lines = text.split("\r\n")
    lines[2] = lines[2] + ",extra,cells"
    lines.insert(2, "ADD,E9,SELF")
    send(api, django_capture_on_commit_callbacks, "\r\n".join(lines).encode())
    assert states() == {2: "VALIDATED"}
    errors = list(BatchRowError.objects.order_by("row_number").values_list("row_number", "code", "message"))
    assert errors == [
        (3, "row_ragged", "The row has 3 cells; the header has 14."),
        (4, "row_ragged", "The row has 16 cells; the header has 14."),
    ]


def test_bad_values_reject_their_rows_with_exact_reasons(api, book, django_capture_on_commit_callbacks):
    other = EmployerFactory()
    MemberFactory(employer=other, employee_code="X-1")
    deletion = {"action": "DELETE", "employee_code": "X-1", "relation": "SELF"}
    deletion.update(policy_number=book.policy.number, effective_date=book.today.isoformat())
    rows = [
        book.add_row(employee_code="E1"),
        book.add_row(employee_code="E2", date_of_birth="31/02/2026"),
        book.add_row(employee_code="E3", effective_date="2026-13-01"),
        book.add_row(employee_code="E4", sum_insured="-500000"),
        book.add_row(employee_code="E5", sum_insured="900000000000000"),
        book.add_row(
            employee_code="E6", date_of_birth=(book.today.replace(year=book.today.year + 1)).isoformat()
        ),
        deletion,
        book.add_row(employee_code="E1"),
    ]
    response = send(api, django_capture_on_commit_callbacks, csv_text(rows, header=list(rows[0])).encode())
    assert states() == {2: "VALIDATED", 8: "REJECTED", 9: "REJECTED"}
    assert row_errors() == [
        (3, "date_of_birth", "date_format"),
        (4, "effective_date", "date_invalid"),
        (5, "sum_insured", "sum_insured_not_positive"),
        (6, "sum_insured", "sum_insured_out_of_range"),
        (7, "date_of_birth", "date_in_future"),
        (8, "employee_code", "member_not_found"),
        (9, "", "duplicate"),
    ]
    original = EndorsementRequest.objects.get(row_number=2).tracking_id
    assert BatchRowError.objects.get(row_number=9).message == f"Duplicate of {original} (row 2 of this file)."
    batch = api.get(response.json()["links"]["self"]).json()
    assert (
        batch["rows_total"],
        batch["accepted_count"],
        batch["rejected_count"],
        batch["duplicate_count"],
    ) == (
        8,
        1,
        6,
        1,
    )


def test_formula_cells_are_stored_as_text_and_escaped_in_the_error_report(
    api, book, django_capture_on_commit_callbacks
):
    rows = [
        book.add_row(employee_code="E1", first_name='=HYPERLINK("http://evil.example","click")'),
        book.add_row(employee_code="E2", first_name="@SUM(A1)", last_name="-2+3", plan_code="PLATINUM"),
    ]
    response = send(api, django_capture_on_commit_callbacks, csv_text(rows).encode())
    stored = EndorsementRequest.objects.get(row_number=2)
    assert stored.member_data["first_name"] == '=HYPERLINK("http://evil.example","click")'
    report = api.get(response.json()["links"]["errors"])
    assert report.status_code == 200
    assert report["Content-Type"] == "text/csv; charset=utf-8"
    lines = list(csv.reader(io.StringIO(b"".join(report.streaming_content).decode())))
    assert lines[0][-1] == "errors" and lines[0][:2] == ["row_number", "tracking_id"]
    rejected = EndorsementRequest.objects.get(row_number=3)
    assert lines[1][:7] == ["3", rejected.tracking_id, "ADD", "E2", "SELF", "'@SUM(A1)", "'-2+3"]
    assert lines[1][10] == "'+919812345678"
    assert lines[1][-1] == "plan_code: plan_not_found: No plan PLATINUM on this policy."
    assert len(lines) == 2


def test_a_json_array_with_nested_junk_keeps_its_good_rows(api, book, django_capture_on_commit_callbacks):
    body = [
        book.add_row(employee_code="E1", sum_insured=500000),
        book.add_row(employee_code="E2", first_name={"nested": ["junk"]}),
        "not an object",
        book.add_row(employee_code="E4", salary=1),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{URL}?file_name=people.json", json.dumps(body), content_type="application/json")
    assert response.status_code == 202
    assert response.json()["file_format"] == "JSON"
    assert states() == {1: "VALIDATED"}
    assert row_errors() == [
        (2, "first_name", "value_not_scalar"),
        (3, "", "row_not_object"),
        (4, "salary", "column_unknown"),
    ]


def test_another_employers_token_cannot_see_the_batch(api, book, django_capture_on_commit_callbacks):
    response = send(api, django_capture_on_commit_callbacks, csv_text([book.add_row()]).encode())
    links = response.json()["links"]
    other = other_employer_api()
    assert other.get(links["self"]).status_code == 404
    assert other.get(links["self"]).json()["error"]["code"] == "batch_not_found"
    assert other.get(links["errors"]).status_code == 404


async def receive_within(layer, channel, seconds):
    return await asyncio.wait_for(layer.receive(channel), seconds)


def test_progress_is_pushed_after_each_chunk_and_at_completion(
    api, book, monkeypatch, django_capture_on_commit_callbacks
):
    # given chunks of two rows and a listener on the employer's websocket group
    monkeypatch.setattr(batches, "CHUNK_ROWS", 2)
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(employer_group(book.employer.pk), channel)
    rows = [book.add_row(employee_code=f"E{n}") for n in range(4)] + [book.add_row(employee_code="E0")]
    # when
    send(api, django_capture_on_commit_callbacks, csv_text(rows).encode())
    # then
    messages = []
    while True:
        message = async_to_sync(receive_within)(layer, channel, 5)
        messages.append((message["event"], message["data"]))
        if message["event"] == "batch.completed":
            break
    progress = [data for event, data in messages if event == "batch.progress"]
    # (each chunk is decided as it is read; the last one completes the batch)
    assert [(d["progress"], d["state"], d["accepted_count"], d["duplicate_count"]) for d in progress] == [
        (40, "PROCESSING", 2, 0),
        (80, "PROCESSING", 4, 0),
        (100, "COMPLETED", 4, 1),
    ]
    assert [event for event, _ in messages].count("endorsement.updated") == 0
    assert messages[-1] == (
        "batch.completed",
        {
            "batch_id": progress[0]["batch_id"],
            "progress": 100,
            "state": "COMPLETED",
            "rows_total": 5,
            "accepted_count": 4,
            "rejected_count": 0,
            "duplicate_count": 1,
            "rows_done": 5,
            "rows_expected": 5,
            "rows_checked_text": "5 of 5",
            "status_text": "Finished: 4 accepted, 0 rejected, 1 duplicate.",
            "failure_reason": "",
        },
    )
    assert [d["status_text"] for d in progress[:2]] == [
        "Processing: 40% done, 2 of about 5 rows checked.",
        "Processing: 80% done, 4 of about 5 rows checked.",
    ]
    async_to_sync(layer.group_discard)(employer_group(book.employer.pk), channel)


def test_processing_again_changes_nothing(api, book, django_capture_on_commit_callbacks):
    rows = [book.add_row(employee_code=f"E{n}") for n in range(3)]
    batch_id = send(api, django_capture_on_commit_callbacks, csv_text(rows).encode()).json()["batch_id"]
    before = (EndorsementRequest.objects.count(), OutboxEvent.objects.count(), BatchRowError.objects.count())
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_process(batch_id=batch_id)
    assert (
        EndorsementRequest.objects.count(),
        OutboxEvent.objects.count(),
        BatchRowError.objects.count(),
    ) == before


def test_an_interrupted_batch_resumes_after_its_committed_rows(
    book, django_capture_on_commit_callbacks, tmp_path, settings
):
    settings.MEDIA_ROOT = tmp_path
    caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")
    rows = [book.add_row(employee_code=f"E{n}") for n in range(3)]
    # given a batch stored but not yet processed (its task has not run)
    with django_capture_on_commit_callbacks(execute=False):
        batch = services.batch_submit(
            caller=caller, upload=io.BytesIO(csv_text(rows).encode()), file_name="p.csv", file_format="CSV"
        )
    # and a worker that committed the first two rows before it died
    EndorsementBatch.objects.filter(pk=batch.pk).update(state="PROCESSING")
    first_two = [(2, rows[0]), (3, rows[1])]
    with django_capture_on_commit_callbacks(execute=True):
        records = [(n, {k.lower(): v for k, v in r.items()}, [], r) for n, r in first_two]
        batches._chunk_store(
            batch,
            batches._chunk_prepare(records, start=0, end=2, today=book.today),
            book=policy_book_load(book.employer.pk),
        )
    # when the task runs again
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_process(batch_id=batch.pk)
    # then the third row is read once and the batch completes
    batch.refresh_from_db()
    assert states() == {2: "VALIDATED", 3: "VALIDATED", 4: "VALIDATED"}
    assert (batch.state, batch.rows_total, batch.accepted_count) == ("COMPLETED", 3, 3)


def test_a_file_that_cannot_be_read_fails_the_batch_visibly(
    book, django_capture_on_commit_callbacks, tmp_path, settings
):
    settings.MEDIA_ROOT = tmp_path
    caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")
    with django_capture_on_commit_callbacks(execute=False):
        batch = services.batch_submit(
            caller=caller,
            upload=io.BytesIO(csv_text([book.add_row()]).encode()),
            file_name="p.csv",
            file_format="CSV",
        )
    (tmp_path / batch.file_path).unlink()
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_process(batch_id=batch.pk)
    batch.refresh_from_db()
    assert (batch.state, batch.failure_code) == ("FAILED", "processing_error")
    assert batch.failure_reason.startswith("FileNotFoundError")
    assert EndorsementRequest.objects.count() == 0
    assert OutboxEvent.objects.filter(payload__type="batch.failed").count() == 1


def test_a_rows_history_starts_with_its_arrival_and_intake_decision_then_every_later_move(
    api, book, django_capture_on_commit_callbacks
):
    # given a file with a good row and the same row again (a duplicate)
    rows = [book.add_row(employee_code="E1"), book.add_row(employee_code="E1")]
    response = send(api, django_capture_on_commit_callbacks, csv_text(rows).encode())
    batch_id = response.json()["batch_id"]
    good, duplicate = EndorsementRequest.objects.order_by("row_number")
    # then each row's intake is one compact history record: arrival and decision
    assert sorted(EndorsementTransition.objects.values_list("endorsement_id", "from_state", "to_state")) == [
        (good.pk, "", "VALIDATED"),
        (duplicate.pk, "", "REJECTED"),
    ]
    # when ops cancel the good one
    endorsement_transition(endorsement=good, to_state="CANCELLED", actor="ops:1", reason="HR asked")
    # then its history, through the API, is arrival, decision, then the cancellation
    history = api.get(f"/api/v1/endorsements/{good.tracking_id}").json()["transitions"]
    assert [(s["from_state"], s["to_state"], s["actor"], s["reason"]) for s in history] == [
        ("", "RECEIVED", f"batch:{batch_id}", ""),
        ("RECEIVED", "VALIDATED", "system:validation", ""),
        ("VALIDATED", "CANCELLED", "ops:1", "HR asked"),
    ]
    assert history[0]["at"] == history[1]["at"] <= history[2]["at"]
    rejected = api.get(f"/api/v1/endorsements/{duplicate.tracking_id}").json()["transitions"]
    assert [(s["to_state"], s["reason"]) for s in rejected] == [("RECEIVED", ""), ("REJECTED", "duplicate")]


def test_a_chunk_is_stored_with_the_same_statements_whatever_its_size(
    api, book, django_capture_on_commit_callbacks
):
    """Rows go in by COPY, decided, with set-based lookups: 5 rows or 60 (with bad ones among
    them) cost the same statements; one INSERT or lookup per row would grow with the file."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def statements(count: int) -> int:
        rows = [book.add_row(employee_code=f"S{count}-{n}") for n in range(count)]
        rows[1]["plan_code"] = "PLATINUM"  # rejected by a rule: stored REJECTED, with a row error
        rows[2]["date_of_birth"] = "1990-02-30"  # rejected by its format: a row error only
        with CaptureQueriesContext(connection) as captured:
            response = send(api, django_capture_on_commit_callbacks, csv_text(rows).encode())
        batch = EndorsementBatch.objects.get(pk=response.json()["batch_id"])
        assert (batch.state, batch.accepted_count, batch.rejected_count) == ("COMPLETED", count - 2, 2)
        return len(captured)

    assert statements(5) == statements(60)
    assert EndorsementRequest.objects.filter(state="VALIDATED").count() == 3 + 58
