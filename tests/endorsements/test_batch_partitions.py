"""A large file is read by several tasks at once (`services.batch_partition_process`).

Each partition decides the rows of its own employee codes; every rule that links two
rows (duplicates, supersede, a dependant's employee) stays inside one employee code, so
the result is the one a single reader gives. Deciding is serialised per employer and
intake slot (`locks.employer_intake_lock`), which the concurrency test below attacks with
two real database connections deciding the same content at once.
"""

import io
import json
import threading

import pytest
from django.db import connection

from ems.tenancy import Caller
from endorsements import services
from endorsements.columns import COLUMNS
from endorsements.locks import intake_slot
from endorsements.models import EndorsementBatch, EndorsementRequest
from endorsements.policy_book import policy_book_load
from endorsements.services import batches as batch_services
from tests.endorsements.test_batch_submit import csv_text

pytestmark = pytest.mark.django_db


def _codes_in_both_partitions(count: int) -> list[str]:
    codes = [f"E{n}" for n in range(count)]
    assert {intake_slot(code) % 2 for code in codes} == {0, 1}
    return codes


def _joiners(book) -> list[dict]:
    codes = _codes_in_both_partitions(8)
    return [book.add_row(employee_code=code, email=f"{code.lower()}@example.com") for code in codes]


def _file(book) -> list[dict]:
    rows = _joiners(book)
    codes = [row["employee_code"] for row in rows]
    rows.append(dict(rows[2]))  # an exact duplicate of row 4
    rows.append({**rows[5], "sum_insured": "300000"})  # a newer request for the member of row 7
    rows.append(book.add_row(employee_code=codes[1], date_of_birth="1990-02-31"))  # not a date
    spouse = book.add_row(
        employee_code=codes[6],
        relation="SPOUSE",
        first_name="Ravi",
        event_date=book.today.isoformat(),
        date_of_joining=None,
        email=None,
        phone=None,
    )
    rows.append(spouse)  # the employee's own addition is in this file
    return rows


def _submit(
    book,
    settings,
    tmp_path,
    monkeypatch,
    *,
    partitions: int,
    rows: list[dict] | None = None,
    file_format="CSV",
):
    settings.MEDIA_ROOT = tmp_path
    settings.INTAKE_PARTITIONS = partitions
    monkeypatch.setattr(batch_services, "PARTITION_MIN_ROWS", 1)
    monkeypatch.setattr(batch_services, "CHUNK_ROWS", 2)
    caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")
    rows = rows or _file(book)
    content = json.dumps(rows) if file_format == "JSON" else csv_text(rows, header=list(COLUMNS))
    return services.batch_submit(
        caller=caller,
        upload=io.BytesIO(content.encode()),
        file_name=f"big.{file_format.lower()}",
        file_format=file_format,
    )


def _outcome(batch_id: int) -> dict:
    return dict(
        EndorsementRequest.objects.filter(batch_id=batch_id).values_list("row_number", "state")
    ), EndorsementBatch.objects.values_list(
        "state", "rows_total", "accepted_count", "rejected_count", "duplicate_count", "progress"
    ).get(pk=batch_id)


@pytest.mark.parametrize(("partitions", "file_format"), [(1, "CSV"), (2, "CSV"), (4, "CSV"), (2, "JSON")])
def test_partitions_decide_a_file_as_one_reader_would(
    book, settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks, partitions, file_format
):
    with django_capture_on_commit_callbacks(execute=True):
        batch = _submit(book, settings, tmp_path, monkeypatch, partitions=partitions, file_format=file_format)
    states, counts = _outcome(batch.pk)
    if file_format == "JSON":  # JSON elements count from 1, CSV data rows from 2
        states = {row + 1: state for row, state in states.items()}
    assert EndorsementBatch.objects.get(pk=batch.pk).partitions == partitions
    assert states == {
        2: "VALIDATED",
        3: "VALIDATED",
        4: "VALIDATED",
        5: "VALIDATED",
        6: "VALIDATED",
        7: "SUPERSEDED",  # by row 11
        8: "VALIDATED",
        9: "VALIDATED",
        10: "REJECTED",  # duplicate of row 4
        11: "VALIDATED",
        13: "VALIDATED",  # the spouse of row 8's employee
    }
    # row 12 (the impossible date) never became a request: it is a row error
    assert counts == ("COMPLETED", 12, 10, 1, 1, 100)
    shift = 1 if file_format == "JSON" else 0
    duplicate = EndorsementRequest.objects.get(batch_id=batch.pk, row_number=10 - shift)
    original = EndorsementRequest.objects.get(batch_id=batch.pk, row_number=4 - shift)
    assert duplicate.rejection_reasons[0]["original_tracking_id"] == original.tracking_id
    newer = EndorsementRequest.objects.get(batch_id=batch.pk, row_number=11 - shift)
    older = EndorsementRequest.objects.get(batch_id=batch.pk, row_number=7 - shift)
    assert older.superseded_by_id == newer.pk


@pytest.mark.parametrize("file_format", ["CSV", "JSON"])
def test_characters_that_are_not_text_reject_only_their_rows_in_a_partitioned_file(
    book, settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks, file_format
):
    # a lone surrogate in the employee code picks the row's partition, then rejects it
    rows = [
        book.add_row(employee_code="E1"),
        book.add_row(employee_code="E2\ud800"),
        book.add_row(employee_code="E3", first_name="Ana\udc00"),
        book.add_row(employee_code="E4"),
    ]
    if file_format == "CSV":
        # as a broken UTF-16 file would read: the bytes written with surrogatepass
        settings.MEDIA_ROOT = tmp_path
        settings.INTAKE_PARTITIONS = 2
        monkeypatch.setattr(batch_services, "PARTITION_MIN_ROWS", 1)
        content = b"\xff\xfe" + csv_text(rows, header=list(COLUMNS)).encode("utf-16-le", "surrogatepass")
        caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")
        with django_capture_on_commit_callbacks(execute=True):
            batch = services.batch_submit(
                caller=caller, upload=io.BytesIO(content), file_name="big.csv", file_format="CSV"
            )
    else:
        with django_capture_on_commit_callbacks(execute=True):
            batch = _submit(
                book, settings, tmp_path, monkeypatch, partitions=2, rows=rows, file_format="JSON"
            )
    batch.refresh_from_db()
    assert (batch.partitions, batch.state, batch.accepted_count, batch.rejected_count) == (
        2,
        "COMPLETED",
        2,
        2,
    )
    errors = sorted(batch.row_errors.values_list("column", "code"))
    assert errors == [("employee_code", "encoding_invalid"), ("first_name", "encoding_invalid")]


def test_a_partition_run_twice_stores_its_rows_once(
    book, settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        batch = _submit(book, settings, tmp_path, monkeypatch, partitions=2)
    before = _outcome(batch.pk)
    # a redelivered task message (the batch is complete, so nothing is left to do)
    services.batch_partition_process(batch_id=batch.pk, partition=1)
    EndorsementBatch.objects.filter(pk=batch.pk).update(state="PROCESSING")
    services.batch_partition_process(batch_id=batch.pk, partition=1)
    assert _outcome(batch.pk)[0] == before[0]
    assert EndorsementRequest.objects.filter(batch_id=batch.pk).count() == len(before[0])


@pytest.mark.django_db(transaction=True)
def test_two_files_with_the_same_rows_decided_at_once_accept_each_row_once(
    book, settings, tmp_path, monkeypatch
):
    # given two uploads of the same file, stored but not yet read
    monkeypatch.setattr(batch_services, "_enqueue_processing", lambda batch_id: None)
    monkeypatch.setattr(batch_services, "_enqueue_partition", lambda batch_id, partition: None)
    rows = _joiners(book)
    batches = [_submit(book, settings, tmp_path, monkeypatch, partitions=1, rows=rows) for _ in range(2)]
    for batch in batches:
        services.batch_process(batch_id=batch.pk)
    # when two workers read them at the same moment, each on its own connection
    start = threading.Barrier(2)
    failures = []

    def read(batch_id):
        try:
            start.wait()
            services.batch_partition_process(batch_id=batch_id, partition=0)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=read, args=(b.pk,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # then every content is live once: one file's rows were decided first, the other's repeat them
    assert failures == []
    hashes = list(EndorsementRequest.objects.filter(state="VALIDATED").values_list("content_hash", flat=True))
    assert len(hashes) == len(set(hashes)) == 8
    counts = sorted(
        EndorsementBatch.objects.filter(pk__in=[b.pk for b in batches]).values_list(
            "accepted_count", "duplicate_count"
        )
    )
    assert counts == [(0, 8), (8, 0)]


def test_a_partition_stops_reading_when_the_batch_has_failed(
    book, settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(batch_services, "_enqueue_partition", lambda batch_id, partition: None)
    with django_capture_on_commit_callbacks(execute=True):
        batch = _submit(book, settings, tmp_path, monkeypatch, partitions=2)
    # another partition failed the batch before this one read anything
    services.batch_fail(batch_id=batch.pk, code="processing_error", reason="partition 0 crashed")
    services.batch_partition_process(batch_id=batch.pk, partition=1)
    batch.refresh_from_db()
    assert (batch.state, batch.rows_parsed) == ("FAILED", 0)
    assert [position.get("position") for position in batch.partition_positions.values()] == [None, None]
    assert not EndorsementRequest.objects.filter(batch_id=batch.pk).exists()
    # and a chunk handed to it directly is not stored either
    chunk = batch_services._chunk_prepare([(2, {"action": "ADD"}, [], {})], start=0, end=1, today=book.today)
    policies = policy_book_load(batch.employer_id)
    assert batch_services._chunk_store(batch, chunk, book=policies, partition=1) is False
