"""Browser tests: Debian's Chromium driven by Playwright against the real ASGI server.

- `asgi_server` (session): uvicorn serving `ems.asgi:application` (HTTP, websockets and
  static files through WhiteNoise) in a subprocess on a free loopback port, pointed at
  this session's test database and Redis db 10, with Celery eager off: uploads are
  queued in Redis as in production.
- `celery_worker`: a function that starts a real Celery worker subprocess on the same
  database and broker (stopped after the test), so a test decides when processing runs.
- `browser` / `page`: Chromium and a fresh page for each test.

Tests using these must be `transaction=True`, so the server process sees their data.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.servers import database_url, stop, wait_for_other_sessions_to_end, wait_until_answers
from tests.workers import celery_worker_argv

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REDIS_URL = os.environ.get("PORTAL_BROWSER_REDIS_URL", "redis://127.0.0.1:6379/10")
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_env() -> dict:
    env = os.environ.copy()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "ems.settings.test",
            "DATABASE_URL": database_url(),
            "REDIS_URL": REDIS_URL,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture(scope="session")
def asgi_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """The base URL of a uvicorn server running EMS on this session's test database."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("asgi") / "uvicorn.log"
    with django_db_blocker.unblock():
        env = _server_env()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "ems.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    wait_until_answers(f"{base_url}/healthz", process, log_path)
    yield base_url
    stop(process)
    with django_db_blocker.unblock():
        wait_for_other_sessions_to_end()


@pytest.fixture
def celery_worker(tmp_path):
    """Call to start a Celery worker on the test database and broker; stopped after the test."""
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        log = open(tmp_path / f"worker{len(started)}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            celery_worker_argv("--pool", "solo"),
            cwd=settings.BASE_DIR,
            env=_server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log_file = log
        started.append(process)
        return process

    yield start
    for process in started:
        stop(process)
        process.log_file.close()


@pytest.fixture
def browser(monkeypatch):
    """Chromium for one test. Playwright's sync API runs an event loop on this thread while
    it lives, so Django's async-safety check is lifted for this test only (the ORM calls the
    test makes between browser steps are plain synchronous code); a session-wide browser
    would leave that loop, and the lifted check, over every later test."""
    from django.db import connections
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
        # While the loop runs, Django keeps the connections this test opened in context
        # storage rather than the thread's: close them now, or they outlive the test.
        connections.close_all()


@pytest.fixture
def page(browser, asgi_server):
    context = browser.new_context(
        base_url=asgi_server, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()
