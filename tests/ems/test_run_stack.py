"""`make run`'s launcher end to end: embedded services, demo data, every process, clean stop."""

import datetime
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
from tests.servers import http_get as get

ROOT = Path(__file__).resolve().parents[2]
HEADER = (
    "action,employee_code,relation,first_name,last_name,date_of_birth,gender,email,phone,"
    "date_of_joining,effective_date,policy_number,plan_code,sum_insured"
)

pytestmark = pytest.mark.slow


def post(url: str, body: bytes, headers: dict) -> dict:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def upload_and_wait(base: str, env: dict) -> tuple[dict, str, list[str]]:
    """Upload a joiner and its exact repeat with the demo API client; wait for the batch."""
    demo = json.loads(
        subprocess.run(
            [sys.executable, "manage.py", "seed_demo", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    employer = demo["employers"][0]
    client = employer["api_client"]
    token = post(
        f"{base}/api/v1/auth/token",
        json.dumps({"grant_type": "client_credentials", **client}).encode(),
        {"Content-Type": "application/json"},
    )["access_token"]
    policy = employer["policies"][0]
    plan = policy["plans"][0]
    today = datetime.date.today()
    row = [
        "ADD", "RUN-STACK-1", "SELF", "Asha", "Rao", "1990-05-17", "F", "asha.rs@example.com",
        "+919812345678", today.isoformat(), today.isoformat(), policy["number"], plan["code"],
        str(plan["sum_insured_options"][0]),
    ]  # fmt: skip
    text = "\r\n".join([HEADER, ",".join(row), ",".join(row)]) + "\r\n"
    boundary = "ems-run-stack"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="j.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n{text}\r\n--{boundary}--\r\n"
    ).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    batch_id = post(f"{base}/api/v1/endorsements/batch", body, headers)["batch_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"{base}/api/v1/endorsements/batch/{batch_id}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            batch = json.loads(response.read())
        if batch["state"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.3)
    return batch, token, row


def wait_for_ok(url: str, seconds: float = 30) -> int | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return get(url)[0]
        except OSError:
            time.sleep(0.3)
    return None


def wait_for_state(base: str, token: str, tracking_id: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        request = urllib.request.Request(
            f"{base}/api/v1/endorsements/{tracking_id}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            state = json.loads(response.read())["state"]
        if state != "RECEIVED" or time.monotonic() > deadline:
            return state
        time.sleep(0.3)


def test_run_stack_brings_everything_up_on_embedded_defaults_and_stops_it(tmp_path):
    port, socket_port = free_port(), free_port()
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
        EMS_SOCKET_PORT=str(socket_port),
        SANDBOX_REST_PORT=str(free_port()),
        SANDBOX_SOAP_PORT=str(free_port()),
        SANDBOX_SFTP_PORT=str(free_port()),
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
        assert get(f"http://127.0.0.1:{socket_port}/healthz")[0] == 200  # the websocket server
        # the sandbox insurer answers on its own port, with the data folder under VAR_DIR
        sandbox = f"http://127.0.0.1:{env['SANDBOX_REST_PORT']}/sandbox/switches"
        assert wait_for_ok(sandbox) == 200
        assert (tmp_path / "var" / "sandbox" / "sandbox.sqlite3").exists()
        # an uploaded file is decided by the real worker on SQLite (ids, intake lock, COPY fallback)
        batch, token, row = upload_and_wait(base, env)
        assert (batch["state"], batch["accepted_count"], batch["duplicate_count"]) == ("COMPLETED", 1, 1), (
            batch
        )
        # a single request is validated by the worker through the Redis validation queue
        single = dict(zip(HEADER.split(","), row, strict=True)) | {"employee_code": "RUN-STACK-2"}
        created = post(
            f"{base}/api/v1/endorsements/",
            json.dumps(single).encode(),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert created["state"] == "RECEIVED"
        assert wait_for_state(base, token, created["tracking_id"]) == "VALIDATED"
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        output, _ = stack.communicate(timeout=60)
    assert "EMS is running" in output
    assert "ops.finance /" in output and "(finance_approver)" in output
    assert "Stopping..." in output
    assert stack.returncode == 0
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftover == []
