"""Chunked request bodies (`ems.chunked_bodies`) over real HTTP, on both servers the app runs
under: granian's WSGI server (`ems.wsgi`, every HTTP request as deployed) and its ASGI
server (`ems.asgi`). Each body kind an endpoint takes — a form, JSON, a raw CSV stream, a
multipart file — is sent with `Transfer-Encoding: chunked` and no `Content-Length`, and
is read whole; one byte over a door's limit is refused with 413 and stores nothing."""

import json
import os
import subprocess
import uuid

import pytest

from ems.embedded import free_port
from ems.management.commands.run_stack import socket_server_argv, web_server_argv
from endorsements.models import EndorsementBatch, EndorsementRequest
from tests import servers
from tests.factories import EmployerFactory, api_client_create
from tests.servers import database_url, stop, wait_for_other_sessions_to_end, wait_until_answers

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]  # the servers read our rows

JSON_LIMIT = 64 * 1024  # API_MAX_BODY_BYTES
UPLOAD_LIMIT = 256 * 1024  # UPLOAD_MAX_BYTES
HEADER = (
    "action,employee_code,relation,first_name,last_name,date_of_birth,gender,"
    "effective_date,policy_number,plan_code,sum_insured\n"
)
ROW = "ADD,E{n},SELF,Asha,Rao,1990-05-17,F,2026-01-01,NOPE-1,GOLD,500000\n"


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def port(request, django_db_setup, django_db_blocker, tmp_path_factory):
    argv = {"wsgi": web_server_argv, "asgi": socket_server_argv}[request.param]
    chosen = free_port()
    log_path = tmp_path_factory.mktemp(request.param) / "server.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ems.settings.test",
        "DATABASE_URL": database_url(),
        "API_MAX_BODY_BYTES": str(JSON_LIMIT),
        "UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT),
    }
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            argv("127.0.0.1", chosen), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_answers(f"http://127.0.0.1:{chosen}/healthz", server, log_path)
        yield chosen
    finally:
        stop(server)
        with django_db_blocker.unblock():
            wait_for_other_sessions_to_end()


def chunked_post(port: int, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    """POST `body` chunked, in 16 KiB chunks; (status, JSON answer)."""
    status, content = servers.chunked_post(port, path, body, headers)
    return status, json.loads(content)


@pytest.fixture
def client_credentials():
    employer = EmployerFactory()
    client, secret = api_client_create(employer=employer)
    return employer, client.client_id, secret


def _token(port: int, client_id: str, secret: str) -> str:
    form = f"grant_type=client_credentials&client_id={client_id}&client_secret={secret}".encode()
    status, body = chunked_post(
        port, "/api/v1/auth/token", form, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert (status, body["token_type"]) == (200, "Bearer")
    return body["access_token"]


def _csv(rows: int) -> bytes:
    return (HEADER + "".join(ROW.format(n=n) for n in range(rows))).encode()


def test_a_chunked_form_json_csv_and_multipart_body_is_read_whole(port, client_credentials):
    employer, client_id, secret = client_credentials
    bearer = {"Authorization": f"Bearer {_token(port, client_id, secret)}"}  # the form, chunked

    row = dict(zip(HEADER.strip().split(","), ROW.format(n=1).strip().split(","), strict=True))
    status, body = chunked_post(
        port,
        "/api/v1/endorsements/",
        json.dumps(row).encode(),
        {**bearer, "Content-Type": "application/json"},
    )
    assert status == 201, body
    assert (
        EndorsementRequest.objects.get(tracking_id=body["tracking_id"]).member_data["employee_code"] == "E1"
    )

    csv = _csv(2000)  # about 130 KB: several chunks
    status, body = chunked_post(
        port, "/api/v1/endorsements/batch", csv, {**bearer, "Content-Type": "text/csv"}
    )
    assert status == 202, body
    assert body["file_bytes"] == len(csv)
    assert EndorsementBatch.objects.get(pk=body["batch_id"]).rows_total == 2000  # read on commit (eager)

    boundary = uuid.uuid4().hex
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="rows.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n".encode()
        + _csv(3)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, body = chunked_post(
        port,
        "/api/v1/endorsements/batch",
        multipart,
        {**bearer, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 202, body
    assert (body["file_name"], body["file_bytes"]) == ("rows.csv", len(_csv(3)))
    assert EndorsementBatch.objects.get(pk=body["batch_id"]).rows_total == 3
    assert EndorsementBatch.objects.filter(employer=employer).count() == 2


@pytest.mark.parametrize(
    "path,content_type,size",
    [
        ("/api/v1/endorsements/", "application/json", JSON_LIMIT + 1),
        ("/api/v1/endorsements/batch", "text/csv", UPLOAD_LIMIT + 1),
    ],
    ids=["json", "csv"],
)
def test_a_chunked_body_one_byte_over_its_doors_limit_is_refused_with_413(
    port, client_credentials, path, content_type, size
):
    _employer, client_id, secret = client_credentials
    bearer = {"Authorization": f"Bearer {_token(port, client_id, secret)}"}
    if content_type == "text/csv":
        body = _csv(size // len(ROW) + 1)[:size]
    else:
        body = json.dumps({"action": "ADD", "padding": "x" * size}).encode()[:size]
    status, answer = chunked_post(port, path, body, {**bearer, "Content-Type": content_type})
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")
    assert EndorsementRequest.objects.count() == 0
    assert EndorsementBatch.objects.count() == 0


def test_a_client_that_leaves_mid_body_reaches_django_as_a_disconnect():
    import asyncio

    from asgiref.testing import ApplicationCommunicator

    from ems.chunked_bodies import chunked_bodies_asgi

    seen = []

    async def application(scope, receive, send):
        seen.append((scope["headers"], await receive()))

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"transfer-encoding", b"chunked")]}

    async def exchange():
        communicator = ApplicationCommunicator(chunked_bodies_asgi(application), scope)
        await communicator.send_input({"type": "http.request", "body": b"half", "more_body": True})
        await communicator.send_input({"type": "http.disconnect"})
        await communicator.wait(5)

    asyncio.run(exchange())
    assert seen == [([(b"transfer-encoding", b"chunked")], {"type": "http.disconnect"})]
