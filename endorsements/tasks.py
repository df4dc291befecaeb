"""Celery tasks for intake: thin, take ids, safe to run twice (the services skip done work)."""

from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True)
def batch_process_task(batch_id: int) -> None:
    from endorsements.services import batch_process

    batch_process(batch_id=batch_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def batch_partition_task(batch_id: int, partition: int) -> None:
    from endorsements.services import batch_partition_process

    batch_partition_process(batch_id=batch_id, partition=partition)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def endorsements_validate_pending_task() -> int:
    """Validate the single requests queued in Redis (see endorsements/validation_queue.py)."""
    from endorsements.validation_queue import validate_pending

    return validate_pending()


@shared_task(acks_late=True, reject_on_worker_lost=True)
def endorsements_received_sweep_task(older_than_seconds: int = 300) -> int:
    """Beat sweep: validate requests left RECEIVED by a lost task message."""
    from endorsements.services import endorsements_received_sweep

    return endorsements_received_sweep(older_than_seconds=older_than_seconds)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def uploads_orphaned_sweep_task() -> int:
    """Beat sweep: delete day-old upload files that no batch names."""
    from endorsements.services import uploads_orphaned_sweep

    return uploads_orphaned_sweep()
