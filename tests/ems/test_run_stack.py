"""`make run`'s launcher end to end: embedded services, demo data, every process, clean stop."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ems.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_run_stack_brings_everything_up_on_embedded_defaults_and_stops_it(tmp_path):
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {"DATABASE_URL", "REDIS_URL", "MONGO_URL", "KAFKA_BOOTSTRAP_SERVERS", "CELERY_BROKER_URL"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="ems.settings.base",
        VAR_DIR=str(tmp_path / "var"),
        EMBEDDED_REDIS_PORT=str(free_port()),
        EMBEDDED_MONGO_PORT=str(free_port()),
        EMS_PORT=str(port),
    )
    stack = subprocess.Popen(
        [sys.executable, "manage.py", "run_stack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and stack.poll() is None:
            try:
                status, body = get(f"{base}/readyz")
            except OSError:
                time.sleep(0.5)
                continue
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, f"stack never became ready (exit code {stack.poll()})"
        checks = json.loads(body)["checks"]
        assert set(checks) == {"database", "redis", "mongo"}
        assert (tmp_path / "var" / "ems.sqlite3").exists()
        assert (tmp_path / "var" / "mongo" / "audit.db").exists()
        for path in ("/healthz", "/metrics", "/api/docs/", "/admin/login/", "/portal/login/"):
            assert get(base + path)[0] == 200, path
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        output, _ = stack.communicate(timeout=60)
    assert "EMS is running" in output
    assert "ops.finance /" in output and "(finance_approver)" in output
    assert "Stopping..." in output
    assert stack.returncode == 0
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftover == []
