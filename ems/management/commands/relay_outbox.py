"""`manage.py relay_outbox [--loop] [--interval S] [--sink MONGO|KAFKA] [--batch-size N]`

Delivers pending outbox rows once (printing one JSON report) or, with `--loop`, until
stopped (SIGINT/SIGTERM end it after the current pass). In a loop a pass that delivered
rows is followed at once by the next; an idle pass sleeps `--interval` seconds. A failed
pass is logged and retried after the interval (after a database error, on a new connection).
"""

import json
import signal
import threading

import structlog
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections, connection

from ems.models import OutboxEvent
from ems.outbox_relay import relay_pending

log = structlog.get_logger(__name__)


class Command(BaseCommand):
    help = "Deliver pending outbox rows to Kafka and MongoDB (once, or in a loop with --loop)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--loop", action="store_true", help="keep relaying until stopped")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds to sleep when idle")
        parser.add_argument("--sink", choices=OutboxEvent.Sink.values, default=None)
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args, loop: bool, interval: float, sink: str | None, batch_size: int | None, **options):
        if not loop:
            report = relay_pending(sink=sink, batch_size=batch_size)
            self.stdout.write(json.dumps(report.as_dict()))
            return
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        log.info("outbox.relay_started", interval=interval, sink=sink or "all")
        while not stop.is_set():
            try:
                delivered = relay_pending(sink=sink, batch_size=batch_size).delivered
            except DatabaseError as exc:
                log.warning("outbox.relay_database_error", error=f"{type(exc).__name__}: {exc}"[:300])
                connection.close()
                delivered = 0
            except Exception:  # noqa: BLE001 - a long-running relay logs, waits and tries again
                log.exception("outbox.relay_pass_failed")
                delivered = 0
            close_old_connections()
            if not delivered:
                stop.wait(interval)
        log.info("outbox.relay_stopped")
