"""Reads with rules: every query is scoped to the caller's employer through `ems.tenancy.scoped`."""

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime

from django.db.models import F, Prefetch, QuerySet

from ems.tenancy import Caller, scoped
from endorsements.columns import COLUMNS
from endorsements.errors import BatchNotFound, EndorsementNotFound
from endorsements.models import (
    BatchRowError,
    EndorsementBatch,
    EndorsementRequest,
    EndorsementTransition,
    Plan,
    Policy,
)
from endorsements.spreadsheet_cells import spreadsheet_safe

# The list's columns first, in the order the portal shows them, then what the API adds.
_LIST_FIELDS = (
    "pk",
    "tracking_id",
    "type",
    "member_data",
    "state",
    "effective_date",
    "premium_amount",
    "tax_amount",
    "batch_id",
    "row_number",
    "employer_id",
    "policy_id",
    "source",
    "rejection_reasons",
    "superseded_by__tracking_id",
    "insurer_reference",
    "insurer_premium",
    "discrepancy",
    "linked_to__tracking_id",
    *EndorsementRequest.TIMELINE_FIELDS,
    "sla_deadline",
    "sla_status",
)


def endorsement_list(
    *,
    caller: Caller,
    state: str | None = None,
    type: str | None = None,  # noqa: A002 - the API's filter name
    batch_id: int | None = None,
    employee_code: str | None = None,
    effective_from: date | None = None,
    effective_to: date | None = None,
    created_from: datetime | date | None = None,
    created_to: datetime | date | None = None,
) -> QuerySet[EndorsementRequest]:
    """The caller's endorsements, newest first, filtered; each with its `policy_currency`."""
    queryset = scoped(EndorsementRequest.objects.all(), caller)
    if state:
        queryset = queryset.filter(state=state)
    if type:
        queryset = queryset.filter(type=type)
    if batch_id is not None:
        queryset = queryset.filter(batch_id=batch_id)
    if employee_code:
        queryset = queryset.filter(member_data__employee_code=employee_code)
    if effective_from:
        queryset = queryset.filter(effective_date__gte=effective_from)
    if effective_to:
        queryset = queryset.filter(effective_date__lte=effective_to)
    if created_from:
        lookup = "received_at__date__gte" if not isinstance(created_from, datetime) else "received_at__gte"
        queryset = queryset.filter(**{lookup: created_from})
    if created_to:
        lookup = "received_at__date__lte" if not isinstance(created_to, datetime) else "received_at__lte"
        queryset = queryset.filter(**{lookup: created_to})
    return (
        queryset.select_related("superseded_by", "linked_to")
        .only(*_LIST_FIELDS)
        .annotate(policy_currency=F("policy__currency"))  # the amounts' currency, in the same query
        .order_by("-received_at", "-id")
    )


def endorsement_get(*, caller: Caller, tracking_id: str) -> EndorsementRequest:
    """One endorsement with its full state history (oldest first)."""
    endorsement = (
        scoped(EndorsementRequest.objects.all(), caller)
        .select_related("superseded_by", "linked_to", "policy", "resubmission_of")
        .prefetch_related(
            Prefetch("transitions", queryset=EndorsementTransition.objects.order_by("at", "id"))
        )
        .filter(tracking_id=tracking_id)
        .first()
    )
    if endorsement is None:
        raise EndorsementNotFound()
    return endorsement


def batch_list(*, caller: Caller, limit: int = 10) -> list[EndorsementBatch]:
    """The caller's most recent uploads, newest first."""
    return list(scoped(EndorsementBatch.objects.all(), caller).order_by("-created_at", "-id")[:limit])


def batch_get(*, caller: Caller, batch_id: int) -> EndorsementBatch:
    batch = scoped(EndorsementBatch.objects.all(), caller).filter(pk=batch_id).first()
    if batch is None:
        raise BatchNotFound()
    return batch


def batch_errors(*, caller: Caller, batch_id: int) -> QuerySet[BatchRowError]:
    """The batch's per-row errors in row order (raises BatchNotFound outside the caller's scope)."""
    batch = batch_get(caller=caller, batch_id=batch_id)
    return BatchRowError.objects.filter(batch_id=batch.pk).order_by("row_number", "id")


def policy_list(*, caller: Caller) -> list[Policy]:
    """The employer's policies, active first, each with its insurer and its plans (by code)."""
    plans = Prefetch("plans", queryset=Plan.objects.order_by("code"))
    return list(
        scoped(Policy.objects.all(), caller)
        .select_related("insurer")
        .prefetch_related(plans)
        .order_by("-is_active", "-start_date", "number")
    )


# --- the error report --------------------------------------------------------------------------


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
