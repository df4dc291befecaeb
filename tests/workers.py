"""A real Celery worker for tests about the worker: started on this session's test database
and broker (eager off), killed for real (SIGKILL to its whole process group: the parent,
its pool children and the embedded beat) and started again."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from celery import current_app
from django.conf import settings

from tests.servers import database_url, stop

BIN = Path(sys.executable).parent


def celery_worker_argv(*pool: str, loglevel: str = "WARNING") -> list[str]:
    """A worker command on every queue, with no broker chatter between workers; `pool`
    says how it runs tasks (`--pool solo`, `--concurrency 2` for prefork)."""
    return [
        str(BIN / "celery"),
        "-A",
        "ems",
        "worker",
        "-Q",
        ",".join(settings.CELERY_QUEUE_NAMES),
        *pool,
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        loglevel,
    ]


@contextmanager
def tasks_queued():
    """Celery tasks sent meanwhile go to the broker, for the worker, not run inline."""
    eager = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = False
    try:
        yield
    finally:
        current_app.conf.task_always_eager = eager


class CeleryWorker:
    """One worker command, started as often as a test needs; `stop_all` ends what is left."""

    def __init__(
        self, *, log_dir: Path, beat: bool, environment: dict[str, str], loglevel: str = "WARNING"
    ) -> None:
        self.log_dir = log_dir
        self.beat = beat
        self.loglevel = loglevel
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "ems.settings.test",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **environment,
        }
        self.started: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        argv = celery_worker_argv("--concurrency", "2", loglevel=self.loglevel)
        if self.beat:
            argv.append("--beat")  # the sweeps, from django-celery-beat's schedule
        with open(self.log_dir / f"worker{len(self.started)}.log", "wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the running worker logs that it is ready (it must log at INFO)."""
        process, log = self.started[-1], self.log_dir / f"worker{len(self.started) - 1}.log"
        deadline = time.monotonic() + timeout
        while " ready." not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the running worker's whole process group, as `kill -9 -<pgid>` does."""
        process = self.started[-1]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("worker*.log")))

    def stop_all(self) -> None:
        for process in self.started:
            try:
                stop(process)
            except ProcessLookupError:
                pass  # killed already
