"""The deployed web servers, started as `manage.py run_stack` starts them: real HTTP and a
real websocket over loopback, on this session's test database and Redis."""

import json
import os
import subprocess

import pytest
from django.db import transaction
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ems.embedded import free_port
from ems.management.commands.run_stack import socket_server_argv, web_server_argv
from ems.notifications import notify_employer
from tests.factories import EmployerFactory, hr_user_create
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
