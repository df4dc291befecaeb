"""Login lockouts on the portal and the admin (django-axes), audited, with an admin unlock.

How it works
- django-axes counts failed logins per username and per address (`AXES_LOCKOUT_PARAMETERS`,
  both separately) in its `AccessAttempt` rows; at `AXES_FAILURE_LIMIT` failures a
  username or an address is locked for `AXES_COOLOFF_TIME`. While locked, the login is
  refused before the password is checked, so the right password waits too.
- `LoginLockBackend` is axes' backend, first in AUTHENTICATION_BACKENDS. A call to
  `authenticate()` without a request (a shell, a management command, the test client's
  `login()`) comes through no door, so there is nothing to count and it is let through.
- `lockout_response` is the page a locked login gets: 429, Retry-After (the seconds left
  in the cool-down), and a message that says what happened and what to do, in the admin's
  or the portal's own layout.
- axes' own log lines name the door only (`client_description`); usernames and
  addresses go to the audit trail, not the logs.
- `lockout_audit` (axes' `user_locked_out` signal) writes one audit record when a lock
  starts; `login_locks_release` is the admin's "unlock" (deletes the attempts, audits).
"""

import structlog
from axes.backends import AxesStandaloneBackend
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.contrib import admin
from django.db import transaction
from django.db.models import Max, Q, QuerySet
from django.dispatch import receiver
from django.shortcuts import render
from django.utils import timezone

from ems.audit import audit_record
from ems.throttles import client_address

log = structlog.get_logger(__name__)


class LoginLockBackend(AxesStandaloneBackend):
    """axes' lockout check on every login through a door; no door, nothing to count."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def client_description(username, ip_address, user_agent, path_info, request) -> str:
    """How axes names a client in its log lines: the door only (logs carry no usernames)."""
    return f"login at {path_info}"


def lockout_remaining_seconds(*, username: str, address: str) -> int:
    """Seconds until the newest failure that counts against this username or address expires."""
    cool_off = get_cool_off()
    if cool_off is None:
        return 0
    latest = AccessAttempt.objects.filter(Q(username=username) | Q(ip_address=address)).aggregate(
        latest=Max("attempt_time")
    )["latest"]
    if latest is None:
        return int(cool_off.total_seconds())
    return max(1, int((latest + cool_off - timezone.now()).total_seconds() + 0.999))


def lockout_response(request, original_response=None, credentials=None):
    username = get_client_username(request, credentials) or ""
    seconds = lockout_remaining_seconds(username=username, address=client_address(request))
    in_admin = request.path.startswith("/admin/")
    context = {
        "minutes": max(1, (seconds + 59) // 60),
        "failure_limit": get_failure_limit(request, credentials),
        "login_url": request.path,
        "title": "Sign-in locked",
    }
    if in_admin:
        context = {**admin.site.each_context(request), **context}
    template = "admin/login_locked.html" if in_admin else "portal/login_locked.html"
    response = render(request, template, context, status=429)
    response["Retry-After"] = str(seconds)
    return response


@receiver(user_locked_out, dispatch_uid="ems.login_locks.lockout_audit")
def lockout_audit(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    failures = getattr(request, "axes_failures_since_start", None)
    if request is not None and failures != get_failure_limit(
        request, getattr(request, "axes_credentials", None)
    ):
        return  # a further attempt while locked: the lock was audited when it started
    audit_record(
        actor=f"login:{username or ''}",
        action="login.locked_out",
        object_type="login",
        object_id=username or "",
        after={"address": ip_address or "", "path": getattr(request, "path", "")},
    )
    log.warning("login.locked_out", path=getattr(request, "path", ""))


def login_locks_release(*, attempts: QuerySet, actor: str) -> int:
    """Unlock: forget the failures of these attempts (username and address), audited."""
    with transaction.atomic():
        released = list(attempts.select_for_update().order_by("pk"))
        for attempt in released:
            audit_record(
                actor=actor,
                action="login.unlocked",
                object_type="login",
                object_id=attempt.username or "",
                before={"address": attempt.ip_address or "", "failures": attempt.failures_since_start},
            )
        AccessAttempt.objects.filter(pk__in=[attempt.pk for attempt in released]).delete()
    return len(released)
