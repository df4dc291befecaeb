"""Helpers for the webhook tests: signed requests, events, and a dispatch to answer."""

import json
import time

from insurers.models import DispatchItem, WebhookEvent
from insurers.services import dispatch_create
from insurers.webhooks import SIGNATURE_HEADER, signature_header


def notify_url(insurer_id: int, batch: bool = False) -> str:
    return f"/api/v1/webhooks/insurers/{insurer_id}/{'batch-notify' if batch else 'notify'}"


def event(event_id: str, reference: str, kind: str = "endorsement.confirmed", **data) -> dict:
    if kind == "endorsement.confirmed" and not data:
        data = {"insurer_premium": 600_000, "insurer_member_id": "M-1", "effective_date": "2026-12-01"}
    return {
        "event_id": event_id,
        "type": kind,
        "tracking_id": reference,
        "occurred_at": "2026-12-02T10:00:00+00:00",
        "data": data,
    }


def body_of(value) -> bytes:
    return json.dumps(value).encode()


def signed_post(client, insurer_id, body: bytes, secrets, *, batch=False, timestamp=None, headers=None):
    signature = signature_header(
        secrets, body, timestamp=int(time.time()) if timestamp is None else timestamp
    )
    return client.post(
        notify_url(insurer_id, batch),
        data=body,
        content_type="application/json",
        headers={SIGNATURE_HEADER: signature, **(headers or {})},
    )


def dispatched(insurer, *references: str):
    """A dispatch to `insurer` carrying these references (so webhook events about them are known)."""
    return dispatch_create(
        insurer=insurer,
        items=[{"reference": ref, "kind": "ADD", "payload": {"reference": ref}} for ref in references],
    )


def snapshot() -> tuple:
    """Everything a refused webhook must leave as it was."""
    return (
        list(WebhookEvent.objects.values_list("id", "event_id", "processed_at")),
        list(DispatchItem.objects.values_list("id", "result", "insurer_premium", "is_live", "result_at")),
    )
