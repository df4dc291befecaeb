"""`manage.py run_stack`: the whole system on one machine, for `make run`.

Starts, in order: the embedded Redis and Mongo-wire servers (only when REDIS_URL /
MONGO_URL are not set), migrations, the demo data, then the web servers as deployed
(`web_server_argv`: HTTP; `socket_server_argv`: the `/ws/` websockets, on the next
port), a Celery worker, Celery beat, the outbox relay and the sandbox insurer
(`run_sandbox`, on its own ports). Prints the URLs and the
demo logins. Ctrl-C (or SIGTERM) stops everything it started, children first.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from ems.embedded import EmbeddedServer, start_mongo_wire, start_redis_embedded


def web_server_argv(host: str, port: int) -> list[str]:
    """The HTTP server as deployed: granian's WSGI server running `ems.wsgi` (docs/decisions.md)."""
    return _granian("wsgi", host, port, ["--workers", "2", "--blocking-threads", "4"], "ems.wsgi:application")


def socket_server_argv(host: str, port: int) -> list[str]:
    """The websocket server as deployed: granian's ASGI server running `ems.asgi` (Channels).

    Only `/ws/` is sent to it (by the load balancer in production, by the page's
    NOTIFICATIONS_SOCKET_URL here); `asginl`: Django has no ASGI lifespan to run.
    """
    return _granian("asginl", host, port, ["--workers", "1"], "ems.asgi:application")


def _granian(interface: str, host: str, port: int, options: list[str], application: str) -> list[str]:
    granian = str(Path(sys.executable).parent / "granian")
    return [granian, "--interface", interface, "--host", host, "--port", str(port), *options, application]


class Command(BaseCommand):
    help = "Run the web server, Celery worker and beat, the outbox relay and embedded services."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("EMS_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("EMS_PORT", "8000")))
        parser.add_argument(
            "--socket-port",
            type=int,
            default=int(os.environ.get("EMS_SOCKET_PORT", "0")),
            help="the websocket server's port (default: --port + 1)",
        )
        parser.add_argument("--no-seed", action="store_true", help="skip loading the demo data")

    def handle(self, *args, host: str, port: int, socket_port: int, no_seed: bool, **options) -> None:
        self.socket_port = socket_port or port + 1
        self.embedded: list[EmbeddedServer] = []
        self.children: list[tuple[str, subprocess.Popen]] = []
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (background job)
        try:
            self._start_embedded_services()
            call_command("migrate", interactive=False, verbosity=0)
            demo = self._seed() if not no_seed else None
            self._start_processes(host, port)
            self._print_banner(host, port, demo)
            self._watch()
        except KeyboardInterrupt:
            self.stdout.write("\nStopping...")
        finally:
            self._stop_all()

    def _start_embedded_services(self) -> None:
        var = Path(settings.VAR_DIR)
        (var / "static").mkdir(parents=True, exist_ok=True)  # WhiteNoise's STATIC_ROOT
        if "REDIS_URL" not in os.environ:
            port = settings.EMBEDDED_REDIS_PORT
            self.embedded.append(start_redis_embedded(data_dir=str(var / "redis"), port=port))
            self.stdout.write(f"embedded Redis on {settings.REDIS_URL}")
        if "MONGO_URL" not in os.environ:
            port = settings.EMBEDDED_MONGO_PORT
            (var / "mongo").mkdir(parents=True, exist_ok=True)
            self.embedded.append(start_mongo_wire(port=port, data_path=str(var / "mongo" / "audit.db")))
            self.stdout.write(f"embedded Mongo-wire server on {settings.MONGO_URL}")

    def _seed(self) -> dict:
        result = subprocess.run(
            [sys.executable, "manage.py", "seed_demo", "--json"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(result.stdout)

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> None:
        process = subprocess.Popen(argv, cwd=settings.BASE_DIR, env=env, start_new_session=True)
        self.children.append((name, process))

    def _start_processes(self, host: str, port: int) -> None:
        python = sys.executable
        bin_dir = Path(python).parent
        # The portal's pages (served by `web`) point the browser at the websocket server.
        socket_url = f"ws://{host}:{self.socket_port}/ws/notifications/"
        self._spawn(
            "web", web_server_argv(host, port), {**os.environ, "NOTIFICATIONS_SOCKET_URL": socket_url}
        )
        self._spawn("ws", socket_server_argv(host, self.socket_port))
        self._spawn(
            "worker",
            [
                str(bin_dir / "celery"),
                "-A",
                "ems",
                "worker",
                "-Q",
                ",".join(settings.CELERY_QUEUE_NAMES),
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
            ],
        )
        self._spawn("beat", [str(bin_dir / "celery"), "-A", "ems", "beat", "--loglevel", "INFO"])
        self._spawn("relay", [python, "manage.py", "relay_outbox", "--loop"])
        if settings.KAFKA_BOOTSTRAP_SERVERS:
            # endorsements published by HR systems (endorsements/kafka_intake.py)
            self._spawn("consume_requests", [python, "manage.py", "consume_requests"])
        # the simulated insurer the demo insurers point at (its own ports; see SANDBOX_* settings)
        self._spawn("sandbox", [python, "manage.py", "run_sandbox"])

    def _print_banner(self, host: str, port: int, demo: dict | None) -> None:
        base = f"http://{host}:{port}"
        lines = [
            "",
            "EMS is running. Ctrl-C stops everything.",
            f"  Admin (operations):  {base}/admin/",
            f"  HR portal:           {base}/portal/",
            f"  API docs:            {base}/api/docs/",
            f"  Metrics / ready:     {base}/metrics  {base}/readyz",
            f"  Websockets:          ws://{host}:{self.socket_port}/ws/notifications/",
            f"  Sandbox insurer:     {settings.SANDBOX_BASE_URL}/sandbox/switches (REST face)",
        ]
        if demo:
            lines.append("  Demo logins:")
            for user in demo["ops_users"]:
                lines.append(
                    f"    ops   {user['username']} / {user['password']}  ({', '.join(user['groups'])})"
                )
            for employer in demo["employers"]:
                hr = employer["hr_user"]
                client = employer["api_client"]
                lines.append(f"    hr    {hr['username']} / {hr['password']}  (employer {employer['code']})")
                lines.append(f"    api   {client['client_id']} / {client['client_secret']}")
        self.stdout.write("\n".join(lines) + "\n")

    def _watch(self) -> None:
        while True:
            for name, process in self.children:
                if process.poll() is not None:
                    self.stderr.write(f"{name} exited with code {process.returncode}; stopping everything.")
                    return
            time.sleep(1)

    def _stop_all(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, process in reversed(self.children):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for server in reversed(self.embedded):
            server.stop()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
