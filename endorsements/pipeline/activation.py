"""Activate: a confirmed request becomes the member list's truth on its effective date.

How it works
- `endorsements_activate_due` (the `endorsements.pipeline.activate_due` beat sweep, every
  ACTIVATION_SWEEP_SECONDS) takes, in one transaction, up to `limit` CONFIRMED requests
  whose effective date has come in the project's time zone (`locks.
  endorsements_lock_confirmed_due`: rows another transaction holds are skipped), applies
  them to `Member` and `Coverage`, and moves them CONFIRMED -> ACTIVE with ONE
  `endorsement_transition` call. One sweep runs at a time (`locks.activation_lock`); a
  second run finds nothing left to do.
- The members, open covers, policies and plans the requests name are read with one query
  each; the changes are made in memory, request by request in effective-date then id
  order (so two requests for one member apply in the order they take effect), and
  written with one statement per kind (new employees, new dependants, changed members,
  changed covers, new covers).
- ADD: the employee (`SELF`, one per employee code) or the dependant (linked to the
  employee, matched by relation and first name) is reused if known, its details updated
  from the request, or created. A new `Coverage` starts on the effective date and ends on
  the policy's last day, ACTIVE, with the insurer's member id. An open cover of the same
  member and policy (a second addition the insurer also confirmed) is ended first.
- DELETE: the effective date is the first day without cover (as pricing counts it), so
  the open cover ends the day before and becomes ENDED; a DELETE effective on (or before)
  the cover's start voids it (VOID: it ends the day before it starts, never in force).
- CORRECTION: the member fields it names change; a new plan or sum insured changes the
  open cover; an insurer member id the insurer sent is stored on the cover.
- A request that cannot apply yet stays CONFIRMED, logged, for the next sweep: a
  dependant whose employee is not a member yet (the employee's addition takes effect
  later), or a plan the policy no longer has.
"""

from datetime import date, timedelta

import structlog
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from endorsements.columns import CORRECTABLE
from endorsements.locks import activation_lock, endorsements_lock_confirmed_due
from endorsements.models import (
    Coverage,
    EndorsementRequest,
    EndorsementState,
    EndorsementType,
    Member,
    Plan,
    Policy,
    Relation,
)
from endorsements.transitions import endorsement_transition

log = structlog.get_logger(__name__)
S = EndorsementState
ACTOR = "pipeline:activation"
BATCH_SIZE = 1000
OPEN = (Coverage.Status.PENDING, Coverage.Status.ACTIVE)

# Member fields a request's `member_data` may set (an addition's details, a correction's).
MEMBER_FIELDS = (*(c for c in CORRECTABLE if c not in ("plan_code", "sum_insured")), "date_of_joining")
_DATE_FIELDS = frozenset({"date_of_birth", "date_of_joining"})


class NotYet(Exception):
    """The request cannot apply in this sweep; it stays CONFIRMED."""


def endorsements_activate_due(*, today: date | None = None, limit: int = BATCH_SIZE) -> list:
    """Activate up to `limit` CONFIRMED requests effective on or before `today` (default:
    today in the project's time zone). Returns the activated requests; safe to run twice."""
    today = today or timezone.localdate()
    with transaction.atomic():
        if not activation_lock():
            return []
        requests = endorsements_lock_confirmed_due(on=today, limit=limit)
        if not requests:
            return []
        roster = _Roster.load(requests)
        applied, waiting = roster.apply_all(requests)
        # A dependant added before its employee (effective earlier) waited for the employee's
        # addition in this sweep; nothing else can name that dependant yet.
        retried, waiting = roster.apply_all([request for request, _why in waiting])
        applied += retried
        for request, why in waiting:
            log.info("endorsement.activation_deferred", tracking_id=request.tracking_id, reason=why)
        roster.save()
        endorsement_transition(
            endorsements=applied,
            to_state=S.ACTIVE,
            actor=ACTOR,
            changes={
                r.pk: {"member_id": roster.member_of[r.pk].pk}
                for r in applied
                if r.pk in roster.member_of and r.member_id != roster.member_of[r.pk].pk
            },
        )
    log.info("endorsement.activated_group", count=len(applied), deferred=len(requests) - len(applied))
    return applied


def endorsements_activate_all_due(*, today: date | None = None, limit: int = BATCH_SIZE) -> int:
    """The sweep: activate in batches of `limit` until a batch comes back short. Returns how many."""
    total = 0
    while True:
        activated = len(endorsements_activate_due(today=today, limit=limit))
        total += activated
        if activated < limit:
            return total


class _Roster:
    """The members and open covers a sweep's requests name, changed in memory, then saved."""

    def __init__(self, *, policies, plans, members: list[Member], covers) -> None:
        self.policies: dict[int, Policy] = policies
        self.plans: dict[tuple[int, str], Plan] = plans
        self.by_pk: dict[int, Member] = {m.pk: m for m in members}
        self.employees: dict[tuple[int, str], Member] = {}
        self.dependants: dict[int, list[Member]] = {}  # id(employee) -> its dependants
        for member in members:
            if member.relation == Relation.SELF:
                self.employees[(member.employer_id, member.employee_code)] = member
        for member in members:
            employee = self.by_pk.get(member.primary_id)
            if employee is not None:
                self.dependants.setdefault(id(employee), []).append(member)
        # (id(member), policy id) -> its open cover: new members have no pk yet
        self.open_cover: dict[tuple[int, int], Coverage] = {
            (id(self.by_pk[c.member_id]), c.policy_id): c for c in covers
        }
        self.member_of: dict[int, Member] = {}  # request id -> the member it applied to
        self.new_members: list[Member] = []
        self.changed_members: dict[int, tuple[Member, set]] = {}
        self.new_covers: list[Coverage] = []
        self.changed_covers: dict[int, tuple[Coverage, set]] = {}

    @classmethod
    def load(cls, requests: list[EndorsementRequest]) -> "_Roster":
        employers = {r.employer_id for r in requests}
        codes = {str(r.member_data.get("employee_code", "")) for r in requests}
        member_ids = {r.member_id for r in requests if r.member_id is not None}
        members = list(
            Member.objects.filter(
                Q(pk__in=member_ids) | Q(employer_id__in=employers, employee_code__in=codes)
            ).order_by("pk")
        )
        policy_ids = {r.policy_id for r in requests}
        return cls(
            policies={p.pk: p for p in Policy.objects.filter(pk__in=policy_ids)},
            plans={(p.policy_id, p.code.upper()): p for p in Plan.objects.filter(policy_id__in=policy_ids)},
            members=members,
            covers=Coverage.objects.filter(
                member_id__in=[m.pk for m in members], policy_id__in=policy_ids, status__in=OPEN
            ),
        )

    # --- applying one request --------------------------------------------------------

    def apply_all(self, requests) -> tuple[list, list]:
        """Apply each request in turn: (those applied, [(request, why it waits)])."""
        applied, waiting = [], []
        for request in requests:
            try:
                self.apply(request)
            except NotYet as why:
                waiting.append((request, str(why)))
            else:
                applied.append(request)
        return applied, waiting

    def apply(self, request: EndorsementRequest) -> None:
        if request.type == EndorsementType.ADD:
            self._add(request)
        elif request.type == EndorsementType.DELETE:
            self._delete(request)
        else:
            self._correct(request)

    def _add(self, request: EndorsementRequest) -> None:
        data = request.member_data
        plan = self._plan(request.policy_id, data["plan_code"])
        member = self._member_for_addition(request)
        policy = self.policies[request.policy_id]
        effective = request.effective_date
        current = self.open_cover.pop((id(member), policy.pk), None)
        if current is not None:
            self._cover_end(current, effective)
        cover = Coverage(
            member=member,
            policy=policy,
            plan=plan,
            sum_insured=int(data["sum_insured"]),
            start_date=effective,
            end_date=policy.end_date,
            status=Coverage.Status.ACTIVE,
            insurer_member_id=request.insurer_member_id,
        )
        self.new_covers.append(cover)
        self.open_cover[(id(member), policy.pk)] = cover

    def _delete(self, request: EndorsementRequest) -> None:
        member = self._member_on_record(request)
        cover = self.open_cover.pop((id(member), request.policy_id), None)
        if cover is None:
            log.info("endorsement.activation_no_cover", tracking_id=request.tracking_id)
            return
        self._cover_end(cover, request.effective_date)

    def _correct(self, request: EndorsementRequest) -> None:
        data = request.member_data
        member = self._member_on_record(request)
        cover = self.open_cover.get((id(member), request.policy_id))
        plan = self._plan(request.policy_id, data["plan_code"]) if "plan_code" in data else None
        self._member_update(member, data)
        if cover is None:
            return
        changes = {}
        if plan is not None:
            changes["plan"] = plan
        if "sum_insured" in data:
            changes["sum_insured"] = int(data["sum_insured"])
        if request.insurer_member_id:
            changes["insurer_member_id"] = request.insurer_member_id
        self._cover_change(cover, **changes)

    # --- members ---------------------------------------------------------------------

    def _member_on_record(self, request: EndorsementRequest) -> Member:
        member = self.by_pk.get(request.member_id)
        if member is None:  # validation resolved it; members are never deleted
            raise NotYet(f"member {request.member_id} not found")
        self.member_of[request.pk] = member
        return member

    def _member_for_addition(self, request: EndorsementRequest) -> Member:
        data = request.member_data
        code = data["employee_code"]
        relation = data["relation"]
        employee = self.employees.get((request.employer_id, code))
        if relation == Relation.SELF:
            member = employee
        else:
            if employee is None:
                raise NotYet(f"employee {code} is not a member yet")
            member = self._dependant(employee, relation, data)
        if member is None:
            member = Member(
                employer_id=request.employer_id,
                employee_code=code,
                relation=relation,
                primary=None if relation == Relation.SELF else employee,
                **_member_values(data),
            )
            self.new_members.append(member)
            if relation == Relation.SELF:
                self.employees[(request.employer_id, code)] = member
            else:
                self.dependants.setdefault(id(employee), []).append(member)
        else:
            self._member_update(member, data)
        self.member_of[request.pk] = member
        return member

    def _dependant(self, employee: Member, relation: str, data: dict) -> Member | None:
        """The employee's dependant this addition names: same relation and first name (and
        date of birth, among several of that name)."""
        first_name = data.get("first_name", "").casefold()
        found = [
            m
            for m in self.dependants.get(id(employee), ())
            if m.relation == relation and m.first_name.casefold() == first_name
        ]
        if len(found) > 1:
            born = date.fromisoformat(data["date_of_birth"])
            found = [m for m in found if m.date_of_birth == born] or found
        return found[0] if found else None

    def _member_update(self, member: Member, data: dict) -> None:
        values = _member_values(data)
        changed = {name for name, value in values.items() if getattr(member, name) != value}
        if not changed:
            return
        for name in changed:
            setattr(member, name, values[name])
        if member.pk is not None:
            self.changed_members.setdefault(id(member), (member, set()))[1].update(changed)

    # --- covers ----------------------------------------------------------------------

    def _plan(self, policy_id: int, code: str) -> Plan:
        plan = self.plans.get((policy_id, str(code).upper()))
        if plan is None:
            raise NotYet(f"plan {code} is not on the policy")
        return plan

    def _cover_end(self, cover: Coverage, effective: date) -> None:
        """End a cover the day before `effective` (its first day without cover); void it
        when that is on or before its start."""
        if effective <= cover.start_date:
            self._cover_change(
                cover, status=Coverage.Status.VOID, end_date=cover.start_date - timedelta(days=1)
            )
        else:
            self._cover_change(cover, status=Coverage.Status.ENDED, end_date=effective - timedelta(days=1))

    def _cover_change(self, cover: Coverage, **values) -> None:
        for name, value in values.items():
            setattr(cover, name, value)
        if cover.pk is not None and values:
            self.changed_covers.setdefault(cover.pk, (cover, set()))[1].update(values)

    # --- writing ---------------------------------------------------------------------

    def save(self) -> None:
        """Write the changes: employees before their dependants, ended covers before the new
        ones that replace them (one open cover per member and policy)."""
        now = timezone.now()
        employees = [m for m in self.new_members if m.relation == Relation.SELF]
        Member.objects.bulk_create(employees)
        Member.objects.bulk_create([m for m in self.new_members if m.relation != Relation.SELF])
        _changes_write(Member, self.changed_members.values(), now)
        _changes_write(Coverage, self.changed_covers.values(), now)
        Coverage.objects.bulk_create(self.new_covers)


def _changes_write(model, changed, now) -> None:
    """One UPDATE for the changed rows of a model: (row, the names changed) pairs."""
    changed = list(changed)
    if not changed:
        return
    for row, _names in changed:
        row.updated_at = now
    names = set().union(*(names for _row, names in changed))
    model.objects.bulk_update([row for row, _names in changed], [*sorted(names), "updated_at"])


def _member_values(data: dict) -> dict:
    values = {}
    for name in MEMBER_FIELDS:
        if name in data:
            value = data[name]
            values[name] = date.fromisoformat(value) if name in _DATE_FIELDS else value
    return values
