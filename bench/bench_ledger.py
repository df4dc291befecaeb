"""Ledger benchmarks: one hot account, through the services, beside raw SQL and django-hordak.

Lines (figures, never assertions):
- `ledger_hold_capture` for W in 1, 4, 16: W spawned processes run hold+capture cycles on
  ONE account through `ledger.services` for a fixed time. An "op" is one service call,
  i.e. one locked transaction (a cycle is two ops: `hold_place`, `hold_capture`);
  `cycles_per_s` is given too. `raw_sql_ops_per_s`: W psycopg processes doing the
  physical minimum per op on one row (`SELECT ... FOR UPDATE`, `INSERT` entry, `UPDATE`
  account, `COMMIT`). `p99_ms` is the service call latency. `invariants_ok`: posted ==
  sum(entries), held == sum(pending holds), available >= 0 after the run.
- `ledger_batch_holds`: 500-debit dispatches through `holds_place_batch` (one lock, one
  transaction each) against the best raw single-row rate measured above.
- `ledger_batch_captures`: a window's 500 confirmations captured through
  `holds_capture_batch` (one lock, one transaction, by reference, every other one for less
  than its hold), against the same raw single-row rate; the holds are placed (untimed)
  with `holds_place_batch` before each batch.
- `ledger_vs_hordak`: the same number of posted transfers on one account through
  `refund_post` and through django-hordak's `Account.transfer_to` (each in its own
  transaction), same database, same process (a child run under bench/hordak_settings.py).
"""

import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import uuid

from bench.setup import bench_database_url, django_ready

DURATION_SECONDS = float(os.environ.get("BENCH_LEDGER_SECONDS", "4"))
WORKER_COUNTS = (1, 4, 16)
BATCH_SIZE = 500
BATCH_DISPATCHES = 10
WARM_UP_CYCLES = 20
HORDAK_TRANSFERS = int(os.environ.get("BENCH_LEDGER_TRANSFERS", "1500"))


# --- child processes -------------------------------------------------------------------


def _child_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ems.settings.base")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()


def _services_worker(database_url, account_id, run_id, worker, ready, start, stop_at, results) -> None:
    _child_django(database_url)
    from django.db import connection

    from ledger import services

    for index in range(WARM_UP_CYCLES):  # warm the caches and the connection before the clock starts
        key = f"{run_id}-{worker}-warm-{index}"
        placement = services.hold_place(account_id=account_id, amount=100, reference=key, idempotency_key=key)
        services.hold_capture(hold_id=placement.hold.pk, idempotency_key=key)
    connection.ensure_connection()
    latencies = []
    ready.put(worker)
    start.wait()
    index = 0
    while time.time() < stop_at.value:
        key = f"{run_id}-{worker}-{index}"
        began = time.perf_counter()
        placement = services.hold_place(account_id=account_id, amount=100, reference=key, idempotency_key=key)
        middle = time.perf_counter()
        services.hold_capture(hold_id=placement.hold.pk, idempotency_key=key)
        ended = time.perf_counter()
        latencies += [middle - began, ended - middle]
        index += 1
    results.put(latencies)


def _raw_worker(dsn, worker, ready, start, stop_at, results) -> None:
    import psycopg

    latencies = []
    with psycopg.connect(dsn) as conn:
        ready.put(worker)
        start.wait()
        while time.time() < stop_at.value:
            began = time.perf_counter()
            with conn.cursor() as cursor:
                cursor.execute("SELECT balance FROM bench_raw_account WHERE id = 1 FOR UPDATE")
                cursor.execute(
                    "INSERT INTO bench_raw_entry (account_id, amount, created_at) VALUES (1, -100, now())"
                )
                cursor.execute("UPDATE bench_raw_account SET balance = balance - 100 WHERE id = 1")
            conn.commit()
            latencies.append(time.perf_counter() - began)
    results.put(latencies)


def _run_workers(target, args_for, workers: int) -> tuple[float, list[float]]:
    """Start `workers` processes, let them run DURATION_SECONDS together, return (ops/s, latencies)."""
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    start = context.Event()
    stop_at = context.Value("d", 0.0)
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(*args_for(w), ready, start, stop_at, results), daemon=True)
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=300)  # every child has imported Django and connected
    stop_at.value = time.time() + DURATION_SECONDS
    began = time.time()
    start.set()
    latencies = [value for _ in processes for value in results.get(timeout=600)]
    elapsed = max(time.time() - began, DURATION_SECONDS)
    for process in processes:
        process.join(timeout=60)
    return len(latencies) / elapsed, latencies


def _p99_ms(latencies: list[float]) -> float:
    if len(latencies) < 2:
        return round(1000 * (latencies[0] if latencies else 0.0), 2)
    return round(1000 * statistics.quantiles(latencies, n=100)[98], 2)


# --- set-up and checks ---------------------------------------------------------------------


def _hot_account():
    from django.contrib.auth import get_user_model

    from ems.models import Employer
    from insurers.models import Insurer
    from ledger import approvals, services

    suffix = uuid.uuid4().hex[:8]
    employer = Employer.objects.create(code=f"bench-{suffix}", name="Bench employer")
    insurer = Insurer.objects.create(
        code=f"bench-{suffix}", name="Bench insurer", protocol="REST", webhook_secret_primary="bench"
    )
    account = services.account_open(employer_id=employer.pk, insurer_id=insurer.pk)
    approver, _ = get_user_model().objects.get_or_create(
        username="bench-approver", defaults={"is_superuser": True, "is_staff": True}
    )
    topup = approvals.account_topup(
        account_id=account.pk,
        amount=10**11,
        payment_reference="bench",
        idempotency_key=f"bench-{suffix}",
        requested_by="client:bench",
    )
    approvals.topup_decide(topup_id=topup.pk, approver=approver, approve=True)
    return account


def _invariants_ok(account) -> bool:
    from django.db.models import Sum

    from ledger.models import Entry, Hold

    account.refresh_from_db()
    entries = Entry.objects.filter(account=account).aggregate(total=Sum("amount"))["total"] or 0
    pending = (
        Hold.objects.filter(account=account, state=Hold.State.PENDING).aggregate(total=Sum("amount"))["total"]
        or 0
    )
    return account.posted == entries and account.held == pending and account.posted >= account.held


def _raw_tables(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw_entry")
        conn.execute("DROP TABLE IF EXISTS bench_raw_account")
        conn.execute("CREATE TABLE bench_raw_account (id bigint PRIMARY KEY, balance bigint NOT NULL)")
        conn.execute(
            "CREATE TABLE bench_raw_entry (id bigserial PRIMARY KEY, account_id bigint NOT NULL"
            " REFERENCES bench_raw_account (id), amount bigint NOT NULL, created_at timestamptz NOT NULL)"
        )
        conn.execute("INSERT INTO bench_raw_account VALUES (1, 100000000000)")


def _dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


# --- the benchmarks -----------------------------------------------------------------------


def run():
    django_ready()
    url = bench_database_url()
    dsn = _dsn(url)
    _raw_tables(dsn)
    best_raw = 0.0
    for workers in WORKER_COUNTS:
        account = _hot_account()
        run_id = uuid.uuid4().hex[:8]
        ops, latencies = _run_workers(
            _services_worker, lambda w, a=account.pk, r=run_id: (url, a, r, w), workers
        )
        raw_ops, _ = _run_workers(_raw_worker, lambda w: (dsn, w), workers)
        best_raw = max(best_raw, raw_ops)
        yield {
            "bench": "ledger_hold_capture",
            "workers": workers,
            "ops_per_s": round(ops, 1),
            "cycles_per_s": round(ops / 2, 1),
            "raw_sql_ops_per_s": round(raw_ops, 1),
            "ratio": round(ops / raw_ops, 3) if raw_ops else None,
            "p99_ms": _p99_ms(latencies),
            "invariants_ok": _invariants_ok(account),
        }
    yield _batch_holds(best_raw)
    yield _batch_captures(best_raw)
    yield _versus_hordak()


def _batch_holds(raw_ops: float) -> dict:
    from ledger import services

    account = _hot_account()
    run_id = uuid.uuid4().hex[:8]
    elapsed = 0.0
    for dispatch in range(BATCH_DISPATCHES):
        requests = [
            {
                "amount": 100,
                "reference": f"{run_id}-{dispatch}-{i}",
                "idempotency_key": f"{run_id}-{dispatch}-{i}",
            }
            for i in range(BATCH_SIZE)
        ]
        began = time.perf_counter()
        services.holds_place_batch(account_id=account.pk, requests=requests)
        elapsed += time.perf_counter() - began
    holds_per_s = BATCH_SIZE * BATCH_DISPATCHES / elapsed
    return {
        "bench": "ledger_batch_holds",
        "holds": BATCH_SIZE,
        "holds_per_s": round(holds_per_s, 1),
        "dispatch_ms": round(1000 * elapsed / BATCH_DISPATCHES, 2),
        **_beside_raw(holds_per_s, raw_ops, account),
    }


def _beside_raw(per_s: float, raw_ops: float, account) -> dict:
    """A batch row's tail: the raw single-row baseline of this run, the ratio, the invariants."""
    return {
        "raw_sql_ops_per_s": round(raw_ops, 1),
        "ratio": round(per_s / raw_ops, 3) if raw_ops else None,
        "invariants_ok": _invariants_ok(account),
    }


def _batch_captures(raw_ops: float) -> dict:
    # The outbox relay is the relay process's work, not the capture's (the raw baseline has
    # none): off here, or the batch that happens to kick it would carry its whole run.
    from django.test import override_settings

    with override_settings(OUTBOX_RELAY_ON_COMMIT=False):
        return _batch_captures_timed(raw_ops)


def _batch_captures_timed(raw_ops: float) -> dict:
    from ledger import batches, services

    account = _hot_account()
    run_id = uuid.uuid4().hex[:8]
    elapsed = 0.0
    for window in range(BATCH_DISPATCHES):
        references = [f"{run_id}-{window}-{i}" for i in range(BATCH_SIZE)]
        services.holds_place_batch(
            account_id=account.pk,
            requests=[{"amount": 100, "reference": r, "idempotency_key": r} for r in references],
        )
        captures = [
            {"reference": r, "amount": 100 - i % 2, "idempotency_key": r} for i, r in enumerate(references)
        ]
        began = time.perf_counter()
        batches.holds_capture_batch(account_id=account.pk, captures=captures, actor="system:bench")
        elapsed += time.perf_counter() - began
    captures_per_s = BATCH_SIZE * BATCH_DISPATCHES / elapsed
    return {
        "bench": "ledger_batch_captures",
        "captures": BATCH_SIZE,
        "per_s": round(captures_per_s, 1),
        "batch_ms": round(1000 * elapsed / BATCH_DISPATCHES, 2),
        **_beside_raw(captures_per_s, raw_ops, account),
    }


def _versus_hordak() -> dict:
    """Run in a child process under bench/hordak_settings.py (EMS + hordak in one Django)."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.hordak_settings",
        "DATABASE_URL": bench_database_url(),
        "LOG_LEVEL": "WARNING",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "bench.bench_ledger", "hordak"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        return {"bench": "ledger_vs_hordak", "error": completed.stderr[-2000:]}
    return json.loads(lines[-1])


def _hordak_main() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import transaction
    from djmoney.money import Money
    from hordak.models import Account as HordakAccount

    from ledger import services

    suffix = uuid.uuid4().hex[:8]
    bank = HordakAccount.objects.create(name=f"bank-{suffix}", type="AS", currencies=["INR"])
    employer_account = HordakAccount.objects.create(name=f"ea-{suffix}", type="LI", currencies=["INR"])
    account = _hot_account()

    began = time.perf_counter()
    for index in range(HORDAK_TRANSFERS):
        key = f"{suffix}-{index}"
        services.refund_post(account_id=account.pk, amount=100, reference=key, idempotency_key=key)
    ours = HORDAK_TRANSFERS / (time.perf_counter() - began)

    began = time.perf_counter()
    for _ in range(HORDAK_TRANSFERS):
        with transaction.atomic():
            bank.transfer_to(employer_account, Money(1, "INR"))
    theirs = HORDAK_TRANSFERS / (time.perf_counter() - began)
    print(
        json.dumps(
            {
                "bench": "ledger_vs_hordak",
                "transfers": HORDAK_TRANSFERS,
                "ops_per_s": round(ours, 1),
                "hordak_ops_per_s": round(theirs, 1),
                "ratio": round(ours / theirs, 3),
                "invariants_ok": _invariants_ok(account),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["hordak"]:
        _hordak_main()
    else:
        for line in run():
            print(json.dumps(line), flush=True)
