"""`endorsements/pipeline/sla.py`: deadlines set where requests are validated, the sweep marks once."""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ems.models import OutboxEvent
from ems.outbox import kafka_messages
from ems.redis_lock import redis_client
from endorsements import validation_queue
from endorsements.models import EndorsementRequest
from endorsements.pipeline import sla
from endorsements.tasks import sla_sweep_task
from endorsements.transitions import endorsement_transition
from tests.endorsements.conftest import book, today  # noqa: F401 - the intake tests' policy book
from tests.endorsements.test_batch_submit import csv_text
from tests.endorsements.test_batch_submit import send as upload
from tests.endorsements.test_endorsement_submit import URL, post
from tests.factories import InsurerFactory
from tests.pipeline.conftest import S, policy_at, validated

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)
NOW = datetime.datetime(2026, 7, 1, 12, 0, tzinfo=datetime.UTC)


# --- the deadline, set where a request is validated -------------------------------------------


@pytest.fixture
def validation_queue_empty():
    """Single requests are validated through a Redis queue: start with it empty and no drain
    marked as running (an earlier test may leave its kick behind)."""
    redis_client().delete(validation_queue.PENDING_KEY, validation_queue.KICK_KEY)


def test_a_single_request_gets_its_deadline_in_the_write_that_validates_it(
    validation_queue_empty,
    api,
    book,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    # given an insurer granting 10 days for inclusions and 4 for corrections
    book.policy.insurer.__class__.objects.filter(pk=book.policy.insurer_id).update(
        sla_inclusion_days=10, sla_correction_days=4
    )
    book.covered_member(code="E2", date_of_birth=datetime.date(1980, 1, 1))
    correction = {
        "action": "CORRECTION",
        "employee_code": "E2",
        "relation": "SELF",
        "policy_number": book.policy.number,
        "effective_date": book.today.isoformat(),
        "sum_insured": "300000",
    }
    # when an addition and a correction are sent and validated
    addition = post(api, book.add_row(), django_capture_on_commit_callbacks).json()
    corrected = post(api, correction, django_capture_on_commit_callbacks).json()
    # then each deadline is received_at + the insurer's allowance for its kind, to the microsecond
    add, fix = (EndorsementRequest.objects.get(tracking_id=b["tracking_id"]) for b in (addition, corrected))
    assert (add.state, fix.state) == (S.VALIDATED, S.VALIDATED)
    assert add.sla_deadline == add.received_at + 10 * DAY
    assert fix.sla_deadline == fix.received_at + 4 * DAY
    assert add.sla_status == fix.sla_status == ""
    # and the API's detail and list show them
    detail = api.get(f"{URL}{add.tracking_id}").json()
    shown = datetime.datetime.fromisoformat
    assert (shown(detail["sla_deadline"]), detail["sla_status"]) == (add.sla_deadline, "")
    listed = {i["tracking_id"]: i["sla_deadline"] for i in api.get(URL).json()["items"]}
    assert shown(listed[fix.tracking_id]) == fix.sla_deadline


def test_a_files_rows_are_stored_with_their_deadline_and_a_rejected_row_has_none(
    api,
    book,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    rows = [book.add_row(employee_code="F1"), book.add_row(employee_code="F2", plan_code="PLATINUM")]

    response = upload(api, django_capture_on_commit_callbacks, csv_text(rows).encode())

    assert response.status_code == 202
    good, bad = (EndorsementRequest.objects.get(member_data__employee_code=code) for code in ("F1", "F2"))
    assert (good.state, bad.state) == (S.VALIDATED, S.REJECTED)
    assert good.sla_deadline == good.received_at + 15 * DAY
    assert bad.sla_deadline is None


# --- the sweep --------------------------------------------------------------------------------


def clock(policy, *, received_days_ago: float, days: int = 15, state: str = S.VALIDATED, kind: str = "ADD"):
    """A validated request whose clock started `received_days_ago` before NOW, moved to `state`."""
    request = validated(policy, premium=1_000_00 if kind != "DELETE" else -1_000_00, kind=kind)
    received = NOW - datetime.timedelta(days=received_days_ago)
    EndorsementRequest.objects.filter(pk=request.pk).update(
        received_at=received, sla_deadline=received + days * DAY
    )
    path = {
        S.VALIDATED: [],
        S.SENT: [S.SENT],
        S.CONFIRMED: [S.SENT, S.CONFIRMED],
        S.CANCELLED: [S.CANCELLED],
        S.FAILED: [S.SENT, S.FAILED],
        S.ON_HOLD_REVIEW: [S.ON_HOLD_REVIEW],
    }[state]
    for step in path:
        endorsement_transition(endorsement=request, to_state=step, actor="test", follow_up=False)
    return EndorsementRequest.objects.get(pk=request.pk)


def sla_events() -> list[tuple[str, str, dict]]:
    """(type, key, data) of every SLA event queued on ems.endorsements."""
    found = []
    for row in OutboxEvent.objects.filter(destination="ems.endorsements").order_by("id"):
        for key, envelope in kafka_messages(row):
            if envelope["type"].startswith("endorsement.sla_"):
                found.append((envelope["type"], key, envelope["data"]))
    return found


def marks(*requests) -> list[str]:
    by_id = dict(
        EndorsementRequest.objects.filter(pk__in=[r.pk for r in requests]).values_list("pk", "sla_status")
    )
    return [by_id[r.pk] for r in requests]


def test_the_sweep_marks_breached_and_near_clocks_once_with_one_event_each():
    policy = policy_at(InsurerFactory(sla_inclusion_days=15, sla_correction_days=7))
    late = clock(policy, received_days_ago=16)  # deadline a day ago
    late_sent = clock(policy, received_days_ago=15.5, state=S.SENT)
    late_failed = clock(policy, received_days_ago=20, state=S.FAILED)
    near = clock(policy, received_days_ago=12.5)  # 83% of 15 days used
    near_correction = clock(policy, received_days_ago=6, days=7, kind="CORRECTION", state=S.ON_HOLD_REVIEW)
    fresh = clock(policy, received_days_ago=11.9)  # 79%: not yet
    confirmed_late = clock(policy, received_days_ago=16, state=S.CONFIRMED)
    cancelled_late = clock(policy, received_days_ago=16, state=S.CANCELLED)
    everyone = (late, late_sent, late_failed, near, near_correction, fresh, confirmed_late, cancelled_late)

    swept = sla.sla_sweep(now=NOW)

    assert (swept.breached, swept.near, swept.deadlines_set) == (3, 2, 0)
    assert marks(*everyone) == ["BREACHED", "BREACHED", "BREACHED", "NEAR", "NEAR", "", "", ""]
    events = sla_events()
    assert sorted((kind, key) for kind, key, _data in events) == sorted(
        [("endorsement.sla_breached", r.tracking_id) for r in (late, late_sent, late_failed)]
        + [("endorsement.sla_near", r.tracking_id) for r in (near, near_correction)]
    )
    (late_data,) = [data for _kind, key, data in events if key == late.tracking_id]
    assert late_data == {
        "tracking_id": late.tracking_id,
        "endorsement_type": "ADD",
        "state": S.VALIDATED,
        "sla_status": "BREACHED",
        "received_at": late.received_at.isoformat(),
        "sla_deadline": late.sla_deadline.isoformat(),
    }

    # run again: nothing new is marked or announced
    again = sla.sla_sweep(now=NOW)
    assert (again.breached, again.near) == (0, 0)
    assert sla_events() == events

    # three days on: both near ones breach (an event each), the fresh one is near (one more)
    later = sla.sla_sweep(now=NOW + 3 * DAY)
    assert (later.breached, later.near) == (2, 1)
    assert marks(near, near_correction, fresh) == ["BREACHED", "BREACHED", "NEAR"]
    assert len(sla_events()) == len(events) + 3


def test_a_confirmed_request_keeps_its_breach_and_is_not_swept_again():
    policy = policy_at(InsurerFactory())
    request = clock(policy, received_days_ago=16, state=S.SENT)
    sla.sla_sweep(now=NOW)
    endorsement_transition(endorsement=request, to_state=S.CONFIRMED, actor="test", follow_up=False)

    sla.sla_sweep(now=NOW + DAY)

    assert marks(request) == ["BREACHED"]
    assert [key for _kind, key, _data in sla_events()] == [request.tracking_id]


def test_a_running_clock_without_a_deadline_gets_one_from_the_sweep():
    policy = policy_at(InsurerFactory(sla_inclusion_days=15, sla_correction_days=7))
    # validated by a path that set no deadline (the test helper's bare transition)
    addition, correction = (
        validated(policy, premium=1_000_00),
        validated(policy, premium=0, kind="CORRECTION"),
    )
    rejected = validated(policy, premium=1_000_00)
    endorsement_transition(endorsement=rejected, to_state=S.CANCELLED, actor="test", follow_up=False)
    assert addition.sla_deadline is None

    swept = sla.sla_sweep()

    assert swept.deadlines_set == 2
    stored = {
        r.pk: r for r in EndorsementRequest.objects.filter(pk__in=[addition.pk, correction.pk, rejected.pk])
    }
    assert stored[addition.pk].sla_deadline == stored[addition.pk].received_at + 15 * DAY
    assert stored[correction.pk].sla_deadline == stored[correction.pk].received_at + 7 * DAY
    assert stored[rejected.pk].sla_deadline is None
    assert sla.sla_sweep().deadlines_set == 0


def _sweep_statements(count: int) -> int:
    policy = policy_at(InsurerFactory())
    for _ in range(count):
        clock(policy, received_days_ago=16)
        clock(policy, received_days_ago=13)
    with CaptureQueriesContext(connection) as queries:
        swept = sla.sla_sweep(now=NOW)
    assert (swept.breached, swept.near) == (count, count)
    EndorsementRequest.objects.update(state=S.CANCELLED)  # out of the next measurement's way
    return len(queries)


def test_the_sweep_is_set_based_its_statements_do_not_grow_with_the_rows():
    assert _sweep_statements(3) == _sweep_statements(30)


def test_the_sweep_works_in_chunks_until_a_chunk_comes_back_short():
    policy = policy_at(InsurerFactory())
    late = [clock(policy, received_days_ago=16 + n) for n in range(5)]

    swept = sla.sla_sweep(now=NOW, limit=2)

    assert swept.breached == 5
    assert marks(*late) == ["BREACHED"] * 5
    assert len(sla_events()) == 5


def test_the_beat_task_runs_the_sweep(settings):
    policy = policy_at(InsurerFactory())
    late = clock(policy, received_days_ago=(timezone.now() - NOW).days + 16)
    assert settings.CELERY_BEAT_SCHEDULE["endorsements-pipeline-sla-sweep"]["task"] == sla_sweep_task.name
    assert settings.CELERY_TASK_ROUTES[sla_sweep_task.name] == {"queue": "housekeeping"}

    assert sla_sweep_task.delay().get() == {"deadlines_set": 0, "breached": 1, "near": 0}
    assert marks(late) == ["BREACHED"]
