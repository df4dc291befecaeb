"""The exchange log: every request and response to or from an insurer, secrets redacted.

`exchange_record` queues one document for MongoDB `insurer_exchanges` through the outbox
(its own short transaction: adapters call insurers outside any transaction, and a network
call never holds one open). The relay delivers it at least once. Bodies keep members'
personal data until `EXCHANGE_PII_RETENTION_DAYS`, after which `exchanges_mask_expired`
masks it in place. Reading is `insurers.selectors.exchanges_for_*`.

Redaction happens here, before anything is written: header and field names that carry
secrets (authorization, signatures, passwords, tokens, credentials) lose their values, and
every secret configured on the insurer is replaced wherever it appears in a text.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from ems import clients
from ems.audit import EXCHANGES_COLLECTION
from ems.outbox import document_emit

REDACTED = "[redacted]"
SECRET_NAMES = (
    "authorization",
    "proxy-authorization",
    "x-ems-signature",
    "x-signature",
    "signature",
    "password",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "credentials",
    "cookie",
)
PERSONAL_FIELDS = ("first_name", "last_name", "date_of_birth", "phone", "email", "name")
MASKED = "***"


def insurer_secrets(insurer) -> list[str]:
    """Every secret value configured on an insurer (webhook secrets, credentials' leaves)."""
    values = [insurer.webhook_secret_primary, insurer.webhook_secret_secondary]
    values.extend(_leaves(insurer.credentials or {}))
    return [value for value in values if isinstance(value, str) and len(value) >= 4]


def redact(value, secrets: Iterable[str] = ()):
    """A copy of `value` (dicts, lists, strings) with secret fields and secret values removed."""
    secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
    return _redact(value, secrets)


def _redact(value, secrets: list[str]):
    if isinstance(value, dict):
        return {
            key: REDACTED if _is_secret_name(key) else _redact(item, secrets) for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_redact(item, secrets) for item in value]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    return value


@functools.lru_cache(maxsize=4096)  # a body repeats the same few keys on every item
def _is_secret_name(key) -> bool:
    name = str(key).lower()
    return any(marker in name for marker in SECRET_NAMES)


def _leaves(value) -> list:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def exchange_record(
    *,
    insurer,
    operation: str,
    request: dict | str | None,
    response: dict | str | None,
    status: str,
    started: float,
    dispatch_key: str = "",
    dispatch_id: int | None = None,
    tracking_ids: Iterable[str] = (),
    direction: str = "outbound",
) -> None:
    """Queue one exchange document. `started` is `time.monotonic()` taken before the call."""
    secrets = insurer_secrets(insurer)
    document = {
        "at": timezone.now().isoformat(),
        "insurer_id": insurer.pk,
        "insurer_code": insurer.code,
        "protocol": insurer.protocol,
        "direction": direction,
        "operation": operation,
        "dispatch_id": dispatch_id,
        "dispatch_key": dispatch_key,
        "tracking_ids": list(tracking_ids),
        "status": status,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "request": _body(redact(request, secrets)),
        "response": _body(redact(response, secrets)),
        "pii_masked": False,
    }
    with transaction.atomic():
        document_emit(collection=EXCHANGES_COLLECTION, document=document)


def _body(value):
    """Bodies are stored as structures where they are JSON, as text otherwise."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value[:200_000]
    return value


def mask_personal(value):
    """A copy of a body with members' personal data masked (names, dates of birth, phones, emails)."""
    if isinstance(value, dict):
        return {
            key: MASKED if key in PERSONAL_FIELDS and item not in (None, "") else mask_personal(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask_personal(item) for item in value]
    return value


def exchanges_mask_expired(*, older_than_days: int, database=None, now=None) -> int:
    """Mask members' personal data in exchange bodies older than the retention; returns how many."""
    database = database if database is not None else clients.mongo_db()
    collection = database[EXCHANGES_COLLECTION]
    cutoff = (now or timezone.now()) - timedelta(days=older_than_days)
    masked = 0
    for document in collection.find(
        {"pii_masked": False, "at": {"$lt": cutoff}}, {"request": 1, "response": 1}
    ):
        collection.update_one(
            {"_id": document["_id"]},
            {
                "$set": {
                    "request": mask_personal(document.get("request")),
                    "response": mask_personal(document.get("response")),
                    "pii_masked": True,
                }
            },
        )
        masked += 1
    return masked
