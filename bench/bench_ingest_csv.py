"""Benchmark: a 100,000-row HR file through the upload path, beside django-import-export and COPY.

One JSON line:
`{"bench": "ingest_csv", "rows": 100000, "rows_per_s", "peak_rss_mb", "import_export_rows_per_s",
"ratio_vs_import_export", "copy_rows_per_s", "ratio_vs_copy", "store_only_rows_per_s",
"store_only_ratio_vs_import_export", "rows_1m_peak_rss_mb", ...}`

- ours: `endorsements.services.batch_submit` (store, check, then the Celery tasks in a real
  2-process worker pool: each partition streams the file, checks and decides each chunk in
  memory and COPYs it once in its final state) until every row is VALIDATED or REJECTED,
  in a fresh process so its peak RSS is its own.
- import-export: the same file into the same table with django-import-export's
  `ModelResource` and `use_bulk=True` (its fastest mode), also in a fresh process.
- copy: the same rows loaded raw by psycopg `COPY` (no validation): the physical limit.
- store_only: PostgreSQL's part of that COPY alone (the rows encoded before the clock starts):
  the ceiling of any way in on this table, `store_only_ratio_vs_import_export`.
- the 1,000,000-row run (set BENCH_INGEST_MILLION=0 to skip) checks memory stays flat.

The generated file is about 94% additions of new joiners, 2% deletions and 2%
corrections of covered members, 2% invalid rows and 1% exact duplicates. Each run uses a
fresh employer, and deletes what it wrote afterwards.
"""

import csv
import datetime
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.setup import django_ready, employer_with_policy, private_broker_url, tables_vacuum

HERE = Path(__file__).resolve().parent.parent
FIRST = ["Asha", "Ravi", "Meera", "Arjun", "Divya", "Kiran", "Neha", "Vikram", "Priya", "Rahul"]
LAST = ["Rao", "Iyer", "Sharma", "Gupta", "Nair", "Patel", "Singh", "Das", "Menon", "Khan"]


# --- fixture ----------------------------------------------------------------------------------


def _fixture(rows: int) -> dict:
    from endorsements.models import Coverage, Member, Plan, PlanRate

    _insurer, employer, policy, today = employer_with_policy("b")
    start = policy.start_date
    plan = Plan.objects.create(
        policy=policy,
        code="GOLD",
        name="Gold",
        sum_insured_options=[300000, 500000],
        age_limits={"SELF": [18, 65]},
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
    covered = rows * 5 // 100
    members = Member.objects.bulk_create(
        (
            Member(
                employer=employer,
                employee_code=f"C{n:07d}",
                relation="SELF",
                first_name=FIRST[n % 10],
                last_name=LAST[n % 10],
                date_of_birth=datetime.date(1970 + n % 30, 1 + n % 12, 1 + n % 28),
                gender="F",
            )
            for n in range(covered)
        ),
        batch_size=5000,
    )
    Coverage.objects.bulk_create(
        (
            Coverage(
                member=m,
                policy=policy,
                plan=plan,
                sum_insured=300000,
                start_date=start,
                status=Coverage.Status.ACTIVE,
            )
            for m in members
        ),
        batch_size=5000,
    )
    return {"employer_id": employer.pk, "policy_number": policy.number, "today": today.isoformat()}


def _file_write(path: Path, rows: int, fixture: dict, seed: int = 7) -> None:
    """About 94% joiners, 2% deletions, 2% corrections, 2% invalid, 1% exact duplicates."""
    rng = random.Random(seed)
    today = datetime.date.fromisoformat(fixture["today"])
    policy = fixture["policy_number"]
    covered = rows * 5 // 100
    next_covered = 0
    written: list[list[str]] = []
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        from endorsements.columns import COLUMNS

        writer.writerow(COLUMNS)
        for n in range(rows):
            roll = rng.random()
            if written and roll < 0.01:
                row = written[rng.randrange(len(written))]
            elif roll < 0.03 and next_covered < covered:
                code = f"C{next_covered:07d}"
                next_covered += 1
                row = [
                    "DELETE",
                    code,
                    "SELF",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    today.isoformat(),
                    policy,
                    "",
                    "",
                ]
            elif roll < 0.05 and next_covered < covered:
                code = f"C{next_covered:07d}"
                next_covered += 1
                row = ["CORRECTION", code, "SELF", "", "", "", "", "", "", "", "", today.isoformat(), policy]
                row += ["", "500000"]
            else:
                joined = today - datetime.timedelta(days=rng.randrange(0, 20))
                born = datetime.date(1962 + rng.randrange(40), 1 + rng.randrange(12), 1 + rng.randrange(28))
                first, last = rng.choice(FIRST), rng.choice(LAST)
                row = [
                    "ADD",
                    f"J{n:07d}",
                    "SELF",
                    first,
                    last,
                    born.isoformat(),
                    rng.choice("MF"),
                    f"{first.lower()}.{n}@example.com",
                    f"+9198{n:08d}",
                    joined.isoformat(),
                    "",
                    today.isoformat(),
                    policy,
                    "GOLD",
                    rng.choice(("300000", "500000")),
                ]
                if roll > 0.98:
                    broken = rng.randrange(4)
                    if broken == 0:
                        row[5] = "31/02/1990"
                    elif broken == 1:
                        row[14] = "-500000"
                    elif broken == 2:
                        row[13] = "PLATINUM"
                    else:
                        row[5] = (today + datetime.timedelta(days=30)).isoformat()
                if len(written) < 5000:
                    written.append(row)
            writer.writerow(row)


def _cleanup(employer_id: int, outbox_from: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM endorsements_endorsementtransition WHERE endorsement_id IN "
            "(SELECT id FROM endorsements_endorsementrequest WHERE employer_id = %s)",
            [employer_id],
        )
        cursor.execute(
            "DELETE FROM endorsements_batchrowerror WHERE batch_id IN "
            "(SELECT id FROM endorsements_endorsementbatch WHERE employer_id = %s)",
            [employer_id],
        )
        for table in ("endorsements_endorsementrequest", "endorsements_endorsementbatch"):
            cursor.execute(f"DELETE FROM {table} WHERE employer_id = %s", [employer_id])
        cursor.execute(
            "DELETE FROM ems_outboxevent WHERE id > %s AND ((destination = 'ems.endorsements' "
            "AND (payload->>'employer_id')::bigint = %s) OR (destination = 'audit_logs' "
            "AND (payload->>'employer_id')::bigint = %s))",
            [outbox_from, employer_id, employer_id],
        )


def _outbox_max() -> int:
    from ems.models import OutboxEvent

    return OutboxEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


# --- the three ways in, each in a fresh process --------------------------------------------------


def _worker(mode: str, path: str, employer_id: int) -> dict:
    django_ready()
    started = time.perf_counter()
    if mode == "ours":
        result = _ours(Path(path), employer_id)
    elif mode == "import_export":
        result = _import_export(Path(path), employer_id)
    elif mode == "store_only":
        result = _store_only(Path(path), employer_id)
    else:
        result = _copy(Path(path), employer_id)
    result["seconds"] = result.pop("work_seconds", time.perf_counter() - started)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_rss_mb"] = max(own, result.get("worker_peak_rss_mb", 0.0))
    return result


def _ours(path: Path, employer_id: int) -> dict:
    """The upload path. With BENCH_INGEST_CELERY_WORKERS > 0 (the default, 2) the Celery tasks
    run in a real worker pool as deployed (parsing one chunk while another is validated);
    with 0 they run eagerly in this process."""
    from django.db.models import Count

    from ems.tenancy import Caller
    from endorsements.models import EndorsementBatch, EndorsementRequest
    from endorsements.services import batch_submit

    workers = int(os.environ.get("BENCH_INGEST_CELERY_WORKERS", "2"))
    caller = Caller(kind="client", employer_id=employer_id, principal="client:bench")
    pool = _celery_pool_start(workers) if workers else None
    try:
        started = time.perf_counter()
        with open(path, "rb") as upload:
            batch = batch_submit(caller=caller, upload=upload, file_name=path.name, file_format="CSV")
        peak_workers_mb = 0.0
        while True:
            batch = EndorsementBatch.objects.get(pk=batch.pk)
            if batch.state in (EndorsementBatch.State.COMPLETED, EndorsementBatch.State.FAILED):
                break
            if pool is None:
                raise RuntimeError(f"eager processing left the batch {batch.state}")
            peak_workers_mb = max(peak_workers_mb, _pool_rss_mb(pool))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    finally:
        if pool is not None:
            pool.terminate()
            pool.wait(timeout=30)
    states = dict(EndorsementRequest.objects.filter(batch=batch).values_list("state").annotate(n=Count("id")))
    return {
        "work_seconds": seconds,
        "workers": workers,
        "worker_peak_rss_mb": peak_workers_mb,
        "state": batch.state,
        "failure": batch.failure_reason,
        "rows_total": batch.rows_total,
        "accepted": batch.accepted_count,
        "rejected": batch.rejected_count,
        "duplicates": batch.duplicate_count,
        "request_states": states,
    }


def _celery_pool_start(workers: int) -> subprocess.Popen:
    from ems.celery import app

    pool = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "ems",
            "worker",
            "--pool=prefork",
            f"--concurrency={workers}",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=WARNING",
        ],
        cwd=HERE,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return pool
        if pool.poll() is not None:
            break
    pool.terminate()
    raise RuntimeError("the Celery worker did not start")


def _pool_rss_mb(pool: subprocess.Popen) -> float:
    import psutil

    try:
        children = psutil.Process(pool.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    peak = 0.0
    for child in children:
        try:
            peak = max(peak, child.memory_info().rss / 1024**2)
        except psutil.NoSuchProcess:
            continue
    return peak


def _import_export(path: Path, employer_id: int) -> dict:
    import tablib
    from import_export import fields, resources

    from ems.identifiers import new_tracking_id
    from endorsements.models import EndorsementRequest

    class EndorsementResource(resources.ModelResource):
        action = fields.Field(attribute="type", column_name="action")

        class Meta:
            model = EndorsementRequest
            fields = ("action",)
            use_bulk = True
            batch_size = 1000
            skip_diff = True
            force_init_instance = True
            import_id_fields = ()

        def before_import_row(self, row, **kwargs):
            self._row = dict(row)

        def import_instance(self, instance, row, **kwargs):
            super().import_instance(instance, row, **kwargs)
            instance.tracking_id = new_tracking_id()
            instance.employer_id = employer_id
            instance.member_data = dict(row)
            instance.effective_date = row["effective_date"]
            instance.content_hash = ""
            instance.source = "CSV"

    with open(path, encoding="utf-8") as text:
        dataset = tablib.Dataset().load(text.read(), format="csv")
    result = EndorsementResource().import_data(dataset, raise_errors=False, collect_failed_rows=False)
    return {"imported": result.totals.get("new", 0), "errors": len(result.row_errors())}


_COPY_COLUMNS = (
    "tracking_id, employer_id, type, member_data, effective_date, content_hash, member_key, "
    "idempotency_key, source, state, rejection_reasons, attempts, last_error, insurer_reference, "
    "received_at, updated_at"
)


def _copy_rows(path: Path, employer_id: int) -> Iterator[tuple]:
    """The file's rows as stored, unchecked: what the raw loads write."""
    from django.utils import timezone

    from ems.identifiers import new_tracking_id

    now = timezone.now().isoformat()  # as our path sends it: psycopg's datetime dumper is slow
    with open(path, encoding="utf-8", newline="") as text:
        reader = csv.reader(text)
        header = next(reader)
        for cells in reader:
            yield (
                new_tracking_id(),
                employer_id,
                cells[0],
                json.dumps(dict(zip(header, cells, strict=False))),
                cells[11],
                "",
                "",
                "",
                "CSV",
                "RECEIVED",
                "[]",
                0,
                "",
                "",
                now,
                now,
            )


def _requests_copy(cursor):
    return cursor.cursor.copy(f"COPY endorsements_endorsementrequest ({_COPY_COLUMNS}) FROM STDIN")


def _copy(path: Path, employer_id: int) -> dict:
    """psycopg COPY of the file's rows, read and encoded as they stream (no validation)."""
    from django.db import connection, transaction

    count = 0
    with transaction.atomic(), connection.cursor() as cursor, _requests_copy(cursor) as copy:
        for row in _copy_rows(path, employer_id):
            copy.write_row(row)
            count += 1
    return {"loaded": count}


_COPY_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _store_only(path: Path, employer_id: int) -> dict:
    """Only PostgreSQL's part of storing the rows: the same rows, encoded in COPY's text format
    before the clock starts, then sent in 1 MiB pieces. The most any way in could reach on this
    table, whatever it does in Python: the time of its indexes, foreign keys and WAL alone."""
    from django.db import connection, transaction

    lines = [
        "\t".join(str(cell).translate(_COPY_TEXT_ESCAPES) for cell in row) + "\n"
        for row in _copy_rows(path, employer_id)
    ]
    data = "".join(lines).encode()
    del lines
    piece = 1024 * 1024
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor, _requests_copy(cursor) as copy:
        for offset in range(0, len(data), piece):
            copy.write(data[offset : offset + piece])
    return {"work_seconds": time.perf_counter() - started, "loaded": data.count(b"\n")}


def _spawn(mode: str, path: Path, employer_id: int, extra_env: dict | None = None) -> dict:
    env = {**os.environ, **(extra_env or {})}
    if mode == "ours" and env.get("BENCH_INGEST_CELERY_WORKERS", "2") != "0":
        # A private, empty broker database, so no other worker takes these tasks.
        env.update({"CELERY_TASK_ALWAYS_EAGER": "0", "REDIS_URL": private_broker_url(12)})
    completed = subprocess.run(
        [sys.executable, "-m", "bench.bench_ingest_csv", "worker", mode, str(path), str(employer_id)],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith('{"result"')]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} worker failed: {completed.stderr[-3000:]}")
    return json.loads(lines[-1])["result"]


def _measure(mode: str, rows: int, workdir: Path, extra_env: dict | None = None) -> dict:
    fixture = _fixture(rows)
    path = workdir / f"hr-{rows}.csv"
    _file_write(path, rows, fixture)
    # Fair to every way in: each starts from tables without the last one's dead rows.
    tables_vacuum(
        "endorsements_endorsementrequest",
        "endorsements_endorsementtransition",
        "endorsements_batchrowerror",
        "ems_outboxevent",
        "endorsements_member",
        "endorsements_coverage",
    )
    outbox_from = _outbox_max()
    try:
        return _spawn(mode, path, fixture["employer_id"], extra_env)
    finally:
        _cleanup(fixture["employer_id"], outbox_from)
        path.unlink(missing_ok=True)


def run():
    django_ready()
    rows = int(os.environ.get("BENCH_INGEST_ROWS", "100000"))
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        ours = _measure("ours", rows, workdir)
        import_export = _measure("import_export", rows, workdir)
        copy = _measure("copy", rows, workdir)
        store_only = _measure("store_only", rows, workdir)
        line = {
            "bench": "ingest_csv",
            "rows": rows,
            "rows_per_s": round(rows / ours["seconds"]),
            "seconds": round(ours["seconds"], 2),
            "peak_rss_mb": round(ours["peak_rss_mb"], 1),
            "import_export_rows_per_s": round(rows / import_export["seconds"]),
            "ratio_vs_import_export": round(import_export["seconds"] / ours["seconds"], 2),
            "copy_rows_per_s": round(rows / copy["seconds"]),
            "ratio_vs_copy": round(copy["seconds"] / ours["seconds"], 3),
            # The ceiling of any way in on this table: PostgreSQL storing ready-made rows.
            "store_only_rows_per_s": round(rows / store_only["seconds"]),
            "store_only_ratio_vs_import_export": round(import_export["seconds"] / store_only["seconds"], 2),
            "batch": {k: ours[k] for k in ("state", "rows_total", "accepted", "rejected", "duplicates")},
            "request_states": ours["request_states"],
            "import_export_errors": import_export.get("errors"),
        }
        if os.environ.get("BENCH_INGEST_MILLION", "1") != "0":
            million = _measure(
                "ours",
                rows * 10,
                workdir,
                {"UPLOAD_MAX_BYTES": str(2 * 1024**3), "UPLOAD_MAX_ROWS": str(rows * 10 + 1)},
            )
            line["rows_1m"] = rows * 10
            line["rows_1m_per_s"] = round(rows * 10 / million["seconds"])
            line["rows_1m_peak_rss_mb"] = round(million["peak_rss_mb"], 1)
            line["rss_ratio_1m_vs_100k"] = round(million["peak_rss_mb"] / ours["peak_rss_mb"], 2)
            line["batch_1m_state"] = million["state"]
        yield line


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "worker":
        print(json.dumps({"result": _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))}, default=str))
    else:
        for item in run():
            print(json.dumps(item))
