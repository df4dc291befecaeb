"""The sandbox insurer for the gateway's tests: one real `run_sandbox` process per session.

It serves every face on free loopback ports with its data in a temporary folder; tests
change its behaviour through its own switches endpoint (`sandbox.switches(...)`), and each
test starts from the default switches.
"""

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from ems.embedded import free_port

READY_SECONDS = 30


@dataclass
class Sandbox:
    rest_url: str
    faces: dict
    data_dir: Path
    ports: dict
    token: str

    def switches(self, **values) -> dict:
        response = httpx.post(f"{self.rest_url}/sandbox/switches", json=values, timeout=5)
        response.raise_for_status()
        return response.json()

    def reset(self) -> dict:
        response = httpx.post(f"{self.rest_url}/sandbox/switches/reset", timeout=5)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("sandbox")
    ports = {"rest": free_port(), "soap": free_port(), "sftp": free_port()}
    token = "sandbox-test-token"
    env = {**os.environ, "SANDBOX_REST_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable,
        "manage.py",
        "run_sandbox",
        "--host",
        "127.0.0.1",
        "--rest-port",
        str(ports["rest"]),
        "--soap-port",
        str(ports["soap"]),
        "--sftp-port",
        str(ports["sftp"]),
        "--data-dir",
        str(data_dir),
    ]
    process = subprocess.Popen(
        argv, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ready = None
    lines = []
    for line in process.stdout:  # blocks until the ready line (or the process ends)
        lines.append(line)
        if line.startswith('{"ready"'):
            ready = json.loads(line)
            break
    if ready is None:
        process.kill()
        raise RuntimeError("sandbox did not start:\n" + "".join(lines[-40:]))
    threading.Thread(
        target=lambda: [None for _ in process.stdout], daemon=True
    ).start()  # keep the pipe drained
    server = Sandbox(
        rest_url=ready["faces"]["rest"], faces=ready["faces"], data_dir=data_dir, ports=ports, token=token
    )
    yield server
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def sandbox(sandbox_server):
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.reset()
