"""Liveness and readiness.

`/healthz` says the process answers. `/readyz` checks each dependency by name — the
database, Redis, MongoDB and Kafka (when configured) — with short timeouts, and answers
503 if any is down.
"""

import time

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from kafka import KafkaAdminClient

from ems import clients


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


def _check_mongo() -> None:
    clients.mongo_client().admin.command("ping")


def _check_kafka() -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        request_timeout_ms=2000,
    )
    try:
        admin.list_topics()
    finally:
        admin.close()


def readiness() -> tuple[bool, dict]:
    checks = {"database": _check_database, "redis": _check_redis, "mongo": _check_mongo}
    if clients.kafka_enabled():
        checks["kafka"] = _check_kafka
    report = {}
    for name, check in checks.items():
        started = time.monotonic()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; reported by name
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            report[name] = {
                "ok": True,
                "ms": round((time.monotonic() - started) * 1000, 1),
            }
    return all(item["ok"] for item in report.values()), report


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    ready, report = readiness()
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": report},
        status=200 if ready else 503,
    )
