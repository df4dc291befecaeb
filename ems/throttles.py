"""Throttles on the doors that take a secret: the token endpoint, and the address of a caller.

How it works
- `client_address(request)` is the caller's address for every throttle and for the login
  lockouts (django-axes' `AXES_CLIENT_IP_CALLABLE`): `REMOTE_ADDR`, or, behind
  `EMS_TRUSTED_PROXY_COUNT` proxies, the address the last trusted proxy saw in
  `X-Forwarded-For` (a client cannot pick its own address by sending the header).
- `FailureThrottle` is a DRF throttle that counts *failures*, not requests: the view
  calls `failure_record` when a client's credentials are refused. Counts live in fixed
  windows on the shared Redis cache (`cache.incr`, atomic across every web process), at
  `settings.EMS_THROTTLE_RATES[scope]` ("10/min"). A caller at its limit is refused before
  its credentials are checked, so even the right secret waits for the window (429 with
  Retry-After, the seconds left in it; the envelope comes from `ems.api_errors`).
- The token endpoint has two: per client id (`token_client_failures`, whichever way the
  client id came: form, JSON or HTTP Basic) and per address (`token_address_failures`).
"""

import hashlib
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from ems.auth import presented_client_id

DURATIONS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def client_address(request) -> str:
    """The caller's address; X-Forwarded-For counts only behind EMS_TRUSTED_PROXY_COUNT proxies.

    Empty for a request that came through no server (e.g. the test client's `force_login`).
    """
    meta = getattr(request, "META", {})
    proxies = settings.EMS_TRUSTED_PROXY_COUNT
    forwarded = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if proxies > 0 and forwarded:
        return forwarded[-min(proxies, len(forwarded))]
    return meta.get("REMOTE_ADDR", "")


def rate_parse(rate: str) -> tuple[int, int]:
    """ "10/min" -> (10, 60): failures allowed, window in seconds."""
    count, _, period = rate.partition("/")
    return int(count), DURATIONS[period.strip().lower()]


class FailureThrottle(BaseThrottle):
    """Refuses a caller whose failures in the current window reached the scope's rate."""

    scope = ""

    def identity(self, request) -> str:
        """Who the failures are counted against; empty: not counted."""
        raise NotImplementedError

    def _window(self, request) -> tuple[str, int, int] | None:
        ident = self.identity(request)
        if not ident:
            return None
        limit, duration = rate_parse(settings.EMS_THROTTLE_RATES[self.scope])
        now = time.time()
        window = int(now // duration)
        digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
        self.wait_seconds = max(1, int((window + 1) * duration - now + 0.999))
        return f"ems:throttle:{self.scope}:{digest}:{window}", limit, duration

    def allow_request(self, request, view) -> bool:
        window = self._window(request)
        if window is None:
            return True
        key, limit, _ = window
        return int(cache.get(key) or 0) < limit

    def failure_record(self, request) -> None:
        window = self._window(request)
        if window is None:
            return
        key, _, duration = window
        cache.add(key, 0, timeout=duration + 1)
        try:
            cache.incr(key)
        except ValueError:  # the window expired between add and incr
            cache.set(key, 1, timeout=duration + 1)

    def wait(self) -> float | None:
        return getattr(self, "wait_seconds", None)


class TokenClientFailureThrottle(FailureThrottle):
    scope = "token_client_failures"

    def identity(self, request) -> str:
        return presented_client_id(request)


class TokenAddressFailureThrottle(FailureThrottle):
    scope = "token_address_failures"

    def identity(self, request) -> str:
        return client_address(request)
