"""The sandbox insurer's webhooks to EMS: signed like a real insurer would sign them.

In answer mode "webhook" the engine answers a dispatch's items `accepted` and calls
`confirmations_send_later`: after `webhook_delay_ms` the due items are confirmed
(`engine.confirmations_due`) and each becomes an `endorsement.confirmed` event (or
`endorsement.rejected`) sent by `webhooks_send` to EMS, signed with the EMS insurer's
webhook secret (`X-EMS-Signature`, the scheme of `insurers.webhooks`). The switches
`webhook_duplicates` (every call made twice, same event ids) and `webhook_out_of_order`
(a batch's events reversed) make the deliveries a real insurer sometimes makes.

Which EMS insurer a dispatch came from is read from its key (`dsp-<insurer code>-...`);
where to send and with which secret is the sandbox's own configuration, a JSON file
`SANDBOX_DATA_DIR/webhook_targets.json`:

    {"url": "http://127.0.0.1:8000",                      # optional; else SANDBOX_EMS_WEBHOOK_URL
     "insurers": {"<insurer code>": {"insurer_id": 3, "secret": "whsec_..."}}}

Without that file (or for an insurer not in it) nothing is sent and nothing is confirmed
early: EMS can still poll `GET /v1/confirmations`.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import structlog
from django.conf import settings

from insurers.sandbox import engine
from insurers.webhooks import SIGNATURE_HEADER, signature_header

log = structlog.get_logger(__name__)

TARGETS_FILE = "webhook_targets.json"
BATCH_SIZE = 100
_DISPATCH_KEY = re.compile(r"^dsp-(?P<code>.+)-[0-9a-f]{32}(-g\d+)?$")


def webhook_targets_write(targets: dict, *, data_dir: Path | None = None) -> Path:
    """Configure where webhooks go: {"url"?, "insurers": {code: {"insurer_id", "secret"}}}."""
    path = Path(data_dir or engine.data_dir()) / TARGETS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(targets))
    temporary.replace(path)
    return path


def webhook_targets_for(insurers) -> Path:
    """Send webhooks for these EMS insurers, each signed with its primary secret (`seed_demo`)."""
    targets = {i.code: {"insurer_id": i.pk, "secret": i.webhook_secret_primary} for i in insurers}
    return webhook_targets_write({"insurers": targets}, data_dir=settings.SANDBOX_DATA_DIR)


def webhook_targets() -> dict:
    path = engine.data_dir() / TARGETS_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def insurer_code_of(dispatch_key: str) -> str:
    match = _DISPATCH_KEY.match(dispatch_key or "")
    return match["code"] if match else ""


def event_of(result: dict) -> dict:
    """An EMS webhook event for one of the engine's results (confirmed or rejected)."""
    confirmed = result["outcome"] == "confirmed"
    kind = "endorsement.confirmed" if confirmed else f"endorsement.{result['outcome']}"
    data = (
        {
            "insurer_reference": result["insurer_reference"],
            "insurer_member_id": result["insurer_member_id"],
            "insurer_premium": result["insurer_premium"],
            "effective_date": (result.get("data") or {}).get("effective_date"),
        }
        if confirmed
        else {
            "code": result["code"],
            "reason": result["reason"],
            "insurer_reference": result["insurer_reference"],
        }
    )
    return {
        "event_id": f"evt-{result['item_key']}-{result['outcome']}",
        "type": kind,
        "tracking_id": result["reference"],
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": data,
    }


def webhooks_send(events: list[dict], *, insurer_code: str) -> list[int]:
    """POST `events` to EMS for one insurer, signed; returns each call's HTTP status.

    One event goes to `notify`, more to `batch-notify` in calls of BATCH_SIZE. The switches
    may reverse the order and send every call twice."""
    targets = webhook_targets()
    target = (targets.get("insurers") or {}).get(insurer_code)
    if not target or not events:
        return []
    switches = engine.switches_get()
    if switches["webhook_out_of_order"]:
        events = list(reversed(events))
    base = (targets.get("url") or settings.SANDBOX_EMS_WEBHOOK_URL).rstrip("/")
    prefix = f"{base}/api/v1/webhooks/insurers/{target['insurer_id']}"
    calls = []
    for start in range(0, len(events), BATCH_SIZE):
        chunk = events[start : start + BATCH_SIZE]
        if len(chunk) == 1:
            calls.append((f"{prefix}/notify", json.dumps(chunk[0]).encode()))
        else:
            calls.append((f"{prefix}/batch-notify", json.dumps({"events": chunk}).encode()))
    statuses = []
    with httpx.Client(timeout=10) as client:
        for url, body in calls:
            for _ in range(2 if switches["webhook_duplicates"] else 1):
                statuses.append(_post(client, url, body, target["secret"]))
    log.info("sandbox.webhooks_sent", insurer_code=insurer_code, events=len(events), statuses=statuses)
    return statuses


def _post(client: httpx.Client, url: str, body: bytes, secret: str) -> int:
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature_header([secret], body)}
    try:
        return client.post(url, content=body, headers=headers).status_code
    except httpx.HTTPError as error:  # EMS down: a real insurer retries later; the sandbox logs it
        log.warning("sandbox.webhook_failed", url=url, error=type(error).__name__)
        return 0


def confirmations_send_later(*, delay_ms: int) -> None:
    """After `delay_ms`, confirm what is due and send it by webhook (answer mode "webhook")."""
    if not (webhook_targets().get("insurers")):
        return  # nobody to tell: leave the items for polling
    timer = threading.Timer(delay_ms / 1000, confirmations_send)
    timer.daemon = True
    timer.start()


def confirmations_send() -> list[int]:
    by_insurer: dict[str, list[dict]] = {}
    for result in engine.confirmations_due():
        by_insurer.setdefault(insurer_code_of(result.get("dispatch_key", "")), []).append(event_of(result))
    return [
        status for code, events in by_insurer.items() for status in webhooks_send(events, insurer_code=code)
    ]
