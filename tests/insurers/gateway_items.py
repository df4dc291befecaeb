"""Dispatch items for the SOAP and SFTP adapter tests: unique references per test,
because the sandbox insurer keeps what it received for the whole session."""

import sqlite3
import uuid

from django.conf import settings

from ems.models import OutboxEvent
from insurers import services
from insurers.models import Dispatch, DispatchItem
from insurers.sandbox.samples import member_payload
from insurers.sandbox.sftp_server import insurer_connection
from tests.factories import InsurerFactory


def sftp_insurer_at(sandbox, **fields):
    """An SFTP insurer at the sandbox, set up as seed_demo sets the demo one: the sandbox's
    host key and CSV layout, its password."""
    return InsurerFactory(
        protocol="SFTP",
        endpoint_url=sandbox.faces["sftp"],
        credentials={"password": settings.SANDBOX_SFTP_PASSWORD},
        connection=insurer_connection(
            data_dir=sandbox.data_dir, host="127.0.0.1", port=sandbox.ports["sftp"]
        ),
        request_timeout_seconds=2,
        **fields,
    )


def payload(*, reference: str, **fields) -> dict:
    return member_payload(reference=reference, **fields)


def dispatch_of(insurer, *payloads: dict):
    return services.dispatch_create(
        insurer=insurer,
        items=[{"reference": p["reference"], "kind": p["action"], "payload": p} for p in payloads],
    )


def references(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8].upper()
    return [f"EN-{run}-{n:04d}" for n in range(count)]


def results_of(dispatch) -> list[tuple]:
    return list(
        DispatchItem.objects.filter(dispatch=dispatch)
        .order_by("reference")
        .values_list("reference", "result", "insurer_premium", "result_code", "is_live")
    )


def sandbox_received(sandbox, dispatch_key: str) -> list[tuple]:
    """What the sandbox insurer's own store holds for a dispatch key (its SQLite file)."""
    with sqlite3.connect(sandbox.data_dir / "sandbox.sqlite3") as connection:
        return connection.execute(
            "SELECT item_key, reference, outcome FROM items WHERE dispatch_key = ? ORDER BY reference",
            (dispatch_key,),
        ).fetchall()


def sandbox_ledger_references(sandbox, references) -> list[str]:
    """The references of the sandbox insurer's CD-account lines among `references` (one per item acted on)."""
    wanted = list(references)
    with sqlite3.connect(sandbox.data_dir / "sandbox.sqlite3") as connection:
        rows = connection.execute(
            f"SELECT reference FROM ledger WHERE reference IN ({','.join('?' * len(wanted))})",  # noqa: S608
            wanted,
        ).fetchall()
    return [reference for (reference,) in rows]


def exchange_documents(insurer) -> list[dict]:
    return [
        row.payload
        for row in OutboxEvent.objects.filter(destination="insurer_exchanges").order_by("id")
        if row.payload.get("insurer_id") == insurer.pk
    ]


def taken_and_refused_assert(sandbox, dispatch, *, taken: str, refused: str) -> None:
    """The insurer confirmed `taken` at its own rounding, refused `refused` by its rule, and
    received both under the dispatch's key with the items' own keys."""
    assert results_of(dispatch) == [
        (taken, DispatchItem.Result.CONFIRMED, 1234600, "", False),
        (refused, DispatchItem.Result.REJECTED, None, "member_refused", False),
    ]
    assert Dispatch.objects.get(pk=dispatch.pk).state == Dispatch.State.COMPLETED
    assert sandbox_received(sandbox, dispatch.idempotency_key) == [
        (f"itm-{taken}", taken, "confirmed"),
        (f"itm-{refused}", refused, "rejected"),
    ]
