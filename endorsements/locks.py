"""The only place endorsement rows are locked: `SELECT ... FOR UPDATE`, in primary-key order.

Taking locks in one order everywhere means two transactions that touch the same
endorsements wait for each other instead of deadlocking.
"""

from collections.abc import Iterable

from django.db import connection

from endorsements.models import EndorsementBatch, EndorsementRequest


def endorsements_lock(ids: Iterable[int]) -> dict[int, str]:
    """Lock the endorsements and return their current state by id (missing ids are absent)."""
    ordered = sorted(set(ids))
    if len(ordered) <= 50 or connection.vendor != "postgresql":
        rows = (
            EndorsementRequest.objects.select_for_update()
            .filter(pk__in=ordered)
            .order_by("pk")
            .values_list("pk", "state")
        )
        return dict(rows)
    # Thousands of ids: one array parameter instead of thousands of placeholders.
    table = EndorsementRequest._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, state FROM {table} WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE", [ordered]
        )
        return dict(cursor.fetchall())


def batch_lock(batch_id: int) -> EndorsementBatch:
    return EndorsementBatch.objects.select_for_update().get(pk=batch_id)


def endorsements_lock_received(
    *, ids=None, batch_id=None, row_from=None, row_to=None
) -> list[EndorsementRequest]:
    """Lock RECEIVED endorsements (by ids, or a batch's row range) and return them, pk order."""
    queryset = EndorsementRequest.objects.select_for_update().filter(state="RECEIVED")
    if ids is not None:
        queryset = queryset.filter(pk__in=list(ids))
    else:
        queryset = queryset.filter(batch_id=batch_id, row_number__gte=row_from, row_number__lte=row_to)
    return list(
        queryset.order_by("pk").only(
            "pk",
            "tracking_id",
            "employer_id",
            "policy_id",
            "type",
            "member_data",
            "content_hash",
            "member_key",
            "batch_id",
            "row_number",
            "state",
        )
    )
