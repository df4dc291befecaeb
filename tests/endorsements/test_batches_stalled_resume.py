"""A dead worker does not strand a batch (`services.batches_stalled_resume`, the beat sweep).

The sweep's rules are tested directly; then a real Celery worker (prefork, with its beat)
reading a 3,000-row file in two partitions is killed with SIGKILL to its whole process
group at several points, started again each time, and every row ends counted once.
"""

import datetime
import time

import pytest
from django.utils import timezone

from ems.redis_lock import redis_client
from endorsements import services
from endorsements.models import EndorsementBatch
from endorsements.services import batches as batch_services
from tests.endorsements.intake_faults import (
    WORKER_ENVIRONMENT,
    assert_every_row_counted_once,
    batch_wait,
    file_upload,
)
from tests.factories import EmployerFactory
from tests.workers import CeleryWorker


@pytest.fixture
def enqueued(monkeypatch, django_capture_on_commit_callbacks):
    """What the sweep queues (batch ids to process, (batch id, partition) to read)."""
    calls: list = []
    monkeypatch.setattr(batch_services, "_enqueue_processing", lambda batch_id: calls.append(batch_id))
    monkeypatch.setattr(batch_services, "_enqueue_partition", lambda b, p: calls.append((b, p)))
    return calls


def _batch(*, state: str, age: float, positions: dict | None = None, partitions: int = 2, beat=None):
    batch = EndorsementBatch.objects.create(
        employer=EmployerFactory(),
        source="API",
        file_format="CSV",
        state=state,
        partitions=partitions,
        partition_positions=positions or {},
    )
    created = timezone.now() - datetime.timedelta(seconds=age)
    EndorsementBatch.objects.filter(pk=batch.pk).update(created_at=created, heartbeat_at=beat or created)
    return batch


def _ago(seconds: float) -> str:
    return (timezone.now() - datetime.timedelta(seconds=seconds)).isoformat()


@pytest.mark.django_db
def test_only_the_stalled_partitions_are_resumed_and_only_once(enqueued, django_capture_on_commit_callbacks):
    # Given a batch whose partition 0 is done, 1 silent for 200 s, and a batch still moving
    stalled = _batch(
        state="PROCESSING",
        age=600,
        positions={
            "0": {"position": 40, "done": True, "at": _ago(300)},
            "1": {"position": 20, "at": _ago(200)},
        },
    )
    moving = _batch(
        state="PROCESSING",
        age=600,
        positions={"0": {"position": 40, "at": _ago(5)}, "1": {"position": 20, "at": _ago(10)}},
    )
    young = _batch(state="RECEIVED", age=5)
    lost = _batch(state="RECEIVED", age=200)
    done = _batch(state="COMPLETED", age=900, positions={"0": {"position": 9, "done": True, "at": _ago(900)}})

    # When the sweep runs, twice
    with django_capture_on_commit_callbacks(execute=True):
        first = services.batches_stalled_resume(stalled_after_seconds=120)
    with django_capture_on_commit_callbacks(execute=True):
        second = services.batches_stalled_resume(stalled_after_seconds=120)

    # Then the silent partition and the batch whose processing never started are queued,
    # once; the heartbeat restarted for them and nothing else changed
    assert first == {stalled.pk: [1], lost.pk: []}
    assert second == {}
    assert enqueued == [(stalled.pk, 1), lost.pk]
    done_partition = stalled.partition_positions["0"]
    stalled.refresh_from_db()
    assert stalled.partition_positions["0"] == done_partition
    assert stalled.partition_positions["1"]["position"] == 20
    restarted = datetime.datetime.fromisoformat(stalled.partition_positions["1"]["at"])
    assert restarted == stalled.heartbeat_at > timezone.now() - datetime.timedelta(seconds=60)
    for batch in (moving, young, done):
        before = batch.partition_positions
        batch.refresh_from_db()
        assert batch.partition_positions == before


# The worker's sweep: a batch or partition silent for 2 s is resumed, checked every second.
STALLED_AFTER = {"BATCH_STALLED_AFTER_SECONDS": "2", "BATCH_STALLED_SWEEP_SECONDS": "1"}
# The bound we state: after the last restart, the file is read to the end within a minute
# (the worker's start-up, a stall noticed within 2 + 1 s, the rest of the rows). Measured
# on a 2-core machine under load: 7 to 11 s.
BOUND_SECONDS = 60


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the worker reads what this test commits
def test_a_worker_killed_whole_at_several_points_leaves_every_row_counted_once(book, tmp_path):
    worker = CeleryWorker(
        log_dir=tmp_path, beat=True, environment={**WORKER_ENVIRONMENT, **STALLED_AFTER}, loglevel="INFO"
    )
    try:
        worker.start()
        worker.wait_ready()
        batch = file_upload(book)
        # Killed 0.1 s into the upload, then twice more while it reads (a third and two
        # thirds of the rows), each time started again
        time.sleep(0.1)
        worker.kill()
        for rows in (1000, 2000):
            worker.start()
            batch_wait(
                batch.pk, lambda b, rows=rows: b.rows_parsed >= rows, timeout=BOUND_SECONDS, worker=worker
            )
            worker.kill()
            # what it was reading stays unacked in the broker, out of every worker's sight
            assert redis_client().hlen("unacked") >= 1
        worker.start()
        batch_wait(batch.pk, lambda b: b.state != "PROCESSING", timeout=BOUND_SECONDS, worker=worker)
    finally:
        worker.stop_all()
    assert_every_row_counted_once(batch.pk)
    assert "batch.resumed" in worker.logs()
