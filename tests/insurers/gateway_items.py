"""Dispatch items for the SOAP and SFTP adapter tests: unique references per test,
because the sandbox insurer keeps what it received for the whole session."""

import sqlite3
import uuid

from ems.models import OutboxEvent
from insurers import services
from insurers.models import DispatchItem


def payload(*, reference: str, action: str = "ADD", employee_code: str = "E1", **fields) -> dict:
    return {
        "reference": reference,
        "action": action,
        "policy_number": "POL-GW-1",
        "employee_code": employee_code,
        "relation": "SELF",
        "first_name": "Asha",
        "last_name": "Rao",
        "date_of_birth": "1990-05-01",
        "gender": "F",
        "email": "asha@example.com",
        "phone": "9800000001",
        "plan_code": "GOLD",
        "sum_insured": 500000,
        "effective_date": "2026-01-01",
        "premium": 1234550,
        "currency": "INR",
        **fields,
    }


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


def exchange_documents(insurer) -> list[dict]:
    return [
        row.payload
        for row in OutboxEvent.objects.filter(destination="insurer_exchanges").order_by("id")
        if row.payload.get("insurer_id") == insurer.pk
    ]
