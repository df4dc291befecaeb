"""insurers/webhook_events.py: applying stored events, out of order, statements, and the sweep."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from insurers import handlers
from insurers.models import DispatchItem, WebhookEvent
from insurers.webhook_events import webhook_events_process, webhook_events_receive, webhook_events_sweep
from tests.factories import InsurerFactory
from tests.insurers.webhook_doors import dispatched, event

pytestmark = pytest.mark.django_db


@pytest.fixture
def insurer(db):
    return InsurerFactory()


def receive(insurer, events):
    return webhook_events_receive(
        insurer=insurer, events=events, bodies=[json.dumps(e) for e in events], headers={}
    )


def test_out_of_order_confirmation_then_acceptance_ends_confirmed(
    insurer, django_capture_on_commit_callbacks
):
    dispatched(insurer, "T-1")
    accepted = {**event("a1", "T-1", kind="endorsement.accepted"), "occurred_at": "2026-12-02T09:00:00+00:00"}
    confirmed = event("c1", "T-1")  # occurred 10:00, delivered first
    with django_capture_on_commit_callbacks(execute=True):
        receive(insurer, [confirmed, accepted])
    item = DispatchItem.objects.get()
    assert (item.result, item.insurer_premium) == ("CONFIRMED", 600_000)
    notes = dict(WebhookEvent.objects.values_list("event_id", "process_note"))
    assert notes == {"c1": "applied", "a1": "superseded by c1"}


def test_a_late_acceptance_in_its_own_delivery_changes_nothing(insurer, django_capture_on_commit_callbacks):
    dispatched(insurer, "T-1")
    with django_capture_on_commit_callbacks(execute=True):
        receive(insurer, [event("c1", "T-1")])
    before = list(DispatchItem.objects.values_list("result", "insurer_premium", "result_at"))
    with django_capture_on_commit_callbacks(execute=True):
        receive(insurer, [event("a1", "T-1", kind="endorsement.accepted")])
    assert list(DispatchItem.objects.values_list("result", "insurer_premium", "result_at")) == before
    assert WebhookEvent.objects.get(event_id="a1").process_note == "no change (already recorded)"


def test_statement_available_goes_to_the_statement_handler(insurer, django_capture_on_commit_callbacks):
    told = []

    def statement_handler(insurer_id, data):
        told.append((insurer_id, data))

    handlers.register_statement_handler(statement_handler)
    try:
        statement = event(
            "s1",
            "STMT-2026-11",
            kind="statement.available",
            period_start="2026-11-01",
            period_end="2026-11-30",
        )
        with django_capture_on_commit_callbacks(execute=True):
            answers = receive(insurer, [statement])
    finally:
        handlers.unregister_statement_handler(statement_handler)
    assert answers[0].flag == ""  # a statement names no dispatch item: not "unknown"
    assert told == [
        (
            insurer.pk,
            {
                "period_start": "2026-11-01",
                "period_end": "2026-11-30",
                "statement_id": "STMT-2026-11",
                "event_id": "s1",
            },
        )
    ]
    assert WebhookEvent.objects.get().processed_at is not None


def test_a_statement_without_its_period_is_flagged(insurer, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        answers = receive(
            insurer, [event("s1", "STMT-1", kind="statement.available", period_start="2026-11-01")]
        )
    assert answers[0].flag == "incomplete_data"
    assert WebhookEvent.objects.get().processed_at is None


def test_the_sweep_re_drives_an_event_whose_task_was_lost(insurer, django_capture_on_commit_callbacks):
    # given an event stored and answered, whose task never ran (the worker died after the 2xx)
    dispatched(insurer, "T-1")
    with django_capture_on_commit_callbacks(execute=False):
        receive(insurer, [event("e1", "T-1")])
    stored = WebhookEvent.objects.get()
    # a fresh one is left alone (its task may still be on its way)
    assert webhook_events_sweep(older_than_seconds=120) == 0
    assert DispatchItem.objects.get().result == "PENDING"
    # when it is older than the bound, the sweep applies it, once
    WebhookEvent.objects.filter(pk=stored.pk).update(received_at=timezone.now() - timedelta(seconds=121))
    with django_capture_on_commit_callbacks(execute=True):
        assert webhook_events_sweep(older_than_seconds=120) == 1
    assert DispatchItem.objects.get().result == "CONFIRMED"
    assert webhook_events_sweep(older_than_seconds=0) == 0


def test_processing_twice_applies_once(insurer, django_capture_on_commit_callbacks):
    dispatched(insurer, "T-1")
    told = []
    handler = lambda insurer_id, results: told.append(len(results))  # noqa: E731
    handlers.register_confirmation_handler(handler)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            receive(insurer, [event("e1", "T-1")])
        ids = list(WebhookEvent.objects.values_list("pk", flat=True))
        with django_capture_on_commit_callbacks(execute=True):
            assert webhook_events_process(event_ids=ids) == 0
    finally:
        handlers.unregister_confirmation_handler(handler)
    assert told == [1]


def test_flagged_events_are_never_applied_by_the_sweep(insurer, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        receive(insurer, [event("e1", "T-UNKNOWN")])
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(days=1))
    assert webhook_events_sweep(older_than_seconds=0) == 0
    assert WebhookEvent.objects.get().flag == "unknown_tracking_id"
