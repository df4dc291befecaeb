"""Operations roles: which Django permissions each ops group holds.

How it works
- The groups themselves (`ops_viewer`, `ops_operator`, `finance_approver`) are created by
  the data migration `ems/0002_ops_groups`. Django creates permissions only after
  `migrate` (auth's post_migrate handler), so a migration cannot grant them reliably.
- `ROLE_PERMISSIONS` is the source of truth, as data: "app_label.codename" strings, where
  a codename may be a shell pattern (`view_*`) matched against the permissions that exist.
- `role_permissions_sync()` makes each group hold exactly those permissions. It is
  idempotent and runs after every `migrate` (and `flush`) through `roles_sync_after_migrate`,
  connected in `EmsConfig.ready()`. A named codename that does not exist yet (another app
  has not declared it) is skipped with a warning and picked up by a later migrate.
- The platform imports no app module: apps are named by label only.
"""

from fnmatch import fnmatchcase

import structlog
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.db import transaction

log = structlog.get_logger(__name__)

OPS_VIEWER = "ops_viewer"
OPS_OPERATOR = "ops_operator"
FINANCE_APPROVER = "finance_approver"
ROLE_NAMES = (OPS_VIEWER, OPS_OPERATOR, FINANCE_APPROVER)

# Every app whose models operations staff can see.
OPERATIONS_APP_LABELS = ("ems", "insurers", "endorsements", "ledger", "analytics", "reconciliation")

_VIEW_EVERYTHING = tuple(f"{label}.view_*" for label in OPERATIONS_APP_LABELS)

ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    OPS_VIEWER: _VIEW_EVERYTHING,
    OPS_OPERATOR: _VIEW_EVERYTHING
    + (
        "endorsements.change_endorsementrequest",
        "endorsements.change_endorsementbatch",
        # send an endorsement or a file for an employer (the admin's intake pages)
        "endorsements.add_endorsementrequest",
        "endorsements.add_endorsementbatch",
        # revoke a leaked API client (the admin's revoke action is gated by change)
        "ems.change_apiclient",
        # custom operational permissions, declared by the apps that own the actions
        "endorsements.retry_endorsementrequest",
        "endorsements.cancel_endorsementrequest",
        "endorsements.review_endorsementrequest",
        "ledger.release_hold",
        "ledger.wake_parked",
        "insurers.reset_circuit",
        "reconciliation.run_reconciliation",
        "ems.retry_outboxevent",
        # see and unlock login lockouts (django-axes; the admin's "Unlock" is audited)
        "axes.view_accessattempt",
        "axes.delete_accessattempt",
    ),
    FINANCE_APPROVER: _VIEW_EVERYTHING
    + (
        "ledger.approve_topup",
        "ledger.approve_adjustment",
    ),
}


def _is_pattern(codename: str) -> bool:
    return any(char in codename for char in "*?[")


def role_permission_ids(*, using: str = "default") -> tuple[dict[str, list[int]], list[str]]:
    """Resolve ROLE_PERMISSIONS against the database: ({role: [permission ids]}, [missing specs])."""
    labels = {spec.split(".", 1)[0] for specs in ROLE_PERMISSIONS.values() for spec in specs}
    existing: dict[str, list[tuple[str, int]]] = {}
    rows = Permission.objects.using(using).filter(content_type__app_label__in=labels)
    for app_label, codename, pk in rows.values_list("content_type__app_label", "codename", "pk"):
        existing.setdefault(app_label, []).append((codename, pk))

    resolved: dict[str, list[int]] = {}
    missing: list[str] = []
    for role, specs in ROLE_PERMISSIONS.items():
        ids: set[int] = set()
        for spec in specs:
            app_label, codename = spec.split(".", 1)
            candidates = existing.get(app_label, [])
            if _is_pattern(codename):
                # a pattern may match nothing yet (an app without models); that is not an error
                ids.update(pk for name, pk in candidates if fnmatchcase(name, codename))
                continue
            matched = [pk for name, pk in candidates if name == codename]
            if matched:
                ids.update(matched)
            elif spec not in missing:
                missing.append(spec)
        resolved[role] = sorted(ids)
    return resolved, missing


def role_permissions_sync(*, using: str = "default") -> dict[str, list[int]]:
    """Create the ops groups if absent and give each exactly its permissions. Idempotent."""
    resolved, missing = role_permission_ids(using=using)
    for spec in missing:
        log.warning("roles.permission_missing", permission=spec)
    with transaction.atomic(using=using):
        for role, permission_ids in resolved.items():
            group, _ = Group.objects.using(using).get_or_create(name=role)
            current = set(group.permissions.values_list("pk", flat=True))
            if current != set(permission_ids):
                group.permissions.set(permission_ids)
                log.info("roles.synced", group=role, permissions=len(permission_ids))
    return resolved


def roles_sync_after_migrate(sender, using: str = "default", **kwargs) -> None:
    """post_migrate receiver: sync once, after the last app's permissions exist.

    post_migrate is sent once per app with models, in INSTALLED_APPS order, and auth's
    own handler creates each app's permissions on that app's signal; so only the last
    signal sees them all.
    """
    with_models = [config for config in apps.get_app_configs() if config.models_module is not None]
    if not with_models or sender is not with_models[-1]:
        return
    role_permissions_sync(using=using)
