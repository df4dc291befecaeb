"""The gateway's Celery tasks: thin, safe to run twice (django-celery-beat schedules them in settings).

- `insurers.tasks.exchanges_mask_sweep_task`: mask personal data in exchange records older
  than EXCHANGE_PII_RETENTION_DAYS.
- `insurers.tasks.confirmations_poll_sweep_task`: queue one `confirmations_poll_task` per
  polled insurer, so a slow or dead insurer never delays another's confirmations; each
  fetches that insurer's SFTP response files or SOAP confirmations under a Redis lock (a
  poll still running makes the next one skip). Safe to run twice or concurrently: a
  response file is claimed once, a result only moves forward.
"""

import structlog
from celery import shared_task
from django.conf import settings

from ems.redis_lock import LockBackendUnavailable, LockNotAcquired, redis_lock
from insurers import services
from insurers.exchanges import exchanges_mask_expired

log = structlog.get_logger(__name__)
# A killed poller's lock frees itself this soon.
POLL_LOCK_SECONDS = 120


@shared_task(name="insurers.tasks.exchanges_mask_sweep_task")
def exchanges_mask_sweep_task() -> int:
    """Mask personal data in exchange records older than EXCHANGE_PII_RETENTION_DAYS."""
    return exchanges_mask_expired(older_than_days=settings.EXCHANGE_PII_RETENTION_DAYS)


@shared_task(name="insurers.tasks.confirmations_poll_sweep_task", ignore_result=True, acks_late=True)
def confirmations_poll_sweep_task() -> int:
    """Beat: one poll task per polled insurer. Returns how many were queued."""
    insurer_ids = services.polled_insurer_ids()
    for insurer_id in insurer_ids:
        confirmations_poll_task.delay(insurer_id)
    return len(insurer_ids)


@shared_task(name="insurers.tasks.confirmations_poll_task", ignore_result=True, acks_late=True)
def confirmations_poll_task(insurer_id: int) -> int:
    try:
        with redis_lock(f"insurer:poll:{insurer_id}", timeout=POLL_LOCK_SECONDS, blocking_timeout=0):
            recorded = services.confirmations_poll_logged(insurer_id=insurer_id)
    except LockNotAcquired:
        return 0  # the previous poll of this insurer is still running
    except LockBackendUnavailable:
        recorded = services.confirmations_poll_logged(insurer_id=insurer_id)
    if recorded:
        log.info("insurers.confirmations_polled", insurer_id=insurer_id, count=recorded)
    return recorded
