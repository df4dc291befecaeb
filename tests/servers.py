"""Helpers for tests that run EMS's servers as subprocesses on this session's test database."""

import http.client
import subprocess
import time
import urllib.error
import urllib.request
from urllib.parse import quote

from bench.setup import process_group_stop as stop  # noqa: F401 - the tests' name for it


def database_url() -> str:
    """The URL of the database the tests use now (the test database once it is set up)."""
    from django.db import connection

    db = connection.settings_dict
    credentials = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"])
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{db['NAME']}"


def http_get(url: str, timeout: float = 3) -> tuple[int, bytes]:
    """(status, body) of GET `url`, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_until_answers(url: str, process: subprocess.Popen, log_path, timeout: float = 30) -> None:
    """Until GET `url` answers 200; fails with the server's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"the server did not answer within {timeout} s:\n{log_path.read_text()}")
        time.sleep(0.2)


def wait_for_other_sessions_to_end(timeout: float = 10) -> None:
    """PostgreSQL ends a dead client's backend a moment after the process exits; the test
    database can only be dropped once it has."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.1)


def chunked_post(
    port: int, path: str, body: bytes, headers: dict, chunk_bytes: int = 16384
) -> tuple[int, bytes]:
    """(status, body) of POST `body` to a loopback server with `Transfer-Encoding: chunked`
    and no Content-Length, sent in chunks of `chunk_bytes`."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    client.putrequest("POST", path)
    for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
        client.putheader(name, value)
    client.endheaders()
    for start in range(0, len(body), chunk_bytes):
        chunk = body[start : start + chunk_bytes]
        client.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    client.send(b"0\r\n\r\n")
    answer = client.getresponse()
    status, content = answer.status, answer.read()
    client.close()
    return status, content
