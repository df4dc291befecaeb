"""The sandbox insurer's REST face: a small ASGI app served by uvicorn in `run_sandbox`.

    POST /v1/endorsements          {"dispatch_key", "items": [{item_key, reference, action, ...}]}
                                   header Idempotency-Key (the dispatch key) -> {"results": [...]}
    POST /v1/endorsements/status   {"references": [...]}            -> {"results": [...]}
    GET  /v1/confirmations         confirms what is due (answer mode "webhook") -> {"results": [...]}
    GET  /v1/roster?policy_number= -> {"members": [...]}
    GET  /v1/statement?from=&to=   -> {"lines": [...]}
    GET|POST /sandbox/switches     read / change the switches (JSON object)
    POST /sandbox/switches/reset

Every `/v1/` call needs `Authorization: Bearer <SANDBOX_REST_TOKEN>` when that is set, and
suffers the switches' latency and faults (500, a hang, 429 with Retry-After, or acting and
then answering 500 as if the response were lost).
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import date
from urllib.parse import parse_qs

from insurers.sandbox import engine


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = await _body(receive)
    status, payload, headers = await _route(scope, body)
    await _respond(send, status, payload, headers)


async def _route(scope, body: bytes) -> tuple[int, object, list]:
    method, path = scope["method"], scope["path"]
    query = {key: values[0] for key, values in parse_qs(scope.get("query_string", b"").decode()).items()}
    if path.startswith("/sandbox/"):
        return await _switches(method, path, body)
    if not path.startswith("/v1/"):
        return 404, {"error": "not_found"}, []
    token = os.environ.get("SANDBOX_REST_TOKEN", "")
    if token and _header(scope, b"authorization") != f"Bearer {token}":
        return 401, {"error": "unauthorized"}, []
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return 400, {"error": "invalid_json"}, []
    switches = await asyncio.to_thread(engine.switches_get)
    await asyncio.sleep(int(switches["latency_ms"]) / 1000)
    fault = engine.fault_pick(switches)
    if fault == "error":
        return 500, {"error": "internal"}, []
    if fault == "timeout":
        await asyncio.sleep(float(switches["timeout_seconds"]))
        return 504, {"error": "timeout"}, []
    if fault == "throttle":
        return 429, {"error": "slow_down"}, [(b"retry-after", str(switches["retry_after_seconds"]).encode())]
    try:
        status, payload = await asyncio.to_thread(_call, method, path, data, query, scope)
    except (KeyError, ValueError, TypeError) as error:
        return 400, {"error": "bad_request", "message": str(error)}, []
    if fault == "lose_response":
        return 500, {"error": "internal"}, []
    return status, payload, []


def _call(method: str, path: str, data, query: dict, scope) -> tuple[int, object]:
    if method == "POST" and path == "/v1/endorsements":
        key = _header(scope, b"idempotency-key") or data.get("dispatch_key", "")
        if not isinstance(data.get("items"), list) or not key:
            return 400, {"error": "items and an Idempotency-Key are required"}
        return 200, {"dispatch_key": key, "results": engine.receive(data["items"], key)}
    if method == "POST" and path == "/v1/endorsements/status":
        return 200, {"results": engine.status([str(ref) for ref in data["references"]])}
    if method == "GET" and path == "/v1/confirmations":
        return 200, {"results": engine.confirmations_due()}
    if method == "GET" and path == "/v1/roster":
        return 200, {"members": engine.roster(query.get("policy_number"))}
    if method == "GET" and path == "/v1/statement":
        start, end = date.fromisoformat(query["from"]), date.fromisoformat(query["to"])
        return 200, {"lines": engine.statement(start, end)}
    return 404, {"error": "not_found"}


async def _switches(method: str, path: str, body: bytes) -> tuple[int, object, list]:
    if path == "/sandbox/switches/reset" and method == "POST":
        return 200, await asyncio.to_thread(engine.switches_reset), []
    if path != "/sandbox/switches":
        return 404, {"error": "not_found"}, []
    if method == "GET":
        return 200, await asyncio.to_thread(engine.switches_get), []
    try:
        values = json.loads(body or b"{}")
        return 200, await asyncio.to_thread(lambda: engine.switches_set(**values)), []
    except (ValueError, TypeError) as error:
        return 400, {"error": str(error)}, []


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send, status: int, payload, headers: list) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + headers,
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
