"""Instructions per `POST /api/v1/endorsements/` in the web process, counted by callgrind.

`python -m bench.instructions_api` prints one JSON line:
`{"tool": "api_instructions", "requests": N, "instructions_per_request": ...}`.

Wall-clock runs of `api_single_endorsement` swing by up to 1.6x on the deployed 2-core
machine kind, which hides a 5% change in the web process. This counts instead: it drives
`ems.asgi.application` in-process (the same handler, middleware, DRF view, idempotency
and SQL as deployed; no socket), one request at a time against the bench database, and
runs itself under `valgrind --tool=callgrind` with instrumentation switched on only
around the counted requests. The count repeats to about 0.2% (docs/performance.md).
Validation is left queued (Celery is not eager and no worker runs); the web process's
own share is what is counted. Needs valgrind (Debian's `valgrind`). Not part of
`make bench`: it takes about a minute and measures no baseline.

BENCH_INSTRUCTIONS_REQUESTS (default 100) sets how many requests are counted.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile

WARM_UP = 50


def _count(requests: int) -> None:
    """Inside valgrind: warm up, then count `requests` POSTs."""
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"
    from bench.setup import django_ready, private_broker_url

    os.environ["REDIS_URL"] = private_broker_url(12)
    django_ready()
    from django.core import signing

    from bench import bench_api_single_endorsement as api
    from ems import auth
    from ems.asgi import application

    fixture = api._fixture()
    token = signing.dumps({"cid": fixture["client_id"]}, salt=auth.TOKEN_SALT, compress=False)

    async def post(n: int) -> None:
        body = api._body(fixture, n)
        headers = {
            "host": "127.0.0.1",
            "content-type": "application/json",
            "authorization": f"Bearer {token}",
            "idempotency-key": f"instructions-{n}",
            "content-length": str(len(body)),
        }
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/v1/endorsements/",
            "raw_path": b"/api/v1/endorsements/",
            "query_string": b"",
            "root_path": "",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # no disconnect while the view runs

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await application(scope, receive, send)
        if statuses != [201]:
            raise RuntimeError(f"POST answered {statuses}")

    def callgrind(switch: str) -> None:
        subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True, capture_output=True)

    async def main() -> None:
        for n in range(WARM_UP):
            await post(8_000_000 + n)
        callgrind("on")
        for n in range(requests):
            await post(n)
        callgrind("off")

    try:
        asyncio.run(main())
    finally:
        api._cleanup(fixture)


def run() -> dict:
    requests = int(os.environ.get("BENCH_INSTRUCTIONS_REQUESTS", "100"))
    with tempfile.TemporaryDirectory() as scratch:
        completed = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={scratch}/callgrind.out",
                sys.executable,
                "-m",
                "bench.instructions_api",
                "count",
                str(requests),
            ],
            capture_output=True,
            text=True,
        )
    collected = re.search(r"Collected : (\d+)", completed.stderr)
    if completed.returncode != 0 or collected is None:
        raise RuntimeError(f"the counted run failed: {completed.stderr[-3000:]}")
    return {
        "tool": "api_instructions",
        "requests": requests,
        "instructions_per_request": int(collected.group(1)) // requests,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "count":
        _count(int(sys.argv[2]))
    else:
        print(json.dumps(run()))
