"""Who is calling, and the one place every employer-scoped query is filtered.

A `Caller` is resolved once per request: an API client (bearer token), an HR user
(session, linked to one employer) or an operations staff user (admin; no employer
scope, except when sending intake for one employer: `caller_for_staff_acting_for`).
Selectors take a caller and pass their querysets through `scoped()`, so no view can
forget the employer filter.
"""

from dataclasses import dataclass

from django.db.models import QuerySet

from ems.errors import PermissionDenied


@dataclass(frozen=True)
class Caller:
    kind: str  # "client", "hr" or "staff"
    employer_id: int | None
    principal: str  # "client:<client_id>" or "user:<id>": the actor in audit records
    user_id: int | None = None
    api_client_id: int | None = None

    @property
    def is_staff(self) -> bool:
        return self.kind == "staff"


def caller_for_client(client) -> Caller:
    return Caller(
        kind="client",
        employer_id=client.employer_id,
        principal=f"client:{client.client_id}",
        api_client_id=client.pk,
    )


def caller_for_user(user) -> Caller:
    """An HR user (scoped to their employer) or a staff user (unscoped)."""
    if user.is_staff:
        return Caller(kind="staff", employer_id=None, principal=f"user:{user.pk}", user_id=user.pk)
    membership = getattr(user, "employer_membership", None)
    if membership is None:
        raise PermissionDenied("This user is not linked to an employer.")
    return Caller(
        kind="hr",
        employer_id=membership.employer_id,
        principal=f"user:{user.pk}",
        user_id=user.pk,
    )


def caller_for_staff_acting_for(user, employer_id: int) -> Caller:
    """An operations staff user sending intake for one employer (the admin's intake pages):
    writes go to that employer; the audit actor is the staff user."""
    return Caller(kind="staff", employer_id=employer_id, principal=f"user:{user.pk}", user_id=user.pk)


def scoped(queryset: QuerySet, caller: Caller, *, employer_field: str = "employer_id") -> QuerySet:
    """Restrict a queryset to the caller's employer; staff see everything."""
    if caller.is_staff:
        return queryset
    if caller.employer_id is None:
        return queryset.none()
    return queryset.filter(**{employer_field: caller.employer_id})
