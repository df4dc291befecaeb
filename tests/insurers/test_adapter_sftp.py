"""insurers/adapters/sftp.py against the sandbox insurer's SSH server over real SFTP."""

import json
import threading
import time
from datetime import date

import paramiko
import pytest
from django.conf import settings
from django.db import connection

from insurers import services
from insurers.adapters import sftp as sftp_adapter
from insurers.adapters.base import PermanentError, TransientError
from insurers.adapters.sftp import SftpAdapter
from insurers.models import Dispatch, DispatchItem
from insurers.sandbox.sftp_server import SANDBOX_CSV_COLUMNS, known_hosts_line
from tests.factories import InsurerFactory
from tests.insurers.gateway_items import (
    dispatch_of,
    exchange_documents,
    payload,
    references,
    results_of,
    sandbox_received,
    taken_and_refused_assert,
)

pytestmark = pytest.mark.django_db
Result = DispatchItem.Result
X12_PARTIES = {
    "sender_id": "EMS",
    "receiver_id": "SANDBOX",
    "sponsor_name": "Acme Widgets",
    "sponsor_tax_id": "123456789",
    "payer_name": "Sandbox Insurance",
    "payer_id": "987654321",
}


@pytest.fixture
def sftp_insurer(sandbox):
    return InsurerFactory(
        protocol="SFTP",
        endpoint_url=sandbox.faces["sftp"],
        credentials={"password": settings.SANDBOX_SFTP_PASSWORD},
        connection={
            "known_hosts": (sandbox.data_dir / "known_hosts").read_text(),
            "csv_columns": SANDBOX_CSV_COLUMNS,
        },
        request_timeout_seconds=2,
    )


def _outbox(sandbox):
    return sandbox.data_dir / "sftp" / "outbox"


def _response_file_wait(sandbox, dispatch) -> None:
    deadline = time.monotonic() + 10
    while not (_outbox(sandbox) / f"{dispatch.idempotency_key}.response.csv").exists():
        assert time.monotonic() < deadline, "the sandbox wrote no response file"
        time.sleep(0.05)


def test_send_uploads_the_file_and_the_response_file_confirms_and_rejects(sandbox, sftp_insurer):
    # Given a dispatch with a member the insurer takes and one its rules refuse
    taken, refused = references(2)
    dispatch = dispatch_of(
        sftp_insurer, payload(reference=taken), payload(reference=refused, employee_code="REJ-1")
    )

    # When it is sent, every item is pending: the answer comes as a file
    results = services.dispatch_send(dispatch_id=dispatch.pk)
    assert [r.outcome for r in results] == ["pending", "pending"]
    assert [row[1] for row in results_of(dispatch)] == [Result.PENDING, Result.PENDING]
    assert Dispatch.objects.get(pk=dispatch.pk).state == Dispatch.State.SENT

    # Then the poll records the insurer's answers from its response file
    _response_file_wait(sandbox, dispatch)
    services.confirmations_poll(insurer_id=sftp_insurer.pk)
    taken_and_refused_assert(sandbox, dispatch, taken=taken, refused=refused)


def test_an_834_dispatch_travels_and_is_confirmed(sandbox, sftp_insurer):
    sftp_insurer.connection = {**sftp_insurer.connection, "file_format": "x12_834", "x12": X12_PARTIES}
    sftp_insurer.save(update_fields=["connection"])
    added, cancelled = references(2)
    dispatch = dispatch_of(
        sftp_insurer,
        payload(reference=added, employee_code=f"E-{added}"),
        payload(reference=cancelled, action="DELETE", employee_code=f"E-{added}", premium=-40050),
    )

    services.dispatch_send(dispatch_id=dispatch.pk)
    _response_file_wait(sandbox, dispatch)
    services.confirmations_poll(insurer_id=sftp_insurer.pk)

    # the refund is rounded the insurer's way (down to whole rupees)
    assert results_of(dispatch) == [
        (added, Result.CONFIRMED, 1234600, "", False),
        (cancelled, Result.CONFIRMED, -40000, "", False),
    ]


# the two fetchers log the file on their own connections, which commit: a flushed test
@pytest.mark.django_db(transaction=True)
def test_a_response_file_picked_up_twice_is_processed_once(sandbox, sftp_insurer):
    batch = references(3)
    dispatch = dispatch_of(sftp_insurer, *(payload(reference=reference) for reference in batch))
    services.dispatch_send(dispatch_id=dispatch.pk)
    _response_file_wait(sandbox, dispatch)

    # When two fetchers pick up the same outbox at the same moment
    fetched: list = []
    start = threading.Barrier(2)

    def fetch():
        start.wait()
        try:
            fetched.append(SftpAdapter().confirmations_fetch(sftp_insurer))
        finally:
            connection.close()

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then one of them read it, and it moved to the archive
    ours = sorted(r.reference for results in fetched for r in results if r.reference in batch)
    assert ours == sorted(batch)
    assert not (_outbox(sandbox) / f"{dispatch.idempotency_key}.response.csv").exists()
    archived = list(
        (sandbox.data_dir / "sftp" / "archive").glob(f"*-{dispatch.idempotency_key}.response.csv")
    )
    assert len(archived) == 1
    # and a later poll finds nothing more to record
    assert services.confirmations_poll(insurer_id=sftp_insurer.pk) == []


def test_status_roster_and_statement_fetch(sandbox, sftp_insurer):
    (reference,) = references(1)
    code = f"E-{reference}"
    dispatch = dispatch_of(sftp_insurer, payload(reference=reference, employee_code=code))
    services.dispatch_send(dispatch_id=dispatch.pk)
    _response_file_wait(sandbox, dispatch)
    services.confirmations_poll(insurer_id=sftp_insurer.pk)
    adapter = SftpAdapter()

    (status,) = adapter.status_fetch(sftp_insurer, [reference, "EN-NEVER-SENT"])
    roster = [row for row in adapter.roster_fetch(sftp_insurer) if row["employee_code"] == code]
    today = date.today()
    lines = [
        row for row in adapter.statement_fetch(sftp_insurer, today, today) if row["reference"] == reference
    ]

    assert (status.reference, status.outcome, status.insurer_premium) == (reference, "confirmed", 1234600)
    assert status.data == {"effective_date": "2026-01-01"}
    assert len(roster) == 1
    assert (roster[0]["insurer_member_id"], roster[0]["plan_code"]) == (status.insurer_member_id, "GOLD")
    assert [(line["kind"], line["amount"]) for line in lines] == [("DEBIT", -1234600)]


def test_an_unknown_host_key_is_refused_and_nothing_is_uploaded(sandbox, sftp_insurer):
    sftp_insurer.connection = {**sftp_insurer.connection, "known_hosts": ""}
    sftp_insurer.save(update_fields=["connection"])
    (reference,) = references(1)
    dispatch = dispatch_of(sftp_insurer, payload(reference=reference))

    with pytest.raises(PermanentError) as raised:
        services.dispatch_send(dispatch_id=dispatch.pk)

    assert raised.value.code == "sftp_host_key_unknown"
    assert results_of(dispatch) == [(reference, Result.PENDING, None, "", True)]
    assert not list((sandbox.data_dir / "sftp" / "inbox").glob(f"*{dispatch.idempotency_key}*"))
    assert sandbox_received(sandbox, dispatch.idempotency_key) == []


def test_a_changed_host_key_is_refused(sandbox, sftp_insurer):
    impostor = paramiko.ECDSAKey.generate(bits=256)
    sftp_insurer.connection = {
        **sftp_insurer.connection,
        "known_hosts": known_hosts_line(host="127.0.0.1", port=sandbox.ports["sftp"], key=impostor),
    }
    sftp_insurer.save(update_fields=["connection"])

    with pytest.raises(PermanentError) as raised:
        SftpAdapter().confirmations_fetch(sftp_insurer)

    assert raised.value.code == "sftp_host_key_changed"


def test_a_partial_upload_never_appears_under_the_final_name(sandbox, sftp_insurer):
    (reference,) = references(1)
    dispatch = dispatch_of(sftp_insurer, payload(reference=reference))
    name, body = sftp_adapter.dispatch_file(sftp_insurer, dispatch, list(dispatch.items.all()))
    inbox = sandbox.data_dir / "sftp" / "inbox"

    # When the connection dies halfway through writing the file
    with pytest.raises(TransientError), sftp_adapter.SftpSite(sftp_insurer).session() as sftp:
        remote = sftp.open(f"/inbox/.{name}.part", "wb")
        remote.write(body[: len(body) // 2].encode())
        remote.flush()
        sftp.get_channel().get_transport().close()
        remote.write(body[len(body) // 2 :].encode())

    # Then the insurer never sees a file under the final name, and acts on nothing
    time.sleep(0.3)
    assert not (inbox / name).exists()
    assert sandbox_received(sandbox, dispatch.idempotency_key) == []


def test_connection_refused_and_dropped_connections_are_transient(sandbox, sftp_insurer):
    sftp_insurer.endpoint_url = "sftp://sandbox@127.0.0.1:9/"
    with pytest.raises(TransientError) as refused:
        SftpAdapter().confirmations_fetch(sftp_insurer)
    sftp_insurer.endpoint_url = sandbox.faces["sftp"]
    sandbox.switches(error_rate=1.0)
    with pytest.raises(TransientError) as dropped:
        SftpAdapter().confirmations_fetch(sftp_insurer)

    assert refused.value.code == "sftp_connection_error"
    assert dropped.value.code in ("sftp_protocol_error", "sftp_connection_error")


def test_a_silent_server_times_out_within_the_insurers_timeout(sandbox, sftp_insurer):
    sandbox.switches(timeout_rate=1.0, timeout_seconds=30)
    started = time.monotonic()

    with pytest.raises(TransientError):
        SftpAdapter().confirmations_fetch(sftp_insurer)

    assert time.monotonic() - started < sftp_insurer.request_timeout_seconds + 1.5


def test_the_upload_is_logged_without_the_password(sandbox, sftp_insurer):
    (reference,) = references(1)
    dispatch = dispatch_of(sftp_insurer, payload(reference=reference))

    services.dispatch_send(dispatch_id=dispatch.pk)
    _response_file_wait(sandbox, dispatch)
    services.confirmations_poll(insurer_id=sftp_insurer.pk)

    upload, response = exchange_documents(sftp_insurer)
    assert (upload["operation"], upload["request"]["file"]) == ("upload", f"{dispatch.idempotency_key}.csv")
    assert (response["operation"], response["direction"], response["tracking_ids"]) == (
        "response file",
        "inbound",
        [reference],
    )
    assert settings.SANDBOX_SFTP_PASSWORD not in json.dumps([upload, response])
