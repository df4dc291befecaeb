"""A file of a few thousand rows for the fault tests (a dead worker, a dropped connection),
uploaded with Celery's eager mode off so a real worker reads it, and the check that every
row was counted exactly once."""

import io
import time

from django.db.models import Count

from ems.tenancy import Caller
from endorsements import services
from endorsements.columns import COLUMNS
from endorsements.models import BatchRowError, EndorsementBatch, EndorsementRequest
from tests.endorsements.test_batch_submit import csv_text
from tests.workers import tasks_queued

ROWS = 3000
BAD_EVERY = 10  # every tenth row has a gender the file format refuses

# The worker reads the file in chunks of 250 rows, in two partitions.
WORKER_ENVIRONMENT = {
    "INTAKE_CHUNK_ROWS": "250",
    "INTAKE_PARTITION_MIN_ROWS": "1000",
    "INTAKE_PARTITIONS": "2",
}


def file_upload(book) -> EndorsementBatch:
    rows = [
        book.add_row(employee_code=f"E{n:05}", gender="Q" if n % BAD_EVERY == 0 else "F") for n in range(ROWS)
    ]
    caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")
    with tasks_queued():
        return services.batch_submit(
            caller=caller,
            upload=io.BytesIO(csv_text(rows, header=list(COLUMNS)).encode()),
            file_name="faults.csv",
            file_format="CSV",
        )


def batch_wait(batch_id: int, until, *, timeout: float, worker) -> EndorsementBatch:
    """Poll the batch until `until(batch)`; fails with the worker's log after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        batch = EndorsementBatch.objects.get(pk=batch_id)
        if until(batch):
            return batch
        if batch.state == "FAILED" or time.monotonic() > deadline:
            where = f"{batch.state} {batch.rows_parsed} {batch.failure_reason}"
            raise AssertionError(f"batch {batch_id} at {where}:\n{worker.logs()}")
        time.sleep(0.05)


def assert_every_row_counted_once(batch_id: int) -> None:
    batch = EndorsementBatch.objects.get(pk=batch_id)
    bad = ROWS // BAD_EVERY
    assert (batch.state, batch.rows_total, batch.rows_parsed, batch.progress) == (
        "COMPLETED",
        ROWS,
        ROWS,
        100,
    )
    assert (batch.accepted_count, batch.rejected_count, batch.duplicate_count) == (ROWS - bad, bad, 0)
    stored = list(EndorsementRequest.objects.filter(batch_id=batch_id).values_list("row_number", flat=True))
    refused = list(
        BatchRowError.objects.filter(batch_id=batch_id)
        .values("row_number")
        .annotate(errors=Count("id"))
        .values_list("row_number", "errors")
    )
    assert len(stored) == len(set(stored)) == ROWS - bad
    assert sorted(errors for _, errors in refused) == [1] * bad
    # rows are numbered from 2 (the header is line 1)
    assert sorted(stored + [row for row, _ in refused]) == list(range(2, ROWS + 2))
    # every good row was validated (the pipeline's sweeps may have moved it on since)
    assert not EndorsementRequest.objects.filter(batch_id=batch_id, validated_at__isnull=True).exists()
