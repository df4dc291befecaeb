"""`Idempotency-Key` on `POST /api/v1/endorsements/batch` (ems.idempotency through BatchCreateView).

A retried upload replays the first 202 and creates no second batch; the same key with
another file is 422; the same key while the first upload is still running is 409. Raw
bodies are fingerprinted in pieces, so the stored file is still the whole body.
"""

import hashlib
import json
import threading
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction

from ems.models import IdempotencyRecord, OutboxEvent
from endorsements.models import EndorsementBatch, EndorsementRequest
from tests.endorsements.test_batch_submit import URL, csv_text


def upload(api, content: bytes, key: str = "batch-1", name: str = "people.csv"):
    file = SimpleUploadedFile(name, content, content_type="text/csv")
    return api.post(URL, {"file": file}, format="multipart", HTTP_IDEMPOTENCY_KEY=key)


def post_raw(api, body: bytes, content_type: str, key: str = "batch-1", query: str = ""):
    return api.post(f"{URL}{query}", body, content_type=content_type, HTTP_IDEMPOTENCY_KEY=key)


def replayed(first, second) -> None:
    assert first.status_code == second.status_code == 202, second.content
    assert "Idempotent-Replayed" not in first
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert second["Location"] == first["Location"] == first.json()["links"]["self"]


def only_batch(first) -> EndorsementBatch:
    assert list(EndorsementBatch.objects.values_list("pk", flat=True)) == [first.json()["batch_id"]]
    return EndorsementBatch.objects.get()


def test_same_key_and_file_replays_the_first_202_and_makes_one_batch(
    api, book, django_capture_on_commit_callbacks
):
    # Given a file of two joiners, uploaded with a key and processed
    content = csv_text([book.add_row(employee_code=f"E{n}") for n in range(2)]).encode()
    with django_capture_on_commit_callbacks(execute=True):
        first = upload(api, content)
    events = OutboxEvent.objects.count()
    # When the same upload is retried with the same key
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = upload(api, content)
    # Then the first answer comes back and nothing happens again
    replayed(first, second)
    assert first.json()["state"] == "RECEIVED"
    only_batch(first)
    assert EndorsementRequest.objects.count() == 2
    assert OutboxEvent.objects.count() == events
    assert callbacks == []


def test_same_key_with_another_file_is_422_and_makes_no_batch(api, book, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = upload(api, csv_text([book.add_row(employee_code="E1")]).encode())
    events = OutboxEvent.objects.count()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = upload(api, csv_text([book.add_row(employee_code="E2")]).encode())
    assert second.status_code == 422, second.content
    assert second.json()["error"]["code"] == "idempotency_key_reused"
    only_batch(first)
    assert list(EndorsementRequest.objects.values_list("member_data__employee_code", flat=True)) == ["E1"]
    assert OutboxEvent.objects.count() == events
    assert callbacks == []


def test_same_key_and_bytes_under_another_file_name_is_422(api, book):
    content = csv_text([book.add_row()]).encode()
    first = upload(api, content, name="january.csv")
    second = upload(api, content, name="february.csv")
    assert second.status_code == 422, second.content
    assert second.json()["error"]["code"] == "idempotency_key_reused"
    assert only_batch(first).file_name == "january.csv"


def test_a_raw_json_body_is_replayed_and_stored_whole(api, book):
    body = json.dumps([book.add_row(employee_code="E1"), book.add_row(employee_code="E2")]).encode()
    first = post_raw(api, body, "application/json", query="?file_name=people.json")
    second = post_raw(api, body, "application/json", query="?file_name=people.json")
    replayed(first, second)
    batch = only_batch(first)
    # the fingerprint read the body first, yet the upload path still got all of it
    assert (batch.file_format, batch.file_name, batch.file_bytes) == ("JSON", "people.json", len(body))
    assert batch.file_sha256 == hashlib.sha256(body).hexdigest()


def test_a_raw_body_with_another_file_name_in_the_query_is_422(api, book):
    body = json.dumps([book.add_row()]).encode()
    first = post_raw(api, body, "application/json", query="?file_name=a.json")
    second = post_raw(api, body, "application/json", query="?file_name=b.json")
    assert second.status_code == 422, second.content
    assert second.json()["error"]["code"] == "idempotency_key_reused"
    assert only_batch(first).file_name == "a.json"


def test_a_raw_csv_body_larger_than_the_api_body_limit_is_fingerprinted_in_pieces(api, book, settings):
    # `request.body` refuses a body above DATA_UPLOAD_MAX_MEMORY_SIZE; batch bodies may be
    # up to UPLOAD_MAX_BYTES, and the fingerprint (several 64 KiB pieces here) must not care.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000  # the spooled copy goes to disk
    body = csv_text([book.add_row(employee_code=f"E{n}") for n in range(2000)]).encode()
    assert len(body) > 3 * 64 * 1024
    first = post_raw(api, body, "text/csv", query="?file_name=big.csv")
    second = post_raw(api, body, "text/csv", query="?file_name=big.csv")
    replayed(first, second)
    batch = only_batch(first)
    assert (batch.file_format, batch.file_bytes, batch.rows_expected) == ("CSV", len(body), 2000)
    assert batch.file_sha256 == hashlib.sha256(body).hexdigest()


def in_thread(target) -> threading.Thread:
    """Run `target` on its own thread (and database connection), as a second process would."""

    def run():
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.django_db(transaction=True)
def test_same_key_while_the_first_upload_is_running_is_409(api, book):
    # Given a first upload held in flight after its key is claimed: another transaction
    # locks the batch table against inserts, so creating its batch waits. (Held at its
    # commit instead, the claim would already be DONE but uncommitted, and the repeat's
    # claim would wait for that commit and then replay: right, but not this case.)
    content = csv_text([book.add_row()]).encode()
    locked, release, results = threading.Event(), threading.Event(), {}

    def hold_the_batch_table():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {EndorsementBatch._meta.db_table} IN SHARE MODE")
            locked.set()
            release.wait(10)

    def first_upload():
        results["first"] = upload(api, content)

    holder = in_thread(hold_the_batch_table)
    assert locked.wait(10)
    try:
        first = in_thread(first_upload)
        assert wait_until(lambda: IdempotencyRecord.objects.filter(scope="endorsements.batch").exists())
        # When the same upload arrives again with the same key
        second = upload(api, content)
    finally:
        release.set()
        holder.join(10)
    first.join(10)
    # Then it is refused, and the first one goes through alone
    assert second.status_code == 409, second.content
    assert second.json()["error"]["code"] == "idempotency_in_flight"
    assert results["first"].status_code == 202
    only_batch(results["first"])
    replayed(results["first"], upload(api, content))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("key", ["batch-1", None], ids=["with a key", "without"])
def test_the_file_is_stored_and_checked_outside_any_transaction(api, book, monkeypatch, key):
    # Copying and checking a 50 MB file inside the request's transaction would keep it open
    # that long (and hold SQLite's only write lock under `make run`).
    from endorsements import intake

    seen = []
    check = intake.upload_check

    def watched(**kwargs):
        seen.append(connection.in_atomic_block)
        return check(**kwargs)

    monkeypatch.setattr(intake, "upload_check", watched)
    file = SimpleUploadedFile("people.csv", csv_text([book.add_row()]).encode(), content_type="text/csv")
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    response = api.post(URL, {"file": file}, format="multipart", **headers)
    assert response.status_code == 202
    assert seen == [False]
    assert EndorsementBatch.objects.count() == 1
