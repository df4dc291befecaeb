"""Writes for endorsement intake and validation.

How a request enters EMS
- One at a time (`endorsement_submit`, API and admin): the body is checked
  (`validation.row_parse`; a bad body is refused with 422 and nothing is written), then
  the request is stored as RECEIVED with its tracking id and content hash, its first
  history record, an `endorsement.received` event and an audit record, in one
  transaction; validation is enqueued on commit.
- As a file (`batch_submit`, API and portal): the upload is streamed to MEDIA_ROOT and
  checked whole (`intake.upload_check`: nothing is written for a file no row could
  survive), the batch is created and processing is enqueued on commit.
  `batch_process` (Celery) fans the file out to `batch.partitions` tasks
  (`batch_partition_process`; several only for a large file), each reading the whole
  file and taking the rows of its own employee codes (`locks.intake_slot`), in chunks of
  CHUNK_ROWS. Each chunk is decided before it is stored: its well-formed rows are
  validated together in memory (`validation.endorsements_assess`, lookups loaded once
  per chunk) and inserted once, already VALIDATED / REJECTED / SUPERSEDED, with COPY
  (`transitions.endorsements_create_decided`); its malformed rows become
  `BatchRowError`s. One transaction per chunk holds the intake lock of the partition's
  slots (so duplicate and supersede checks see every earlier decision) and advances the
  partition's position, the counters and the progress (a re-run resumes after it).
  Memory stays bounded by a few chunks per task.
- Validation of stored requests (`endorsements_validate`: the API's single requests)
  takes the intake lock of their codes' slots, locks the RECEIVED rows, assesses them together and
  applies the decisions through `transitions.endorsement_transition`: VALIDATED with a
  premium, REJECTED with reasons, SUPERSEDED. In both paths older unsent requests that a
  new one replaces are superseded and their hold released, and the batch's progress is
  pushed to the employer's websocket after commit.

Batch counts: `accepted` (validated, including rows later replaced by a newer row),
`rejected` (invalid rows) and `duplicates` (rejected as a duplicate) add up to
`rows_total` when the batch is COMPLETED.
"""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import partial

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ems.audit import audit_document, audit_record
from ems.errors import PermissionDenied
from ems.identifiers import new_tracking_ids
from ems.notifications import notify_employer
from ems.outbox import outbox_write
from ems.row_insert import row_insert_statement
from ems.tenancy import Caller
from endorsements import bulk_writes, intake
from endorsements.errors import EndorsementInvalid, UploadFormatUnknown
from endorsements.events import batch_event, events_queue, transition_event
from endorsements.locks import (
    batch_lock,
    employer_intake_lock,
    endorsements_lock,
    endorsements_lock_received,
    intake_slot,
    partition_slots,
)
from endorsements.models import (
    VALIDATION_ACTOR,
    BatchRowError,
    EndorsementBatch,
    EndorsementRequest,
    EndorsementState,
    EndorsementTransition,
    Policy,
    Source,
)
from endorsements.read_ahead import read_ahead
from endorsements.transitions import UNSENT_STATES, endorsement_transition, endorsements_create_decided
from endorsements.validation import (
    COLUMNS,
    IntakeRow,
    PolicyBook,
    content_hash,
    endorsements_assess,
    member_key,
    policy_book_load,
    row_parse,
    text_printable,
)

log = structlog.get_logger(__name__)

CHUNK_ROWS = 5_000
READ_AHEAD = 2
# A file expected to hold at least this many rows is read by INTAKE_PARTITIONS tasks.
PARTITION_MIN_ROWS = 20_000


def _employer_required(caller: Caller) -> int:
    if caller.employer_id is None:
        raise PermissionDenied(
            "Only a caller acting for one employer (its HR users, its API clients, or staff in the admin "
            "choosing it) can submit endorsements."
        )
    return caller.employer_id


def _today() -> date:
    return timezone.localdate()


# --- single endorsement --------------------------------------------------------------------


def endorsement_submit(
    *, caller: Caller, data: dict, idempotency_key: str = "", source: str = Source.API
) -> EndorsementRequest:
    """Store one endorsement as RECEIVED and enqueue its validation on commit."""
    employer_id = _employer_required(caller)
    if not isinstance(data, dict):
        raise EndorsementInvalid("The body must be a JSON object of column: value.")
    cells = {str(key).strip().lower(): value for key, value in data.items()}
    values, issues = row_parse(cells, today=_today())
    if issues:
        raise EndorsementInvalid(details=[issue.as_detail() for issue in issues])
    # No savepoint: under the API's idempotency transaction a failure rolls back all of it.
    with transaction.atomic(savepoint=False):
        request = EndorsementRequest(
            employer_id=employer_id,
            type=values["action"],
            member_data=values,
            effective_date=values["effective_date"],
            content_hash=content_hash(values),
            member_key=_provisional_key(values),
            idempotency_key=idempotency_key,
            source=source,
        )
        # The policy (looked up by number; none: validation rejects), the row, its
        # history record, its event and its audit record: one statement, one round trip.
        insert = row_insert_statement(
            request, computed={"policy_id": (_POLICY_BY_NUMBER_SQL, [employer_id, values["policy_number"]])}
        )
        returned = outbox_write(
            events=[
                transition_event(
                    tracking_id=request.tracking_id,
                    employer_id=employer_id,
                    endorsement_type=request.type,
                    from_state="",
                    to_state=EndorsementState.RECEIVED,
                )
            ],
            documents=[
                audit_document(
                    actor=caller.principal,
                    action="endorsement.received",
                    object_type="endorsement",
                    object_id=request.tracking_id,
                    employer_id=employer_id,
                    after={"state": EndorsementState.RECEIVED, "type": request.type, "source": source},
                )
            ],
            first=insert.statement,
            together_with=(
                _RECEIVED_TRANSITION_SQL,
                [EndorsementState.RECEIVED, caller.principal[:100], timezone.now()],
            ),
        )
        insert.finish(returned)
        transaction.on_commit(partial(_enqueue_validation, request.pk))
    request.effective_date = date.fromisoformat(values["effective_date"])
    return request


# The employer's policy with this number (case-insensitive); ordered by number alone:
# the model's ordering (employer code, number) is the same within one employer, without
# the join to the employer.
_POLICY_BY_NUMBER_SQL = (
    f"SELECT id FROM {Policy._meta.db_table} WHERE employer_id = %s AND UPPER(number) = UPPER(%s)"
    " ORDER BY number, id LIMIT 1"
)

_RECEIVED_TRANSITION_SQL = (
    f"INSERT INTO {EndorsementTransition._meta.db_table}"
    " (endorsement_id, from_state, to_state, actor, reason, at) SELECT id, '', %s, %s, '', %s FROM first_row"
)


def _enqueue_validation(endorsement_id: int) -> None:
    from endorsements.validation_queue import validation_request

    validation_request(endorsement_id)


def _provisional_key(values: dict) -> str:
    """The member key known before validation (validation replaces it with the resolved one)."""
    return member_key(
        employee_code=values["employee_code"],
        relation=values["relation"],
        first_name=values.get("first_name", ""),
    )


# --- validation ------------------------------------------------------------------------------


def endorsements_validate(*, endorsement_ids: Iterable[int], actor: str = VALIDATION_ACTOR) -> dict[str, int]:
    """Validate RECEIVED endorsements (others are skipped: safe to run twice)."""
    counts = {"accepted": 0, "rejected": 0, "duplicates": 0}
    ids = list(endorsement_ids)
    with transaction.atomic():
        slots: dict[int, set[int]] = {}
        for employer_id, data in (
            EndorsementRequest.objects.filter(pk__in=ids).order_by().values_list("employer_id", "member_data")
        ):
            slots.setdefault(employer_id, set()).add(intake_slot(str(data.get("employee_code", ""))))
        for employer_id in sorted(slots):
            employer_intake_lock(employer_id, slots[employer_id])
        requests = endorsements_lock_received(ids=ids)
        groups: dict[tuple[int, int | None], list[EndorsementRequest]] = {}
        for request in requests:
            groups.setdefault((request.employer_id, request.batch_id), []).append(request)
        for (employer_id, batch_id), group in groups.items():
            group_counts = _decisions_apply(
                employer_id=employer_id, requests=group, actor=actor, batch_id=batch_id
            )
            if batch_id is not None:
                _batch_advance(batch_id, **group_counts)
            for name, value in group_counts.items():
                counts[name] += value
    return counts


def _decisions_apply(
    *, employer_id: int, requests: list[EndorsementRequest], actor: str, batch_id: int | None = None
) -> dict[str, int]:
    """Decide stored RECEIVED requests and move each to its decided state."""
    assessment = endorsements_assess(employer_id=employer_id, endorsements=requests, today=_today())
    by_id = {r.pk: r for r in requests}
    groups: dict[str, list[EndorsementRequest]] = {"VALIDATED": [], "REJECTED": [], "SUPERSEDED": []}
    for pk, decision in assessment.decisions.items():
        groups[decision.state].append(by_id[pk])
    changes = {pk: decision.changes for pk, decision in assessment.decisions.items()}
    for state in ("VALIDATED", "REJECTED", "SUPERSEDED"):
        if groups[state]:
            endorsement_transition(
                endorsements=groups[state],
                to_state=state,
                actor=actor,
                changes={r.pk: changes[r.pk] for r in groups[state]},
            )
    return _assessment_close(
        employer_id=employer_id, requests=requests, assessment=assessment, actor=actor, batch_id=batch_id
    )


def _assessment_close(*, employer_id: int, requests, assessment, actor: str, batch_id: int | None) -> dict:
    """After the decisions are stored: supersede older requests, write row errors, count."""
    for older, newer_id in assessment.superseded_older:
        endorsement_supersede(endorsement=older, newer_id=newer_id, actor=actor)
    decisions = assessment.decisions
    states = [d.state for d in decisions.values()]
    duplicates = sum(1 for d in decisions.values() if d.state == "REJECTED" and d.duplicate)
    rejected = states.count("REJECTED") - duplicates
    if batch_id is not None and rejected + duplicates:
        _row_errors_write(
            batch_id,
            (
                (r.row_number, reason, r.member_data, r.tracking_id)
                for r in requests
                if decisions[r.pk].state == "REJECTED"
                for reason in decisions[r.pk].changes["rejection_reasons"]
            ),
        )
    log.info(
        "endorsement.validated_group",
        employer_id=employer_id,
        batch_id=batch_id,
        validated=states.count("VALIDATED"),
        rejected=rejected,
        duplicates=duplicates,
        superseded=states.count("SUPERSEDED") + len(assessment.superseded_older),
    )
    return {
        "accepted": states.count("VALIDATED") + states.count("SUPERSEDED"),
        "rejected": rejected,
        "duplicates": duplicates,
    }


def endorsement_supersede(*, endorsement: EndorsementRequest, newer_id: int, actor: str) -> bool:
    """Replace an older unsent request by a newer one; release its hold. False if it moved on."""
    with transaction.atomic():
        state = endorsements_lock([endorsement.pk]).get(endorsement.pk)
        if state not in UNSENT_STATES:
            return False
        newer = EndorsementRequest.objects.only("tracking_id").get(pk=newer_id)
        if state in (EndorsementState.FUND_LOCKED, EndorsementState.ON_HOLD_FUNDS):
            _hold_release(endorsement, reason=f"superseded by {newer.tracking_id}")
        endorsement.state = state
        endorsement_transition(
            endorsement=endorsement,
            to_state=EndorsementState.SUPERSEDED,
            actor=actor,
            reason=f"superseded by {newer.tracking_id}",
            changes={endorsement.pk: {"superseded_by_id": newer_id}},
        )
    return True


def _hold_release(endorsement: EndorsementRequest, *, reason: str) -> None:
    from ledger.models import Account
    from ledger.services import hold_release_by_reference

    policy = Policy.objects.only("insurer_id").get(pk=endorsement.policy_id)
    account_id = (
        Account.objects.filter(employer_id=endorsement.employer_id, insurer_id=policy.insurer_id)
        .values_list("pk", flat=True)
        .first()
    )
    if account_id is not None:
        hold_release_by_reference(account_id=account_id, reference=endorsement.tracking_id, reason=reason)


# --- batch files -------------------------------------------------------------------------------


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
    employer_id = _employer_required(caller)
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
    employer_id = _employer_required(caller)
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
            batch.save(update_fields=["state", "partitions"])
        for partition in range(batch.partitions):
            if not batch.partition_positions.get(str(partition), {}).get("done"):
                transaction.on_commit(partial(_enqueue_partition, batch_id, partition))


def batch_partition_process(*, batch_id: int, partition: int) -> None:
    """Read a file for one partition; resumes after its committed chunks, ends the batch visibly."""
    batch = EndorsementBatch.objects.get(pk=batch_id)
    if batch.state != EndorsementBatch.State.PROCESSING:
        return
    try:
        _partition_read(batch, partition)
    except Exception as error:  # noqa: BLE001 - any failure ends the batch visibly, never silently
        log.exception("batch.processing_failed", batch_id=batch_id, partition=partition)
        batch_fail(
            batch_id=batch_id, code="processing_error", reason=f"{type(error).__name__}: {error}"[:500]
        )


def batch_fail(*, batch_id: int, code: str, reason: str) -> None:
    with transaction.atomic():
        batch = batch_lock(batch_id)
        if batch.state in (EndorsementBatch.State.COMPLETED, EndorsementBatch.State.FAILED):
            return
        batch.state = EndorsementBatch.State.FAILED
        batch.failure_code = code
        batch.failure_reason = reason
        batch.completed_at = timezone.now()
        batch.save(update_fields=["state", "failure_code", "failure_reason", "completed_at"])
        events_queue(
            [batch_event(batch=batch, event_type="batch.failed", data={"batch_id": batch.pk, "code": code})]
        )
        audit_record(
            actor=VALIDATION_ACTOR,
            action="batch.failed",
            object_type="endorsement_batch",
            object_id=batch.pk,
            employer_id=batch.employer_id,
            after={"state": batch.state, "failure_code": code},
            note=reason,
        )
        notify_employer(batch.employer_id, "batch.completed", _progress_data(batch))


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
    chunks = _chunks_prepared(records, start=state.get("position", 0), today=_today())
    # The next chunk is read and checked in a thread while this one is decided and stored:
    # parsing overlaps the database's work, and at most READ_AHEAD chunks wait in memory.
    for prepared in read_ahead(chunks, READ_AHEAD):
        if not _chunk_store(batch, prepared, book=book, partition=partition):
            return  # the batch ended meanwhile (another partition failed it)


@dataclass(slots=True)
class _PreparedChunk:
    start: int  # the file's records passed before this chunk
    end: int  # ... and after it (records of other partitions in between are passed too)
    good: list[tuple[int, dict, str]]  # (row number, values, content hash)
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
    good: list[tuple[int, dict, str]] = []
    bad: list[tuple[int, list, dict]] = []
    for row_number, cells, issues, raw in chunk:
        if cells is not None and not issues:
            values, issues = row_parse(cells, today=today)
            if not issues:
                good.append((row_number, values, content_hash(values)))
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
        counts = _rows_decide_store(batch, prepared.good, book=book, today=_today())
        _row_errors_write(
            batch.pk,
            (
                (row_number, issue.as_dict(), raw, "")
                for row_number, issues, raw in prepared.bad
                for issue in issues
            ),
        )
        locked = batch_lock(batch.pk)
        locked.rows_parsed += len(prepared.good) + len(prepared.bad)
        locked.partition_positions[key] = {"position": prepared.end, "done": prepared.last}
        fields = ["rows_parsed", "partition_positions"]
        if all(locked.partition_positions.get(str(p), {}).get("done") for p in range(locked.partitions)):
            locked.rows_total = prepared.end
            locked.parsed_at = timezone.now()
            fields += ["rows_total", "parsed_at"]
        locked.save(update_fields=fields)
        counts["rejected"] += len(prepared.bad)
        _batch_advance(batch.pk, batch=locked, **counts)
    return True


def _rows_decide_store(
    batch: EndorsementBatch, good: list[tuple[int, dict, str]], *, book: PolicyBook, today: date
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
            member_key=_provisional_key(values),
            batch_id=batch.pk,
            row_number=row_number,
        )
        for pk, tracking_id, (row_number, values, digest) in zip(
            ids, new_tracking_ids(len(good)), good, strict=True
        )
    ]
    assessment = endorsements_assess(employer_id=employer_id, endorsements=rows, today=today, book=book)
    received_by = f"batch:{batch.pk}"
    endorsements_create_decided(rows=rows, decisions=assessment.decisions, source=Source.CSV)
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
    return _assessment_close(
        employer_id=employer_id,
        requests=rows,
        assessment=assessment,
        actor=VALIDATION_ACTOR,
        batch_id=batch.pk,
    )


_ERROR_COLUMNS = ("batch_id", "row_number", "tracking_id", "column", "code", "message", "raw")


def _row_errors_write(batch_id: int, errors: Iterable[tuple[int, dict, dict, str]]) -> None:
    """One BatchRowError per (row, reason, raw cells, tracking id or ""); the row's cells are
    kept on its first error."""
    last_row = None

    def rows():
        nonlocal last_row
        for row_number, reason, raw, tracking_id in errors:
            keep_raw = row_number != last_row
            last_row = row_number
            yield (
                batch_id,
                row_number,
                tracking_id,
                (reason.get("field") or "")[:64],
                reason["code"][:64],
                reason["message"][:500],
                json.dumps(_printable(raw) if keep_raw else {}, default=str),
            )

    bulk_writes.rows_insert(BatchRowError, _ERROR_COLUMNS, rows())


def _printable(raw: dict) -> dict:
    """Cells as stored for the error report: bytes that were not text become U+FFFD."""
    return {
        text_printable(key): text_printable(value) if isinstance(value, str) else value
        for key, value in raw.items()
    }


def _progress_data(batch: EndorsementBatch) -> dict:
    return {
        "batch_id": batch.pk,
        "progress": batch.progress,
        "state": batch.state,
        "rows_total": batch.rows_total,
        "accepted_count": batch.accepted_count,
        "rejected_count": batch.rejected_count,
        "duplicate_count": batch.duplicate_count,
    }


def _batch_advance(
    batch_id: int,
    *,
    accepted: int = 0,
    rejected: int = 0,
    duplicates: int = 0,
    batch: EndorsementBatch | None = None,
) -> EndorsementBatch:
    """Add validated counts, recompute progress, complete the batch when every row is done."""
    batch = batch or batch_lock(batch_id)
    batch.accepted_count += accepted
    batch.rejected_count += rejected
    batch.duplicate_count += duplicates
    done = batch.accepted_count + batch.rejected_count + batch.duplicate_count
    fields = ["accepted_count", "rejected_count", "duplicate_count", "progress"]
    completed = False
    if batch.state == EndorsementBatch.State.PROCESSING and batch.parsed_at and done >= batch.rows_total:
        batch.state = EndorsementBatch.State.COMPLETED
        batch.progress = 100
        batch.completed_at = timezone.now()
        fields += ["state", "completed_at"]
        completed = True
    elif batch.state != EndorsementBatch.State.COMPLETED:
        denominator = (
            batch.rows_total if batch.parsed_at else max(batch.rows_expected, batch.rows_parsed, done, 1)
        )
        batch.progress = min(99, done * 100 // max(denominator, 1))
    batch.save(update_fields=fields)
    notify_employer(batch.employer_id, "batch.progress", _progress_data(batch))
    if completed:
        data = _progress_data(batch)
        events_queue([batch_event(batch=batch, event_type="batch.completed", data=data)])
        audit_record(
            actor=VALIDATION_ACTOR,
            action="batch.completed",
            object_type="endorsement_batch",
            object_id=batch.pk,
            employer_id=batch.employer_id,
            after=data,
        )
        notify_employer(batch.employer_id, "batch.completed", data)
    return batch


# --- the error report --------------------------------------------------------------------------

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value) -> str:
    """A cell as text that a spreadsheet will not run as a formula (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_PREFIXES):
        return "'" + text
    return text


def batch_error_report_csv(*, batch: EndorsementBatch) -> Iterator[str]:
    """The rejected rows of a batch as CSV text chunks: row number, the rejected request's
    tracking id (empty for a row that failed its format checks), the columns, `errors`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def take() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(["row_number", "tracking_id", *COLUMNS, "errors"])
    yield take()
    current: int | None = None
    raw: dict = {}
    tracking = ""
    messages: list[str] = []

    def line() -> list[str]:
        cells = [spreadsheet_safe(current), spreadsheet_safe(tracking)]
        cells += [spreadsheet_safe(raw.get(column, "")) for column in COLUMNS]
        extra = raw.get("_extra") or raw.get("_value")
        notes = messages + ([f"extra cells: {extra}"] if extra else [])
        cells.append(spreadsheet_safe(" | ".join(notes)))
        return cells

    rows = (
        BatchRowError.objects.filter(batch_id=batch.pk)
        .order_by("row_number", "id")
        .values_list("row_number", "tracking_id", "column", "code", "message", "raw")
    )
    pending = 0
    for row_number, tracking_id, column, code, message, row_raw in rows.iterator(chunk_size=2000):
        if row_number != current:
            if current is not None:
                writer.writerow(line())
                pending += 1
                if pending >= 500:
                    yield take()
                    pending = 0
            current, raw, tracking, messages = row_number, {}, tracking_id, []
        if row_raw:
            raw = row_raw
        messages.append(f"{column}: {code}: {message}" if column else f"{code}: {message}")
    if current is not None:
        writer.writerow(line())
    tail = take()
    if tail:
        yield tail


def endorsements_received_sweep(*, older_than_seconds: int = 300, limit: int = 10_000) -> int:
    """Validate requests still RECEIVED after a while (their task message was lost)."""
    from datetime import timedelta

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        EndorsementRequest.objects.filter(state=EndorsementState.RECEIVED, received_at__lt=cutoff)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    if ids:
        endorsements_validate(endorsement_ids=ids)
    return len(ids)


def uploads_orphaned_sweep(
    *, older_than_seconds: int = 24 * 3600, newer_than_seconds: int = 8 * 24 * 3600
) -> int:
    """Delete stored upload files that no batch names, once they are a day old: left when the
    transaction around `batch_submit` rolled back after the file was stored (a crash before
    commit, a failed idempotency record). Files of every batch are kept for its whole life,
    so only those of the last week are looked up (the hourly sweep stays small). Returns how
    many files were deleted."""
    deleted = 0
    candidates = list(intake.uploads_aged(older_than=older_than_seconds, newer_than=newer_than_seconds))
    for start in range(0, len(candidates), 1000):
        chunk = candidates[start : start + 1000]
        named = set(
            bulk_writes.filter_any(EndorsementBatch.objects.all(), "file_path", chunk).values_list(
                "file_path", flat=True
            )
        )
        for relative in chunk:
            if relative not in named:
                intake.media_path(relative).unlink(missing_ok=True)
                deleted += 1
    if deleted:
        log.info("uploads.orphans_deleted", count=deleted)
    return deleted
