"""REST: JSON over HTTP(S) with httpx.

The insurer's `endpoint_url` is its API base; `connection` may set `connect_timeout`,
`read_timeout`, `write_timeout` and `pool_timeout` (seconds; each defaults to the insurer's
`request_timeout_seconds`) and `verify` (TLS verification, on unless set false).
`credentials` carries `bearer_token`, or `hmac_secret` (and optional `hmac_key_id`) to sign
each request: header `X-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.

A dispatch goes as `POST {base}/v1/endorsements` with its `Idempotency-Key`; each item
carries its own `item_key`. 5xx, 429 (with `Retry-After`), timeouts and connection errors
are transient; any other 4xx is permanent. One client per insurer per process keeps its
connections alive.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Sequence
from datetime import date

import httpx

from insurers.adapters.base import ItemResult, PermanentError, TransientError, item_result_from
from insurers.exchanges import exchange_record

_clients: dict[tuple, httpx.Client] = {}
_clients_lock = threading.Lock()


class RestAdapter:
    def send(self, dispatch, items: Sequence) -> list[ItemResult]:
        body = {
            "dispatch_key": dispatch.idempotency_key,
            "items": [
                {**item.payload, "reference": item.reference, "item_key": item.idempotency_key}
                for item in items
            ],
        }
        answer = _call(
            dispatch.insurer,
            "POST",
            "/v1/endorsements",
            operation="send",
            body=body,
            headers={"Idempotency-Key": dispatch.idempotency_key},
            dispatch=dispatch,
            tracking_ids=[item.reference for item in items],
        )
        return [item_result_from(row) for row in answer.get("results", [])]

    def confirmations_fetch(self, insurer) -> list[ItemResult]:
        answer = _call(insurer, "GET", "/v1/confirmations", operation="confirmations_fetch")
        return [item_result_from(row) for row in answer.get("results", [])]

    def status_fetch(self, insurer, references: Sequence[str]) -> list[ItemResult]:
        answer = _call(
            insurer,
            "POST",
            "/v1/endorsements/status",
            operation="status_fetch",
            body={"references": list(references)},
            tracking_ids=list(references),
        )
        return [item_result_from(row) for row in answer.get("results", []) if row.get("outcome") != "unknown"]

    def roster_fetch(self, insurer) -> list[dict]:
        return _call(insurer, "GET", "/v1/roster", operation="roster_fetch").get("members", [])

    def statement_fetch(self, insurer, period_start: date, period_end: date) -> list[dict]:
        params = {"from": period_start.isoformat(), "to": period_end.isoformat()}
        return _call(insurer, "GET", "/v1/statement", operation="statement_fetch", params=params).get(
            "lines", []
        )


def _call(
    insurer,
    method: str,
    path: str,
    *,
    operation: str,
    body: dict | None = None,
    headers: dict | None = None,
    params: dict | None = None,
    dispatch=None,
    tracking_ids: Sequence[str] = (),
) -> dict:
    content = json.dumps(body).encode() if body is not None else b""
    request_headers = {
        "Content-Type": "application/json",
        **(headers or {}),
        **_auth_headers(insurer, content),
    }
    started = time.monotonic()
    status, answer_text = "error", ""
    try:
        response = _client(insurer).request(
            method, path, content=content or None, headers=request_headers, params=params
        )
        status, answer_text = str(response.status_code), response.text
    except httpx.TimeoutException as error:
        status = "timeout"
        raise TransientError(
            f"{operation} to {insurer.code} timed out: {error!r}", code="insurer_timeout"
        ) from error
    except httpx.TransportError as error:
        status = "connection_error"
        raise TransientError(
            f"{operation} to {insurer.code} failed: {error!r}", code="insurer_unreachable"
        ) from error
    finally:
        exchange_record(
            insurer=insurer,
            operation=operation,
            request={
                "method": method,
                "path": path,
                "params": params,
                "headers": request_headers,
                "body": body,
            },
            response=answer_text,
            status=status,
            started=started,
            dispatch_key=getattr(dispatch, "idempotency_key", ""),
            dispatch_id=getattr(dispatch, "pk", None),
            tracking_ids=tracking_ids,
        )
    return _answer(insurer, operation, response)


def _answer(insurer, operation: str, response: httpx.Response) -> dict:
    code = response.status_code
    if code == 429:
        raise TransientError(
            f"{operation}: {insurer.code} asks to slow down",
            code="insurer_throttled",
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    if code >= 500:
        raise TransientError(f"{operation}: {insurer.code} answered {code}", code="insurer_server_error")
    if code >= 400:
        raise PermanentError(f"{operation}: {insurer.code} refused with {code}: {response.text[:300]}")
    try:
        return response.json()
    except ValueError as error:
        raise TransientError(
            f"{operation}: {insurer.code} answered no JSON", code="insurer_bad_answer"
        ) from error


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _auth_headers(insurer, content: bytes) -> dict:
    credentials = insurer.credentials or {}
    if credentials.get("bearer_token"):
        return {"Authorization": f"Bearer {credentials['bearer_token']}"}
    if credentials.get("hmac_secret"):
        timestamp = str(int(time.time()))
        digest = hmac.new(
            credentials["hmac_secret"].encode(), timestamp.encode() + b"." + content, hashlib.sha256
        ).hexdigest()
        signed = {"X-Signature": f"t={timestamp},v1={digest}"}
        if credentials.get("hmac_key_id"):
            signed["X-Key-Id"] = credentials["hmac_key_id"]
        return signed
    return {}


def _client(insurer) -> httpx.Client:
    connection = insurer.connection or {}
    default = float(insurer.request_timeout_seconds)
    timeout = httpx.Timeout(
        connect=float(connection.get("connect_timeout", default)),
        read=float(connection.get("read_timeout", default)),
        write=float(connection.get("write_timeout", default)),
        pool=float(connection.get("pool_timeout", default)),
    )
    key = (insurer.pk, insurer.endpoint_url, repr(timeout), bool(connection.get("verify", True)))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = httpx.Client(
                base_url=insurer.endpoint_url.rstrip("/"),
                timeout=timeout,
                verify=bool(connection.get("verify", True)),
            )
            _clients[key] = client
    return client
