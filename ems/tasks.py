"""Platform Celery tasks: thin wrappers that call one service and return a small report."""

from celery import shared_task

from ems.outbox import RELAY_TASK
from ems.outbox_relay import relay_pending


@shared_task(name=RELAY_TASK, ignore_result=True)
def outbox_relay(sink: str | None = None) -> dict:
    """Deliver pending outbox rows (all sinks, or one). Safe to run twice or concurrently:
    the relay claims rows with SKIP LOCKED and one relay per sink runs at a time."""
    return relay_pending(sink=sink).as_dict()
