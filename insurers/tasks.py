"""The gateway's Celery tasks: thin, take ids, safe to run twice."""

from celery import shared_task
from django.conf import settings

from insurers.exchanges import exchanges_mask_expired


@shared_task(name="insurers.tasks.exchanges_mask_sweep_task")
def exchanges_mask_sweep_task() -> int:
    """Mask personal data in exchange records older than EXCHANGE_PII_RETENTION_DAYS."""
    return exchanges_mask_expired(older_than_days=settings.EXCHANGE_PII_RETENTION_DAYS)
