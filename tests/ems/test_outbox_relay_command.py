"""`manage.py relay_outbox`: one pass, and the --loop process that `make run` starts."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection, transaction

from ems import outbox_relay
from ems.audit import AUDIT_COLLECTION, audit_record
from ems.models import OutboxEvent
from ems.outbox import KICK_KEY
from ems.outbox_relay import SINKS
from ems.redis_lock import redis_client

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_backoff(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = []

    def reset():
        keys = [f"ems:outbox:{sink}:{part}" for sink in SINKS for part in ("failures", "retry_at")]
        redis_client().delete(*keys, KICK_KEY)
        outbox_relay._local_backoff.clear()

    reset()
    yield
    reset()


def audit_touch(count: int) -> None:
    with transaction.atomic():
        for number in range(count):
            audit_record(actor="ops1", action="member.touched", object_type="member", object_id=number)


@pytest.mark.django_db
def test_one_pass_prints_its_report(mongo_db):
    audit_touch(3)
    out = io.StringIO()
    call_command("relay_outbox", "--sink", "MONGO", "--batch-size", "2", stdout=out)
    report = json.loads(out.getvalue())
    assert report == {
        "delivered": 3,
        "sinks": {
            "MONGO": {
                "sink": "MONGO",
                "status": "delivered",
                "delivered": 3,
                "failed": 0,
                "error": "",
                "retry_in_seconds": 0.0,
            }
        },
    }
    assert mongo_db[AUDIT_COLLECTION].count_documents({}) == 3


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_loop_delivers_rows_as_they_come_and_stops_on_sigterm(mongo_db):
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ems.settings.test",
        "DATABASE_URL": (
            f"postgres://{database['USER']}:{database['PASSWORD']}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        ),
        "MONGO_URL": django_settings.MONGO_URL,
        "REDIS_URL": django_settings.REDIS_URL,
        "KAFKA_BOOTSTRAP_SERVERS": "",
    }
    relay = subprocess.Popen(
        [sys.executable, "manage.py", "relay_outbox", "--loop", "--interval", "0.2"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # when rows are committed while the loop runs, then it delivers them
        audit_touch(4)
        deadline = time.monotonic() + 30
        while OutboxEvent.objects.filter(delivered_at__isnull=True).exists() and time.monotonic() < deadline:
            assert relay.poll() is None, relay.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        assert OutboxEvent.objects.filter(delivered_at__isnull=True).count() == 0
        assert mongo_db[AUDIT_COLLECTION].count_documents({}) == 4
        # and idle passes (five intervals of 0.2 s) log nothing
        time.sleep(1.0)
        # and SIGTERM ends it cleanly
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(15) == 0
        # at INFO: its start, the one pass that moved rows, its stop
        lines = [
            json.loads(line) for line in relay.stderr.read().decode().splitlines() if line.startswith("{")
        ]
        info = [(line["event"], line.get("rows")) for line in lines if line.get("level") == "info"]
        assert info == [
            ("outbox.relay_started", None),
            ("outbox.delivered", 4),
            ("outbox.relay_stopped", None),
        ]
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()
        relay.stderr.close()
