"""Benchmark: signed insurer webhooks over real HTTP to the ASGI server as deployed.

Two JSON lines:
`{"bench": "webhook_ingest", "mode": "single", "concurrency": 8, "events": N, "events_per_s", "p50_ms",
"p99_ms", "errors"}` — 8 client threads on keep-alive connections POST one signed
`endorsement.accepted` event each to `.../notify`, latency from send to the full answer;
`{"bench": "webhook_ingest", "mode": "batch", "events_per_call": 100, "concurrency": 2, "events",
"events_per_s", "p50_ms", "p99_ms", "errors"}` — two threads POST signed batches of 100 to
`.../batch-notify`. Every event is new (distinct ids) and names a reference of a real
dispatch, so each is verified, stored with its deduplicating insert and handed to the
Celery queue (a private Redis database; no worker drains it during the run, so its work
is not counted against the server). The server is the deployed one (granian's WSGI server) started by
`bench.setup.web_server_start`, as the API bench starts it. A short warm-up is not
counted; everything written is deleted afterwards.
"""

import json
import os
import statistics
import time

from bench.setup import (
    bench_database_url,
    django_ready,
    http_load,
    private_broker_url,
    tables_vacuum,
    web_server_start,
)

SINGLE_CONCURRENCY = 8
BATCH_CONCURRENCY = 2
EVENTS_PER_CALL = 100
SECRET = "whsec_bench_webhook_0123456789abcdef"


def _fixture(references: int) -> dict:
    from insurers.models import Insurer
    from insurers.services import dispatch_create

    tag = f"{os.getpid()}{int(time.time() * 1000) % 10_000_000}"
    insurer = Insurer.objects.create(
        code=f"wh{tag}", name="Bench webhook insurer", protocol="REST", webhook_secret_primary=SECRET
    )
    refs = [f"WHB-{tag}-{n}" for n in range(references)]
    dispatch = dispatch_create(
        insurer=insurer,
        items=[{"reference": ref, "kind": "ADD", "payload": {"reference": ref}} for ref in refs],
    )
    return {"insurer_id": insurer.pk, "dispatch_id": dispatch.pk, "references": refs, "tag": tag}


def _event(fixture: dict, n: int) -> dict:
    references = fixture["references"]
    return {
        "event_id": f"evt-{fixture['tag']}-{n}",
        "type": "endorsement.accepted",
        "tracking_id": references[n % len(references)],
        "occurred_at": "2026-12-02T10:00:00+00:00",
        "data": {"insurer_reference": f"INS-{n}"},
    }


def _load(port: int, fixture: dict, *, threads: int, calls: int, per_call: int, offset: int):
    """(latencies, errors, elapsed, events) for `threads` clients making `calls` signed calls each."""
    from insurers.webhooks import SIGNATURE_HEADER, signature_header

    path = f"/api/v1/webhooks/insurers/{fixture['insurer_id']}/" + (
        "batch-notify" if per_call > 1 else "notify"
    )

    def request(index: int, call: int):
        first = offset + (index * calls + call) * per_call
        events = [_event(fixture, first + k) for k in range(per_call)]
        body = json.dumps(events[0] if per_call == 1 else {"events": events}).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature_header([SECRET], body)}
        return "POST", path, body, headers

    def ok(status: int, answer: bytes) -> bool:
        if per_call == 1:
            return status == 202
        return status == 200 and json.loads(answer)["received"] == per_call

    latencies, errors, elapsed = http_load(
        port, threads=threads, calls=calls, request=request, ok=ok, bench="webhook_ingest"
    )
    return latencies, errors, elapsed, threads * calls * per_call


def _figures(latencies: list[float], errors: int, elapsed: float, events: int) -> dict:
    return {
        "events": events,
        "events_per_s": round(events / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1),
        "errors": errors,
    }


def _cleanup(fixture: dict) -> None:
    from insurers.models import Dispatch, DispatchItem, Insurer, WebhookEvent

    WebhookEvent.objects.filter(insurer_id=fixture["insurer_id"]).delete()
    DispatchItem.objects.filter(dispatch_id=fixture["dispatch_id"]).delete()
    Dispatch.objects.filter(pk=fixture["dispatch_id"]).delete()
    Insurer.objects.filter(pk=fixture["insurer_id"]).delete()


def run():
    django_ready()
    per_client = int(os.environ.get("BENCH_WEBHOOK_REQUESTS_PER_CLIENT", "150"))
    batch_calls = int(os.environ.get("BENCH_WEBHOOK_BATCH_CALLS_PER_CLIENT", "50"))
    tables_vacuum("insurers_webhookevent", "insurers_dispatchitem")
    fixture = _fixture(references=2000)
    broker = private_broker_url(9)
    env = {
        **os.environ,
        "DATABASE_URL": bench_database_url(),
        "DJANGO_SETTINGS_MODULE": "ems.settings.base",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "REDIS_URL": broker,
        "LOG_LEVEL": "WARNING",
    }
    server, port = web_server_start(env=env)
    try:
        _load(port, fixture, threads=SINGLE_CONCURRENCY, calls=5, per_call=1, offset=9_000_000)  # warm-up
        single = _load(port, fixture, threads=SINGLE_CONCURRENCY, calls=per_client, per_call=1, offset=0)
        _load(port, fixture, threads=BATCH_CONCURRENCY, calls=2, per_call=EVENTS_PER_CALL, offset=8_000_000)
        batch = _load(
            port,
            fixture,
            threads=BATCH_CONCURRENCY,
            calls=batch_calls,
            per_call=EVENTS_PER_CALL,
            offset=1_000_000,
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a hung server is killed, never left behind
            server.kill()
        _cleanup(fixture)
        private_broker_url(9)  # the queued hand-offs are dropped with the fixture
    yield {
        "bench": "webhook_ingest",
        "mode": "single",
        "concurrency": SINGLE_CONCURRENCY,
        **_figures(*single),
    }
    yield {
        "bench": "webhook_ingest",
        "mode": "batch",
        "events_per_call": EVENTS_PER_CALL,
        "concurrency": BATCH_CONCURRENCY,
        **_figures(*batch),
    }


if __name__ == "__main__":
    for line in run():
        print(json.dumps(line))
