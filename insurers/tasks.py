"""The gateway's Celery tasks: thin, safe to run twice (django-celery-beat schedules them in settings).

- `insurers.tasks.exchanges_mask_sweep_task`: mask personal data in exchange records older
  than EXCHANGE_PII_RETENTION_DAYS.
- `insurers.tasks.confirmations_poll_sweep_task`: fetch SFTP response files and SOAP
  confirmations for every polled insurer (`services.confirmations_poll_due`). Safe to run
  twice or concurrently: a response file is claimed once, a result only moves forward.
"""

import structlog
from celery import shared_task
from django.conf import settings

from insurers import services
from insurers.exchanges import exchanges_mask_expired

log = structlog.get_logger(__name__)


@shared_task(name="insurers.tasks.exchanges_mask_sweep_task")
def exchanges_mask_sweep_task() -> int:
    """Mask personal data in exchange records older than EXCHANGE_PII_RETENTION_DAYS."""
    return exchanges_mask_expired(older_than_days=settings.EXCHANGE_PII_RETENTION_DAYS)


@shared_task(name="insurers.tasks.confirmations_poll_sweep_task", ignore_result=True, acks_late=True)
def confirmations_poll_sweep_task() -> int:
    recorded = services.confirmations_poll_due()
    if recorded:
        log.info("insurers.confirmations_polled", count=recorded)
    return recorded
