"""The deployed web servers, started as `manage.py run_stack` starts them: real HTTP and a
real websocket over loopback, on this session's test database and Redis."""

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest
from django.db import transaction
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ems.embedded import free_port
from ems.management.commands.run_stack import socket_server_argv, web_server_argv
from ems.notifications import notify_employer
from tests.factories import EmployerFactory, api_client_create, hr_user_create
from tests.servers import database_url, http_get, stop, wait_for_other_sessions_to_end, wait_until_answers

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]  # the servers read our rows


def _start(argv: list[str], log_path) -> subprocess.Popen:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ems.settings.test", "DATABASE_URL": database_url()}
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker, tmp_path_factory):
    """(HTTP base URL, websocket base URL) of the web and websocket servers as deployed."""
    tmp_path = tmp_path_factory.mktemp("servers")
    web_port, socket_port = free_port(), free_port()
    web = _start(web_server_argv("127.0.0.1", web_port), tmp_path / "web.log")
    socket = _start(socket_server_argv("127.0.0.1", socket_port), tmp_path / "ws.log")
    try:
        wait_until_answers(f"http://127.0.0.1:{web_port}/healthz", web, tmp_path / "web.log")
        wait_until_answers(f"http://127.0.0.1:{socket_port}/healthz", socket, tmp_path / "ws.log")
        yield f"http://127.0.0.1:{web_port}", f"ws://127.0.0.1:{socket_port}"
    finally:
        stop(web)
        stop(socket)
        with django_db_blocker.unblock():
            wait_for_other_sessions_to_end()


def test_the_web_server_answers_http_through_the_whole_middleware_chain(servers):
    base, _ = servers
    assert http_get(f"{base}/healthz") == (200, b'{"status": "ok"}')
    status, body = http_get(f"{base}/api/v1/nowhere/")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"


def test_a_logged_in_hr_user_gets_their_employers_notification_over_the_websocket(servers, client):
    # Given an HR user logged in (the session the web server set is what the browser sends)
    base, sockets = servers
    employer, other = EmployerFactory(), EmployerFactory()
    client.force_login(hr_user_create(employer=employer))
    headers = {"Cookie": f"sessionid={client.cookies['sessionid'].value}", "Origin": base}

    with connect(f"{sockets}/ws/notifications/", additional_headers=headers, open_timeout=10) as socket:
        # When another employer's batch moves, and then theirs
        with transaction.atomic():
            notify_employer(other.pk, "batch.progress", {"batch_id": 2})
        with transaction.atomic():
            notify_employer(employer.pk, "batch.progress", {"batch_id": 1, "progress": 40})

        # Then only their employer's arrives
        assert json.loads(socket.recv(timeout=10)) == {
            "event": "batch.progress",
            "data": {"batch_id": 1, "progress": 40},
        }
        with pytest.raises(TimeoutError):
            socket.recv(timeout=0.5)


@pytest.mark.parametrize("origin", ["same", "http://evil.example"], ids=["no session", "foreign origin"])
def test_a_websocket_without_a_session_or_from_a_foreign_origin_is_refused(servers, origin):
    base, sockets = servers
    headers = {"Origin": base if origin == "same" else origin}
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{sockets}/ws/notifications/", additional_headers=headers, open_timeout=10)
    assert refused.value.response.status_code == 403


def _token(base: str, employer) -> str:
    client, secret = api_client_create(employer=employer)
    form = f"grant_type=client_credentials&client_id={client.client_id}&client_secret={secret}"
    with urllib.request.urlopen(f"{base}/api/v1/auth/token", data=form.encode(), timeout=10) as answer:
        return json.loads(answer.read())["access_token"]


def test_a_websocket_left_quiet_for_30_seconds_stays_open_and_gets_the_next_batchs_progress(servers, client):
    # Given an HR user's socket, open and quiet for 30 s (six of channels_redis's 5 s waits)
    base, sockets = servers
    employer = EmployerFactory()
    client.force_login(hr_user_create(employer=employer))
    headers = {"Cookie": f"sessionid={client.cookies['sessionid'].value}", "Origin": base}
    token = _token(base, employer)
    with connect(f"{sockets}/ws/notifications/", additional_headers=headers, open_timeout=10) as socket:
        with pytest.raises(TimeoutError):
            socket.recv(timeout=30)  # a closed socket raises ConnectionClosed instead

        # When their employer uploads a file (three rows naming a policy it does not have)
        rows = "".join(
            f"ADD,E{n},SELF,Asha,Rao,1990-05-17,F,2026-01-01,NOPE-1,GOLD,500000\n" for n in range(3)
        )
        upload = urllib.request.Request(
            f"{base}/api/v1/endorsements/batch",
            data=(
                "action,employee_code,relation,first_name,last_name,date_of_birth,gender,"
                "effective_date,policy_number,plan_code,sum_insured\n" + rows
            ).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
        )
        with urllib.request.urlopen(upload, timeout=30) as answer:
            batch_id = json.loads(answer.read())["batch_id"]

        # Then the same socket gets the batch's progress and its completion
        counts = {"rows_total": 3, "accepted_count": 0, "rejected_count": 3, "duplicate_count": 0}
        done = {"batch_id": batch_id, "progress": 100, "state": "COMPLETED", **counts}
        assert json.loads(socket.recv(timeout=10)) == {"event": "batch.progress", "data": done}
        assert json.loads(socket.recv(timeout=10)) == {"event": "batch.completed", "data": done}


def _backends_terminate() -> int:
    """End every other session on the test database (the servers'), as a fail-over would,
    and wait until they are gone; returns how many there were."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        ended = cursor.fetchone()[0]
    wait_for_other_sessions_to_end()
    return ended


def test_after_the_database_ends_every_connection_the_next_requests_all_answer(servers):
    # Given requests from 8 clients at once, so each of the server's threads holds a
    # connection it used a moment ago (inside the window where it is not checked again)
    base, _ = servers
    token = _token(base, EmployerFactory())

    def list_endorsements(_index: int) -> int:
        request = urllib.request.Request(
            f"{base}/api/v1/endorsements/", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as clients:
        assert set(clients.map(list_endorsements, range(16))) == {200}
        for _ in range(3):
            # When the database ends all of them between two rounds
            assert _backends_terminate() > 0
            # Then no request of the next round fails
            assert list(clients.map(list_endorsements, range(16))) == [200] * 16
