"""Run `manage.py run_sandbox` as a child process on free loopback ports (tests, benchmarks).

`sandbox_start(data_dir=...)` spawns the command, waits for its `ready` line and returns a
`SandboxProcess`: each face's URL, the ports, the data folder, the REST token, and
`switches(...)` / `reset()` through the sandbox's own switches endpoint. `stop()` ends the
child (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.conf import settings

from ems.embedded import free_port

READY_SECONDS = 30


@dataclass
class SandboxProcess:
    rest_url: str
    faces: dict
    data_dir: Path
    ports: dict
    token: str
    process: subprocess.Popen

    def switches(self, **values) -> dict:
        response = httpx.post(f"{self.rest_url}/sandbox/switches", json=values, timeout=5)
        response.raise_for_status()
        return response.json()

    def reset(self) -> dict:
        response = httpx.post(f"{self.rest_url}/sandbox/switches/reset", timeout=5)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def sandbox_start(*, data_dir: Path, token: str = "sandbox-test-token", faces: str = "") -> SandboxProcess:
    """Start the sandbox (every face, or the comma-separated `faces`) and wait until it is ready."""
    ports = {"rest": free_port(), "soap": free_port(), "sftp": free_port()}
    argv = [sys.executable, "manage.py", "run_sandbox", "--host", "127.0.0.1", "--data-dir", str(data_dir)]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    if faces:
        argv += ["--faces", faces]
    env = {**os.environ, "SANDBOX_REST_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        argv, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    timer = threading.Timer(READY_SECONDS, process.kill)  # a child that never says ready is ended
    timer.start()
    ready, lines = None, []
    try:
        for line in process.stdout:  # until the ready line, or the process ends
            lines.append(line)
            if line.startswith('{"ready"'):
                ready = json.loads(line)
                break
    finally:
        timer.cancel()
    if ready is None:
        process.kill()
        raise RuntimeError("sandbox did not start:\n" + "".join(lines[-40:]))
    # keep the pipe drained so the child never blocks on a full stdout
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    return SandboxProcess(
        rest_url=ready["faces"]["rest"],
        faces=ready["faces"],
        data_dir=Path(data_dir),
        ports=ports,
        token=token,
        process=process,
    )
