"""A batch's counts, progress, row errors and failure: written by both intake paths.

Batch counts: `accepted` (validated, including rows later replaced by a newer row),
`rejected` (invalid rows) and `duplicates` (rejected as a duplicate) add up to
`rows_total` when the batch is COMPLETED. `progress` is the share of rows decided out of
the file's rows (an upper bound on them until the file is read whole); `progress_message`
gives the portal that figure, the rows behind it and the sentence saying so, so the bar
and the words beside it never disagree.
"""

import json
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from ems.audit import audit_record
from ems.notifications import notify_employer
from endorsements import bulk_writes
from endorsements.events import batch_event, events_queue
from endorsements.locks import (
    batch_lock,
)
from endorsements.models import (
    VALIDATION_ACTOR,
    BatchRowError,
    EndorsementBatch,
)
from endorsements.validation import text_printable

_ERROR_COLUMNS = ("batch_id", "row_number", "tracking_id", "column", "code", "message", "raw")


def row_errors_write(batch_id: int, errors: Iterable[tuple[int, dict, dict, str]]) -> None:
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


def progress_data(batch: EndorsementBatch) -> dict:
    """The batch's counts, as its events and audit records carry them."""
    return {
        "batch_id": batch.pk,
        "progress": batch.progress,
        "state": batch.state,
        "rows_total": batch.rows_total,
        "accepted_count": batch.accepted_count,
        "rejected_count": batch.rejected_count,
        "duplicate_count": batch.duplicate_count,
    }


def _rows_done(batch: EndorsementBatch) -> int:
    return batch.accepted_count + batch.rejected_count + batch.duplicate_count


def _progress_denominator(batch: EndorsementBatch) -> int:
    """The rows `progress` is a share of: the file's rows once read whole, else the bound."""
    if batch.parsed_at:
        return batch.rows_total
    return max(batch.rows_expected, batch.rows_parsed, _rows_done(batch), 1)


def progress_text(batch: EndorsementBatch) -> str:
    """The sentence beside the progress bar, from the same figures as the bar."""
    if batch.state == EndorsementBatch.State.COMPLETED:
        return (
            f"Finished: {batch.accepted_count:,} accepted, {batch.rejected_count:,} rejected, "
            f"{batch.duplicate_count:,} duplicate{'' if batch.duplicate_count == 1 else 's'}."
        )
    if batch.state == EndorsementBatch.State.FAILED:
        reason = f": {batch.failure_reason}" if batch.failure_reason else "."
        return f"The file could not be processed{reason}"
    return f"Processing: {batch.progress}% done, {rows_checked_text(batch)} rows checked."


def rows_checked_text(batch: EndorsementBatch) -> str:
    """'4,800 of about 20,000': rows decided, of the rows the bar measures."""
    about = "" if batch.parsed_at else "about "
    return f"{_rows_done(batch):,} of {about}{_progress_denominator(batch):,}"


def progress_message(batch: EndorsementBatch) -> dict:
    """What the portal shows of a batch (websocket push and status URL alike): the counts,
    the rows checked out of the rows the bar measures, and the sentence saying so."""
    return {
        **progress_data(batch),
        "rows_done": _rows_done(batch),
        "rows_expected": _progress_denominator(batch),
        "rows_checked_text": rows_checked_text(batch),
        "status_text": progress_text(batch),
        "failure_reason": batch.failure_reason,
    }


def batch_advance(
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
    done = _rows_done(batch)
    fields = ["accepted_count", "rejected_count", "duplicate_count", "progress"]
    completed = False
    if batch.state == EndorsementBatch.State.PROCESSING and batch.parsed_at and done >= batch.rows_total:
        batch.state = EndorsementBatch.State.COMPLETED
        batch.progress = 100
        batch.completed_at = timezone.now()
        fields += ["state", "completed_at"]
        completed = True
    elif batch.state != EndorsementBatch.State.COMPLETED:
        batch.progress = min(99, done * 100 // max(_progress_denominator(batch), 1))
    batch.save(update_fields=fields)
    notify_employer(batch.employer_id, "batch.progress", progress_message(batch))
    if completed:
        data = progress_data(batch)
        events_queue([batch_event(batch=batch, event_type="batch.completed", data=data)])
        audit_record(
            actor=VALIDATION_ACTOR,
            action="batch.completed",
            object_type="endorsement_batch",
            object_id=batch.pk,
            employer_id=batch.employer_id,
            after=data,
        )
        notify_employer(batch.employer_id, "batch.completed", progress_message(batch))
    return batch


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
        notify_employer(batch.employer_id, "batch.completed", progress_message(batch))
