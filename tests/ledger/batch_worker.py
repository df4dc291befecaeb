"""Code run inside the OS processes of the batch concurrency test (multiprocessing, spawn).

Each worker runs a fixed plan of batch calls on one shared account (its own holds, holds
every worker captures with the same keys, holds every worker races for with its own keys,
refunds, a release) and reports every outcome as plain data. Nothing Django is imported at
module level: `django_ready` sets the child up first.
"""

import traceback

from tests.ledger.concurrency_worker import django_ready

OWN_HOLDS = 30  # per worker: 0-19 captured in two batches, 20-29 released
SHARED_HOLDS = 8  # captured by every worker with the same keys
RACED_HOLDS = 6  # captured by every worker with its own keys: one batch wins
REFUNDS_PER_BATCH = 5


def own_amount(index: int) -> int:
    return 1_000 + 10 * index


def own_captured(index: int) -> int:
    return own_amount(index) if index % 2 == 0 else own_amount(index) - 7


def refunds(worker: int, round_number: int) -> list[dict]:
    return [
        {
            "amount": 500 + j,
            "reference": f"DEL-w{worker}-{round_number}-{j}",
            "idempotency_key": f"R-w{worker}-{round_number}-{j}",
        }
        for j in range(REFUNDS_PER_BATCH)
    ]


def _own_captures(worker: int, indexes: range) -> list[dict]:
    return [
        {"reference": f"W{worker}-{i}", "amount": own_captured(i), "idempotency_key": f"C-w{worker}-{i}"}
        for i in indexes
    ]


def batch_worker(database_url, redis_url, worker, account_id, ready, start, results) -> None:
    django_ready(database_url, redis_url)
    from ledger import batches
    from ledger.errors import LedgerError

    actor = f"system:worker-{worker}"
    records: list[dict] = []

    def captured(captures):
        holds = batches.holds_capture_batch(account_id=account_id, captures=captures, actor=actor)
        return [(hold.pk, hold.captured_amount) for hold in holds]

    def refunded(batch):
        entries = batches.refunds_post_batch(account_id=account_id, refunds=batch, actor=actor)
        return [(entry.pk, entry.amount) for entry in entries]

    shared = [{"reference": f"S-{i}", "idempotency_key": f"S-{i}"} for i in range(SHARED_HOLDS)]
    raced = [{"reference": f"T-{i}", "idempotency_key": f"T-{i}-w{worker}"} for i in range(RACED_HOLDS)]
    ready.put(worker)
    start.wait()
    try:
        first = captured(_own_captures(worker, range(10)))
        records.append({"op": "own", "holds": first})
        records.append({"op": "refund", "entries": refunded(refunds(worker, 0))})
        records.append({"op": "shared", "holds": captured(shared)})
        assert captured(_own_captures(worker, range(10))) == first  # a retried message
        try:
            records.append({"op": "raced", "worker": worker, "outcome": "captured", "holds": captured(raced)})
        except LedgerError as exc:
            records.append({"op": "raced", "worker": worker, "outcome": exc.code})
        records.append({"op": "own", "holds": captured(_own_captures(worker, range(10, 20)))})
        records.append({"op": "refund", "entries": refunded(refunds(worker, 1))})
        assert [pk for pk, _ in refunded(refunds(worker, 0))] == [pk for pk, _ in records[1]["entries"]]
        release = batches.holds_release_batch(
            account_id=account_id,
            references=[f"W{worker}-{i}" for i in range(20, OWN_HOLDS)],
            reason="insurer rejected",
            actor=actor,
        )
        records.append({"op": "release", "holds": [hold.pk for hold in release.holds]})
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the test
        records.append({"op": "error", "error": traceback.format_exc()})
    results.put(records)
