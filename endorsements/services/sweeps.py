"""Periodic sweeps: requests whose validation message was lost, uploads no batch names."""

import structlog
from django.utils import timezone

from endorsements import bulk_writes, intake
from endorsements.models import (
    EndorsementBatch,
    EndorsementRequest,
    EndorsementState,
)
from endorsements.services.submission import endorsements_validate

log = structlog.get_logger(__name__)


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
