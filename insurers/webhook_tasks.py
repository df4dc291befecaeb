"""Thin Celery tasks for insurer webhooks: apply stored events, and re-drive what was left.

Named in `CELERY_IMPORTS` (g-core's `insurers/tasks.py` holds the gateway's own tasks)."""

from celery import shared_task

from insurers import webhook_events


@shared_task(name="insurers.webhook_events_process", ignore_result=True, acks_late=True)
def webhook_events_process_task(event_ids: list[int]) -> int:
    return webhook_events.webhook_events_process(event_ids=event_ids)


@shared_task(name="insurers.webhook_events_sweep", ignore_result=True, acks_late=True)
def webhook_events_sweep_task() -> int:
    return webhook_events.webhook_events_sweep()
