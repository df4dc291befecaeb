"""The only place endorsement rows are locked: `SELECT ... FOR UPDATE`, in primary-key order.

Taking locks in one order everywhere means two transactions that touch the same
endorsements wait for each other instead of deadlocking.
"""

import zlib
from collections.abc import Iterable, Sequence

from django.db import connection

from endorsements.bulk_writes import filter_any
from endorsements.models import EndorsementBatch, EndorsementRequest, EndorsementState


def endorsements_lock(ids: Iterable[int]) -> dict[int, str]:
    """Lock the endorsements and return their current state by id (missing ids are absent)."""
    ordered = sorted(set(ids))
    # Thousands of ids go as one array parameter (bulk_writes.filter_any).
    rows = (
        filter_any(EndorsementRequest.objects.select_for_update(), "id", ordered)
        .order_by("pk")
        .values_list("pk", "state")
    )
    return dict(rows)


def endorsements_lock_free(
    queryset, *, fields: Sequence[str], order_by: Sequence[str], limit: int
) -> list[tuple]:
    """Lock up to `limit` rows of `queryset` that nobody else holds (SKIP LOCKED) and return
    `fields` of each: for sweeps that must never wait behind the pipeline. Another order
    than pk is safe here: a lock that is not free is skipped, never waited for."""
    return list(
        queryset.select_for_update(skip_locked=True, of=("self",))
        .order_by(*order_by)
        .values_list(*fields)[:limit]
    )


def batch_lock(batch_id: int) -> EndorsementBatch:
    """Lock a batch row for its counters. NO KEY: the rows other partitions insert point at the
    batch, and their foreign-key checks (FOR KEY SHARE) must not wait for this lock."""
    return EndorsementBatch.objects.select_for_update(no_key=True).get(pk=batch_id)


def endorsements_lock_received(*, ids: Iterable[int]) -> list[EndorsementRequest]:
    """Lock the RECEIVED endorsements among `ids` and return them, pk order."""
    queryset = EndorsementRequest.objects.select_for_update().filter(
        state=EndorsementState.RECEIVED, pk__in=list(ids)
    )
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
            "source",
            "state",
            "received_at",  # the SLA clock starts there
        )
    )


# Deciding new requests is serialised per employer and intake slot: a slot is a fixed
# share of employee codes (crc32 % INTAKE_SLOTS). Everything a decision depends on — the
# same content, the same member, the employee of a dependant — shares the employee code,
# so requests in different slots never affect each other and can be decided at once.
INTAKE_SLOTS = 16
# pg_advisory_xact_lock(bigint): namespace, employer id and slot in one key.
_INTAKE_LOCK_NAMESPACE = 0x454D53 << 40


def intake_slot(employee_code: str) -> int:
    # surrogatepass: a cell may hold any lone surrogate (bytes that were not text), refused
    # later on its own row; it must not fail the slot of the whole file.
    return zlib.crc32(employee_code.encode("utf-8", "surrogatepass")) % INTAKE_SLOTS


def partition_slots(partition: int, partitions: int) -> list[int]:
    """The slots whose codes a file's partition decides (`partitions` divides INTAKE_SLOTS)."""
    return [slot for slot in range(INTAKE_SLOTS) if slot % partitions == partition]


def employer_intake_lock(employer_id: int, slots: Iterable[int] = range(INTAKE_SLOTS)) -> None:
    """Serialise deciding an employer's new requests in these slots, until the transaction ends.

    Duplicate and supersede checks read the employer's other requests; two transactions
    deciding at once would not see each other's rows. Slots are taken in ascending order,
    before any row lock, so two callers never wait for each other in a cycle. SQLite (the
    embedded default) needs nothing here: its transactions begin IMMEDIATE (settings), so
    each already holds the database's one write lock.
    """
    if connection.vendor != "postgresql":
        return
    keys = [_INTAKE_LOCK_NAMESPACE | (employer_id << 8) | slot for slot in sorted(set(slots))]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(key) FROM unnest(%s::bigint[]) AS key", [keys])


def endorsements_lock_confirmed_due(*, on, limit: int) -> list[EndorsementRequest]:
    """Lock up to `limit` CONFIRMED endorsements effective on or before `on` and return them,
    oldest effective date first. Rows another transaction holds are skipped, not waited
    for (they are taken by the next sweep)."""
    queryset = EndorsementRequest.objects.select_for_update(skip_locked=True).filter(
        state=EndorsementState.CONFIRMED, effective_date__lte=on
    )
    return list(queryset.order_by("effective_date", "pk")[:limit])


# One activation sweep at a time: the (int, int) advisory key space, apart from the intake
# slots' bigint keys.
ACTIVATION_LOCK_KEY = (0x454D53, 1)


def activation_lock() -> bool:
    """Take the activation sweep's lock until the transaction ends; False if another sweep has it.

    Two sweeps at once would each create the members and covers of their own requests
    and could both create the same new member. SQLite (the embedded default) serialises
    every write transaction already.
    """
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", list(ACTIVATION_LOCK_KEY))
        return bool(cursor.fetchone()[0])
