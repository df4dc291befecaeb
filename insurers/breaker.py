"""Per-insurer circuit breaker and rate limit, shared by every worker.

Breaker (state on the `Insurer` row, so every worker and the admin see the same):
CLOSED counts consecutive transient failures; at `circuit_failure_threshold` it opens for
`circuit_cooldown_seconds`. While OPEN, `call_admit` refuses without calling the insurer
(a `TransientError` whose `retry_after` is the rest of the cool-down). After the
cool-down one caller wins the move to HALF_OPEN (a conditional UPDATE, so exactly one) and
probes; its success closes the breaker, its failure opens it again. Ops can reset it in
admin (`breaker_reset`, permission `insurers.reset_circuit`).

Rate limit: `limits`' moving window in Redis, `rate_limit_per_second` calls per insurer
across all workers; a caller over the limit waits for the window (bounded) rather than
failing the dispatch.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from insurers.adapters.base import TransientError
from insurers.models import Insurer

State = Insurer.CircuitState
_limiter: MovingWindowRateLimiter | None = None
_limiter_url: str | None = None


def call_admit(insurer: Insurer) -> None:
    """Raise `TransientError` if the breaker refuses a call now; otherwise return (maybe as the probe)."""
    insurer.refresh_from_db(fields=["circuit_state", "circuit_opened_at", "circuit_cooldown_seconds"])
    if insurer.circuit_state == State.CLOSED:
        return
    now = timezone.now()
    reopen_at = (insurer.circuit_opened_at or now) + timedelta(seconds=insurer.circuit_cooldown_seconds)
    if insurer.circuit_state == State.OPEN and now >= reopen_at:
        won = Insurer.objects.filter(pk=insurer.pk, circuit_state=State.OPEN).update(
            circuit_state=State.HALF_OPEN, circuit_opened_at=now
        )
        if won:
            return  # this caller is the half-open probe
    if insurer.circuit_state == State.HALF_OPEN and now >= reopen_at:
        # a probe that never reported back (its worker died): let another one through
        won = Insurer.objects.filter(
            pk=insurer.pk, circuit_state=State.HALF_OPEN, circuit_opened_at=insurer.circuit_opened_at
        ).update(circuit_opened_at=now)
        if won:
            return
    retry_after = max(0.0, (reopen_at - now).total_seconds()) or float(insurer.circuit_cooldown_seconds)
    raise TransientError(
        f"circuit open for insurer {insurer.code}", code="circuit_open", retry_after=retry_after
    )


def call_succeeded(insurer: Insurer) -> None:
    Insurer.objects.filter(pk=insurer.pk).exclude(circuit_state=State.CLOSED, circuit_failures=0).update(
        circuit_state=State.CLOSED, circuit_failures=0, circuit_opened_at=None
    )


def call_failed(insurer: Insurer, error: Exception) -> None:
    """A transient failure: count it; open the breaker at the threshold (or at once from HALF_OPEN)."""
    now = timezone.now()
    message = str(error)[:2000]
    Insurer.objects.filter(pk=insurer.pk).update(
        circuit_failures=F("circuit_failures") + 1, circuit_last_error=message
    )
    Insurer.objects.filter(pk=insurer.pk, circuit_state=State.HALF_OPEN).update(
        circuit_state=State.OPEN, circuit_opened_at=now
    )
    Insurer.objects.filter(
        pk=insurer.pk, circuit_state=State.CLOSED, circuit_failures__gte=F("circuit_failure_threshold")
    ).update(circuit_state=State.OPEN, circuit_opened_at=now)


def breaker_reset(*, insurer: Insurer) -> None:
    Insurer.objects.filter(pk=insurer.pk).update(
        circuit_state=State.CLOSED, circuit_failures=0, circuit_opened_at=None, circuit_last_error=""
    )


def rate_limit_wait(insurer: Insurer, *, max_wait_seconds: float = 10.0) -> None:
    """Block until this insurer's shared per-second budget admits one call (bounded)."""
    if not insurer.rate_limit_per_second:
        return
    limiter = _limiter_get()
    item = RateLimitItemPerSecond(insurer.rate_limit_per_second)
    deadline = time.monotonic() + max_wait_seconds
    while not limiter.hit(item, "insurer", str(insurer.pk)):
        if time.monotonic() >= deadline:
            raise TransientError(
                f"rate limit of insurer {insurer.code}", code="rate_limited", retry_after=1.0
            )
        reset_at, _ = limiter.get_window_stats(item, "insurer", str(insurer.pk))
        time.sleep(min(max(0.01, reset_at - time.time()), 0.25))


def _limiter_get() -> MovingWindowRateLimiter:
    global _limiter, _limiter_url
    url = settings.REDIS_URL
    if _limiter is None or _limiter_url != url:
        _limiter = MovingWindowRateLimiter(storage_from_string(url))
        _limiter_url = url
    return _limiter
