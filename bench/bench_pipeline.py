"""The pipeline from intake to the insurer's confirmation, batched and one dispatch per request.

`pipeline_e2e`: endorsements (about 90% ADD, 5% DELETE, 5% CORRECTION) for three
insurers, one per protocol (REST, SOAP, SFTP with response files), uploaded as one CSV
file per policy through the API as deployed, then validated, windowed, fund-locked, sent
to the sandbox insurer (50 ms added to every call), confirmed and activated by a real
Celery worker (two prefork children, its beat embedded) on a private Redis. Timed from the
first upload until every request is CONFIRMED or ACTIVE; p50/p99 are each request's
`confirmed_at - received_at`. `ledger_exact`: every account's posted balance is its
funding less what the insurer charged plus what it refunded (the sandbox's published
rounding applied to our premiums), nothing left held. The same run with
`PIPELINE_BATCHING=false` (every request its own dispatch) on fewer requests gives the
baseline: `ratio_vs_unbatched` = batched per_s / unbatched per_s.

Environment: BENCH_PIPELINE_ENDORSEMENTS (10000), BENCH_PIPELINE_UNBATCHED_ENDORSEMENTS (600),
BENCH_PIPELINE_LATENCY_MS (50), BENCH_PIPELINE_TIMEOUT_S (900).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.setup import bench_database_url, django_ready

PROTOCOLS = ("REST", "SOAP", "SFTP")
PREFIX = {"REST": "R", "SOAP": "O", "SFTP": "F"}  # member codes per policy


def run():
    django_ready()
    from bench.stack import RedisServer, Stack
    from insurers.sandbox.process import sandbox_start

    total = int(os.environ.get("BENCH_PIPELINE_ENDORSEMENTS", "10000"))
    unbatched = int(os.environ.get("BENCH_PIPELINE_UNBATCHED_ENDORSEMENTS", "600"))
    latency = int(os.environ.get("BENCH_PIPELINE_LATENCY_MS", "50"))
    with tempfile.TemporaryDirectory() as scratch:
        # BENCH_PIPELINE_DIR keeps the processes' logs for reading afterwards
        root = Path(os.environ.get("BENCH_PIPELINE_DIR") or scratch)
        root.mkdir(parents=True, exist_ok=True)
        sandbox = sandbox_start(data_dir=root / "sandbox")
        redis_server = RedisServer(root)
        redis_server.start()
        try:
            sandbox.switches(latency_ms=latency)
            rows = []
            for batching, count in ((False, unbatched), (True, total)):
                stack = Stack(
                    root,
                    redis_server,
                    database_url=bench_database_url(),
                    extra_env={
                        "DJANGO_SETTINGS_MODULE": "ems.settings.base",
                        "PIPELINE_BATCHING": "true" if batching else "false",
                        "LOG_LEVEL": os.environ.get("BENCH_PIPELINE_LOG_LEVEL", "ERROR"),
                    },
                )
                stack.start()
                try:
                    rows.append(_one_run(stack, sandbox, count=count, batching=batching, latency=latency))
                finally:
                    stack.stop()
                    redis_server.stop()
                    redis_server.start()
        finally:
            redis_server.stop()
            sandbox.stop()
    baseline = rows[0]["per_s"] or None
    for row in reversed(rows):
        row["ratio_vs_unbatched"] = round(row["per_s"] / baseline, 2) if baseline else None
        yield row


def _one_run(stack, sandbox, *, count: int, batching: bool, latency: int) -> dict:
    fixture = _fixture(sandbox, count)
    token = _token(stack.web_url, fixture["client_id"], fixture["secret"])
    started = time.perf_counter()
    for policy_number, body in fixture["files"].items():
        status, answer = _post_csv(f"{stack.web_url}/api/v1/endorsements/batch", body, token, policy_number)
        if status not in (201, 202):
            raise RuntimeError(f"upload refused: {status} {answer}")
    timeout = float(os.environ.get("BENCH_PIPELINE_TIMEOUT_S", "900"))
    finished, states = _wait(fixture["employer_id"], count, started + timeout)
    elapsed = time.perf_counter() - started
    latencies = _latencies(fixture["employer_id"])
    return {
        "bench": "pipeline_e2e",
        "endorsements": count,
        "insurers": len(PROTOCOLS),
        "workers": 2,
        "latency_ms": latency,
        "batching": batching,
        "per_s": round(count / elapsed, 1),
        "elapsed_s": round(elapsed, 2),
        "p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "p99_s": round(_percentile(latencies, 0.99), 2) if latencies else None,
        "all_final": finished,
        "states": states,
        "ledger_exact": _ledger_exact(fixture),
        "dispatches": _dispatches(fixture["employer_id"]),
    }


def _fixture(sandbox, count: int) -> dict:
    """Three insurers at the sandbox, an employer with a policy at each, covered members for the
    deletions and corrections, funded accounts, and one CSV file per policy."""
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from bench.setup import employer_with_policy
    from ems.identity import new_client_credentials
    from ems.models import ApiClient
    from endorsements.columns import COLUMNS
    from endorsements.models import Coverage, Member, Plan, PlanRate, Policy
    from insurers.models import Insurer
    from insurers.sandbox.sftp_server import insurer_connection
    from ledger import approvals
    from ledger import services as ledger

    # earlier runs' insurers point at sandboxes that are gone: polling them would only fail
    Insurer.objects.filter(code__startswith="pl", is_active=True).update(is_active=False)
    _insurer, employer, first_policy, today = employer_with_policy("pl")
    approver = get_user_model().objects.filter(username="bench-approver").first()
    if approver is None:
        approver = get_user_model().objects.create_superuser("bench-approver", "bench@example.com", "x")
    client_id, secret, secret_hash = new_client_credentials()
    ApiClient.objects.create(employer=employer, name="bench", client_id=client_id, secret_hash=secret_hash)
    protocol_fields = {
        "REST": {"endpoint_url": sandbox.faces["rest"], "credentials": {"bearer_token": sandbox.token}},
        "SOAP": {
            "endpoint_url": f"{sandbox.faces['soap']}?wsdl",
            "credentials": {
                "username": settings.SANDBOX_SOAP_USERNAME,
                "password": settings.SANDBOX_SOAP_PASSWORD,
            },
            "connection": {"policy_number": "POL-BENCH"},
        },
        "SFTP": {
            "endpoint_url": sandbox.faces["sftp"],
            "credentials": {"password": settings.SANDBOX_SFTP_PASSWORD},
            "connection": insurer_connection(
                data_dir=sandbox.data_dir, host="127.0.0.1", port=sandbox.ports["sftp"]
            ),
        },
    }
    files, accounts = {}, []
    per_policy = count // len(PROTOCOLS)
    for index, protocol in enumerate(PROTOCOLS):
        insurer = Insurer.objects.create(
            code=f"{employer.code}-{protocol.lower()}",
            name=f"Bench {protocol}",
            protocol=protocol,
            webhook_secret_primary="whsec_bench_pipeline",
            dispatch_window_seconds=2,
            dispatch_batch_size=500,
            retry_base_seconds=1,
            request_timeout_seconds=10,
            rate_limit_per_second=50,
            **protocol_fields[protocol],
        )
        policy = Policy.objects.create(
            employer=employer,
            insurer=insurer,
            number=f"{first_policy.number}-{protocol}",
            start_date=first_policy.start_date,
            end_date=first_policy.end_date,
        )
        plan = Plan.objects.create(
            policy=policy, code="GOLD", name="Gold", sum_insured_options=[300000, 500000]
        )
        PlanRate.objects.bulk_create(
            PlanRate(plan=plan, relation="SELF", age_from=a, age_to=b, sum_insured=s, annual_premium=p)
            for a, b, s, p in [
                (18, 35, 300000, 900_000),
                (18, 35, 500000, 1_200_000),
                (36, 65, 300000, 1_350_000),
                (36, 65, 500000, 1_800_000),
            ]
        )
        rows = per_policy + (count - per_policy * len(PROTOCOLS) if index == 0 else 0)
        covered = rows // 10
        members = Member.objects.bulk_create(
            Member(
                employer=employer,
                employee_code=f"{PREFIX[protocol]}C{n:06d}",
                relation="SELF",
                first_name="Ravi",
                last_name="Iyer",
                date_of_birth=datetime.date(1980, 1 + n % 12, 1 + n % 28),
                gender="M",
            )
            for n in range(covered)
        )
        Coverage.objects.bulk_create(
            Coverage(
                member=m,
                policy=policy,
                plan=plan,
                sum_insured=500000,
                start_date=policy.start_date,
                status=Coverage.Status.ACTIVE,
            )
            for m in members
        )
        account = ledger.account_open(employer_id=employer.pk, insurer_id=insurer.pk)
        funding = 10_000_000_000
        topup = approvals.account_topup(
            account_id=account.pk,
            amount=funding,
            payment_reference=f"UTR-{insurer.code}",
            idempotency_key=f"fund-{insurer.code}",
            requested_by="client:bench",
        )
        approvals.topup_decide(topup_id=topup.pk, approver=approver, approve=True)
        accounts.append((account.pk, funding))
        files[policy.number] = _csv(COLUMNS, policy.number, protocol, rows, covered, today)
    return {
        "employer_id": employer.pk,
        "client_id": client_id,
        "secret": secret,
        "files": files,
        "accounts": accounts,
    }


def _csv(columns, policy_number: str, protocol: str, rows: int, covered: int, today) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns))
    writer.writeheader()
    half = covered // 2
    for n in range(rows):
        common = {
            "employee_code": "",
            "relation": "SELF",
            "effective_date": today.isoformat(),
            "policy_number": policy_number,
        }
        if n < half:
            writer.writerow({**common, "action": "DELETE", "employee_code": f"{PREFIX[protocol]}C{n:06d}"})
        elif n < covered:
            writer.writerow(
                {
                    **common,
                    "action": "CORRECTION",
                    "employee_code": f"{PREFIX[protocol]}C{n:06d}",
                    "sum_insured": "300000",
                }
            )
        else:
            writer.writerow(
                {
                    **common,
                    "action": "ADD",
                    "employee_code": f"{PREFIX[protocol]}J{n:06d}",
                    "first_name": "Asha",
                    "last_name": "Rao",
                    "date_of_birth": f"19{70 + n % 30}-0{1 + n % 9}-1{n % 9}",
                    "gender": "F",
                    "email": f"asha.{protocol.lower()}.{n}@example.com",
                    "phone": f"+9198{n:08d}",
                    "date_of_joining": (today - datetime.timedelta(days=n % 20)).isoformat(),
                    "plan_code": "GOLD",
                    "sum_insured": "500000",
                }
            )
    return out.getvalue().encode()


def _token(base: str, client_id: str, secret: str) -> str:
    body = json.dumps({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    request = urllib.request.Request(
        f"{base}/api/v1/auth/token",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]


def _post_csv(url: str, body: bytes, token: str, name: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "text/csv",
            "Authorization": f"Bearer {token}",
            "Content-Disposition": f'attachment; filename="{name}.csv"',
            "Idempotency-Key": name,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


DONE = ("CONFIRMED", "ACTIVE")
STOPPED = ("REJECTED", "INSURER_REJECTED", "CANCELLED", "SUPERSEDED", "FAILED")


def _wait(employer_id: int, count: int, deadline: float) -> tuple[bool, dict]:
    from django.db.models import Count

    from endorsements.models import EndorsementRequest

    while True:
        states = dict(
            EndorsementRequest.objects.filter(employer_id=employer_id)
            .values_list("state")
            .annotate(n=Count("id"))
        )
        final = sum(n for state, n in states.items() if state in DONE + STOPPED)
        if final >= count:
            return all(state in DONE for state in states), states
        if time.perf_counter() > deadline:
            return False, states
        time.sleep(0.25)


def _latencies(employer_id: int) -> list[float]:
    from endorsements.models import EndorsementRequest

    return sorted(
        (confirmed - received).total_seconds()
        for received, confirmed in EndorsementRequest.objects.filter(
            employer_id=employer_id, confirmed_at__isnull=False
        ).values_list("received_at", "confirmed_at")
    )


def _percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))]


def _ledger_exact(fixture: dict) -> bool:
    from endorsements.models import EndorsementRequest
    from ledger.models import Account

    charged: dict[int, int] = {}
    for insurer_id, premium in EndorsementRequest.objects.filter(
        employer_id=fixture["employer_id"], state__in=DONE
    ).values_list("policy__insurer_id", "premium_amount"):
        charged[insurer_id] = charged.get(insurer_id, 0) + _insurer_charge(premium or 0)
    for account_id, funding in fixture["accounts"]:
        account = Account.objects.get(pk=account_id)
        if (account.posted, account.held) != (funding - charged.get(account.insurer_id, 0), 0):
            return False
    return True


def _insurer_charge(premium: int) -> int:
    """The sandbox's published pricing: debits in whole rupees half up, refunds rounded down."""
    return -(abs(premium) // 100 * 100) if premium < 0 else (premium + 50) // 100 * 100


def _dispatches(employer_id: int) -> int:
    from endorsements.models import EndorsementRequest

    return EndorsementRequest.objects.filter(employer_id=employer_id).values("dispatch_id").distinct().count()
