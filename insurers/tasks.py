"""Thin gateway tasks (django-celery-beat schedules them in settings).

- `insurers.tasks.confirmations_poll_sweep_task`: fetch SFTP response files and SOAP
  confirmations for every polled insurer (`services.confirmations_poll_due`). Safe to run
  twice or concurrently: a response file is claimed once, a result only moves forward.
"""

import structlog
from celery import shared_task

from insurers import services

log = structlog.get_logger(__name__)


@shared_task(name="insurers.tasks.confirmations_poll_sweep_task", ignore_result=True, acks_late=True)
def confirmations_poll_sweep_task() -> int:
    recorded = services.confirmations_poll_due()
    if recorded:
        log.info("insurers.confirmations_polled", count=recorded)
    return recorded
