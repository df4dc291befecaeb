"""Business rules of endorsements, for many requests at once, set-based.

`endorsements_assess` decides requests of one employer together. The lookups (policies,
plans, rate card, members, open covers, live requests with the same content or member)
are loaded with one query each for the whole set, never per row. In steps:
1. duplicates: a request that repeats a live one is REJECTED, naming the original;
2. each other request by its rules (`_request_decide`: the policy, then an addition's
   plan, age, cover and mid-term window, or a deletion's or correction's member and cover),
   VALIDATED with its premium or REJECTED with its reason (an `ErrorDetail`, stored as its
   dict in `rejection_reasons`);
3. a dependant needs an employee with cover or an employee addition on its way;
4. supersede: the newest request per member and policy wins; older unsent ones, in this
   set or stored, are SUPERSEDED;
5. linked deletes: an employee's validated deletion takes each covered dependant along
   (`linked_deletes.linked_deletes_plan`: new requests the caller stores with this set);
   an employee's superseded deletion takes its unsent linked DELETEs with it.
It writes nothing: `endorsements.services` stores the decisions through
`endorsements.transitions`.
"""

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from ems.errors import ErrorDetail
from endorsements import pricing
from endorsements.bulk_writes import rows_by_keys
from endorsements.columns import CORRECTABLE, EVENT_RELATIONS, RESUBMITS
from endorsements.models import (
    EndorsementRequest,
    EndorsementState,
    EndorsementType,
    Plan,
    Policy,
    Relation,
)
from endorsements.pipeline import sla
from endorsements.policy_book import Lookups, PolicyBook, lookups_load
from endorsements.transitions import LIVE_STATES, UNSENT_STATES
from endorsements.validation import member_key

S = EndorsementState


@dataclass
class Decision:
    state: EndorsementState  # VALIDATED, REJECTED or SUPERSEDED
    changes: dict = field(default_factory=dict)
    duplicate: bool = False
    # A validated request's SLA allowance (the insurer's days for its type): its writer
    # sets `sla_deadline` = received_at + this, in the same write (pipeline/sla.py).
    sla_days: int | None = None


@dataclass
class Assessment:
    decisions: dict[int, Decision]
    # older unsent requests that a newer one in this set replaces: (older, newer id)
    superseded_older: list[tuple[EndorsementRequest, int]]
    # the covered dependants an employee's deletion in this set takes along (linked_deletes.py)
    linked: list = field(default_factory=list)


@dataclass(slots=True)
class IntakeRow:
    """A request read from a file, decided before it is stored (cheaper than a model instance).

    `pk` and `tracking_id` are already its own (`bulk_writes.ids_reserve`), so decisions
    and supersede links can name it before the row exists.
    """

    pk: int
    tracking_id: str
    employer_id: int
    policy_id: int | None
    type: str
    member_data: dict
    content_hash: str
    member_key: str
    batch_id: int | None
    row_number: int | None
    resubmits: str = ""  # the tracking id of the rejected request this row corrects


def _member_resolve(lookups: Lookups, values: dict) -> tuple[Any, ErrorDetail | None]:
    code = values["employee_code"]
    relation = values["relation"]
    candidates = [m for m in lookups.members.get(code, ()) if m.relation == relation]
    if len(candidates) > 1:
        first_name = values.get("first_name", "").casefold()
        by_name = [m for m in candidates if m.first_name.casefold() == first_name] if first_name else []
        if len(by_name) != 1 and values.get("date_of_birth"):
            dob = date.fromisoformat(values["date_of_birth"])
            by_name = [m for m in candidates if m.date_of_birth == dob]
        candidates = by_name
        if len(candidates) != 1:
            return None, ErrorDetail(
                "first_name",
                "member_ambiguous",
                f"{code} has several {relation} members; give the first name (or date of birth) of one.",
            )
    if not candidates:
        return None, ErrorDetail(
            "employee_code", "member_not_found", f"No {relation} member {code} at this employer."
        )
    return candidates[0], None


def _age_check(plan: Plan, relation: str, age: int) -> ErrorDetail | None:
    limits = (plan.age_limits or {}).get(relation)
    if limits and not (limits[0] <= age <= limits[1]):
        return ErrorDetail(
            "date_of_birth",
            "age_out_of_range",
            f"Age {age} on the effective date is outside {limits[0]}–{limits[1]}"
            f" for {relation} on plan {plan.code}.",
        )
    return None


def _mid_term_check(policy: Policy, values: dict, effective: date, today: date) -> ErrorDetail | None:
    """Additions after the policy's start: new joiners, newly-weds and newborns, each within N days."""
    if effective <= policy.start_date:
        return None
    relation = values["relation"]
    if relation == "SELF":
        joined = values.get("date_of_joining")
        if not joined:
            return ErrorDetail(
                "date_of_joining", "joining_date_required", "Required to add an employee mid-term."
            )
        joined_on = date.fromisoformat(joined)
        if effective < joined_on:
            return ErrorDetail(
                "effective_date", "effective_before_event", "Cover cannot start before joining."
            )
        if (today - joined_on).days > policy.joiner_window_days:
            return ErrorDetail(
                "date_of_joining",
                "joiner_window_passed",
                f"Mid-term additions must come within {policy.joiner_window_days} days of joining.",
            )
        return None
    if relation in EVENT_RELATIONS:
        event = values.get("event_date") or (values.get("date_of_birth") if relation == "CHILD" else None)
        if not event:
            return ErrorDetail(
                "event_date", "event_date_required", "Give the marriage date to add a spouse mid-term."
            )
        event_on = date.fromisoformat(event)
        window = policy.marriage_window_days if relation == "SPOUSE" else policy.newborn_window_days
        if effective < event_on:
            return ErrorDetail(
                "effective_date", "effective_before_event", "Cover cannot start before the event date."
            )
        if (today - event_on).days > window:
            what = "marriage" if relation == "SPOUSE" else "birth"
            return ErrorDetail(
                "event_date",
                "event_window_passed",
                f"Mid-term additions must come within {window} days of the {what}.",
            )
        return None
    return ErrorDetail(
        "relation", "mid_term_not_allowed", f"A {relation} can only be added from the policy's start date."
    )


def _policy_checks(
    lookups: Lookups, values: dict, today: date
) -> tuple[Policy | None, date, ErrorDetail | None]:
    effective = date.fromisoformat(values["effective_date"])
    policy = lookups.policies.get(values["policy_number"])
    if policy is None or not policy.is_active:
        return (
            None,
            effective,
            ErrorDetail(
                "policy_number",
                "policy_not_found",
                f"No active policy {values['policy_number']} at this employer.",
            ),
        )
    if not (policy.start_date <= effective <= policy.end_date):
        return (
            policy,
            effective,
            ErrorDetail(
                "effective_date",
                "effective_date_outside_policy",
                f"Must be within the policy period {policy.start_date} to {policy.end_date}.",
            ),
        )
    if effective < today - timedelta(days=policy.backdating_limit_days):
        return (
            policy,
            effective,
            ErrorDetail(
                "effective_date",
                "backdated_too_far",
                f"At most {policy.backdating_limit_days} days in the past.",
            ),
        )
    return policy, effective, None


def _offer_check(plan: Plan | None, plan_code: str, sum_insured: int) -> ErrorDetail | None:
    """The plan exists on the policy and offers the sum insured (an addition, a correction)."""
    if plan is None:
        return ErrorDetail("plan_code", "plan_not_found", f"No plan {plan_code} on this policy.")
    if sum_insured not in [int(x) for x in plan.sum_insured_options]:
        return ErrorDetail(
            "sum_insured",
            "sum_insured_not_offered",
            f"Plan {plan.code} offers {', '.join(str(x) for x in plan.sum_insured_options)}.",
        )
    return None


def _already_covered(lookups: Lookups, values: dict, policy: Policy) -> ErrorDetail | None:
    relation = values["relation"]
    code = values["employee_code"]
    first_name = values["first_name"].casefold()
    for member in lookups.members.get(code, ()):
        if member.relation != relation or (member.pk, policy.pk) not in lookups.open_cover:
            continue
        if relation in (Relation.SELF, Relation.SPOUSE) or member.first_name.casefold() == first_name:
            what = "the employee" if relation == Relation.SELF else f"this {relation}"
            return ErrorDetail("employee_code", "already_covered", f"{code}: {what} is already covered.")
    return None


def _assess_add(lookups, values, policy, effective, today) -> tuple[ErrorDetail | None, dict]:
    relation = values["relation"]
    plan = lookups.plans.get((policy.pk, values["plan_code"]))
    sum_insured = values["sum_insured"]
    problem = _offer_check(plan, values["plan_code"], sum_insured)
    if problem:
        return problem, {}
    age = pricing.age_on(date.fromisoformat(values["date_of_birth"]), effective)
    problem = (
        _age_check(plan, relation, age)
        or _already_covered(lookups, values, policy)
        or _mid_term_check(policy, values, effective, today)
    )
    if problem:
        return problem, {}
    annual = lookups.rates.annual_premium(
        plan_id=plan.pk, relation=relation, sum_insured=sum_insured, age=age
    )
    if annual is None:
        return ErrorDetail(
            "sum_insured",
            "rate_not_found",
            f"Plan {plan.code} has no rate for {relation}, age {age}, {sum_insured}.",
        ), {}
    price = pricing.addition_price(annual_premium=annual, policy=policy, effective_date=effective)
    key = member_key(
        employee_code=values["employee_code"], relation=relation, first_name=values["first_name"]
    )
    return None, {
        "premium_amount": price.total,
        "tax_amount": price.tax,
        "member_id": None,
        "member_key": key,
        "policy_id": policy.pk,
    }


def _assess_existing(lookups, values, policy, effective, request_type) -> tuple[ErrorDetail | None, dict]:
    """A deletion or a correction: the member on record, with open cover on this policy."""
    member, problem = _member_resolve(lookups, values)
    if problem:
        return problem, {}
    cover = lookups.open_cover.get((member.pk, policy.pk))
    if cover is None:
        return ErrorDetail(
            "employee_code",
            "not_covered",
            f"{member.employee_code} {member.relation} has no cover on this policy.",
        ), {}
    if effective < cover.start_date:
        return ErrorDetail(
            "effective_date", "effective_before_cover", f"Cover started on {cover.start_date}."
        ), {}
    key = member_key(
        employee_code=member.employee_code, relation=member.relation, first_name=member.first_name
    )
    base = {"member_id": member.pk, "member_key": key, "policy_id": policy.pk}
    if request_type == EndorsementType.DELETE:
        problem, price = deletion_assess(lookups, policy, effective, member, cover)
    else:
        problem, price = _assess_correction(lookups, values, policy, effective, member, cover)
    if problem:
        return problem, {}
    return None, {**base, "premium_amount": price.total, "tax_amount": price.tax}


def deletion_assess(lookups, policy, effective, member, cover) -> tuple[ErrorDetail | None, Any]:
    """A deletion's expected refund: the cover's annual premium for the member's age at the
    cover's start, by the policy's refund method (or the reason it has no rate)."""
    age = pricing.age_on(member.date_of_birth, max(cover.start_date, policy.start_date))
    annual = lookups.rates.annual_premium(
        plan_id=cover.plan_id, relation=member.relation, sum_insured=int(cover.sum_insured), age=age
    )
    if annual is None:
        return ErrorDetail(
            "sum_insured", "rate_not_found", "The cover's plan has no rate for this member."
        ), None
    price = pricing.deletion_refund(
        annual_premium=annual, policy=policy, effective_date=effective, cover_start=cover.start_date
    )
    return None, price


def _assess_correction(lookups, values, policy, effective, member, cover) -> tuple[ErrorDetail | None, Any]:
    """Compare each new value with what is on record; price the difference."""
    relation = member.relation
    old_plan = lookups.plans_by_id.get(cover.plan_id)
    current = {
        "first_name": member.first_name,
        "last_name": member.last_name,
        "date_of_birth": member.date_of_birth.isoformat(),
        "gender": member.gender,
        "email": member.email,
        "phone": member.phone,
        "plan_code": old_plan.code.upper() if old_plan else "",
        "sum_insured": int(cover.sum_insured),
    }
    if not any(c in values and values[c] != current[c] for c in CORRECTABLE):
        return ErrorDetail("", "nothing_to_correct", "Every value given is already on record."), None
    new_plan = lookups.plans.get((policy.pk, values["plan_code"])) if "plan_code" in values else old_plan
    new_sum = values.get("sum_insured", int(cover.sum_insured))
    problem = _offer_check(new_plan, values.get("plan_code", current["plan_code"]), new_sum)
    if problem:
        return problem, None
    new_dob = (
        date.fromisoformat(values["date_of_birth"]) if "date_of_birth" in values else member.date_of_birth
    )
    new_age = pricing.age_on(new_dob, effective)
    problem = _age_check(new_plan, relation, new_age)
    if problem:
        return problem, None
    old_annual = lookups.rates.annual_premium(
        plan_id=cover.plan_id,
        relation=relation,
        sum_insured=int(cover.sum_insured),
        age=pricing.age_on(member.date_of_birth, effective),
    )
    new_annual = lookups.rates.annual_premium(
        plan_id=new_plan.pk, relation=relation, sum_insured=new_sum, age=new_age
    )
    if old_annual is None or new_annual is None:
        return ErrorDetail("sum_insured", "rate_not_found", "The plan has no rate for this member."), None
    price = pricing.correction_price(
        old_annual_premium=old_annual, new_annual_premium=new_annual, policy=policy, effective_date=effective
    )
    return None, price


def endorsements_assess(
    *, employer_id: int, endorsements: list, today: date, book: PolicyBook | None = None
) -> Assessment:
    """Decide requests of one employer together; reads only, writes nothing.

    `book` is the employer's `policy_book_load()` when the caller decides many sets in a
    row (a file's chunks: read once per file, not per chunk); otherwise it is read here.

    `endorsements` are stored RECEIVED requests or `IntakeRow`s not yet stored (a chunk of
    a file, decided before it is inserted); anything with their attributes will do. The
    caller holds the employer's intake lock (`locks.employer_intake_lock`), so what this
    reads cannot change under it.
    """
    requests = sorted(endorsements, key=lambda r: r.pk)
    codes = {r.member_data.get("employee_code", "") for r in requests}
    lookups = lookups_load(employer_id, codes, book)
    originals = _Originals(employer_id, requests)
    resubmitted, refused = resubmissions_resolve(employer_id, requests)
    decisions = {
        request.pk: refused.get(request.pk) or _request_decide(request, originals, lookups, today)
        for request in requests
    }
    for request_id, rejected_id in resubmitted.items():
        decisions[request_id].changes["resubmission_of_id"] = rejected_id
    _dependants_check(employer_id, requests, decisions, lookups)
    superseded_older = _supersede(employer_id, requests, decisions)
    from endorsements.linked_deletes import linked_deletes_plan  # it prices with deletion_assess, here

    linked, followers = linked_deletes_plan(
        employer_id=employer_id,
        requests=requests,
        decisions=decisions,
        lookups=lookups,
        superseded_older=superseded_older,
    )
    return Assessment(decisions=decisions, superseded_older=superseded_older + followers, linked=linked)


class _Originals:
    """Duplicates: a request repeats another live request with the same content hash. The
    original is the earliest of this set with that hash, or a stored live request, except
    a stored one still RECEIVED with a later id (that one is assessed after this one and
    will be the duplicate)."""

    def __init__(self, employer_id: int, requests: list) -> None:
        own_ids = {r.pk for r in requests}
        self.stored: dict[str, list[tuple[int, str, str, int | None, int | None]]] = {}
        repeats = rows_by_keys(
            EndorsementRequest,
            ("content_hash",),
            ((r.content_hash,) for r in requests),
            ("id", "content_hash", "state", "tracking_id", "batch_id", "row_number"),
            employer_id=employer_id,
            state__in=LIVE_STATES,
        )
        for row in sorted(repeats):
            if row[0] not in own_ids:
                self.stored.setdefault(row[1], []).append((row[0], row[2], row[3], row[4], row[5]))
        self.first_in_set: dict[str, Any] = {}

    def of(self, request) -> tuple[str, int | None, int | None] | None:
        """(tracking id, batch id, row number) of the request this one repeats, if any."""
        for pk, state, tracking_id, batch_id, row_number in self.stored.get(request.content_hash, ()):
            if state != S.RECEIVED or pk < request.pk:
                return tracking_id, batch_id, row_number
        earlier = self.first_in_set.setdefault(request.content_hash, request)
        if earlier is not request:
            return earlier.tracking_id, earlier.batch_id, earlier.row_number
        return None


RESUBMITTABLE = (S.INSURER_REJECTED, S.REJECTED)


def resubmissions_resolve(employer_id: int, requests: list) -> tuple[dict[int, int], dict[int, Decision]]:
    """The rejected requests rows name (`resubmits`), in one query: ({row id: rejected request
    id}, {row id: its rejection}) — a row may only name one of its employer's rejected requests."""
    named = {r.pk: r.resubmits.strip() for r in requests if getattr(r, "resubmits", "")}
    if not named:
        return {}, {}
    found = dict(
        EndorsementRequest.objects.filter(
            employer_id=employer_id, tracking_id__in=set(named.values()), state__in=RESUBMITTABLE
        ).values_list("tracking_id", "pk")
    )
    resubmitted = {pk: found[t] for pk, t in named.items() if t in found}
    refused = {
        pk: _rejected(
            ErrorDetail(
                RESUBMITS, "resubmission_invalid", f"{t[:40]} is not one of your rejected endorsements."
            )
        )
        for pk, t in named.items()
        if t not in found
    }
    return resubmitted, refused


def _rejected(reason: ErrorDetail) -> Decision:
    return Decision(S.REJECTED, {"rejection_reasons": [reason.as_dict()]})


def _request_decide(request, originals: _Originals, lookups: Lookups, today: date) -> Decision:
    """One request by its own rules: a duplicate, or its policy, then its type's rules."""
    original = originals.of(request)
    if original:
        tracking_id, batch_id, row_number = original
        where = (
            f" (row {row_number} of this file)"
            if batch_id is not None and batch_id == request.batch_id
            else ""
        )
        reason = ErrorDetail("", "duplicate", f"Duplicate of {tracking_id}{where}.")
        reasons = [{**reason.as_dict(), "original_tracking_id": tracking_id}]
        return Decision(S.REJECTED, {"rejection_reasons": reasons}, duplicate=True)
    values = request.member_data
    policy, effective, problem = _policy_checks(lookups, values, today)
    if problem is None:
        if request.type == EndorsementType.ADD:
            problem, changes = _assess_add(lookups, values, policy, effective, today)
        else:
            problem, changes = _assess_existing(lookups, values, policy, effective, request.type)
    if problem:
        return _rejected(problem)
    days = sla.allowance_days(
        endorsement_type=request.type,
        inclusion_days=policy.sla_inclusion_days,
        correction_days=policy.sla_correction_days,
    )
    return Decision(S.VALIDATED, changes, sla_days=days)


def _is_validated_add(request, decisions: dict[int, Decision]) -> bool:
    return decisions[request.pk].state == S.VALIDATED and request.type == EndorsementType.ADD


def _dependants_check(
    employer_id: int, requests: list, decisions: dict[int, Decision], lookups: Lookups
) -> None:
    """A dependant needs an employee with cover, or an employee addition on its way (in this
    set or stored); otherwise its decision becomes REJECTED."""
    dependant_adds = [
        r for r in requests if _is_validated_add(r, decisions) and r.member_data["relation"] != Relation.SELF
    ]
    if not dependant_adds:
        return
    own_ids = {r.pk for r in requests}
    employees_coming = {
        (decisions[r.pk].changes["policy_id"], decisions[r.pk].changes["member_key"])
        for r in requests
        if _is_validated_add(r, decisions) and r.member_data["relation"] == Relation.SELF
    }
    employees_coming.update(
        (policy_id, key)
        for pk, policy_id, key in rows_by_keys(
            EndorsementRequest,
            ("policy_id", "member_key"),
            (
                (decisions[r.pk].changes["policy_id"], f"{r.member_data['employee_code']}|SELF")
                for r in dependant_adds
            ),
            ("id", "policy_id", "member_key"),
            employer_id=employer_id,
            type=EndorsementType.ADD,
            state__in=LIVE_STATES,
        )
        if pk not in own_ids
    )
    for r in dependant_adds:
        code = r.member_data["employee_code"]
        policy_id = decisions[r.pk].changes["policy_id"]
        employee = next((m for m in lookups.members.get(code, ()) if m.relation == Relation.SELF), None)
        covered = employee is not None and (employee.pk, policy_id) in lookups.open_cover
        if not (covered or (policy_id, f"{code}|SELF") in employees_coming):
            decisions[r.pk] = _rejected(
                ErrorDetail(
                    "employee_code",
                    "employee_not_covered",
                    f"Employee {code} has no cover on this policy (nor an addition on its way).",
                )
            )


def _supersede(
    employer_id: int, requests: list, decisions: dict[int, Decision]
) -> list[tuple[EndorsementRequest, int]]:
    """The newest request per member and policy wins: losers of this set become SUPERSEDED;
    returns the stored older unsent losers with the id of the request that replaces each."""
    groups: dict[tuple[int, str], list[int]] = {}
    for pk, decision in decisions.items():
        if decision.state == S.VALIDATED:
            groups.setdefault((decision.changes["policy_id"], decision.changes["member_key"]), []).append(pk)
    if not groups:
        return []
    own_ids = {r.pk for r in requests}
    older_ids = [
        pk
        for pk, _policy_id, _key in rows_by_keys(
            EndorsementRequest,
            ("policy_id", "member_key"),
            groups,
            ("id", "policy_id", "member_key"),
            employer_id=employer_id,
            state__in=UNSENT_STATES,
        )
        if pk not in own_ids
    ]
    stored_older: dict[int, EndorsementRequest] = {}
    for older in EndorsementRequest.objects.filter(pk__in=older_ids) if older_ids else ():
        ids = groups.get((older.policy_id, older.member_key))
        if ids:
            ids.append(older.pk)
            stored_older[older.pk] = older
    superseded_older: list[tuple[EndorsementRequest, int]] = []
    for ids in groups.values():
        ids.sort()
        winner = ids[-1]
        for loser in ids[:-1]:
            if loser in decisions:
                decisions[loser] = Decision(
                    S.SUPERSEDED, {**decisions[loser].changes, "superseded_by_id": winner}
                )
            else:
                superseded_older.append((stored_older[loser], winner))
    return superseded_older
