"""Gateway benchmark: dispatches sent through `insurers.services.dispatch_send` to the sandbox insurer.

Line `gateway_send` per protocol (REST, SOAP, SFTP) and worker count: the sandbox
(`manage.py run_sandbox`, a real child process on loopback) answers every call after
`latency_ms` (50 ms); each dispatch carries `items_per_dispatch` (500) items. W spawned
processes (as Celery's prefork workers would be) take dispatch ids from one queue and send
them along the whole gateway path: breaker, shared Redis rate limit, adapter, exchange log
through the outbox, every result recorded on its item. `items_per_s` is all items over the
wall time from the first send to the last answer; `p50_ms`/`p99_ms` are per dispatch;
`items_final` counts items whose final result reached the database (REST and SOAP answer
inline, so all of them; SFTP answers later by response file, so its figure is items
delivered in files and `items_final` is 0). For REST, `sandbox_only_items_per_s` is the
baseline measured in the same run: the same bodies POSTed straight to the sandbox by W
processes with httpx, no EMS database, i.e. what the insurer alone allows.

As deployed, the outbox relay (exchange documents to MongoDB) runs in a process of its
own; the senders here write the outbox rows and do not relay them.
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
RATE_LIMIT_PER_SECOND = (
    100  # calls, shared by the workers (Redis); above what they reach, so the limiter is paid, not hit
)


def _rest(sandbox) -> dict:
    return {"endpoint_url": sandbox.faces["rest"], "credentials": {"bearer_token": sandbox.token}}


def _soap(sandbox) -> dict:
    from django.conf import settings

    return {
        "endpoint_url": f"{sandbox.faces['soap']}?wsdl",
        "credentials": {
            "username": settings.SANDBOX_SOAP_USERNAME,
            "password": settings.SANDBOX_SOAP_PASSWORD,
        },
    }


def _sftp(sandbox) -> dict:
    from django.conf import settings

    from insurers.sandbox.sftp_server import SANDBOX_CSV_COLUMNS

    return {
        "endpoint_url": sandbox.faces["sftp"],
        "credentials": {"password": settings.SANDBOX_SFTP_PASSWORD},
        "connection": {
            "known_hosts": (sandbox.data_dir / "known_hosts").read_text(),
            "csv_columns": SANDBOX_CSV_COLUMNS,
        },
    }


# protocol -> the insurer's endpoint, credentials and connection at the sandbox
PROTOCOLS = {"REST": _rest, "SOAP": _soap, "SFTP": _sftp}


# --- child processes -------------------------------------------------------------------


def _child_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ems.settings.base")
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["OUTBOX_RELAY_ON_COMMIT"] = "0"
    import django

    django.setup()


def _gateway_worker(database_url, warm_ups, jobs, ready, start, results) -> None:
    _child_django(database_url)
    from insurers import services
    from insurers.adapters.base import GatewayError

    services.dispatch_send(dispatch_id=warm_ups.get())  # connections, a parsed WSDL, warm code paths
    ready.put(os.getpid())
    start.wait()
    latencies, errors = [], 0
    while (dispatch_id := jobs.get()) is not None:
        began = time.perf_counter()
        try:
            services.dispatch_send(dispatch_id=dispatch_id)
        except GatewayError:
            errors += 1
        latencies.append(time.perf_counter() - began)
    results.put((latencies, errors))


def _sandbox_worker(url, token, warm_ups, jobs, ready, start, results) -> None:
    import httpx

    client = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})
    client.get("/v1/roster", params={"policy_number": warm_ups.get()})  # open the connection first
    ready.put(os.getpid())
    start.wait()
    latencies, errors = [], 0
    while (body := jobs.get()) is not None:
        began = time.perf_counter()
        response = client.post(
            "/v1/endorsements", json=body, headers={"Idempotency-Key": body["dispatch_key"]}
        )
        errors += response.status_code != 200
        latencies.append(time.perf_counter() - began)
    results.put((latencies, errors))


def _run_workers(target, args: tuple, warm_ups: list, jobs: list) -> tuple[float, list[float], int]:
    """One process of `target` per warm-up job; feed them `jobs`; (wall seconds, latencies, errors)."""
    context = multiprocessing.get_context("spawn")
    warm, queue, ready, results = context.Queue(), context.Queue(), context.Queue(), context.Queue()
    start = context.Event()
    for job in warm_ups:
        warm.put(job)
    for job in jobs:
        queue.put(job)
    for _ in warm_ups:
        queue.put(None)
    processes = [
        context.Process(target=target, args=(*args, warm, queue, ready, start, results), daemon=True)
        for _ in warm_ups
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=300)
    began = time.perf_counter()
    start.set()
    answers = [results.get(timeout=900) for _ in processes]
    wall = time.perf_counter() - began
    for process in processes:
        process.join(timeout=30)
    return wall, [latency for latencies, _ in answers for latency in latencies], sum(e for _, e in answers)


# --- set-up ----------------------------------------------------------------------------


def _payload(reference: str, number: int, index: int) -> dict:
    from insurers.sandbox.samples import member_payload

    return member_payload(reference=reference, employee_code=f"E{number:03d}{index:04d}")


def _dispatches_create(insurer, tag: str, count: int) -> list[int]:
    from insurers import services

    ids = []
    for number in range(count):
        items = []
        for index in range(ITEMS_PER_DISPATCH):
            reference = f"{tag}-{number}-{index}"
            items.append(
                {"reference": reference, "kind": "ADD", "payload": _payload(reference, number, index)}
            )
        ids.append(services.dispatch_create(insurer=insurer, items=items).pk)
    return ids


def _sandbox_bodies(tag: str, count: int) -> list[dict]:
    """The bodies the REST adapter sends, for fresh item keys (the sandbox acts on each)."""
    bodies = []
    for number in range(count):
        items = []
        for index in range(ITEMS_PER_DISPATCH):
            reference = f"{tag}-raw-{number}-{index}"
            items.append({**_payload(reference, number, index), "item_key": f"itm-{reference}"})
        bodies.append({"dispatch_key": f"dsp-raw-{tag}-{number}", "items": items})
    return bodies


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _p99(latencies: list[float]) -> float:
    if len(latencies) < 2:
        return latencies[0] if latencies else 0.0
    return statistics.quantiles(latencies, n=100)[98]


def _line(protocol: str, workers: int, wall: float, latencies: list[float], errors: int) -> dict:
    return {
        "bench": "gateway_send",
        "protocol": protocol,
        "items_per_dispatch": ITEMS_PER_DISPATCH,
        "latency_ms": LATENCY_MS,
        "workers": workers,
        "dispatches": DISPATCHES,
        "items_per_s": round(DISPATCHES * ITEMS_PER_DISPATCH / wall),
        "p50_ms": _ms(statistics.median(latencies)),
        "p99_ms": _ms(_p99(latencies)),
        "errors": errors,
    }


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
                        code=f"gw{tag}",
                        name=f"Bench gateway insurer ({protocol})",
                        protocol=protocol,
                        webhook_secret_primary=f"whsec_{tag}",
                        request_timeout_seconds=30,
                        rate_limit_per_second=RATE_LIMIT_PER_SECOND,
                        **configure(sandbox),
                    )
                    warm_ups = _dispatches_create(insurer, f"{tag}w", workers)
                    ids = _dispatches_create(insurer, tag, DISPATCHES)
                    wall, latencies, errors = _run_workers(_gateway_worker, (database_url,), warm_ups, ids)
                    line = _line(protocol, workers, wall, latencies, errors)
                    line["items_final"] = DispatchItem.objects.filter(
                        dispatch_id__in=ids,
                        result__in=[DispatchItem.Result.CONFIRMED, DispatchItem.Result.REJECTED],
                    ).count()
                    line["rate_limit_per_second"] = RATE_LIMIT_PER_SECOND
                    if protocol == "REST":
                        raw_wall, _, _ = _run_workers(
                            _sandbox_worker,
                            (sandbox.faces["rest"], sandbox.token),
                            ["none"] * workers,
                            _sandbox_bodies(tag, DISPATCHES),
                        )
                        line["sandbox_only_items_per_s"] = round(DISPATCHES * ITEMS_PER_DISPATCH / raw_wall)
                    yield line
        finally:
            sandbox.stop()
