"""The ledger under real concurrency: many OS processes against PostgreSQL, then count every paisa.

Workers are spawned processes (each its own Django and database connection) running
`tests/ledger/concurrency_worker.py`. Afterwards the database must equal a model built
from what the workers were told, every invariant must hold, and nothing may be applied
twice. The SIGKILL run kills workers mid-transaction, checks that nothing is half-written,
replays every plan with the same idempotency keys, and checks that nothing was lost.
"""

import multiprocessing
import os
import random
import signal
import time
from collections import Counter, defaultdict

import pytest
from django.db import connection
from django.db.models import Sum

from ems.models import OutboxEvent
from ledger import services
from ledger.models import Account, Entry, Hold, ParkedRequest, TopUp
from tests.factories import AccountFactory
from tests.ledger import concurrency_worker
from tests.ledger.conftest import APPROVER_CODENAMES, fund, user_with_ledger_permissions

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REDIS_URL = "redis://127.0.0.1:6379/11"


def database_url() -> str:
    params = connection.settings_dict
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{params['USER']}{password}@{host}:{port}/{params['NAME']}"


def assert_invariants(account: Account) -> None:
    account.refresh_from_db()
    entries = Entry.objects.filter(account=account).aggregate(total=Sum("amount"))["total"] or 0
    pending = (
        Hold.objects.filter(account=account, state=Hold.State.PENDING).aggregate(total=Sum("amount"))["total"]
        or 0
    )
    assert (account.posted, account.held) == (entries, pending)
    assert account.posted >= account.held >= 0


def assert_every_change_has_its_event_and_audit_record() -> None:
    """No half-writes: each ledger row has its outbox event, and each event its audit record."""
    kafka = Counter(
        OutboxEvent.objects.filter(destination="ems.ledger").values_list("payload__type", flat=True)
    )
    audit = Counter(
        OutboxEvent.objects.filter(destination="audit_logs").values_list("payload__action", flat=True)
    )
    assert kafka == audit
    entries = Counter(Entry.objects.values_list("kind", flat=True))
    assert kafka["ledger.hold_captured"] == entries["CAPTURE"]
    assert kafka["ledger.refund_posted"] == entries["REFUND"]
    assert kafka["ledger.topup_approved"] == entries["TOPUP"]
    batched = sum(
        len(payload["data"]["holds"])
        for payload in OutboxEvent.objects.filter(
            destination="ems.ledger", payload__type="ledger.holds_batch_placed"
        ).values_list("payload", flat=True)
    )
    assert kafka["ledger.hold_placed"] + batched == Hold.objects.count()
    assert kafka["ledger.hold_parked"] == ParkedRequest.objects.count()


def spawn(target, *args):
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def test_sixteen_processes_of_mixed_operations_match_the_model():
    # Given three accounts with modest funds (so requests park and wake), and one shared hold
    approver = user_with_ledger_permissions(*APPROVER_CODENAMES, is_staff=True)
    accounts = [AccountFactory() for _ in range(3)]
    initial = {}
    for number, account in enumerate(accounts):
        fund(account, 200_000 + number * 100_000, approver, key=f"seed-{number}")
        initial[account.pk] = 200_000 + number * 100_000
    shared = services.hold_place(
        account_id=accounts[0].pk, amount=5_000, reference="SHARED-CAPTURE", idempotency_key="shared-hold"
    ).hold
    workers = 16
    plan = {
        "approver_id": approver.pk,
        "account_ids": [a.pk for a in accounts],
        "operations": 30,
        "shared_place_at": 5,
        "shared_capture_at": 10,
        "shared_hold_id": shared.pk,
    }
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()

    # When 16 processes run a seeded random mix at once
    processes = [
        spawn(concurrency_worker.mixed_worker, database_url(), REDIS_URL, w, 42 + w, plan, start, results)
        for w in range(workers)
    ]
    start.set()
    records = [record for _ in range(workers) for record in results.get(timeout=150)]
    for process in processes:
        process.join(timeout=30)

    # Then no worker saw an unexpected error (deadlocks and serialization failures are retried inside)
    errors = [r["error"] for r in records if r["op"] == "error"]
    assert errors == []
    assert len(records) == workers * plan["operations"]

    # and the same key sent by every process placed exactly one hold (or parked one request)
    shared_places = [r for r in records if r["op"] == "shared_place"]
    assert len(shared_places) == workers
    assert Hold.objects.filter(idempotency_key="shared-place").count() <= 1
    assert (
        Hold.objects.filter(idempotency_key="shared-place").count()
        + ParkedRequest.objects.filter(idempotency_key="shared-place", hold__isnull=True).count()
        == 1
    )
    # and the hold captured by every process at once was captured exactly once
    shared_captures = [r for r in records if r["op"] == "shared_capture"]
    winners = {r["key"] for r in shared_captures if r["outcome"] == "captured"}
    assert len(winners) == 1
    assert {r["outcome"] for r in shared_captures} <= {"captured", "hold_already_resolved"}
    assert Entry.objects.filter(hold_id=shared.pk).count() == 1
    if winners == {"shared-capture"}:
        assert sum(1 for r in shared_captures if r["outcome"] == "captured") == workers // 2

    # and the database equals the model built from what the workers were told
    expected_keys = defaultdict(set)
    posted = dict(initial)
    for number, account in enumerate(accounts):
        expected_keys[account.pk].add(f"topup:{TopUp.objects.get(idempotency_key=f'seed-{number}').pk}")
    expected_keys[accounts[0].pk].add(f"capture:{winners.pop()}")
    posted[accounts[0].pk] -= 5_000
    hold_amounts = {}
    resolved = set()
    for r in records:
        if r["op"] == "topup":
            posted[r["account_id"]] += r["amount"]
            expected_keys[r["account_id"]].add(f"topup:{r['topup_id']}")
        elif r["op"] == "refund":
            posted[r["account_id"]] += r["amount"]
            expected_keys[r["account_id"]].add(f"refund:{r['key']}")
        elif r["op"] == "hold":
            hold_amounts[r["hold_id"]] = (r["account_id"], r["amount"])
        elif r["op"] == "capture":
            posted[r["account_id"]] -= r["amount"]
            expected_keys[r["account_id"]].add(f"capture:{r['key']}")
            resolved.add(r["hold_id"])
        elif r["op"] == "release":
            resolved.add(r["hold_id"])
    held = defaultdict(int)
    for hold_id, (account_id, amount) in hold_amounts.items():
        if hold_id not in resolved:
            held[account_id] += amount
    # requests that parked and were later woken hold their own amount; nothing else is pending
    for r in records:
        if r["op"] == "park":
            parked = ParkedRequest.objects.get(pk=r["parked_id"])
            assert (parked.account_id, parked.amount, parked.idempotency_key) == (
                r["account_id"],
                r["amount"],
                r["key"],
            )
            if parked.state == ParkedRequest.State.PLACED:
                assert (parked.hold.amount, parked.hold.state) == (r["amount"], "PENDING")
                held[r["account_id"]] += r["amount"]
    shared_place = Hold.objects.filter(idempotency_key="shared-place", state="PENDING").first()
    if shared_place is not None:
        held[accounts[0].pk] += shared_place.amount
    for account in accounts:
        account.refresh_from_db()
        keys = set(Entry.objects.filter(account=account).values_list("idempotency_key", flat=True))
        assert keys == expected_keys[account.pk]
        assert (account.posted, account.held) == (posted[account.pk], held[account.pk])
        assert_invariants(account)
        # nothing left parked that now fits: the queue's head is larger than available
        head = ParkedRequest.objects.filter(account=account, state="PARKED").order_by("id").first()
        assert head is None or head.amount > account.posted - account.held
    # nothing was applied twice
    assert Entry.objects.values("account", "idempotency_key").distinct().count() == Entry.objects.count()
    assert_every_change_has_its_event_and_audit_record()


def test_processes_killed_mid_transaction_lose_nothing_and_half_write_nothing():
    # Given one hot account with plenty of money and 8 workers with fixed plans
    approver = user_with_ledger_permissions(*APPROVER_CODENAMES, is_staff=True)
    account = AccountFactory()
    fund(account, 100_000_000, approver, key="seed")
    workers, cycles = 8, 100
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    processes = [
        spawn(concurrency_worker.cycle_worker, database_url(), REDIS_URL, w, account.pk, cycles, ready)
        for w in range(workers)
    ]
    for _ in range(workers):
        ready.get(timeout=120)

    # When every worker is killed with SIGKILL at a random moment while it works
    rng = random.Random(7)
    deadline = time.monotonic() + 0.8
    for process in sorted(processes, key=lambda _: rng.random()):
        time.sleep(max(0.0, min(rng.uniform(0.05, 0.25), deadline - time.monotonic())))
        os.kill(process.pid, signal.SIGKILL)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == -signal.SIGKILL
    time.sleep(0.5)  # let PostgreSQL notice the dead connections and roll their transactions back

    # Then nothing is half-written: invariants hold and every change has its event and audit record
    applied = Entry.objects.filter(account=account, kind="CAPTURE").count()
    assert 0 < applied < workers * cycles
    assert_invariants(account)
    assert_every_change_has_its_event_and_audit_record()

    # When every plan is replayed with the same idempotency keys (what a retrying caller does)
    plans = [concurrency_worker.cycle_plan(w, cycles) for w in range(workers)]
    for steps in plans:
        concurrency_worker.cycle_run(account.pk, steps)

    # Then every operation is applied exactly once: nothing lost, nothing doubled
    steps = [step for plan in plans for step in plan]
    expected_posted = 100_000_000 + sum(s["refund"] for s in steps) - sum(s["captured"] for s in steps)
    account.refresh_from_db()
    assert (account.posted, account.held) == (expected_posted, 0)
    assert Hold.objects.filter(account=account).count() == len(steps)
    assert Entry.objects.filter(account=account, kind="CAPTURE").count() == len(steps)
    assert Entry.objects.filter(account=account, kind="REFUND").count() == sum(
        1 for s in steps if s["refund"]
    )
    assert_invariants(account)
    assert_every_change_has_its_event_and_audit_record()
