"""Code run inside the OS processes of the ledger concurrency tests (multiprocessing, spawn).

Nothing Django is imported at module level: a spawned child imports this module first,
then `django_ready()` points it at the test database and sets Django up.
"""

import os
import random
import traceback


def django_ready(database_url: str, redis_url: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "ems.settings.test"
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()


def mixed_worker(database_url, redis_url, worker, seed, plan, start, results) -> None:
    """Run a seeded random mix of ledger operations; report every outcome as plain data."""
    django_ready(database_url, redis_url)
    from django.contrib.auth import get_user_model

    from ledger import approvals, services
    from ledger.errors import LedgerError

    approver = get_user_model().objects.get(pk=plan["approver_id"])
    rng = random.Random(seed)
    records: list[dict] = []
    my_holds: list[tuple[int, int, int]] = []  # (hold id, amount, account id): mine, not yet resolved
    start.wait()
    for index in range(plan["operations"]):
        account_id = rng.choice(plan["account_ids"])
        choice = rng.random()
        key = f"w{worker}-{index}"
        record: dict = {"worker": worker, "index": index, "account_id": account_id}
        try:
            if index == plan["shared_place_at"]:
                # every worker places the same hold with the same key at about the same time
                placement = services.hold_place(
                    account_id=plan["account_ids"][0],
                    amount=1_000,
                    reference="SHARED",
                    idempotency_key="shared-place",
                )
                record.update(op="shared_place", hold_id=placement.hold.pk if placement.hold else None)
            elif index == plan["shared_capture_at"]:
                # every worker captures the same hold: some with one shared key, the rest with their own
                same_key = worker % 2 == 0
                capture_key = "shared-capture" if same_key else f"shared-capture-{worker}"
                record.update(op="shared_capture", hold_id=plan["shared_hold_id"], key=capture_key)
                try:
                    hold = services.hold_capture(hold_id=plan["shared_hold_id"], idempotency_key=capture_key)
                    record.update(outcome="captured", amount=hold.captured_amount)
                except LedgerError as exc:
                    record.update(outcome=exc.code)
            elif choice < 0.12:
                amount = rng.randint(1, 500) * 100
                topup = approvals.account_topup(
                    account_id=account_id,
                    amount=amount,
                    payment_reference=f"UTR-{key}",
                    idempotency_key=key,
                    requested_by=f"client:w{worker}",
                )
                approvals.topup_decide(topup_id=topup.pk, approver=approver, approve=True)
                record.update(op="topup", amount=amount, topup_id=topup.pk)
            elif choice < 0.22:
                amount = rng.randint(1, 300) * 100
                entry = services.refund_post(
                    account_id=account_id, amount=amount, reference=f"REF-{key}", idempotency_key=key
                )
                record.update(op="refund", amount=amount, entry_id=entry.pk, key=key)
            elif choice < 0.60 or not my_holds:
                amount = rng.randint(1, 400) * 100
                placement = services.hold_place(
                    account_id=account_id, amount=amount, reference=f"END-{key}", idempotency_key=key
                )
                if placement.parked:
                    record.update(op="park", amount=amount, parked_id=placement.parked_request.pk, key=key)
                else:
                    record.update(op="hold", amount=amount, hold_id=placement.hold.pk, key=key)
                    my_holds.append((placement.hold.pk, amount, account_id))
            elif choice < 0.85:
                hold_id, amount, record["account_id"] = my_holds.pop(rng.randrange(len(my_holds)))
                captured = amount if rng.random() < 0.6 else rng.randint(1, amount)
                services.hold_capture(hold_id=hold_id, amount=captured, idempotency_key=f"cap-{key}")
                # the same capture again (a retried message): must return the first result
                again = services.hold_capture(hold_id=hold_id, amount=captured, idempotency_key=f"cap-{key}")
                assert again.captured_amount == captured
                record.update(op="capture", hold_id=hold_id, amount=captured, key=f"cap-{key}")
            else:
                hold_id, amount, record["account_id"] = my_holds.pop(rng.randrange(len(my_holds)))
                services.hold_release(hold_id=hold_id, reason="test")
                record.update(op="release", hold_id=hold_id, amount=amount)
        except Exception:  # noqa: BLE001 - reported to the parent, which fails the test
            record.update(op="error", error=traceback.format_exc())
        records.append(record)
    results.put(records)


def cycle_plan(worker: int, cycles: int) -> list[dict]:
    """The fixed plan of the SIGKILL test: hold, capture (some partial), and a refund every 5th."""
    rng = random.Random(1000 + worker)
    steps = []
    for index in range(cycles):
        amount = rng.randint(1, 50) * 100
        steps.append(
            {
                "hold_key": f"k{worker}-h{index}",
                "amount": amount,
                "capture_key": f"k{worker}-c{index}",
                "captured": amount if index % 3 else max(1, amount // 2),
                "refund": 700 if index % 5 == 0 else 0,
                "refund_key": f"k{worker}-r{index}",
            }
        )
    return steps


def cycle_run(account_id: int, steps: list[dict]) -> None:
    from ledger import services

    for step in steps:
        placement = services.hold_place(
            account_id=account_id,
            amount=step["amount"],
            reference=step["hold_key"],
            idempotency_key=step["hold_key"],
        )
        services.hold_capture(
            hold_id=placement.hold.pk, amount=step["captured"], idempotency_key=step["capture_key"]
        )
        if step["refund"]:
            services.refund_post(
                account_id=account_id,
                amount=step["refund"],
                reference=step["refund_key"],
                idempotency_key=step["refund_key"],
            )


def cycle_worker(database_url, redis_url, worker, account_id, cycles, ready) -> None:
    """Run the worker's plan until killed (SIGKILL by the parent)."""
    django_ready(database_url, redis_url)
    from ledger import services

    services.hold_place  # noqa: B018 - import before signalling ready
    ready.put(worker)
    cycle_run(account_id, cycle_plan(worker, cycles))
