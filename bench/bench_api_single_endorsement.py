"""Benchmark: `POST /api/v1/endorsements/` over real HTTP against the web server as deployed.

One JSON line:
`{"bench": "api_single_endorsement", "concurrency": 16, "requests": N, "requests_per_s", "p50_ms",
"p99_ms", "errors", "server", "cpu_ms_per_request", "cpu_ms_per_request_by"}`

The server is the deployed HTTP server, started as `make run` starts it (granian's WSGI
server, `run_stack.web_server_argv`), on loopback, with a Celery worker validating behind
it as in production. BENCH_API_SERVER picks another: a name from SERVERS (the kept
servers compared in docs/decisions.md, BENCH_API_WORKERS processes, default 2), or a
whole command line with `{port}`, `{workers}` and `{bin}` (this virtualenv's bin
directory) in it; the JSON line names the server it ran. 16 client threads, each on its
own keep-alive connection, send distinct valid additions with an `Idempotency-Key`;
latency is measured per request from send to the full answer. A short warm-up is not
counted. The employer and everything written are deleted afterwards.

`cpu_ms_per_request` is the whole machine's CPU time during the timed load (`/proc/stat`:
the server, PostgreSQL, the validating worker, Redis and this client) divided by the
requests answered; `cpu_ms_per_request_by` splits it by process: `web` (the server's
processes), `worker` (the validating Celery worker), `postgres`, `client` (this process)
and `other`. The load is CPU-bound on 2 cores, so a run whose p99 is high because the
machine itself ran slow shows it here, beside the same request's usual cost.

The client process freezes what it loaded (Django, the fixture) out of its garbage
collector before the load, like the server processes do: otherwise each of its full
collections (some 150,000 objects, about 70 ms with the GIL held) stalled all 16 client
threads and was counted as server latency. What is sent and timed is unchanged.
"""

import datetime
import gc
import http.client
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.setup import (
    bench_database_url,
    django_ready,
    employer_with_policy,
    http_load,
    private_broker_url,
    tables_vacuum,
    web_server_start,
)
from ems.management.commands.run_stack import web_server_argv

HERE = Path(__file__).resolve().parent.parent
CONCURRENCY = 16

# The deployed server, and the kept servers it was chosen against, each as its
# documentation runs it. Django's own ASGI handler runs each request on a new thread, so
# the ASGI servers use a connection pool per process (Django's advice for ASGI) instead
# of persistent connections.
DEPLOYED = "granian-wsgi"
_ASGI_POOL = {"DB_POOL_MIN": "4", "DB_POOL_MAX": "8"}
SERVERS: dict[str, tuple[str, dict[str, str]]] = {
    "granian": (
        "{bin}/granian --interface asginl --host 127.0.0.1 --port {port} --workers {workers}"
        " --blocking-threads 1 --log-level warning ems.asgi:application",
        _ASGI_POOL,
    ),
    "gunicorn-uvicorn": (
        "{bin}/gunicorn --worker-class uvicorn_worker.UvicornWorker --bind 127.0.0.1:{port}"
        " --workers {workers} --log-level warning ems.asgi:application",
        _ASGI_POOL,
    ),
    "uvicorn": (
        "{bin}/uvicorn --host 127.0.0.1 --port {port} --workers {workers} --no-access-log"
        " --log-level warning ems.asgi:application",
        _ASGI_POOL,
    ),
}


def server_command(name: str, *, port: int, workers: int) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of server `name` (or of a whole command line)."""
    if name == DEPLOYED:
        return web_server_argv("127.0.0.1", port), {}
    command, extra_env = SERVERS.get(name, (name, {}))
    binaries = str(Path(sys.executable).parent)
    return shlex.split(command.format(bin=binaries, port=port, workers=workers)), extra_env


def _machine_cpu_seconds() -> float | None:
    """CPU time the whole machine has spent so far (user, nice, system, irq, softirq)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:8]
    except OSError:
        return None
    busy = sum(int(fields[i]) for i in (0, 1, 2, 5, 6))
    return busy / os.sysconf("SC_CLK_TCK")


def _cpu_by_part(server_pid: int, worker_pid: int) -> dict[int, tuple[str, float]]:
    """Each running process's CPU seconds so far, by pid, with the part it plays."""
    import psutil

    def tree(pid: int) -> set[int]:
        try:
            root = psutil.Process(pid)
            return {pid} | {child.pid for child in root.children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    web, worker, me = tree(server_pid), tree(worker_pid), os.getpid()
    seen: dict[int, tuple[str, float]] = {}
    for process in psutil.process_iter(["pid", "name", "cpu_times"]):
        times = process.info["cpu_times"]
        if times is None:
            continue
        pid = process.info["pid"]
        if pid in web:
            part = "web"
        elif pid in worker:
            part = "worker"
        elif pid == me:
            part = "client"
        elif process.info["name"] == "postgres":
            part = "postgres"
        else:
            part = "other"
        seen[pid] = (part, times.user + times.system)
    return seen


def _cpu_ms_per_request_by(before: dict, after: dict, requests: int) -> dict[str, float]:
    totals: dict[str, float] = {}
    for pid, (part, seconds) in after.items():
        earlier = before.get(pid)
        spent = seconds - (earlier[1] if earlier and earlier[0] == part else 0.0)
        totals[part] = totals.get(part, 0.0) + spent
    return {part: round(seconds * 1000 / max(requests, 1), 2) for part, seconds in sorted(totals.items())}


def _fixture() -> dict:
    from ems.auth import new_client_credentials
    from ems.models import ApiClient
    from endorsements.models import Plan, PlanRate

    insurer, employer, policy, today = employer_with_policy("a")
    plan = Plan.objects.create(policy=policy, code="GOLD", name="Gold", sum_insured_options=[500000])
    PlanRate.objects.create(
        plan=plan, relation="SELF", age_from=18, age_to=65, sum_insured=500000, annual_premium=1_200_000
    )
    client_id, secret, secret_hash = new_client_credentials()
    ApiClient.objects.create(employer=employer, name="bench", client_id=client_id, secret_hash=secret_hash)
    return {
        "employer_id": employer.pk,
        "insurer_id": insurer.pk,
        "policy_number": policy.number,
        "client_id": client_id,
        "client_secret": secret,
        "today": today,
    }


def _body(fixture: dict, n: int) -> bytes:
    today = fixture["today"]
    return json.dumps(
        {
            "action": "ADD",
            "employee_code": f"A{n:07d}",
            "relation": "SELF",
            "first_name": "Asha",
            "last_name": "Rao",
            "date_of_birth": "1988-04-12",
            "gender": "F",
            "email": f"asha.{n}@example.com",
            "phone": f"+9198{n:08d}",
            "date_of_joining": (today - datetime.timedelta(days=3)).isoformat(),
            "effective_date": today.isoformat(),
            "policy_number": fixture["policy_number"],
            "plan_code": "GOLD",
            "sum_insured": 500000,
        }
    ).encode()


def _token(port: int, fixture: dict) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps(
        {
            "grant_type": "client_credentials",
            "client_id": fixture["client_id"],
            "client_secret": fixture["client_secret"],
        }
    )
    connection.request("POST", "/api/v1/auth/token", body, {"Content-Type": "application/json"})
    return json.loads(connection.getresponse().read())["access_token"]


def _load(
    port: int, token: str, fixture: dict, *, per_client: int, offset: int
) -> tuple[list[float], int, float]:
    def request(index: int, call: int):
        n = offset + index * per_client + call
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": f"bench-{n}",
        }
        return "POST", "/api/v1/endorsements/", _body(fixture, n), headers

    return http_load(
        port,
        threads=CONCURRENCY,
        calls=per_client,
        request=request,
        ok=lambda status, _answer: status == 201,
        bench="api_single_endorsement",
    )


def _cleanup(fixture: dict) -> None:
    from django.db import connection

    employer_id = fixture["employer_id"]
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM endorsements_endorsementtransition WHERE endorsement_id IN "
            "(SELECT id FROM endorsements_endorsementrequest WHERE employer_id = %s)",
            [employer_id],
        )
        cursor.execute("DELETE FROM endorsements_endorsementrequest WHERE employer_id = %s", [employer_id])
        cursor.execute(
            "DELETE FROM ems_outboxevent WHERE (payload->>'employer_id')::bigint = %s", [employer_id]
        )
        cursor.execute(
            "DELETE FROM ems_idempotencyrecord WHERE caller = %s", [f"client:{fixture['client_id']}"]
        )
        cursor.execute("DELETE FROM endorsements_apiclient WHERE employer_id = %s", [employer_id])
        cursor.execute(
            "DELETE FROM endorsements_planrate WHERE plan_id IN (SELECT p.id FROM endorsements_plan p "
            "JOIN endorsements_policy o ON o.id = p.policy_id WHERE o.employer_id = %s)",
            [employer_id],
        )
        cursor.execute(
            "DELETE FROM endorsements_plan WHERE policy_id IN "
            "(SELECT id FROM endorsements_policy WHERE employer_id = %s)",
            [employer_id],
        )
        cursor.execute("DELETE FROM endorsements_policy WHERE employer_id = %s", [employer_id])
        cursor.execute("DELETE FROM endorsements_employer WHERE id = %s", [employer_id])
        cursor.execute("DELETE FROM insurers_insurer WHERE id = %s", [fixture["insurer_id"]])


def run():
    django_ready()
    per_client = int(os.environ.get("BENCH_API_REQUESTS_PER_CLIENT", "60"))
    workers = int(os.environ.get("BENCH_API_WORKERS", "2"))
    server_name = os.environ.get("BENCH_API_SERVER", DEPLOYED)
    # The ingest bench leaves hundreds of thousands of dead rows in these tables.
    tables_vacuum(
        "endorsements_endorsementrequest",
        "endorsements_endorsementtransition",
        "ems_outboxevent",
        "ems_idempotencyrecord",
    )
    fixture = _fixture()
    env = {
        **os.environ,
        "DATABASE_URL": bench_database_url(),
        "DJANGO_SETTINGS_MODULE": "ems.settings.base",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "REDIS_URL": private_broker_url(13),
        "LOG_LEVEL": "WARNING",
    }
    binaries = Path(sys.executable).parent
    log_path = os.environ.get("BENCH_API_SERVER_LOG")  # where the server's errors go, if wanted
    server_log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    server, port = web_server_start(
        env=env,
        command=lambda port: server_command(server_name, port=port, workers=workers),
        stderr=server_log,
    )
    worker = subprocess.Popen(
        [
            str(binaries / "celery"),
            "-A",
            "ems",
            "worker",
            "--concurrency=1",
            "--loglevel=WARNING",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=HERE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        token = _token(port, fixture)
        _load(port, token, fixture, per_client=5, offset=9_000_000)  # warm-up: connections, code paths
        gc.collect()
        gc.freeze()
        cpu_before, parts_before = _machine_cpu_seconds(), _cpu_by_part(server.pid, worker.pid)
        latencies, errors, elapsed = _load(port, token, fixture, per_client=per_client, offset=0)
        cpu_after, parts_after = _machine_cpu_seconds(), _cpu_by_part(server.pid, worker.pid)
    finally:
        for process in (server, worker):
            process.terminate()
        for process in (server, worker):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        time.sleep(0.5)
        _cleanup(fixture)
    latencies.sort()
    yield {
        "bench": "api_single_endorsement",
        "concurrency": CONCURRENCY,
        "server": server_name,
        "server_workers": workers,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
        "errors": errors,
        "cpu_ms_per_request": (
            round((cpu_after - cpu_before) * 1000 / len(latencies), 2)
            if cpu_before is not None and cpu_after is not None and latencies
            else None
        ),
        "cpu_ms_per_request_by": _cpu_ms_per_request_by(parts_before, parts_after, len(latencies)),
    }


if __name__ == "__main__":
    for line in run():
        print(json.dumps(line))
