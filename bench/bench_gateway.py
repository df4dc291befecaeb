"""Gateway benchmark: dispatches sent through `insurers.services.dispatch_send` to the sandbox insurer.

Line `gateway_send` per protocol and worker count: the sandbox (`manage.py run_sandbox`, a
real child process on loopback) answers every call after `latency_ms` (50 ms); each
dispatch carries `items_per_dispatch` (500) items. W spawned processes (as Celery's prefork
workers would be) take dispatch ids from one queue and send them with the whole gateway
path: breaker, shared Redis rate limit, adapter, exchange log through the outbox, every
result recorded on its item. `items_per_s` is all items over the wall time from the first
send to the last answer; `p50_ms`/`p99_ms` are per dispatch. `sandbox_only_items_per_s`
is the baseline measured in the same run: the same bodies POSTed straight to the sandbox
by W processes with httpx, no EMS database, i.e. what the insurer alone allows.
`items_confirmed` counts items whose result reached the database (must equal the total).

Protocols are `PROTOCOLS`: name -> function(sandbox) giving the insurer's protocol,
endpoint and credentials; a protocol face adds itself there.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.setup import bench_database_url, django_ready

ITEMS_PER_DISPATCH = 500
LATENCY_MS = 50
WORKER_COUNTS = (1, 4)
DISPATCHES = int(os.environ.get("BENCH_GATEWAY_DISPATCHES", "24"))


def _rest(sandbox) -> dict:
    return {
        "protocol": "REST",
        "endpoint_url": sandbox.faces["rest"],
        "credentials": {"bearer_token": sandbox.token},
    }


PROTOCOLS = {"REST": _rest}


# --- child processes -------------------------------------------------------------------


def _child_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ems.settings.base")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()


def _gateway_worker(database_url, jobs, ready, start, results) -> None:
    _child_django(database_url)
    from django.db import connection

    from insurers import services

    connection.ensure_connection()
    ready.put(os.getpid())
    start.wait()
    latencies = []
    while (dispatch_id := jobs.get()) is not None:
        began = time.perf_counter()
        services.dispatch_send(dispatch_id=dispatch_id)
        latencies.append(time.perf_counter() - began)
    results.put(latencies)


def _sandbox_worker(url, token, jobs, ready, start, results) -> None:
    import httpx

    client = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})
    client.get("/v1/roster", params={"policy_number": "none"})  # open the connection first
    ready.put(os.getpid())
    start.wait()
    latencies = []
    while (body := jobs.get()) is not None:
        began = time.perf_counter()
        client.post(
            "/v1/endorsements", json=body, headers={"Idempotency-Key": body["dispatch_key"]}
        ).raise_for_status()
        latencies.append(time.perf_counter() - began)
    results.put(latencies)


def _run_workers(target, args: tuple, jobs: list, workers: int) -> tuple[float, list[float]]:
    """Start `workers` processes of `target`, feed them `jobs`, return (wall seconds, latencies)."""
    context = multiprocessing.get_context("spawn")
    queue, ready, results = context.Queue(), context.Queue(), context.Queue()
    start = context.Event()
    for job in jobs:
        queue.put(job)
    for _ in range(workers):
        queue.put(None)
    processes = [
        context.Process(target=target, args=(*args, queue, ready, start, results), daemon=True)
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    began = time.perf_counter()
    start.set()
    latencies = [latency for _ in processes for latency in results.get(timeout=600)]
    wall = time.perf_counter() - began
    for process in processes:
        process.join(timeout=30)
    return wall, latencies


# --- set-up ----------------------------------------------------------------------------


def _payload(reference: str, index: int) -> dict:
    return {
        "reference": reference,
        "action": "ADD",
        "policy_number": "BENCH-POLICY",
        "employee_code": f"E{index:06d}",
        "relation": "SELF",
        "first_name": "Asha",
        "last_name": f"Member{index}",
        "date_of_birth": "1990-04-01",
        "gender": "F",
        "email": f"member{index}@example.com",
        "phone": "+919800000000",
        "plan_code": "GOLD",
        "sum_insured": 500_000,
        "effective_date": "2026-01-01",
        "premium": 123_456,
        "currency": "INR",
    }


def _dispatches_create(insurer, tag: str, count: int) -> list[int]:
    from insurers import services

    ids = []
    for number in range(count):
        items = []
        for index in range(ITEMS_PER_DISPATCH):
            reference = f"{tag}-{number}-{index}"
            items.append({"reference": reference, "kind": "ADD", "payload": _payload(reference, index)})
        ids.append(services.dispatch_create(insurer=insurer, items=items).pk)
    return ids


def _sandbox_bodies(tag: str, count: int) -> list[dict]:
    """The bodies the REST adapter sends, for fresh item keys (the sandbox acts on each)."""
    bodies = []
    for number in range(count):
        items = []
        for index in range(ITEMS_PER_DISPATCH):
            reference = f"{tag}-raw-{number}-{index}"
            items.append({**_payload(reference, index), "item_key": f"itm-{reference}"})
        bodies.append({"dispatch_key": f"dsp-raw-{tag}-{number}", "items": items})
    return bodies


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _p99(latencies: list[float]) -> float:
    if len(latencies) < 2:
        return latencies[0] if latencies else 0.0
    return statistics.quantiles(latencies, n=100)[98]


def run():
    django_ready()
    from insurers.models import DispatchItem, Insurer
    from insurers.sandbox.process import sandbox_start

    database_url = bench_database_url()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as data_dir:
        sandbox = sandbox_start(data_dir=Path(data_dir), token=f"bench-{uuid.uuid4().hex}")
        try:
            sandbox.switches(latency_ms=LATENCY_MS)
            for protocol, configure in PROTOCOLS.items():
                for workers in WORKER_COUNTS:
                    tag = f"b{uuid.uuid4().hex[:10]}"
                    insurer = Insurer.objects.create(
                        code=f"gw{tag}"[:32],
                        name=f"Bench gateway insurer ({protocol})",
                        webhook_secret_primary=f"whsec_{tag}",
                        **configure(sandbox),
                    )
                    ids = _dispatches_create(insurer, tag, DISPATCHES)
                    wall, latencies = _run_workers(_gateway_worker, (database_url,), ids, workers)
                    items = DISPATCHES * ITEMS_PER_DISPATCH
                    confirmed = DispatchItem.objects.filter(
                        dispatch__insurer=insurer, result=DispatchItem.Result.CONFIRMED
                    ).count()
                    raw_wall, _ = _run_workers(
                        _sandbox_worker,
                        (sandbox.faces["rest"], sandbox.token),
                        _sandbox_bodies(tag, DISPATCHES),
                        workers,
                    )
                    yield {
                        "bench": "gateway_send",
                        "protocol": protocol,
                        "items_per_dispatch": ITEMS_PER_DISPATCH,
                        "latency_ms": LATENCY_MS,
                        "workers": workers,
                        "dispatches": DISPATCHES,
                        "items_per_s": round(items / wall),
                        "p50_ms": _ms(statistics.median(latencies)),
                        "p99_ms": _ms(_p99(latencies)),
                        "sandbox_only_items_per_s": round(items / raw_wall),
                        "items_confirmed": confirmed,
                        "rate_limit_per_second": insurer.rate_limit_per_second,
                    }
        finally:
            sandbox.stop()
