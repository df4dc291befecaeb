"""Batch processing: a file, from upload to every row decided.

`batch_submit` (API and portal) streams the upload to MEDIA_ROOT and checks it whole
(`intake.upload_check`: nothing is written for a file no row could survive), creates the
batch and enqueues processing on commit. `batch_process` (Celery) fans the file out to
`batch.partitions` tasks (`batch_partition_process`; several only for a large file), each
reading the whole file and taking the rows of its own employee codes
(`locks.intake_slot`), in chunks of CHUNK_ROWS. Each chunk is decided before it is stored:
its well-formed rows are validated together in memory (`assessment.endorsements_assess`,
the policy book loaded once per file) and inserted once, already VALIDATED / REJECTED /
SUPERSEDED, with COPY (`transitions.endorsements_create_decided`); its malformed rows
become `BatchRowError`s. One transaction per chunk holds the intake lock of the
partition's slots (so duplicate and supersede checks see every earlier decision) and
advances the partition's position, the counters, the progress and the heartbeat (a re-run
resumes after it). Memory stays bounded by a few chunks per task.

A worker can die mid-file (its messages then sit unacked until the broker's visibility
timeout) or lose its database connection: a transient database error is raised to the
task, which retries; `batches_stalled_resume` (a beat sweep) re-enqueues a batch or
partition whose heartbeat is older than BATCH_STALLED_AFTER_SECONDS. Both resume after the
last committed chunk, and the intake lock makes a second run of a partition skip what the
first stored, so every row is counted once.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ems.audit import audit_record
from ems.errors import DATABASE_TRANSIENT_ERRORS
from ems.identifiers import new_tracking_ids
from ems.tenancy import Caller
from endorsements import bulk_writes, intake
from endorsements.assessment import IntakeRow, endorsements_assess
from endorsements.errors import UploadFormatUnknown
from endorsements.events import batch_event, events_queue
from endorsements.locks import (
    batch_lock,
    employer_intake_lock,
    intake_slot,
    partition_slots,
)
from endorsements.models import (
    VALIDATION_ACTOR,
    EndorsementBatch,
    EndorsementRequest,
    EndorsementState,
    Source,
)
from endorsements.policy_book import PolicyBook, policy_book_load
from endorsements.read_ahead import read_ahead
from endorsements.services.batch_progress import batch_advance, batch_fail, row_errors_write
from endorsements.services.submission import assessment_close, employer_required, local_today, provisional_key
from endorsements.transitions import (
    endorsements_create_decided,
)
from endorsements.validation import content_hash, resubmits_split, row_parse

log = structlog.get_logger(__name__)


CHUNK_ROWS = settings.INTAKE_CHUNK_ROWS


READ_AHEAD = 2


# A file expected to hold at least this many rows is read by INTAKE_PARTITIONS tasks.
PARTITION_MIN_ROWS = settings.INTAKE_PARTITION_MIN_ROWS


@dataclass(frozen=True, slots=True)
class StagedUpload:
    """A stored, whole-file-checked upload that no batch names yet (see batch_stage)."""

    stored: intake.StoredUpload
    file_name: str
    file_format: str
    rows_expected: int

    def discard(self) -> None:
        intake.upload_discard(self.stored)


def batch_submit(*, caller: Caller, upload, file_name: str, file_format: str) -> EndorsementBatch:
    """Store and check an uploaded file, create its batch and enqueue processing on commit.

    Raises UploadTooLarge (413) or an UploadError (422) — with nothing written — for a
    file that is too big, empty, binary, UTF-16 without a BOM, has a bad header, no rows,
    too many rows, or (JSON) is not an array of objects.
    """
    staged = batch_stage(caller=caller, upload=upload, file_name=file_name, file_format=file_format)
    return batch_create(caller=caller, staged=staged)


def batch_stage(*, caller: Caller, upload, file_name: str, file_format: str) -> StagedUpload:
    """The file part of `batch_submit`, with no database work: copy the upload to MEDIA_ROOT
    and check it whole. Kept out of any transaction (the API's idempotent POST runs it
    before its own): copying and checking a large file must not hold a transaction open,
    nor SQLite's one write lock."""
    employer_id = employer_required(caller)
    file_format = (file_format or "").upper()
    if file_format not in EndorsementBatch.Format.values:
        raise UploadFormatUnknown()
    stored = intake.upload_store(upload=upload, employer_id=employer_id, file_format=file_format)
    try:
        rows_expected = intake.upload_check(stored=stored, file_format=file_format)
    except BaseException:
        intake.upload_discard(stored)
        raise
    return StagedUpload(
        stored=stored, file_name=(file_name or "")[:255], file_format=file_format, rows_expected=rows_expected
    )


def batch_create(*, caller: Caller, staged: StagedUpload) -> EndorsementBatch:
    """The batch of a staged upload, its event and audit record; processing starts on commit.
    The file is discarded if this fails."""
    employer_id = employer_required(caller)
    stored = staged.stored
    try:
        source = {"client": Source.API, "staff": Source.ADMIN}.get(caller.kind, Source.CSV)
        with transaction.atomic():
            batch = EndorsementBatch.objects.create(
                employer_id=employer_id,
                uploaded_by_id=caller.user_id,
                api_client_id=caller.api_client_id,
                source=source,
                file_name=staged.file_name,
                file_format=staged.file_format,
                file_path=stored.relative_path,
                file_sha256=stored.sha256,
                file_bytes=stored.size,
                rows_expected=staged.rows_expected,
            )
            events_queue(
                [
                    batch_event(
                        batch=batch,
                        event_type="batch.received",
                        data={"batch_id": batch.pk, "file_name": batch.file_name, "bytes": stored.size},
                    )
                ]
            )
            audit_record(
                actor=caller.principal,
                action="batch.received",
                object_type="endorsement_batch",
                object_id=batch.pk,
                employer_id=employer_id,
                after={"file_name": batch.file_name, "sha256": stored.sha256, "bytes": stored.size},
            )
            transaction.on_commit(partial(_enqueue_processing, batch.pk))
    except BaseException:
        staged.discard()
        raise
    return batch


def _enqueue_processing(batch_id: int) -> None:
    from endorsements.tasks import batch_process_task

    batch_process_task.delay(batch_id)


def _enqueue_partition(batch_id: int, partition: int) -> None:
    from endorsements.tasks import batch_partition_task

    batch_partition_task.delay(batch_id, partition)


def batch_process(*, batch_id: int) -> None:
    """Start reading a stored file: one task per partition (safe to run again)."""
    with transaction.atomic():
        batch = batch_lock(batch_id)
        if batch.state not in (EndorsementBatch.State.RECEIVED, EndorsementBatch.State.PROCESSING):
            return
        if batch.state == EndorsementBatch.State.RECEIVED:
            # (settings refuse an INTAKE_PARTITIONS that does not divide the 16 intake slots)
            partitions = settings.INTAKE_PARTITIONS if batch.rows_expected >= PARTITION_MIN_ROWS else 1
            batch.state = EndorsementBatch.State.PROCESSING
            batch.partitions = partitions
        waiting = [
            p for p in range(batch.partitions) if not batch.partition_positions.get(str(p), {}).get("done")
        ]
        _partitions_enqueue(batch, waiting)
        batch.save(update_fields=["state", "partitions", "partition_positions", "heartbeat_at"])


def _partitions_enqueue(batch: EndorsementBatch, partitions: list[int]) -> None:
    """Queue these partitions' tasks on commit; their heartbeats start now."""
    now = timezone.now()
    batch.heartbeat_at = now
    for partition in partitions:
        key = str(partition)
        batch.partition_positions[key] = {**batch.partition_positions.get(key, {}), "at": now.isoformat()}
        transaction.on_commit(partial(_enqueue_partition, batch.pk, partition))


def batches_stalled_resume(*, stalled_after_seconds: float, limit: int = 100) -> dict[int, list[int]]:
    """Re-enqueue each batch (RECEIVED) or partition (PROCESSING, not done) with no progress
    for `stalled_after_seconds`, once: its heartbeat restarts, so the next sweep waits again.
    A batch being committed right now is skipped (it is alive). Returns {batch id:
    partitions resumed}, [] for a batch whose processing was started again."""
    cutoff = timezone.now() - timedelta(seconds=stalled_after_seconds)
    resumed: dict[int, list[int]] = {}
    with transaction.atomic():
        candidates = (
            EndorsementBatch.objects.select_for_update(no_key=True, skip_locked=True)
            .filter(
                state__in=[EndorsementBatch.State.RECEIVED, EndorsementBatch.State.PROCESSING],
                created_at__lt=cutoff,
            )
            .order_by("pk")[:limit]
        )
        for batch in candidates:
            if batch.state == EndorsementBatch.State.RECEIVED:
                if (batch.heartbeat_at or batch.created_at) >= cutoff:
                    continue  # resumed a moment ago
                batch.heartbeat_at = timezone.now()
                batch.save(update_fields=["heartbeat_at"])
                transaction.on_commit(partial(_enqueue_processing, batch.pk))
                resumed[batch.pk] = []
                continue
            stalled = [
                p
                for p in range(batch.partitions)
                if not (position := batch.partition_positions.get(str(p), {})).get("done")
                and _heartbeat(position, batch) < cutoff
            ]
            if stalled:
                _partitions_enqueue(batch, stalled)
                batch.save(update_fields=["partition_positions", "heartbeat_at"])
                resumed[batch.pk] = stalled
    for batch_id, partitions in resumed.items():
        log.warning("batch.resumed", batch_id=batch_id, partitions=partitions)
    return resumed


def _heartbeat(position: dict, batch: EndorsementBatch) -> datetime:
    if position.get("at"):
        return datetime.fromisoformat(position["at"])
    return batch.heartbeat_at or batch.created_at


def batch_partition_process(*, batch_id: int, partition: int) -> None:
    """Read a file for one partition; resumes after its committed chunks, ends the batch visibly."""
    batch = EndorsementBatch.objects.get(pk=batch_id)
    if batch.state != EndorsementBatch.State.PROCESSING:
        return
    try:
        _partition_read(batch, partition)
    except DATABASE_TRANSIENT_ERRORS:
        raise  # the task retries from the last committed chunk
    except Exception as error:  # noqa: BLE001 - any failure ends the batch visibly, never silently
        log.exception("batch.processing_failed", batch_id=batch_id, partition=partition)
        batch_fail(
            batch_id=batch_id, code="processing_error", reason=f"{type(error).__name__}: {error}"[:500]
        )


def _partition_read(batch: EndorsementBatch, partition: int) -> None:
    state = batch.partition_positions.get(str(partition), {})
    if state.get("done"):
        return
    path = intake.media_path(batch.file_path)
    read = intake.json_records if batch.file_format == "JSON" else intake.csv_records
    records = read(path, select=_partition_select(partition, batch.partitions))
    # The employer's policies, plans and rate card, read once for the file (a change to a rate
    # card during an upload applies from the next upload).
    book = policy_book_load(batch.employer_id)
    chunks = _chunks_prepared(records, start=state.get("position", 0), today=local_today())
    # The next chunk is read and checked in a thread while this one is decided and stored:
    # parsing overlaps the database's work, and at most READ_AHEAD chunks wait in memory.
    for prepared in read_ahead(chunks, READ_AHEAD):
        if not _chunk_store(batch, prepared, book=book, partition=partition):
            return  # the batch ended meanwhile (another partition failed it)


@dataclass(slots=True)
class _PreparedChunk:
    start: int  # the file's records passed before this chunk
    end: int  # ... and after it (records of other partitions in between are passed too)
    good: list[tuple[int, dict, str, str]]  # (row number, values, content hash, resubmits)
    bad: list[tuple[int, list, dict]]  # (row number, issues, raw cells)
    last: bool = False  # the end of the file


def _partition_select(partition: int, partitions: int):
    """Which file records a partition takes: by the employee code's intake slot (see
    locks.py), or for a record without one (ragged, not an object), by row number."""
    if partitions == 1:
        return None

    def select(row_number: int, code) -> bool:
        if code is None:
            return row_number % partitions == partition
        return intake_slot(str(code).strip()) % partitions == partition

    return select


def _chunks_prepared(records: Iterable, *, start: int, today: date) -> Iterator[_PreparedChunk]:
    """A partition's records in chunks; `records` yields None for another partition's."""
    chunk: list = []
    position = total = start
    for index, record in enumerate(records):
        if index < start:
            continue
        total = index + 1
        if record is None:
            continue  # another partition's row, declined by the reader
        chunk.append(record)
        if len(chunk) >= CHUNK_ROWS:
            yield _chunk_prepare(chunk, start=position, end=total, today=today)
            position = total
            chunk = []
    prepared = _chunk_prepare(chunk, start=position, end=total, today=today)
    prepared.last = True
    yield prepared


def _chunk_prepare(chunk: list, *, start: int, end: int, today: date) -> _PreparedChunk:
    """Schema and format checks of a chunk's rows (no database)."""
    good: list[tuple[int, dict, str, str]] = []
    bad: list[tuple[int, list, dict]] = []
    for row_number, cells, issues, raw in chunk:
        if cells is not None and not issues:
            cells, resubmits = resubmits_split(cells)
            values, issues = row_parse(cells, today=today)
            if not issues:
                good.append((row_number, values, content_hash(values), resubmits))
                continue
        bad.append((row_number, issues, raw))
    return _PreparedChunk(start=start, end=end, good=good, bad=bad)


def _chunk_store(
    batch: EndorsementBatch, prepared: _PreparedChunk, *, book: PolicyBook, partition: int = 0
) -> bool:
    """Decide a checked chunk and store it, with the batch's counters, in one transaction.

    Holds the intake lock of the partition's slots, so a second run of the same partition
    (a redelivered task) waits, then sees the chunk stored and skips it. False when the
    batch is no longer PROCESSING (nothing is stored then).
    """
    key = str(partition)
    with transaction.atomic():
        employer_intake_lock(batch.employer_id, partition_slots(partition, batch.partitions))
        state, positions = EndorsementBatch.objects.values_list("state", "partition_positions").get(
            pk=batch.pk
        )
        passed = positions.get(key, {})
        if state != EndorsementBatch.State.PROCESSING:
            return False
        if passed.get("done") or passed.get("position", 0) > prepared.start:
            return True  # stored by an earlier run of this partition
        counts = _rows_decide_store(batch, prepared.good, book=book, today=local_today())
        row_errors_write(
            batch.pk,
            (
                (row_number, issue.as_dict(), raw, "")
                for row_number, issues, raw in prepared.bad
                for issue in issues
            ),
        )
        locked = batch_lock(batch.pk)
        locked.rows_parsed += len(prepared.good) + len(prepared.bad)
        locked.heartbeat_at = timezone.now()
        locked.partition_positions[key] = {
            "position": prepared.end,
            "done": prepared.last,
            "at": locked.heartbeat_at.isoformat(),
        }
        fields = ["rows_parsed", "partition_positions", "heartbeat_at"]
        if all(locked.partition_positions.get(str(p), {}).get("done") for p in range(locked.partitions)):
            locked.rows_total = prepared.end
            locked.parsed_at = timezone.now()
            fields += ["rows_total", "parsed_at"]
        locked.save(update_fields=fields)
        counts["rejected"] += len(prepared.bad)
        batch_advance(batch.pk, batch=locked, **counts)
    return True


def _rows_decide_store(
    batch: EndorsementBatch, good: list[tuple[int, dict, str, str]], *, book: PolicyBook, today: date
) -> dict[str, int]:
    """Validate a chunk's well-formed rows together, then store each once, in its decided state."""
    if not good:
        return {"accepted": 0, "rejected": 0, "duplicates": 0}
    employer_id = batch.employer_id
    ids = bulk_writes.ids_reserve(EndorsementRequest, len(good))
    rows = [
        IntakeRow(
            pk=pk,
            tracking_id=tracking_id,
            employer_id=employer_id,
            policy_id=policy.pk if (policy := book.policies.get(values["policy_number"])) else None,
            type=values["action"],
            member_data=values,
            content_hash=digest,
            member_key=provisional_key(values),
            batch_id=batch.pk,
            row_number=row_number,
            resubmits=resubmits,
        )
        for pk, tracking_id, (row_number, values, digest, resubmits) in zip(
            ids, new_tracking_ids(len(good)), good, strict=True
        )
    ]
    assessment = endorsements_assess(employer_id=employer_id, endorsements=rows, today=today, book=book)
    received_by = f"batch:{batch.pk}"
    linked_rows, linked_decisions = _linked_rows(assessment.linked)
    endorsements_create_decided(
        rows=rows + linked_rows, decisions={**assessment.decisions, **linked_decisions}, source=Source.CSV
    )
    # One event and one audit record for the chunk's arrival; each row's own event is its decision.
    events_queue(
        [
            batch_event(
                batch=batch,
                event_type="batch.rows_received",
                data={
                    "batch_id": batch.pk,
                    "count": len(rows),
                    "first_tracking_id": rows[0].tracking_id,
                    "last_tracking_id": rows[-1].tracking_id,
                    "first_row": rows[0].row_number,
                    "last_row": rows[-1].row_number,
                },
            )
        ]
    )
    audit_record(
        actor=received_by,
        action="endorsement.received",
        object_type="endorsement_group",
        object_id=f"{rows[0].tracking_id}..{rows[-1].tracking_id}",
        employer_id=employer_id,
        after={"state": EndorsementState.RECEIVED, "batch_id": batch.pk, "count": len(rows)},
    )
    return assessment_close(
        employer_id=employer_id,
        requests=rows,
        assessment=assessment,
        actor=VALIDATION_ACTOR,
        batch_id=batch.pk,
    )


def _linked_rows(linked: list) -> tuple[list[IntakeRow], dict]:
    """The dependants' DELETEs the chunk's employee deletions call for (`linked_deletes.py`),
    as rows of the employee's batch and row, stored with the chunk (not counted as its rows)."""
    if not linked:
        return [], {}
    ids = bulk_writes.ids_reserve(EndorsementRequest, len(linked))
    rows, decisions = [], {}
    for pk, tracking_id, item in zip(ids, new_tracking_ids(len(linked)), linked, strict=True):
        employee = item.employee_request
        rows.append(
            IntakeRow(
                pk=pk,
                tracking_id=tracking_id,
                employer_id=employee.employer_id,
                policy_id=employee.policy_id,
                type=item.member_data["action"],
                member_data=item.member_data,
                content_hash=item.content_hash,
                member_key=item.member_key,
                batch_id=employee.batch_id,
                row_number=employee.row_number,
            )
        )
        decisions[pk] = item.decision
    return rows, decisions
