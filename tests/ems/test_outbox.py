"""ems/outbox.py:relay_soon — one relay task queued after commits that wrote outbox rows."""

import pytest
from django.db import transaction

from ems import outbox
from ems.audit import AUDIT_COLLECTION, audit_record
from ems.models import OutboxEvent
from ems.outbox import KICK_KEY, relay_soon
from ems.redis_lock import redis_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_kick(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = []  # the kicked relay delivers the audit records only
    redis_client().delete(KICK_KEY)
    outbox._kick_covers_until = 0.0
    yield
    redis_client().delete(KICK_KEY)
    outbox._kick_covers_until = 0.0


def test_commit_with_outbox_rows_kicks_one_relay(mongo_db, settings, django_capture_on_commit_callbacks):
    settings.OUTBOX_RELAY_ON_COMMIT = True
    # when a transaction with two audit records commits (Celery runs the task inline in tests)
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        audit_record(actor="ops1", action="member.touched", object_type="member", object_id=1)
        audit_record(actor="ops1", action="member.touched", object_type="member", object_id=2)
    # then the relay already delivered both
    assert len(callbacks) == 2
    assert OutboxEvent.objects.filter(delivered_at__isnull=True).count() == 0
    assert mongo_db[AUDIT_COLLECTION].count_documents({}) == 2
    assert 0 < redis_client().pttl(KICK_KEY) <= 1000


def test_kicks_are_de_duplicated_within_the_window(settings, monkeypatch):
    from ems import tasks

    settings.OUTBOX_RELAY_ON_COMMIT = True
    queued = []
    monkeypatch.setattr(tasks.outbox_relay, "apply_async", lambda *_args, **options: queued.append(options))
    relay_soon()
    relay_soon()
    relay_soon()
    assert queued == [{"countdown": 1.0}]


def test_within_its_own_window_a_process_does_not_ask_redis_again(settings, monkeypatch):
    from ems import tasks

    settings.OUTBOX_RELAY_ON_COMMIT = True
    queued = []
    monkeypatch.setattr(tasks.outbox_relay, "apply_async", lambda *_args, **options: queued.append(options))
    relay_soon()
    redis_client().delete(KICK_KEY)  # were Redis asked again, this would queue a second task
    relay_soon()
    assert queued == [{"countdown": 1.0}]
    assert redis_client().exists(KICK_KEY) == 0
    # after the window the kick goes through Redis again
    monkeypatch.setattr(outbox, "_kick_covers_until", 0.0)
    relay_soon()
    assert len(queued) == 2


def test_no_kick_when_switched_off(settings, monkeypatch):
    from ems import tasks

    settings.OUTBOX_RELAY_ON_COMMIT = False
    queued = []
    monkeypatch.setattr(tasks.outbox_relay, "apply_async", lambda *_args, **options: queued.append(options))
    relay_soon()
    assert queued == []
    assert redis_client().exists(KICK_KEY) == 0
