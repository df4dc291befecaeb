"""The sandbox insurer's brain, protocol-free.

State lives in the sandbox's own SQLite file (`SANDBOX_DATA_DIR/sandbox.sqlite3`), shared
by its REST, SOAP and SFTP faces in one process (a process lock serialises writes):

- `items`: every item received, by its idempotency key — a second send of the same key
  answers what the first got and changes nothing (the insurer side of exactly once);
- `members`: the insurer's roster (what it believes is covered);
- `ledger`: the CD account, one signed line per priced item.

It prices like an insurer, not like EMS: premiums are rounded to whole rupees (half up),
refunds down, so discrepancies happen. Rules reject some members for good (employee codes
starting `REJ`, or a `sum_insured` over the cap). Switches change its behaviour at run
time: latency, error and timeout rates, 429 with Retry-After, "accepted but the response
lost", answer mode (inline, or accepted now and confirmed later by webhook), and duplicate /
out-of-order webhooks.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_key TEXT PRIMARY KEY, reference TEXT NOT NULL, dispatch_key TEXT NOT NULL,
    action TEXT NOT NULL, payload TEXT NOT NULL, outcome TEXT NOT NULL,
    insurer_reference TEXT, insurer_member_id TEXT, insurer_premium INTEGER,
    code TEXT, reason TEXT, received_at TEXT NOT NULL, confirmed_at TEXT
);
CREATE INDEX IF NOT EXISTS items_reference ON items(reference);
CREATE TABLE IF NOT EXISTS members (
    member_id TEXT PRIMARY KEY, policy_number TEXT, employee_code TEXT, relation TEXT,
    first_name TEXT, last_name TEXT, date_of_birth TEXT, plan_code TEXT, sum_insured INTEGER,
    start_date TEXT, end_date TEXT
);
CREATE INDEX IF NOT EXISTS members_person ON members(policy_number, employee_code, relation);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT, on_date TEXT NOT NULL, reference TEXT NOT NULL,
    kind TEXT NOT NULL, amount INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS switches (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

DEFAULT_SWITCHES: dict = {
    "latency_ms": 0,  # added to every call
    "error_rate": 0.0,  # share of calls answered 500 without acting
    "timeout_rate": 0.0,  # share of calls that hang for `timeout_seconds`
    "timeout_seconds": 30,
    "throttle_rate": 0.0,  # share of calls answered 429
    "retry_after_seconds": 1,
    "lose_response_rate": 0.0,  # share of calls acted on, then answered 500 (response lost)
    "answer_mode": "inline",  # "inline": confirmed in the answer; "webhook": accepted now, confirmed later
    "webhook_delay_ms": 200,
    "webhook_duplicates": False,  # send every webhook twice
    "webhook_out_of_order": False,  # send a batch's webhooks in reverse order
    "sum_insured_cap": 5_000_000,  # whole units; above it a member is refused
}
REJECT_PREFIX = "REJ"
FAULTS = (
    ("error", "error_rate"),
    ("timeout", "timeout_rate"),
    ("throttle", "throttle_rate"),
    ("lose_response", "lose_response_rate"),
)

_lock = threading.RLock()
_local = threading.local()


def data_dir() -> Path:
    path = Path(os.environ.get("SANDBOX_DATA_DIR", "var/sandbox"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _connection() -> sqlite3.Connection:
    path = str(data_dir() / "sandbox.sqlite3")
    connection = getattr(_local, "connection", None)
    if connection is None or getattr(_local, "path", None) != path:
        connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(SCHEMA)
        _local.connection, _local.path = connection, path
    return connection


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the process lock (ROLLBACK on any exception)."""

    def __enter__(self) -> sqlite3.Connection:
        _lock.acquire()
        self.connection = _connection()
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind, value, traceback) -> None:
        try:
            self.connection.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            _lock.release()


# --- switches -------------------------------------------------------------------------


def switches_get() -> dict:
    rows = _connection().execute("SELECT name, value FROM switches").fetchall()
    return {**DEFAULT_SWITCHES, **{row["name"]: json.loads(row["value"]) for row in rows}}


def switches_set(**values) -> dict:
    unknown = set(values) - set(DEFAULT_SWITCHES)
    if unknown:
        raise ValueError(f"unknown switches: {', '.join(sorted(unknown))}")
    with _Transaction() as connection:
        connection.executemany(
            "INSERT INTO switches(name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            [(name, json.dumps(value)) for name, value in values.items()],
        )
    return switches_get()


def switches_reset() -> dict:
    with _Transaction() as connection:
        connection.execute("DELETE FROM switches")
    return switches_get()


def fault_pick(switches: dict) -> str | None:
    """Which fault this call suffers, if any: 'error', 'timeout', 'throttle' or 'lose_response'."""
    roll = random.random()
    for name, key in FAULTS:
        rate = float(switches.get(key) or 0)
        if roll < rate:
            return name
        roll -= rate
    return None


# --- pricing --------------------------------------------------------------------------


def insurer_premium(our_premium: int) -> int:
    """A debit priced the insurer's way: whole rupees, half up (minor units in, minor units out)."""
    return (abs(our_premium) + 50) // 100 * 100


def insurer_refund(our_refund: int) -> int:
    """A refund the insurer's way: whole rupees, rounded down (it keeps the paise)."""
    return abs(our_refund) // 100 * 100


def _price(item: dict) -> int:
    """Signed: a debit is positive, a refund negative."""
    premium = int(item.get("premium") or 0)
    if item.get("action") == "DELETE" or premium < 0:
        return -insurer_refund(premium)
    return insurer_premium(premium)


# --- the insurer's answers -------------------------------------------------------------


def receive(items: list[dict], dispatch_key: str) -> list[dict]:
    """Act on a dispatch's items (each: item_key + payload fields); the same item key answers the same.

    In answer mode "webhook" new items are `accepted` now and confirmed later
    (`confirmations_due`); in "inline" mode they are `confirmed` in the answer.
    """
    switches = switches_get()
    inline, cap = switches["answer_mode"] == "inline", int(switches["sum_insured_cap"])
    with _Transaction() as connection:
        results = [_receive_one(connection, item, dispatch_key, inline, cap) for item in items]
    if not inline and any(result["outcome"] == "accepted" for result in results):
        from insurers.sandbox import webhook_sender  # it imports this module

        webhook_sender.confirmations_send_later(delay_ms=int(switches["webhook_delay_ms"]))
    return results


def _receive_one(connection, item: dict, dispatch_key: str, inline: bool, cap: int) -> dict:
    key = item.get("item_key") or f"itm-{item['reference']}"
    row = connection.execute("SELECT * FROM items WHERE item_key = ?", (key,)).fetchone()
    if row is not None:  # seen before: the same answer, nothing acted on again
        return _result_of(row)
    refusal = _refusal(item, cap)
    outcome = "rejected" if refusal else ("confirmed" if inline else "accepted")
    code, reason = refusal or ("", "")
    insurer_reference = "" if refusal else f"INS-{uuid.uuid4().hex[:12].upper()}"
    premium = None if refusal else _price(item)
    connection.execute(
        "INSERT INTO items(item_key, reference, dispatch_key, action, payload, outcome,"
        " insurer_reference, insurer_premium, code, reason, received_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            key,
            item["reference"],
            dispatch_key,
            item.get("action", ""),
            json.dumps(item, default=str),
            outcome,
            insurer_reference,
            premium,
            code,
            reason,
            _now(),
        ),
    )
    member_id = _confirm(connection, key, item) if outcome == "confirmed" else ""
    # what `_result_of` would read back from the row just written
    return {
        "reference": item["reference"],
        "item_key": key,
        "outcome": outcome,
        "insurer_reference": insurer_reference,
        "insurer_member_id": member_id,
        "insurer_premium": premium,
        "code": code,
        "reason": reason,
        "data": {"effective_date": item.get("effective_date")},
    }


def _refusal(item: dict, cap: int) -> tuple[str, str] | None:
    if str(item.get("employee_code", "")).upper().startswith(REJECT_PREFIX):
        return "member_refused", "The insurer refuses cover for this member (sandbox rule: code starts REJ)."
    if item.get("sum_insured") not in (None, "") and int(item["sum_insured"]) > cap:
        return "sum_insured_over_cap", f"Sum insured above the insurer's cap of {cap}."
    return None


def _confirm(connection, key: str, item: dict) -> str:
    """Apply an item to the roster and the CD account, and mark it confirmed; returns the member id."""
    member_id = _roster_apply(connection, item)
    premium = _price(item)
    if premium:
        connection.execute(
            "INSERT INTO ledger(on_date, reference, kind, amount) VALUES (?,?,?,?)",
            (date.today().isoformat(), item["reference"], "REFUND" if premium < 0 else "DEBIT", -premium),
        )
    connection.execute(
        "UPDATE items SET outcome = 'confirmed', insurer_member_id = ?, confirmed_at = ? WHERE item_key = ?",
        (member_id, _now(), key),
    )
    return member_id


def _roster_apply(connection, item: dict) -> str:
    action = item.get("action")
    effective = item.get("effective_date") or date.today().isoformat()
    first_name = item.get("first_name") or ""
    member = connection.execute(
        "SELECT member_id FROM members WHERE policy_number = ? AND employee_code = ? AND relation = ?"
        " AND (? = '' OR first_name = ?) AND end_date IS NULL ORDER BY start_date DESC LIMIT 1",
        (
            item.get("policy_number"),
            item.get("employee_code"),
            item.get("relation", "SELF"),
            first_name,
            first_name,
        ),
    ).fetchone()
    if action == "ADD" or member is None:
        member_id = f"M{uuid.uuid4().hex[:10].upper()}"
        connection.execute(
            "INSERT INTO members VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
            (
                member_id,
                item.get("policy_number"),
                item.get("employee_code"),
                item.get("relation", "SELF"),
                item.get("first_name"),
                item.get("last_name"),
                item.get("date_of_birth"),
                item.get("plan_code"),
                item.get("sum_insured"),
                effective,
            ),
        )
        return member_id
    member_id = member["member_id"]
    if action == "DELETE":
        end = (date.fromisoformat(effective) - timedelta(days=1)).isoformat()
        connection.execute("UPDATE members SET end_date = ? WHERE member_id = ?", (end, member_id))
        return member_id
    changes = {
        column: item[column]
        for column in ("first_name", "last_name", "date_of_birth", "plan_code", "sum_insured")
        if item.get(column) not in (None, "")
    }
    for column, value in changes.items():  # fixed column names, values bound
        connection.execute(f"UPDATE members SET {column} = ? WHERE member_id = ?", (value, member_id))
    return member_id


def confirmations_due(*, limit: int = 1000) -> list[dict]:
    """Confirm accepted items (answer mode "webhook"), oldest first; returns their confirmed results."""
    with _Transaction() as connection:
        rows = connection.execute(
            "SELECT item_key, payload FROM items WHERE outcome = 'accepted' ORDER BY received_at LIMIT ?",
            (limit,),
        ).fetchall()
        for row in rows:
            _confirm(connection, row["item_key"], json.loads(row["payload"]))
        keys = [row["item_key"] for row in rows]
        return [
            _result_of(connection.execute("SELECT * FROM items WHERE item_key = ?", (key,)).fetchone())
            for key in keys
        ]


def status(references: list[str]) -> list[dict]:
    """What the insurer knows of these references: its answer, or `unknown` (it never got them)."""
    connection = _connection()
    answers = []
    for reference in references:
        row = connection.execute(
            "SELECT * FROM items WHERE reference = ? ORDER BY received_at DESC LIMIT 1", (reference,)
        ).fetchone()
        answers.append(_result_of(row) if row else {"reference": reference, "outcome": "unknown"})
    return answers


def roster(policy_number: str | None = None) -> list[dict]:
    query, params = "SELECT * FROM members", ()
    if policy_number:
        query, params = query + " WHERE policy_number = ?", (policy_number,)
    return [
        {
            "insurer_member_id": row["member_id"],
            "policy_number": row["policy_number"],
            "employee_code": row["employee_code"],
            "relation": row["relation"],
            "first_name": row["first_name"],
            "last_name": row["last_name"],
            "date_of_birth": row["date_of_birth"],
            "plan_code": row["plan_code"],
            "sum_insured": row["sum_insured"],
            "start": row["start_date"],
            "end": row["end_date"],
        }
        for row in _connection().execute(query + " ORDER BY member_id", params)
    ]


def statement(start: date, end: date) -> list[dict]:
    """The CD statement between two dates (inclusive): signed amounts in minor units, running balance."""
    connection = _connection()
    balance = connection.execute(
        "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE on_date < ?", (start.isoformat(),)
    ).fetchone()[0]
    lines = []
    for row in connection.execute(
        "SELECT * FROM ledger WHERE on_date BETWEEN ? AND ? ORDER BY id", (start.isoformat(), end.isoformat())
    ):
        balance += row["amount"]
        lines.append(
            {
                "date": row["on_date"],
                "reference": row["reference"],
                "kind": row["kind"],
                "amount": row["amount"],
                "balance": balance,
            }
        )
    return lines


def _result_of(row) -> dict:
    return {
        "reference": row["reference"],
        "item_key": row["item_key"],
        "dispatch_key": row["dispatch_key"],
        "outcome": row["outcome"],
        "insurer_reference": row["insurer_reference"] or "",
        "insurer_member_id": row["insurer_member_id"] or "",
        "insurer_premium": row["insurer_premium"],
        "code": row["code"] or "",
        "reason": row["reason"] or "",
        "data": {"effective_date": json.loads(row["payload"]).get("effective_date")},
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()
