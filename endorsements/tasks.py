"""Celery tasks for intake: thin, take ids, safe to run twice (the services skip done work)."""

from celery import shared_task
from django.conf import settings

from ems.errors import DATABASE_TRANSIENT_ERRORS

# Intake tasks retry a dropped database connection from their last commit (the services
# are safe to run twice), backing off with full jitter up to 30 s between attempts.
_DATABASE_RETRY = {
    "autoretry_for": DATABASE_TRANSIENT_ERRORS,
    "max_retries": settings.INTAKE_DATABASE_RETRIES,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
}


@shared_task(acks_late=True, reject_on_worker_lost=True, **_DATABASE_RETRY)
def batch_process_task(batch_id: int) -> None:
    from endorsements.services import batch_process

    batch_process(batch_id=batch_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, **_DATABASE_RETRY)
def batch_partition_task(batch_id: int, partition: int) -> None:
    from endorsements.services import batch_partition_process

    batch_partition_process(batch_id=batch_id, partition=partition)


@shared_task(acks_late=True, reject_on_worker_lost=True, **_DATABASE_RETRY)
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


# --- the pipeline (endorsements/pipeline/): thin tasks over its services, on sets of ids ---


@shared_task(name="endorsements.pipeline.windows_full_close", acks_late=True, reject_on_worker_lost=True)
def windows_full_close_task(endorsement_ids: list[int]) -> int:
    """After requests became VALIDATED: close their insurers' windows that are full."""
    from endorsements.pipeline.scheduler import windows_full_close

    return len(windows_full_close(endorsement_ids=endorsement_ids))


@shared_task(name="endorsements.pipeline.windows_close_due", acks_late=True, reject_on_worker_lost=True)
def windows_close_due_task() -> int:
    """Beat sweep: close every insurer's window that is due."""
    from endorsements.pipeline.scheduler import windows_close_due

    return len(windows_close_due())


@shared_task(name="endorsements.pipeline.funds_placed", acks_late=True, reject_on_worker_lost=True)
def funds_placed_task(tracking_ids: list[str]) -> int:
    """The ledger placed parked requests' holds: ON_HOLD_FUNDS -> FUND_LOCKED."""
    from endorsements.pipeline.funds import parked_placed

    return len(parked_placed(tracking_ids=tracking_ids))


@shared_task(name="endorsements.pipeline.send_dispatches", acks_late=True, reject_on_worker_lost=True)
def send_dispatches_task(dispatch_ids: list[int]) -> dict:
    """Send these dispatches (insurer_io); a transient failure stores the next attempt time."""
    from endorsements.pipeline.sending import dispatches_send

    return {str(k): v for k, v in dispatches_send(dispatch_ids=dispatch_ids).items()}


@shared_task(name="endorsements.pipeline.send_due", acks_late=True, reject_on_worker_lost=True)
def send_due_task() -> int:
    """Beat sweep (insurer_io): send every dispatch whose next attempt is due."""
    from endorsements.pipeline.sending import dispatches_send_due

    return len(dispatches_send_due())


@shared_task(name="endorsements.pipeline.confirm", acks_late=True, reject_on_worker_lost=True)
def confirm_task(tracking_ids: list[str]) -> int:
    """The insurer answered these requests (the gateway's handler): confirm or reject them."""
    from endorsements.pipeline.confirmation import endorsements_confirm

    done = endorsements_confirm(tracking_ids=tracking_ids)
    return len(done.confirmed) + len(done.rejected)


@shared_task(name="endorsements.pipeline.confirmations_catch_up", acks_late=True, reject_on_worker_lost=True)
def confirmations_catch_up_task() -> int:
    """Beat sweep: apply insurer answers whose handler call was lost (SENT/FAILED with a final item)."""
    from endorsements.pipeline.confirmation import confirmations_catch_up

    done = confirmations_catch_up()
    return len(done.confirmed) + len(done.rejected)


@shared_task(name="endorsements.pipeline.differences_capture", acks_late=True, reject_on_worker_lost=True)
def differences_capture_task(references: list[str]) -> int:
    """The ledger placed a confirmed debit's parked difference (`<tracking_id>/diff`): capture it."""
    from endorsements.pipeline.confirmation import differences_capture

    return differences_capture(references=references)


# --- activation (endorsements/pipeline/activation.py) ---


@shared_task(name="endorsements.pipeline.activate_due", acks_late=True, reject_on_worker_lost=True)
def activate_due_task() -> int:
    """Beat sweep: confirmed requests whose effective date has come become ACTIVE cover."""
    from endorsements.pipeline.activation import endorsements_activate_all_due

    return endorsements_activate_all_due()


# --- the pipeline's SLA clocks (endorsements/pipeline/sla.py) ---


@shared_task(name="endorsements.pipeline.sla_sweep", acks_late=True, reject_on_worker_lost=True)
def sla_sweep_task() -> dict:
    """Beat sweep (housekeeping): mark SLA breaches and near-breaches, one event each."""
    from endorsements.pipeline.sla import sla_sweep

    result = sla_sweep()
    return {"deadlines_set": result.deadlines_set, "breached": result.breached, "near": result.near}


# --- hardening: resuming intake after a dead worker ---


@shared_task(acks_late=True, reject_on_worker_lost=True)
def batches_stalled_sweep_task() -> int:
    """Beat sweep: resume batches and partitions with no progress (their worker died)."""
    from endorsements.services import batches_stalled_resume

    return len(batches_stalled_resume(stalled_after_seconds=settings.BATCH_STALLED_AFTER_SECONDS))


@shared_task(acks_late=True, reject_on_worker_lost=True)
def validation_drain_sweep_task() -> int:
    """Beat sweep: drain validation ids that a dead drain left behind."""
    from endorsements.validation_queue import validation_drain_sweep

    return validation_drain_sweep(lost_after_seconds=settings.VALIDATION_LOST_AFTER_SECONDS)
