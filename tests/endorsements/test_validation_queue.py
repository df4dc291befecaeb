"""Single requests wait in a Redis list and one task validates them together.

Against the suite's real Redis (its own database) and PostgreSQL; Celery runs eagerly.
"""

import datetime

import pytest
from django.utils import timezone

from ems.redis_lock import redis_client
from ems.tenancy import Caller
from endorsements import validation_queue
from endorsements.models import EndorsementRequest
from endorsements.services import endorsement_submit, endorsements_received_sweep, submission

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _queue_empty():
    """Each test starts with no queued ids and no drain due, and leaves none to later tests
    (a kick left set would keep every later request waiting for a drain)."""
    keys = (validation_queue.PENDING_KEY, validation_queue.KICK_KEY)
    redis_client().delete(*keys)
    yield
    redis_client().delete(*keys)


def _stored(book, count: int, capture) -> list[EndorsementRequest]:
    """`count` joiners stored RECEIVED, their after-commit queueing not yet run."""
    caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")
    with capture(execute=False) as callbacks:
        requests = [
            endorsement_submit(
                caller=caller, data=book.add_row(employee_code=f"Q{n}", email=f"q{n}@example.com")
            )
            for n in range(count)
        ]
    queueing = [c for c in callbacks if getattr(c, "func", None) is submission._enqueue_validation]
    assert len(queueing) == count
    return requests, queueing


def _states(requests) -> list[str]:
    return [EndorsementRequest.objects.get(pk=r.pk).state for r in requests]


def test_requests_queued_while_a_drain_is_due_are_validated_by_that_one_drain(
    book, django_capture_on_commit_callbacks, monkeypatch
):
    requests, callbacks = _stored(book, 3, django_capture_on_commit_callbacks)
    drains = []
    monkeypatch.setattr(validation_queue, "_drain_queue", lambda: drains.append(1))
    # when their commits queue them, the first one asks for a drain and the others join it
    for callback in callbacks:
        callback()
    assert len(drains) == 1
    assert redis_client().lrange(validation_queue.PENDING_KEY, 0, -1) == [
        str(r.pk).encode() for r in requests
    ]
    assert _states(requests) == ["RECEIVED"] * 3
    # then the drain validates all three and leaves nothing behind
    assert validation_queue.validate_pending() == 3
    assert _states(requests) == ["VALIDATED"] * 3
    assert redis_client().llen(validation_queue.PENDING_KEY) == 0
    assert not redis_client().exists(validation_queue.KICK_KEY)


def test_a_request_that_arrives_as_a_drain_finishes_gets_a_drain_of_its_own(
    book, django_capture_on_commit_callbacks, monkeypatch
):
    requests, callbacks = _stored(book, 2, django_capture_on_commit_callbacks)
    callbacks[0]()  # eager: drained at once
    assert _states(requests) == ["VALIDATED", "RECEIVED"]
    # the second id is pushed while a (stuck) drain still holds the kick
    redis_client().set(validation_queue.KICK_KEY, "1")
    drains = []
    monkeypatch.setattr(validation_queue, "_drain_queue", lambda: drains.append(1))
    callbacks[1]()
    assert drains == []
    # a drain that finds it after its last pop queues another one for it
    monkeypatch.setattr(validation_queue, "POP", 0)  # pops nothing: the id stays pending
    validation_queue.validate_pending()
    assert drains == [1]
    assert redis_client().llen(validation_queue.PENDING_KEY) == 1


def test_with_redis_down_the_request_stays_received_and_the_sweep_validates_it(
    book, django_capture_on_commit_callbacks, settings
):
    requests, callbacks = _stored(book, 1, django_capture_on_commit_callbacks)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    callbacks[0]()  # does not raise after the commit
    assert _states(requests) == ["RECEIVED"]
    assert endorsements_received_sweep(older_than_seconds=0) == 1
    assert _states(requests) == ["VALIDATED"]


def test_ids_a_dead_drain_left_queued_are_drained_by_the_sweep_once_its_kick_expires(
    book, django_capture_on_commit_callbacks, monkeypatch
):
    # Given two queued requests whose drain task was lost with its worker
    requests, callbacks = _stored(book, 2, django_capture_on_commit_callbacks)
    with monkeypatch.context() as lost:
        lost.setattr(validation_queue, "_drain_queue", lambda: None)
        for callback in callbacks:
            callback()
    # While the dead drain's kick lasts, the sweep takes it for a drain that is due
    assert validation_queue.validation_drain_sweep(lost_after_seconds=30) == 0
    assert _states(requests) == ["RECEIVED"] * 2
    # When it has expired, the sweep queues a drain (eager here) for the ids still waiting
    redis_client().delete(validation_queue.KICK_KEY)
    assert validation_queue.validation_drain_sweep(lost_after_seconds=30) == 0
    assert _states(requests) == ["VALIDATED"] * 2
    assert redis_client().llen(validation_queue.PENDING_KEY) == 0
    assert not redis_client().exists(validation_queue.KICK_KEY)


def test_requests_a_dead_drain_popped_are_queued_again_by_the_beat_sweep(
    book, django_capture_on_commit_callbacks, settings
):
    # Given requests stored RECEIVED whose ids a drain popped before its worker died, and
    # one just received (its push is on the way)
    requests, _ = _stored(book, 3, django_capture_on_commit_callbacks)
    settings.VALIDATION_LOST_AFTER_SECONDS = 30
    lost = [r.pk for r in requests[:2]]
    EndorsementRequest.objects.filter(pk__in=lost).update(
        received_at=timezone.now() - datetime.timedelta(seconds=31)
    )
    # When the beat task runs
    from endorsements.tasks import validation_drain_sweep_task

    assert validation_drain_sweep_task.delay().get() == 2
    # Then the two lost ones are validated, the young one is left to its own drain
    assert _states(requests) == ["VALIDATED", "VALIDATED", "RECEIVED"]
    assert redis_client().llen(validation_queue.PENDING_KEY) == 0


# A drain's kick lives 2 s, the sweep runs every second and takes a request RECEIVED for
# 2 s as lost. The bound we state: every request validated within 30 s of the restart.
DRAIN_FAULTS = {
    "VALIDATION_KICK_SECONDS": "2",
    "VALIDATION_DRAIN_SWEEP_SECONDS": "1",
    "VALIDATION_LOST_AFTER_SECONDS": "2",
}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the worker reads what this test commits
def test_requests_whose_drain_died_with_the_whole_worker_are_each_validated_once(book, tmp_path, monkeypatch):
    import time

    from django.db import transaction

    from endorsements.models import EndorsementTransition
    from tests.workers import CeleryWorker, tasks_queued

    monkeypatch.setattr(validation_queue, "KICK_MILLISECONDS", 2000)  # this process sets the first kick
    caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")
    worker = CeleryWorker(log_dir=tmp_path, beat=True, environment=DRAIN_FAULTS, loglevel="INFO")
    try:
        worker.start()
        worker.wait_ready()
        # Given 300 requests submitted at once, and the worker killed whole as soon as it
        # has taken their drain
        with tasks_queued(), transaction.atomic():
            ids = [
                endorsement_submit(
                    caller=caller, data=book.add_row(employee_code=f"D{n}", email=f"d{n}@example.com")
                ).pk
                for n in range(300)
            ]
        drain_taken = time.monotonic() + 10
        while not any(b"endorsements_validate_pending_task" in m for m in redis_client().hvals("unacked")):
            assert time.monotonic() < drain_taken, worker.logs()
            time.sleep(0.01)
        worker.kill()
        # When it is started again, and no further request arrives
        worker.start()
        deadline = time.monotonic() + 30
        while EndorsementRequest.objects.filter(pk__in=ids, validated_at__isnull=True).exists():
            assert time.monotonic() < deadline, worker.logs()
            time.sleep(0.1)
    finally:
        worker.stop_all()
    assert "endorsement.validation_drain_restarted" in worker.logs()  # by the sweep, not a request
    # Then each was validated exactly once
    validations = EndorsementTransition.objects.filter(endorsement_id__in=ids, from_state="RECEIVED")
    assert sorted(validations.values_list("endorsement_id", flat=True)) == sorted(ids)
    assert set(validations.values_list("to_state", flat=True)) == {"VALIDATED"}
