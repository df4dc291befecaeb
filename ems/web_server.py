"""The web server as deployed: uvicorn worker processes that take connections in turn.

`python -m ems.web_server --workers 2` runs `ems.asgi:application` in uvicorn worker
processes sharing one listening socket, as `uvicorn --workers 2` does, with one change:
who accepts a new connection.

With uvicorn's own supervisor every worker waits on the shared socket and the first one
awake accepts everything queued (the event loop accepts until the queue is empty). Clients
that open their keep-alive connections together (an HRIS sending a burst, a load balancer
warming its pool) then all land on one worker: in the API benchmark 16 of 16, or 15 of 16,
connections on one process, whose one core (the GIL) queued every request while the other
worker idled. A connection stays with its worker for its whole life, so the split never
heals.

Here each worker accepts one connection at a time and publishes how many it holds in a
small array shared with its siblings; a worker holding more than the least loaded one
leaves a queued connection to the others. A sibling that is busy, hung or dead cannot
starve new clients: after FAIR_SHARE_WAIT the waiting worker takes the connection anyway.
Everything else (HTTP protocol, lifespan, signals, graceful shutdown, logging) is
uvicorn's own `Server`; the supervisor here restarts a worker that exits.
"""

import argparse
import asyncio
import functools
import multiprocessing
import signal
import socket
import sys
import time

import uvicorn
from uvicorn._subprocess import get_subprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn.server import Server

APPLICATION = "ems.asgi:application"
# How long a worker above its share leaves a queued connection to its siblings: long
# enough for a sibling briefly off the CPU (20 ms was not), short against a hung one.
FAIR_SHARE_WAIT = 0.1
# How often a worker that stepped aside looks whether its share has come round again.
SHARE_RECHECK = 0.001


class _Listener:
    """Accepts from one shared listening socket, one connection per readiness event."""

    def __init__(self, server: "TakingTurnsServer", sock: socket.socket, create_protocol) -> None:
        self.server = server
        self.sock = sock
        self.create_protocol = create_protocol
        self.loop = asyncio.get_running_loop()
        self.waiting_since: float | None = None
        self.closed = False
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        if self.server.above_share():
            self.loop.remove_reader(self.sock.fileno())
            self.waiting_since = time.monotonic()
            self.loop.call_later(SHARE_RECHECK, self._recheck)
            return
        self._accept()

    def _recheck(self) -> None:
        if self.closed:
            return
        if self.server.above_share() and time.monotonic() - self.waiting_since < FAIR_SHARE_WAIT:
            self.loop.call_later(SHARE_RECHECK, self._recheck)
            return
        # Our turn again, or nobody else took the connection in time: take it if still queued.
        self.waiting_since = None
        self._accept()
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _accept(self) -> None:
        try:
            connection, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # a sibling took it
        self.server.handing_over += 1
        self.server.share_publish()
        task = self.loop.create_task(
            self.loop.connect_accepted_socket(self.create_protocol, connection, ssl=self.server.config.ssl)
        )
        task.add_done_callback(self.server.handed_over)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.waiting_since is None:
                self.loop.remove_reader(self.sock.fileno())

    async def wait_closed(self) -> None:
        return None


class _PublishedConnections(set):
    """uvicorn's set of open connections, publishing its size to the siblings on each change."""

    def __init__(self, server: "TakingTurnsServer") -> None:
        super().__init__()
        self.server = server

    def add(self, connection) -> None:
        super().add(connection)
        self.server.share_publish()

    def discard(self, connection) -> None:
        super().discard(connection)
        self.server.share_publish()

    def remove(self, connection) -> None:
        super().remove(connection)
        self.server.share_publish()


class TakingTurnsServer(Server):
    """uvicorn's Server, accepting through `_Listener` and publishing its connection count."""

    def __init__(self, config: uvicorn.Config, *, slot: int, open_connections) -> None:
        super().__init__(config)
        self.slot = slot
        self.open_connections = open_connections
        self.handing_over = 0  # accepted sockets not yet connected to a protocol
        self.server_state.connections = _PublishedConnections(self)

    def held(self) -> int:
        return len(self.server_state.connections) + self.handing_over

    def share_publish(self) -> None:
        self.open_connections[self.slot] = self.held()

    def above_share(self) -> bool:
        return self.open_connections[self.slot] > min(self.open_connections)

    def handed_over(self, task: asyncio.Task) -> None:
        self.handing_over -= 1
        if not task.cancelled():
            task.exception()  # retrieved: a client that left before the hand-over has nothing to serve
        self.share_publish()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        self.servers = [_Listener(self, sock, create_protocol) for sock in sockets or []]
        self.started = True


def _worker_run(slot: int, open_connections, *, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
    TakingTurnsServer(config, slot=slot, open_connections=open_connections).run(sockets=sockets)


def serve(config: uvicorn.Config) -> None:
    """Run config.workers worker processes on one socket until SIGINT or SIGTERM."""
    sock = config.bind_socket()
    sock.listen(config.backlog)  # uvicorn leaves this to create_server(), which the workers do not call
    open_connections = multiprocessing.get_context("spawn").RawArray("i", config.workers)
    stopping = False

    def start(slot: int):
        open_connections[slot] = 0
        process = get_subprocess(
            config, functools.partial(_worker_run, slot, open_connections, config=config), [sock]
        )
        process.start()
        return process

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    processes = [start(slot) for slot in range(config.workers)]
    while not stopping:
        time.sleep(0.5)
        for slot, process in enumerate(processes):
            if not stopping and not process.is_alive():
                processes[slot] = start(slot)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join()
    sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ems.web_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--proxy-headers", action="store_true")
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--log-level", default="info")
    options = parser.parse_args(argv)
    config = uvicorn.Config(
        APPLICATION,
        host=options.host,
        port=options.port,
        workers=options.workers,
        proxy_headers=options.proxy_headers,
        access_log=not options.no_access_log,
        log_level=options.log_level,
    )
    serve(config)


if __name__ == "__main__":
    main()
