"""A deleted employee takes their covered dependants along: linked DELETEs.

When validation accepts the DELETE of an employee (relation SELF), each dependant of that
employee with open cover on the policy gets a DELETE of its own (`linked_to` = the
employee's request), unless the dependant is already being deleted: by a validated
DELETE in the same set (a file's chunk, a drain of single requests) or by a stored live
DELETE (validated or further on; a later chunk of the file supersedes or duplicates a
linked DELETE like any other request for that member). A linked DELETE has the
employee's effective date (the dependant's cover start if that is later: a cover that has
not begun is voided) and is priced as any deletion (`assessment.deletion_assess`, an
expected refund). It is stored with the set, through the same write path: a file's rows
with `transitions.endorsements_create_decided` (the employee's batch and row number),
single requests through `endorsement_create` and `endorsement_transition`. From there it
travels, is sent and refunded like any other request.

A linked DELETE goes with its employee's: when the employee's (unsent) deletion is
superseded by a newer request, its unsent linked DELETEs are superseded by that request
too, and a newer deletion of the employee links the dependants afresh (its own date).

`linked_deletes_plan` reads what the assessment already loaded (the members of the set's
employee codes, their open covers), one query for the stored live deletions and one for
the linked DELETEs of superseded employee deletions; it writes nothing.
"""

from dataclasses import dataclass
from datetime import date

from endorsements.assessment import Decision, deletion_assess
from endorsements.bulk_writes import filter_any
from endorsements.models import EndorsementRequest, EndorsementState, EndorsementType, Relation
from endorsements.policy_book import Lookups
from endorsements.transitions import LIVE_STATES, UNSENT_STATES
from endorsements.validation import content_hash, member_key

S = EndorsementState
# A stored deletion in these states already deletes its member (a RECEIVED one may still
# be rejected; if it validates later it supersedes the linked one).
_DELETING = LIVE_STATES - {S.RECEIVED}


@dataclass(frozen=True, slots=True)
class LinkedDelete:
    """A dependant's DELETE to store with the set: its employee's request, its content, its decision."""

    employee_request: object  # the employee's DELETE (a stored request or an IntakeRow)
    member_data: dict
    content_hash: str
    member_key: str
    decision: Decision


def linked_deletes_plan(
    *, employer_id: int, requests: list, decisions: dict, lookups: Lookups, superseded_older: list
) -> tuple[list[LinkedDelete], list[tuple[EndorsementRequest, int]]]:
    """The `LinkedDelete`s the set's validated employee deletions call for, and the stored
    unsent linked DELETEs that follow their employee's superseded deletion: (linked
    request, the id of the request that supersedes the employee's), for the caller's
    supersede step."""
    followers = _followers(superseded_older)
    return _planned(employer_id, requests, decisions, lookups, {r.pk for r, _newer in followers}), followers


def _followers(superseded_older: list) -> list[tuple[EndorsementRequest, int]]:
    """A linked DELETE goes with its employee's: superseded by what supersedes that one."""
    newer_by_employee = {
        older.pk: newer_id for older, newer_id in superseded_older if older.type == EndorsementType.DELETE
    }
    if not newer_by_employee:
        return []
    linked = EndorsementRequest.objects.filter(
        linked_to_id__in=list(newer_by_employee), state__in=UNSENT_STATES
    )
    return [(request, newer_by_employee[request.linked_to_id]) for request in linked.order_by("pk")]


def _planned(employer_id: int, requests: list, decisions: dict, lookups: Lookups, leaving: set) -> list:
    employee_deletes = [
        r
        for r in requests
        if r.type == EndorsementType.DELETE
        and decisions[r.pk].state == S.VALIDATED
        and r.member_data.get("relation") == Relation.SELF
    ]
    if not employee_deletes:
        return []
    candidates = []  # (employee's request, dependant, its open cover)
    for request in employee_deletes:
        changes = decisions[request.pk].changes
        for member in lookups.members.get(request.member_data["employee_code"], ()):
            cover = lookups.open_cover.get((member.pk, changes["policy_id"]))
            if member.primary_id == changes["member_id"] and cover is not None:
                candidates.append((request, member, cover))
    if not candidates:
        return []
    deleting = {
        (d.changes["member_id"], d.changes["policy_id"])
        for r in requests
        if r.type == EndorsementType.DELETE and (d := decisions[r.pk]).state == S.VALIDATED
    }
    # (the set's own requests are RECEIVED or not stored yet: never among these)
    stored = filter_any(
        EndorsementRequest.objects.filter(
            employer_id=employer_id, type=EndorsementType.DELETE, state__in=_DELETING
        ),
        "member_id",
        {member.pk for _r, member, _c in candidates},
    ).values_list("pk", "member_id", "policy_id")
    deleting.update((member_id, policy_id) for pk, member_id, policy_id in stored if pk not in leaving)
    planned = []
    for request, member, cover in candidates:
        if (member.pk, cover.policy_id) in deleting:
            continue
        deleting.add((member.pk, cover.policy_id))
        planned.append(_linked_delete(request, member, cover, decisions[request.pk], lookups))
    return planned


def _linked_delete(request, member, cover, employee_decision: Decision, lookups: Lookups) -> LinkedDelete:
    employee_data = request.member_data
    effective = max(date.fromisoformat(employee_data["effective_date"]), cover.start_date)
    values = {
        "action": EndorsementType.DELETE,
        "employee_code": member.employee_code,
        "relation": member.relation,
        "first_name": member.first_name,
        "last_name": member.last_name,
        "date_of_birth": member.date_of_birth.isoformat(),
        "effective_date": effective.isoformat(),
        "policy_number": employee_data["policy_number"],
    }
    values = {name: value for name, value in values.items() if value}  # empty: absent, as in a row
    key = member_key(
        employee_code=member.employee_code, relation=member.relation, first_name=member.first_name
    )
    policy = lookups.policies[employee_data["policy_number"]]
    problem, price = deletion_assess(lookups, policy, effective, member, cover)
    if problem:
        decision = Decision(S.REJECTED, {"rejection_reasons": [problem.as_dict()], "policy_id": policy.pk})
    else:
        decision = Decision(
            S.VALIDATED,
            {"premium_amount": price.total, "tax_amount": price.tax, "policy_id": policy.pk},
        )
    decision.changes.update(member_id=member.pk, member_key=key, linked_to_id=request.pk)
    return LinkedDelete(
        employee_request=request,
        member_data=values,
        content_hash=content_hash(values),
        member_key=key,
        decision=decision,
    )
