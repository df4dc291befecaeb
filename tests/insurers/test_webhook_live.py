"""Webhooks over real HTTP to the web server as deployed (granian's WSGI server) on loopback:
the documented shell and Python examples verify, a chunked body over the limit is refused
though it declares no length, the sandbox insurer's webhooks confirm items, duplicated and
out of order, and no configured secret reaches the server's logs."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from bench.setup import web_server_start
from insurers.models import DispatchItem, WebhookEvent
from insurers.sandbox.webhook_sender import webhook_targets_write
from insurers.services import dispatch_create, dispatch_send
from insurers.webhooks import SIGNATURE_HEADER, signature_header
from tests.factories import InsurerFactory
from tests.insurers.test_rest_adapter import payload
from tests.insurers.webhook_doors import event, notify_url
from tests.servers import chunked_post

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(settings.BASE_DIR)
DOC = ROOT / "docs" / "insurer-integration.md"
PRIMARY = "whsec_live_primary_9f8e7d6c5b4a39281706"
SECONDARY = "whsec_live_secondary_1a2b3c4d5e6f70819"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ems_server(tmp_path):
    """The web server as deployed, on the test database (eager tasks: events applied in-process)."""
    log_path = tmp_path / "server.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ems.settings.test",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
        "LOG_LEVEL": "DEBUG",
    }
    with open(log_path, "w") as log:
        server, port = web_server_start(env=env, stderr=log)
    try:
        yield f"http://127.0.0.1:{port}", port, log_path
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:  # a client's kept-alive connection can hold granian's graceful stop
            server.kill()
            server.wait(timeout=15)


@pytest.fixture
def insurer(db):
    return InsurerFactory(webhook_secret_primary=PRIMARY, webhook_secret_secondary=SECONDARY)


def _block(language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"no {language} example in {DOC.name}"
    return match.group(1)


def test_the_documented_shell_example_verifies(ems_server, insurer):
    url, _port, _log = ems_server
    script = _block("sh")
    # the reader edits these four lines; the test gives them through the environment
    script = re.sub(r"^(EMS_URL|INSURER_ID|SECRET|BODY)=.*\n", "", script, flags=re.M)
    body = json.dumps({"event_id": "evt-sh", "type": "endorsement.accepted", "tracking_id": "T-SH"})
    env = {**os.environ, "EMS_URL": url, "INSURER_ID": str(insurer.pk), "SECRET": PRIMARY, "BODY": body}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "event_id": "evt-sh",
        "status": "received",
        "flag": "unknown_tracking_id",
    }
    assert WebhookEvent.objects.get().body == body
    # and the same script with the wrong secret is refused
    wrong = subprocess.run(
        ["bash", "-c", script], env={**env, "SECRET": "nope"}, capture_output=True, text=True, timeout=30
    )
    assert json.loads(wrong.stdout)["error"]["code"] == "signature_invalid"
    assert WebhookEvent.objects.count() == 1


def test_the_documented_python_example_verifies(ems_server, insurer):
    url, _port, _log = ems_server
    code = _block("python")
    code = code.replace('EMS_URL = "http://127.0.0.1:8000"', f'EMS_URL = "{url}"')
    code = code.replace("INSURER_ID = 1", f"INSURER_ID = {insurer.pk}")
    code = code.replace('SECRET = "whsec_your_secret"', f'SECRET = "{SECONDARY}"')  # mid-rotation
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("202 ")
    assert WebhookEvent.objects.get().event_id == "evt-1"


def test_a_chunked_body_over_the_limit_is_refused_without_a_length(ems_server, insurer):
    _url, port, _log = ems_server
    body = json.dumps({**event("big", "T-1"), "padding": "x" * (settings.WEBHOOK_MAX_BYTES + 10)}).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature_header([PRIMARY], body)}
    status, answer = chunked_post(port, notify_url(insurer.pk), body, headers, chunk_bytes=65536)
    assert status == 413
    assert json.loads(answer)["error"]["code"] == "payload_too_large"
    assert WebhookEvent.objects.count() == 0


def _wait_for(predicate, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


@pytest.mark.parametrize(
    "duplicates,out_of_order", [(False, False), (True, True)], ids=["plain", "dup-reversed"]
)
def test_sandbox_webhooks_confirm_the_items(ems_server, sandbox, duplicates, out_of_order):
    url, _port, log_path = ems_server
    insurer = InsurerFactory(
        protocol="REST",
        endpoint_url=sandbox.faces["rest"],
        credentials={"bearer_token": sandbox.token},
        webhook_secret_primary=PRIMARY,
        webhook_secret_secondary=SECONDARY,
    )
    webhook_targets_write(
        {"url": url, "insurers": {insurer.code: {"insurer_id": insurer.pk, "secret": PRIMARY}}},
        data_dir=sandbox.data_dir,
    )
    sandbox.switches(
        answer_mode="webhook",
        webhook_delay_ms=100,
        webhook_duplicates=duplicates,
        webhook_out_of_order=out_of_order,
    )
    references = [f"WH-{duplicates:d}-{n}" for n in range(3)]
    dispatch = dispatch_create(
        insurer=insurer, items=[{"reference": r, "kind": "ADD", "payload": payload(r)} for r in references]
    )
    inline = dispatch_send(dispatch_id=dispatch.pk)
    assert {result.outcome for result in inline} == {"accepted"}

    def confirmed() -> bool:
        return set(
            DispatchItem.objects.filter(reference__in=references).values_list("result", flat=True)
        ) == {"CONFIRMED"}

    _wait_for(confirmed)
    items = DispatchItem.objects.filter(reference__in=references)
    assert all(item.insurer_premium is not None and item.insurer_member_id for item in items)
    assert {item.result_data["source"] for item in items} == {"webhook"}
    assert WebhookEvent.objects.filter(insurer=insurer).count() == 3  # a duplicate is stored once
    assert set(WebhookEvent.objects.filter(insurer=insurer).values_list("process_note", flat=True)) == {
        "applied"
    }
    server_log = log_path.read_text()
    for secret in (PRIMARY, SECONDARY):
        assert secret not in server_log
    if duplicates:  # the second delivery of the batch reached EMS and stored nothing
        _wait_for(lambda: re.search(r'"stored": 0', log_path.read_text()) is not None)
