"""Gateway sends over SOAP and SFTP against the sandbox insurer (`make bench BENCH=gateway`).

Lines (figures, never assertions):
`{"bench": "gateway_send", "protocol": "SOAP"|"SFTP", "items_per_dispatch": 500, "items_per_s", ...}`:
dispatches of 500 items sent through `insurers.services.dispatch_send` (breaker, shared
rate limit, adapter, exchange log, results recorded) by `CONCURRENCY` threads, against a
`run_sandbox` process on loopback whose switches add 50 ms to every call. SOAP answers
each item inline (confirmed); SFTP uploads the file (items pending until the response
file), so its figure is files delivered.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.setup import django_ready

ITEMS_PER_DISPATCH = 500
LATENCY_MS = 50
CONCURRENCY = int(os.environ.get("BENCH_GATEWAY_CONCURRENCY", "4"))
DISPATCHES = {"SOAP": int(os.environ.get("BENCH_GATEWAY_SOAP_DISPATCHES", "16")), "SFTP": 24}


def _sandbox_start(data_dir: Path):
    from ems.embedded import free_port

    ports = {name: free_port() for name in ("rest", "soap", "sftp")}
    argv = [sys.executable, "manage.py", "run_sandbox", "--host", "127.0.0.1", "--data-dir", str(data_dir)]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    process = subprocess.Popen(
        argv,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "SANDBOX_REST_TOKEN": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in process.stdout:
        if line.startswith('{"ready"'):
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, json.loads(line)["faces"]
    process.kill()
    raise RuntimeError("the sandbox did not start")


def _insurer(protocol: str, faces: dict, data_dir: Path):
    from django.conf import settings

    from insurers.models import Insurer
    from insurers.sandbox.sftp_server import SANDBOX_CSV_COLUMNS

    code = f"bench-{protocol.lower()}-{uuid.uuid4().hex[:6]}"
    if protocol == "SOAP":
        endpoint = f"{faces['soap']}?wsdl"
        credentials = {"username": settings.SANDBOX_SOAP_USERNAME, "password": settings.SANDBOX_SOAP_PASSWORD}
        connection = {}
    else:
        endpoint = faces["sftp"]
        credentials = {"password": settings.SANDBOX_SFTP_PASSWORD}
        connection = {
            "known_hosts": (data_dir / "known_hosts").read_text(),
            "csv_columns": SANDBOX_CSV_COLUMNS,
        }
    return Insurer.objects.create(
        code=code,
        name=code,
        protocol=protocol,
        endpoint_url=endpoint,
        credentials=credentials,
        connection=connection,
        webhook_secret_primary=uuid.uuid4().hex,
        request_timeout_seconds=30,
        rate_limit_per_second=100,
    )


def _dispatches(insurer, count: int) -> list[int]:
    from insurers import services
    from insurers.sandbox.samples import member_payload

    run = uuid.uuid4().hex[:8].upper()
    ids = []
    for number in range(count):
        items = []
        for position in range(ITEMS_PER_DISPATCH):
            reference = f"BN-{run}-{number:03d}-{position:04d}"
            member = member_payload(reference=reference, employee_code=f"E{number:03d}{position:04d}")
            items.append({"reference": reference, "kind": "ADD", "payload": member})
        ids.append(services.dispatch_create(insurer=insurer, items=items).pk)
    return ids


def _send_all(dispatch_ids: list[int]) -> tuple[float, int]:
    from django.db import connections

    from insurers import services
    from insurers.adapters.base import GatewayError

    errors = 0

    def send(dispatch_id: int) -> None:
        nonlocal errors
        try:
            services.dispatch_send(dispatch_id=dispatch_id)
        except GatewayError:
            errors += 1
        finally:
            connections.close_all()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        list(pool.map(send, dispatch_ids))
    return time.perf_counter() - started, errors


def run():
    # As deployed, the outbox relay (exchange documents to MongoDB) runs in a worker of its
    # own, not in the process that sends; the rows are still written here.
    os.environ.setdefault("OUTBOX_RELAY_ON_COMMIT", "0")
    django_ready()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as folder:
        data_dir = Path(folder)
        process, faces = _sandbox_start(data_dir)
        try:
            httpx.post(f"{faces['rest']}/sandbox/switches", json={"latency_ms": LATENCY_MS}, timeout=5)
            for protocol in ("SOAP", "SFTP"):
                insurer = _insurer(protocol, faces, data_dir)
                warm_up = _dispatches(insurer, 1)
                _send_all(warm_up)  # WSDL parsed, connections and code paths warm
                dispatch_ids = _dispatches(insurer, DISPATCHES[protocol])
                elapsed, errors = _send_all(dispatch_ids)
                items = ITEMS_PER_DISPATCH * (len(dispatch_ids) - errors)
                yield {
                    "bench": "gateway_send",
                    "protocol": protocol,
                    "items_per_dispatch": ITEMS_PER_DISPATCH,
                    "items_per_s": round(items / elapsed),
                    "dispatches": len(dispatch_ids),
                    "concurrency": CONCURRENCY,
                    "latency_ms": LATENCY_MS,
                    "seconds": round(elapsed, 2),
                    "errors": errors,
                }
        finally:
            process.terminate()
            process.wait(timeout=10)
