"""Intake tasks retry a dropped database connection from their checkpoint (`endorsements.tasks`).

A real Celery worker (no beat, so no sweep can help) reads a 3,000-row file in two
partitions while every one of its database connections is ended with
`pg_terminate_backend`, twice; the batch completes with every row counted once.
"""

import pytest
from django.db import connection

from tests.endorsements.intake_faults import (
    WORKER_ENVIRONMENT,
    assert_every_row_counted_once,
    batch_wait,
    file_upload,
)
from tests.workers import CeleryWorker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]  # the worker reads our rows


def _worker_connections_end() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_a_batch_read_while_its_connections_are_ended_completes_with_every_row_once(book, tmp_path):
    worker = CeleryWorker(log_dir=tmp_path, beat=False, environment=WORKER_ENVIRONMENT, loglevel="INFO")
    try:
        worker.start()
        batch = file_upload(book)
        ended = []
        for rows in (750, 1750):
            batch_wait(batch.pk, lambda b, rows=rows: b.rows_parsed >= rows, timeout=120, worker=worker)
            ended.append(_worker_connections_end())
        batch_wait(batch.pk, lambda b: b.state != "PROCESSING", timeout=120, worker=worker)
    finally:
        worker.stop_all()
    assert min(ended) >= 1
    assert_every_row_counted_once(batch.pk)
    assert "Retry in" in worker.logs()  # a task lost its connection mid-read, and was retried
