"""Shared set-up for benchmarks: a Django configured against a benchmark database.

`django_ready()` points DATABASE_URL at BENCH_DATABASE_URL (default: database
`ems_bench` on the machine's PostgreSQL), creates that database if missing, runs the
migrations and returns. Call it before importing any model.
"""

import os

import django

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/ems_bench"
_ready = False


def bench_database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)


def django_ready() -> None:
    global _ready
    if _ready:
        return
    url = bench_database_url()
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ems.settings.base")
    _create_database(url)
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    _ready = True


def _create_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def private_broker_url(db: int) -> str:
    """A Redis database for one benchmark's Celery queue, emptied first.

    Each benchmark that runs a real worker gets its own database: tasks another benchmark
    left queued (an API run stopped before its worker drained every validation) would
    otherwise be worked off first and counted in this one's time.
    """
    import redis

    url = f"redis://127.0.0.1:6379/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


def employer_with_policy(prefix: str):
    """A fresh insurer, employer and year-long policy (started 100 days ago) for one run.

    Returns (insurer, employer, policy, today); codes carry the process id and the time,
    so runs never collide."""
    import datetime
    import time

    from django.utils import timezone

    from ems.models import Employer
    from endorsements.models import Policy
    from insurers.models import Insurer

    tag = f"{os.getpid()}{int(time.time() * 1000) % 10_000_000}"
    today = timezone.localdate()
    insurer = Insurer.objects.create(
        code=f"{prefix}i{tag}", name="Bench insurer", protocol="REST", webhook_secret_primary="whsec_bench"
    )
    employer = Employer.objects.create(code=f"{prefix}e{tag}", name="Bench employer")
    start = today - datetime.timedelta(days=100)
    policy = Policy.objects.create(
        employer=employer,
        insurer=insurer,
        number=f"{prefix.upper()}P-{tag}",
        start_date=start,
        end_date=start + datetime.timedelta(days=364),
    )
    return insurer, employer, policy, today


def tables_vacuum(*tables: str) -> None:
    """VACUUM ANALYZE these tables, so a run starts without the dead rows of earlier runs
    (their index entries slow later lookups, and make runs drift)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {', '.join(tables)}")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def web_server_start(*, env: dict, command=None, stderr=None):
    """A web server on a free loopback port, answering `/healthz`; returns (process, port).

    `command(port) -> (argv, extra_env)` builds the server's command line; by default the
    server as deployed (`run_stack.web_server_argv`: granian's WSGI server). The caller stops it.
    """
    import subprocess
    from pathlib import Path

    port = free_port()
    if command is None:
        from ems.management.commands.run_stack import web_server_argv

        argv, extra_env = web_server_argv("127.0.0.1", port), {}
    else:
        argv, extra_env = command(port)
    server = subprocess.Popen(
        argv,
        cwd=Path(__file__).resolve().parent.parent,
        env={**env, **extra_env},
        stdout=subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
    )
    try:
        _wait_ready(port, server)
    except BaseException:
        server.kill()
        raise
    return server, port


def _wait_ready(port: int, server) -> None:
    import http.client
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the web server exited")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the web server did not become ready")


def http_load(
    port: int, *, threads: int, calls: int, request, ok, bench: str
) -> tuple[list[float], int, float]:
    """`threads` clients, each on its own keep-alive connection, make `calls` requests each,
    started together; latency is from send to the full answer.

    `request(index, call)` gives (method, path, body, headers); `ok(status, answer)` says
    whether an answer counts as a success. Returns (latencies in seconds, sorted; errors;
    elapsed seconds). A few failed answers are printed to stderr."""
    import http.client
    import json
    import sys
    import threading
    import time

    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    samples: list[str] = []
    barrier = threading.Barrier(threads + 1)

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        barrier.wait()
        for call in range(calls):
            method, path, body, headers = request(index, call)
            started = time.perf_counter()
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            answer = response.read()
            latencies[index].append(time.perf_counter() - started)
            if not ok(response.status, answer):
                errors[index] += 1
                samples.append(f"{response.status} {answer[:300]!r}")

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if samples:
        print(json.dumps({"bench": bench, "error_samples": samples[:3]}), file=sys.stderr)
    return sorted(x for per in latencies for x in per), sum(errors), elapsed


def process_group_stop(process) -> None:
    """SIGTERM to the process group (started with start_new_session), SIGKILL after 10 s."""
    import signal
    import subprocess

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
