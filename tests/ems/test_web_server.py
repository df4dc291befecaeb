"""ems/web_server.py: the deployed server spreads keep-alive connections over its workers.

Real processes on loopback: the server is started as deployed, clients open their
connections together (as the API benchmark's 16 clients do), and each worker's share is
read from /proc (which process holds the socket of each established connection).
"""

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def web_server():
    port = _free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ems.settings.test", "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [sys.executable, "-m", "ems.web_server", "--port", str(port), "--workers", "2", "--no-access-log"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        workers = _wait_for_workers(server, port)
        yield port, workers
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def _wait_for_workers(server: subprocess.Popen, port: int) -> list[int]:
    deadline = time.monotonic() + 60
    ready: set[int] = set()
    while time.monotonic() < deadline and server.poll() is None:
        # Each worker answers once it has started; ask until both have.
        workers = [pid for pid in _children(server.pid) if "multiprocessing.spawn" in _cmdline(pid)]
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            ready.update(_connection_holders(port, workers).values())
            connection.close()
        except OSError:
            pass
        if len(workers) == 2 and ready >= set(workers):
            return workers
        time.sleep(0.2)
    raise RuntimeError("the web server's two workers did not start")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _connection_holders(port: int, workers: list[int]) -> dict[int, int]:
    """{inode of an established server-side socket on `port`: pid of the worker holding it}."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(int(fields[9]))
    holders = {}
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes:
                    holders[inode] = pid
    return holders


def _open_together(port: int, count: int) -> list[http.client.HTTPConnection]:
    connections: list[http.client.HTTPConnection] = []
    statuses: list[int] = []
    start = threading.Barrier(count)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start.wait()
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        connections.append(connection)

    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * count
    return connections


def test_connections_opened_together_are_shared_evenly(web_server):
    # Given the deployed server with two workers
    port, workers = web_server

    # When 16 clients open keep-alive connections at the same moment
    connections = _open_together(port, 16)

    # Then each worker holds about half (uvicorn's own supervisor gave one worker 15 or 16):
    # 8/8, unless a worker was off the CPU for longer than FAIR_SHARE_WAIT while the other
    # waited for it (7/9 once, under the whole suite with coverage on 2 cores).
    holders = list(_connection_holders(port, workers).values())
    counts = sorted(holders.count(pid) for pid in workers)
    assert sum(counts) == 16
    assert counts[0] >= 6, counts
    for connection in connections:
        connection.close()


def test_a_stopped_worker_does_not_keep_new_clients_waiting(web_server):
    # Given the deployed server with one of its two workers stopped (hung)
    port, workers = web_server
    stopped, running = workers
    os.kill(stopped, signal.SIGSTOP)
    try:
        # When 4 clients connect: the running worker is soon above its share
        connections = _open_together(port, 4)

        # Then all are answered, by the running worker
        holders = list(_connection_holders(port, workers).values())
        assert holders == [running] * 4
    finally:
        os.kill(stopped, signal.SIGCONT)
    for connection in connections:
        connection.close()
