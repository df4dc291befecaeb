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
  `batch_process` (Celery) streams the rows in chunks of CHUNK_ROWS: each chunk's good
  rows become RECEIVED requests with COPY-class inserts, its bad rows `BatchRowError`s,
  in one transaction per chunk that also advances `rows_parsed` (a re-run resumes after
  it); the chunk's validation is enqueued on commit. Memory stays bounded by one chunk.
- Validation (`endorsements_validate`, `batch_chunk_validate`) locks the RECEIVED rows,
  assesses them together (`validation.endorsements_assess`) and applies the decisions
  through `transitions.endorsement_transition`: VALIDATED with a premium, REJECTED with
  reasons, SUPERSEDED; older unsent requests that a new one replaces are superseded and
  their hold released. Batch counters and progress move in the same transaction and the
  progress is pushed to the employer's websocket after commit.

Batch counts: `accepted` (validated, including rows later replaced by a newer row),
`rejected` (invalid rows) and `duplicates` (rejected as a duplicate) add up to
`rows_total` when the batch is COMPLETED.
"""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import date
from functools import partial

import structlog
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ems.audit import audit_document, audit_record
from ems.errors import PermissionDenied
from ems.notifications import notify_employer
from ems.outbox import outbox_write
from ems.tenancy import Caller
from endorsements import bulk_writes, intake
from endorsements.errors import EndorsementInvalid, UploadFormatUnknown
from endorsements.events import batch_event, events_queue, outbox_event, transition_event
from endorsements.locks import batch_lock, endorsements_lock, endorsements_lock_received
from endorsements.models import (
    BatchRowError,
    EndorsementBatch,
    EndorsementRequest,
    EndorsementState,
    EndorsementTransition,
    Policy,
    Source,
)
from endorsements.transitions import UNSENT_STATES, endorsement_transition
from endorsements.validation import COLUMNS, content_hash, endorsements_assess, member_key, row_parse

log = structlog.get_logger(__name__)

CHUNK_ROWS = 5_000
VALIDATION_ACTOR = "system:validation"


def _employer_required(caller: Caller) -> int:
    if caller.employer_id is None:
        raise PermissionDenied("Only an employer's HR users and API clients can submit endorsements.")
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
    # Ordered by number alone: the model's ordering (employer code, number) is the same
    # within one employer, without the join to the employer.
    policy_id = (
        Policy.objects.filter(employer_id=employer_id, number__iexact=values["policy_number"])
        .order_by("number", "pk")
        .values_list("pk", flat=True)
        .first()
    )
    # No savepoint: under the API's idempotency transaction a failure rolls back all of it.
    with transaction.atomic(savepoint=False):
        request = EndorsementRequest.objects.create(
            employer_id=employer_id,
            policy_id=policy_id,
            type=values["action"],
            member_data=values,
            effective_date=values["effective_date"],
            content_hash=content_hash(values),
            member_key=_provisional_key(values),
            idempotency_key=idempotency_key,
            source=source,
        )
        # The history record, the event and the audit record in one round trip.
        outbox_write(
            events=[
                outbox_event(
                    transition_event(
                        tracking_id=request.tracking_id,
                        employer_id=employer_id,
                        endorsement_type=request.type,
                        from_state="",
                        to_state=EndorsementState.RECEIVED,
                    )
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
            together_with=(
                _RECEIVED_TRANSITION_SQL,
                [request.pk, EndorsementState.RECEIVED, caller.principal[:100], timezone.now()],
            ),
        )
        transaction.on_commit(partial(_enqueue_validation, request.pk))
    request.effective_date = date.fromisoformat(values["effective_date"])
    return request


_RECEIVED_TRANSITION_SQL = (
    f"INSERT INTO {EndorsementTransition._meta.db_table}"
    " (endorsement_id, from_state, to_state, actor, reason, at) VALUES (%s, '', %s, %s, '', %s)"
)


def _enqueue_validation(endorsement_id: int) -> None:
    from endorsements.tasks import endorsement_validate_task

    endorsement_validate_task.delay(endorsement_id)


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
    with transaction.atomic():
        requests = endorsements_lock_received(ids=list(endorsement_ids))
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


def batch_chunk_validate(*, batch_id: int, row_from: int, row_to: int) -> dict[str, int]:
    """Validate one committed chunk of a batch, then advance its counters and progress."""
    with transaction.atomic():
        requests = endorsements_lock_received(batch_id=batch_id, row_from=row_from, row_to=row_to)
        counts = {"accepted": 0, "rejected": 0, "duplicates": 0}
        if requests:
            counts = _decisions_apply(
                employer_id=requests[0].employer_id,
                requests=requests,
                actor=VALIDATION_ACTOR,
                batch_id=batch_id,
            )
        _batch_advance(batch_id, **counts)
    return counts


def _decisions_apply(
    *, employer_id: int, requests: list[EndorsementRequest], actor: str, batch_id: int | None = None
) -> dict[str, int]:
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
    for older, newer_id in assessment.superseded_older:
        endorsement_supersede(endorsement=older, newer_id=newer_id, actor=actor)
    duplicates = sum(1 for d in assessment.decisions.values() if d.state == "REJECTED" and d.duplicate)
    rejected = len(groups["REJECTED"]) - duplicates
    if batch_id is not None and groups["REJECTED"]:
        _row_errors_write(
            batch_id,
            (
                (r.row_number, reason, r.member_data)
                for r in groups["REJECTED"]
                for reason in changes[r.pk]["rejection_reasons"]
            ),
        )
    log.info(
        "endorsement.validated_group",
        employer_id=employer_id,
        batch_id=batch_id,
        validated=len(groups["VALIDATED"]),
        rejected=rejected,
        duplicates=duplicates,
        superseded=len(groups["SUPERSEDED"]) + len(assessment.superseded_older),
    )
    return {
        "accepted": len(groups["VALIDATED"]) + len(groups["SUPERSEDED"]),
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


def batch_submit(*, caller: Caller, upload, file_name: str, file_format: str) -> EndorsementBatch:
    """Store and check an uploaded file, create its batch and enqueue processing on commit.

    Raises UploadTooLarge (413) or an UploadError (422) — with nothing written — for a
    file that is too big, empty, binary, UTF-16, has a bad header, no rows, too many rows,
    or (JSON) is not an array of objects.
    """
    employer_id = _employer_required(caller)
    file_format = (file_format or "").upper()
    if file_format not in EndorsementBatch.Format.values:
        raise UploadFormatUnknown()
    stored = intake.upload_store(upload=upload, employer_id=employer_id, file_format=file_format)
    try:
        rows_expected = intake.upload_check(stored=stored, file_format=file_format)
        source = {"client": Source.API, "staff": Source.ADMIN}.get(caller.kind, Source.CSV)
        with transaction.atomic():
            batch = EndorsementBatch.objects.create(
                employer_id=employer_id,
                uploaded_by_id=caller.user_id,
                api_client_id=caller.api_client_id,
                source=source,
                file_name=(file_name or "")[:255],
                file_format=file_format,
                file_path=stored.relative_path,
                file_sha256=stored.sha256,
                file_bytes=stored.size,
                rows_expected=rows_expected,
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
        intake.upload_discard(stored)
        raise
    return batch


def _enqueue_processing(batch_id: int) -> None:
    from endorsements.tasks import batch_process_task

    batch_process_task.delay(batch_id)


def _enqueue_chunk_validation(batch_id: int, row_from: int, row_to: int) -> None:
    from endorsements.tasks import batch_chunk_validate_task

    batch_chunk_validate_task.delay(batch_id, row_from, row_to)


def batch_process(*, batch_id: int) -> None:
    """Read a stored file in chunks; safe to run again (resumes after the committed rows)."""
    batch = EndorsementBatch.objects.get(pk=batch_id)
    if batch.state in (EndorsementBatch.State.COMPLETED, EndorsementBatch.State.FAILED) or batch.parsed_at:
        return
    EndorsementBatch.objects.filter(pk=batch_id, state=EndorsementBatch.State.RECEIVED).update(
        state=EndorsementBatch.State.PROCESSING
    )
    try:
        _batch_read(batch)
    except Exception as error:  # noqa: BLE001 - any failure ends the batch visibly, never silently
        log.exception("batch.processing_failed", batch_id=batch_id)
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


def _batch_read(batch: EndorsementBatch) -> None:
    path = intake.media_path(batch.file_path)
    records = intake.json_records(path) if batch.file_format == "JSON" else intake.csv_records(path)
    policies = {
        number.upper(): pk
        for pk, number in Policy.objects.filter(employer_id=batch.employer_id).values_list("pk", "number")
    }
    today = _today()
    already = batch.rows_parsed
    seen = 0
    chunk: list = []
    for record in records:
        seen += 1
        if seen <= already:
            continue
        chunk.append(record)
        if len(chunk) >= CHUNK_ROWS:
            _chunk_commit(batch, chunk, policies=policies, today=today)
            chunk = []
    if chunk:
        _chunk_commit(batch, chunk, policies=policies, today=today)
    with transaction.atomic():
        locked = batch_lock(batch.pk)
        locked.rows_total = seen
        locked.parsed_at = timezone.now()
        locked.save(update_fields=["rows_total", "parsed_at"])
        _batch_advance(batch.pk, batch=locked)


def _chunk_commit(batch: EndorsementBatch, chunk: list, *, policies: dict[str, int], today: date) -> None:
    good: list[tuple[int, dict]] = []
    bad: list[tuple[int, list, dict]] = []
    for row_number, cells, issues, raw in chunk:
        if cells is not None and not issues:
            values, issues = row_parse(cells, today=today)
            if not issues:
                good.append((row_number, values))
                continue
        bad.append((row_number, issues, raw))
    with transaction.atomic():
        _requests_create(batch, good, policies=policies)
        _row_errors_write(
            batch.pk,
            ((row_number, issue.as_dict(), raw) for row_number, issues, raw in bad for issue in issues),
        )
        EndorsementBatch.objects.filter(pk=batch.pk).update(
            rows_parsed=F("rows_parsed") + len(chunk), rejected_count=F("rejected_count") + len(bad)
        )
        transaction.on_commit(partial(_enqueue_chunk_validation, batch.pk, chunk[0][0], chunk[-1][0]))


_REQUEST_COLUMNS = (
    "id",
    "tracking_id",
    "employer_id",
    "policy_id",
    "type",
    "member_data",
    "effective_date",
    "content_hash",
    "member_key",
    "idempotency_key",
    "source",
    "batch_id",
    "row_number",
    "state",
    "rejection_reasons",
    "attempts",
    "last_error",
    "insurer_reference",
    "received_at",
    "updated_at",
)


def _requests_create(
    batch: EndorsementBatch, good: list[tuple[int, dict]], *, policies: dict[str, int]
) -> None:
    """Insert a chunk's good rows as RECEIVED requests with history and events, set-based."""
    if not good:
        return
    from ems.identifiers import new_tracking_id

    now = timezone.now()
    employer_id = batch.employer_id
    received = EndorsementState.RECEIVED
    created: list[tuple[int, str, str]] = []  # (id, tracking id, type)
    if bulk_writes.is_postgresql():
        ids = bulk_writes.ids_reserve(EndorsementRequest, len(good))
        dumps = json.JSONEncoder(separators=(",", ":")).encode

        def rows():
            for pk, (row_number, values) in zip(ids, good, strict=True):
                tracking_id = new_tracking_id()
                created.append((pk, tracking_id, values["action"]))
                yield (
                    pk,
                    tracking_id,
                    employer_id,
                    policies.get(values["policy_number"]),
                    values["action"],
                    dumps(values),
                    values["effective_date"],
                    content_hash(values),
                    _provisional_key(values),
                    "",
                    Source.CSV,
                    batch.pk,
                    row_number,
                    received,
                    "[]",
                    0,
                    "",
                    "",
                    now,
                    now,
                )

        bulk_writes.rows_insert(EndorsementRequest, _REQUEST_COLUMNS, rows())
    else:
        objects = [
            EndorsementRequest(
                employer_id=employer_id,
                policy_id=policies.get(values["policy_number"]),
                type=values["action"],
                member_data=values,
                effective_date=values["effective_date"],
                content_hash=content_hash(values),
                member_key=_provisional_key(values),
                source=Source.CSV,
                batch_id=batch.pk,
                row_number=row_number,
            )
            for row_number, values in good
        ]
        EndorsementRequest.objects.bulk_create(objects, batch_size=500)
        created = [(o.pk, o.tracking_id, o.type) for o in objects]
    bulk_writes.rows_insert(
        EndorsementTransition,
        ("endorsement_id", "from_state", "to_state", "actor", "reason", "at"),
        ((pk, "", received, f"batch:{batch.pk}", "", now) for pk, _, _ in created),
    )
    # One event for the chunk, not one per row: each row's own events start at validation.
    events_queue(
        [
            batch_event(
                batch=batch,
                event_type="batch.rows_received",
                data={
                    "batch_id": batch.pk,
                    "count": len(created),
                    "first_tracking_id": created[0][1],
                    "last_tracking_id": created[-1][1],
                    "first_row": good[0][0],
                    "last_row": good[-1][0],
                },
            )
        ]
    )
    audit_record(
        actor=f"batch:{batch.pk}",
        action="endorsement.received",
        object_type="endorsement_group",
        object_id=f"{created[0][1]}..{created[-1][1]}",
        employer_id=employer_id,
        after={"state": received, "batch_id": batch.pk, "count": len(created)},
    )


_ERROR_COLUMNS = ("batch_id", "row_number", "column", "code", "message", "raw")


def _row_errors_write(batch_id: int, errors: Iterable[tuple[int, dict, dict]]) -> None:
    """One BatchRowError per (row, reason); the row's cells are kept on its first error."""
    last_row = None

    def rows():
        nonlocal last_row
        for row_number, reason, raw in errors:
            keep_raw = row_number != last_row
            last_row = row_number
            yield (
                batch_id,
                row_number,
                (reason.get("field") or "")[:64],
                reason["code"][:64],
                reason["message"][:500],
                json.dumps(_printable(raw) if keep_raw else {}, default=str),
            )

    bulk_writes.rows_insert(BatchRowError, _ERROR_COLUMNS, rows())


def _printable(raw: dict) -> dict:
    """Cells as stored for the error report: bytes that were not UTF-8 become U+FFFD."""
    return {
        key: value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if isinstance(value, str) and not value.isascii()
        else value
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
    """The rejected rows of a batch as CSV text chunks: row number, the columns, `errors`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def take() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(["row_number", *COLUMNS, "errors"])
    yield take()
    current: int | None = None
    raw: dict = {}
    messages: list[str] = []

    def line() -> list[str]:
        cells = [spreadsheet_safe(current)]
        cells += [spreadsheet_safe(raw.get(column, "")) for column in COLUMNS]
        extra = raw.get("_extra") or raw.get("_value")
        notes = messages + ([f"extra cells: {extra}"] if extra else [])
        cells.append(spreadsheet_safe(" | ".join(notes)))
        return cells

    rows = (
        BatchRowError.objects.filter(batch_id=batch.pk)
        .order_by("row_number", "id")
        .values_list("row_number", "column", "code", "message", "raw")
    )
    pending = 0
    for row_number, column, code, message, row_raw in rows.iterator(chunk_size=2000):
        if row_number != current:
            if current is not None:
                writer.writerow(line())
                pending += 1
                if pending >= 500:
                    yield take()
                    pending = 0
            current, raw, messages = row_number, {}, []
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
