"""Live notifications: hints pushed to an employer's websocket group after commit.

A push is a hint, not a source of truth: a client that missed one refetches over REST.
`notify_employer` must be called inside the transaction that made the change; the push
happens only if it commits.
"""

import structlog
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

log = structlog.get_logger(__name__)


def socket_url(request) -> dict:
    """Template context: where the page opens the websocket (NOTIFICATIONS_SOCKET_URL)."""
    return {"notifications_socket_url": settings.NOTIFICATIONS_SOCKET_URL}


def employer_group(employer_id: int) -> str:
    return f"employer.{employer_id}"


def notify_employer(employer_id: int, event: str, data: dict) -> None:
    def push() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(
                employer_group(employer_id),
                {"type": "notification.message", "event": event, "data": data},
            )
        except Exception:  # noqa: BLE001 - a lost hint is acceptable; clients refetch
            log.warning("notification.push_failed", event_name=event, employer_id=employer_id)

    transaction.on_commit(push)
