"""The deployed pipeline for end-to-end tests and the pipeline benchmark: a private Redis, the
web server and a Celery worker.

- `RedisServer`: a `redis-server` of the test's own on a free loopback port (nothing on
  disk), so a test may stop and restart it without touching the machine's shared Redis.
- `Stack`: the web server as deployed (granian, `bench.setup.web_server_start`), the outbox
  relay process (`relay_outbox --loop`) and a real
  Celery worker with its beat embedded (every queue, two prefork children), all on this
  session's test database and the private Redis, with the pipeline's sweeps at about a
  second. `worker_kill()` SIGKILLs the worker's whole process group (parent and children)
  and `worker_start()` starts a new one: the fault tests' dead worker.

Tests using these must be `transaction=True`, so the subprocesses see their data.
`database_url` names the database the processes use (the test database, or the bench's).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
from django.conf import settings
from kombu.exceptions import OperationalError

from bench.setup import free_port, process_group_stop, web_server_start

BIN = Path(sys.executable).parent
SWEEPS = {
    "PIPELINE_WINDOW_SWEEP_SECONDS": "0.5",
    "PIPELINE_SEND_SWEEP_SECONDS": "0.5",
    "PIPELINE_SEND_GRACE_SECONDS": "3",
    "PIPELINE_CONFIRM_SWEEP_SECONDS": "1",
    "PIPELINE_RETRY_CAP_SECONDS": "2",
    "INSURER_CONFIRMATIONS_POLL_SECONDS": "1",
    "ACTIVATION_SWEEP_SECONDS": "1",
    "SLA_SWEEP_SECONDS": "5",
    "VALIDATION_KICK_SECONDS": "2",
    "VALIDATION_DRAIN_SWEEP_SECONDS": "1",
    "VALIDATION_LOST_AFTER_SECONDS": "3",
    "BATCH_STALLED_AFTER_SECONDS": "10",
    "BATCH_STALLED_SWEEP_SECONDS": "2",
}


class RedisServer:
    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            process_group_stop(self.process)
            self.process = None


class Stack:
    def __init__(
        self, directory: Path, redis_server: RedisServer, *, database_url: str, extra_env: dict | None = None
    ):
        self.directory = directory
        self.redis = redis_server
        self.env = {
            **os.environ,
            **SWEEPS,
            "DJANGO_SETTINGS_MODULE": "ems.settings.test",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "MONGO_URL": settings.MONGO_URL,
            "KAFKA_BOOTSTRAP_SERVERS": ",".join(settings.KAFKA_BOOTSTRAP_SERVERS or []),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.web: subprocess.Popen | None = None
        self.web_url = ""
        self.worker: subprocess.Popen | None = None
        self.relay: subprocess.Popen | None = None
        self.workers_started = 0

    def start(self) -> Stack:
        log = open(self.directory / "web.log", "w")  # noqa: SIM115 - lives as long as the server
        self.web, port = web_server_start(env=self.env, stderr=log)
        self.web_url = f"http://127.0.0.1:{port}"
        self.relay = subprocess.Popen(
            [sys.executable, "manage.py", "relay_outbox", "--loop", "--interval", "0.2"],
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=open(self.directory / "relay.log", "wb"),  # noqa: SIM115 - lives as long as the relay
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.worker_start()
        self.worker_ready_wait()
        return self

    def worker_ready_wait(self, timeout: float = 60) -> None:
        """Until the worker answers a ping on its broker (its boot is not counted in any timing)."""
        from celery import Celery

        deadline = time.monotonic() + timeout
        while True:
            probe = Celery(broker=self.redis.url, set_as_current=False)
            try:
                if probe.control.ping(timeout=0.5):
                    return
            except (redis.ConnectionError, OSError, OperationalError):
                time.sleep(0.2)  # a pidbox reply read cut short while the worker boots: ask again
            finally:
                probe.close()
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{self.logs()}")

    def worker_start(self) -> subprocess.Popen:
        self.workers_started += 1
        log = open(self.directory / f"worker{self.workers_started}.log", "wb")  # noqa: SIM115
        self.worker = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "ems",
                "worker",
                "-B",
                "--scheduler",
                "celery.beat:PersistentScheduler",
                "-s",
                str(self.directory / f"beat{self.workers_started}"),
                "-Q",
                ",".join(settings.CELERY_QUEUE_NAMES),
                "--concurrency",
                "2",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "WARNING",
            ],
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.worker

    def worker_kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children): no chance to ack or clean up."""
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(timeout=10)

    def stop(self) -> None:
        if self.worker is not None:
            process_group_stop(self.worker)
        if self.relay is not None:
            process_group_stop(self.relay)
        if self.web is not None:
            self.web.send_signal(signal.SIGTERM)
            try:
                self.web.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.web.kill()
                self.web.wait(timeout=15)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.directory.glob("*.log"))
        )
