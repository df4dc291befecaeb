"""Validation of endorsements: one service for API, batch files and admin.

Two stages, each returning structured reasons with stable codes
(`{"field", "code", "message"}`):

1. `row_parse` — schema and formats of one row (a CSV record, a JSON object or an API
   body), before anything is written: known columns, required and allowed columns per
   action and relation, ISO dates that exist, enums, E.164 phones, emails, positive whole
   sums insured, no future birth dates, no bytes that are not UTF-8. It returns the
   normalised values (stored as `member_data`) and their SHA-256 content hash.
2. `endorsements_assess` — business rules for many RECEIVED requests at once, set-based:
   the lookups (policies, plans, rate card, members, open covers, live requests with the
   same content or member) are loaded with one query each for the whole set, never per
   row. It decides VALIDATED (with premium), REJECTED (with reasons; a duplicate names the
   original tracking id) or SUPERSEDED, and which older unsent requests the new ones
   replace. `endorsements.services` applies the decisions.

Dates are ISO `YYYY-MM-DD` only. Names keep their case but compare case-folded; codes
(action, relation, gender) are upper-cased; policy numbers and plan codes match
case-insensitively; employee codes match exactly (after trimming).
"""

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from ems.errors import ErrorDetail
from endorsements import pricing
from endorsements.bulk_writes import filter_any, rows_by_keys
from endorsements.models import (
    Coverage,
    EndorsementRequest,
    EndorsementType,
    Gender,
    Member,
    Plan,
    PlanRate,
    Policy,
    Relation,
)
from endorsements.transitions import LIVE_STATES, UNSENT_STATES

COLUMNS: tuple[str, ...] = (
    "action",
    "employee_code",
    "relation",
    "first_name",
    "last_name",
    "date_of_birth",
    "gender",
    "email",
    "phone",
    "date_of_joining",
    "event_date",
    "effective_date",
    "policy_number",
    "plan_code",
    "sum_insured",
)
COLUMN_SET = frozenset(COLUMNS)
# A file must have these columns, whatever its rows hold.
HEADER_REQUIRED: tuple[str, ...] = ("action", "employee_code", "relation", "effective_date", "policy_number")

_IDENTITY = frozenset({"action", "employee_code", "relation", "effective_date", "policy_number"})
REQUIRED: dict[str, frozenset[str]] = {
    "ADD": _IDENTITY | {"first_name", "last_name", "date_of_birth", "gender", "plan_code", "sum_insured"},
    "DELETE": _IDENTITY,
    "CORRECTION": _IDENTITY,
}
ALLOWED: dict[str, frozenset[str]] = {
    "ADD": COLUMN_SET,
    "DELETE": _IDENTITY | {"first_name", "last_name", "date_of_birth"},
    "CORRECTION": _IDENTITY
    | {"first_name", "last_name", "date_of_birth", "gender", "email", "phone", "plan_code", "sum_insured"},
}
SELF_ONLY = frozenset({"email", "phone", "date_of_joining"})
EVENT_RELATIONS = frozenset({"SPOUSE", "CHILD"})
CORRECTABLE = (
    "first_name",
    "last_name",
    "date_of_birth",
    "gender",
    "email",
    "phone",
    "plan_code",
    "sum_insured",
)

MAX_SUM_INSURED = 10_000_000_000  # whole currency units: ₹1,000 crore; anything above is absurd
EARLIEST_DATE = date(1900, 1, 1)

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EMPLOYEE_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
_POLICY_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/ -]{0,63}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}")
_PHONE = re.compile(r"\+[1-9]\d{6,14}")
_DIGITS = re.compile(r"[+-]?\d{1,30}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A byte the file's decoder could not read (U+DC00 + byte, intake._bytes_escape), or an
# unpaired surrogate from a JSON "\\ud800" escape: neither is text, nor storable as JSON.
_NOT_TEXT = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class RowIssue:
    column: str
    code: str
    message: str

    def as_dict(self) -> dict:
        return {"field": self.column, "code": self.code, "message": self.message}

    def as_detail(self) -> ErrorDetail:
        return ErrorDetail(field=self.column, code=self.code, message=self.message)


# --- stage 1: one row -------------------------------------------------------------------


def _choice(choices: frozenset[str]):
    listed = ", ".join(sorted(choices))

    def parse(column: str, text: str):
        value = text.upper()
        if value not in choices:
            return None, RowIssue(column, "invalid_choice", f"{text!r} is not one of {listed}.")
        return value, None

    return parse


def _iso_date(column: str, text: str):
    if not _DATE.fullmatch(text):
        return None, RowIssue(column, "date_format", f"{text!r} is not a date in the form YYYY-MM-DD.")
    try:
        value = date.fromisoformat(text)
    except ValueError:
        return None, RowIssue(column, "date_invalid", f"{text} is not a calendar date.")
    if value < EARLIEST_DATE:
        return None, RowIssue(column, "date_out_of_range", f"{text} is before {EARLIEST_DATE.isoformat()}.")
    return value, None


def _name(column: str, text: str):
    if len(text) > 100:
        return None, RowIssue(column, "too_long", "At most 100 characters.")
    if _CONTROL.search(text):
        return None, RowIssue(column, "control_character", "Contains a control character.")
    return text, None


def _employee_code(column: str, text: str):
    if not _EMPLOYEE_CODE.fullmatch(text):
        return None, RowIssue(
            column,
            "employee_code_invalid",
            "Use 1 to 64 letters, digits or . _ / - (starting with a letter or digit).",
        )
    return text, None


def _code(column: str, text: str):
    if not _POLICY_CODE.fullmatch(text):
        return None, RowIssue(column, "code_invalid", "Use 1 to 64 letters, digits, spaces or . _ / -.")
    return text.upper(), None


def _email(column: str, text: str):
    if len(text) > 254 or not _EMAIL.fullmatch(text):
        return None, RowIssue(column, "email_invalid", f"{text!r} is not an email address.")
    return text, None


def _phone(column: str, text: str):
    if not _PHONE.fullmatch(text):
        return None, RowIssue(
            column, "phone_invalid", "Use the E.164 form: + then 7 to 15 digits, e.g. +919812345678."
        )
    return text, None


def _sum_insured(column: str, value):
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        return None, RowIssue(column, "integer_invalid", "Must be a whole number of currency units.")
    elif _DIGITS.fullmatch(value):
        number = int(value)
    else:
        return None, RowIssue(
            column, "integer_invalid", f"{value!r} is not a whole number of currency units."
        )
    if number <= 0:
        return None, RowIssue(column, "sum_insured_not_positive", "Must be more than zero.")
    if number > MAX_SUM_INSURED:
        return None, RowIssue(column, "sum_insured_out_of_range", f"Must be at most {MAX_SUM_INSURED}.")
    return number, None


_PARSERS = {
    "action": _choice(frozenset(EndorsementType.values)),
    "employee_code": _employee_code,
    "relation": _choice(frozenset(Relation.values)),
    "first_name": _name,
    "last_name": _name,
    "date_of_birth": _iso_date,
    "gender": _choice(frozenset(Gender.values)),
    "email": _email,
    "phone": _phone,
    "date_of_joining": _iso_date,
    "event_date": _iso_date,
    "effective_date": _iso_date,
    "policy_number": _code,
    "plan_code": _code,
    "sum_insured": _sum_insured,
}
# Columns whose few distinct values repeat down a file (codes, dates, amounts): their
# parsers are pure, so each distinct cell is parsed once per process (bounded cache).
# Typed: a JSON sum insured of 500000.0 is refused, and must not hit 500000's entry.
for _column in (
    "action",
    "relation",
    "gender",
    "date_of_birth",
    "date_of_joining",
    "event_date",
    "effective_date",
    "policy_number",
    "plan_code",
    "sum_insured",
):
    _PARSERS[_column] = lru_cache(maxsize=8192, typed=True)(_PARSERS[_column])
del _column


def text_printable(text: str) -> str:
    """The text with each character that is not text (see _NOT_TEXT) as U+FFFD."""
    return text if text.isascii() else _NOT_TEXT.sub("\ufffd", text)


def _not_text_message(code: int) -> str:
    if 0xDC00 <= code <= 0xDCFF:
        return f"Contains a byte that cannot be read as text (0x{code - 0xDC00:02X}); save the file as UTF-8."
    return f"Contains an unpaired surrogate (U+{code:04X}), which is not text."


def row_parse(cells: Mapping[str, Any], *, today: date) -> tuple[dict | None, list[RowIssue]]:
    """Check one row's schema and formats. Returns (normalised values, []) or (None, issues).

    `cells` maps column names (already lower-case) to text, or JSON scalars for a JSON
    row. Empty cells are absent from the values ("unchanged" in a correction).
    """
    issues: list[RowIssue] = []
    values: dict[str, Any] = {}
    dates: dict[str, date] = {}
    for column, raw in cells.items():
        if raw is None:
            continue
        parser = _PARSERS.get(column)
        if parser is None:
            name = text_printable(column)
            issues.append(RowIssue(name, "column_unknown", f"Unknown column {name!r}."))
            continue
        if isinstance(raw, str):
            if not raw.isascii() and (found := _NOT_TEXT.search(raw)):
                issues.append(RowIssue(column, "encoding_invalid", _not_text_message(ord(found.group()))))
                continue
            text = raw.strip()
            if not text:
                continue
        elif isinstance(raw, bool) or not isinstance(raw, int | float):
            kind = (
                "an object" if isinstance(raw, dict) else "a list" if isinstance(raw, list) else "true/false"
            )
            issues.append(RowIssue(column, "value_not_scalar", f"Must be text or a number, not {kind}."))
            continue
        elif column == "sum_insured":
            text = raw
        else:
            text = str(raw)
        value, issue = parser(column, text)
        if issue is not None:
            issues.append(issue)
            continue
        if isinstance(value, date):
            dates[column] = value
            value = text
        values[column] = value
    action = values.get("action")
    relation = values.get("relation")
    if action is None:
        if "action" not in {i.column for i in issues}:
            issues.append(RowIssue("action", "required", "Required: ADD, DELETE or CORRECTION."))
        return None, issues
    given = values.keys()
    # The common case, decided with set operations; otherwise every problem is named below.
    if (
        not issues
        and not (REQUIRED[action] - given)
        and not (given - ALLOWED[action])
        and (relation == "SELF" or not (given & SELF_ONLY))
        and ("event_date" not in given or relation in EVENT_RELATIONS)
        and not any(dates[c] > today for c in ("date_of_birth", "event_date") if c in dates)
        and (action != "CORRECTION" or any(c in values for c in CORRECTABLE))
    ):
        return values, []
    bad = {i.column for i in issues}
    for column in COLUMNS:
        if column in REQUIRED[action] and column not in values and column not in bad:
            issues.append(RowIssue(column, "required", f"Required for {action}."))
    for column in values:
        if column not in ALLOWED[action]:
            issues.append(RowIssue(column, "not_allowed", f"Must be empty for {action}."))
        elif relation and relation != "SELF" and column in SELF_ONLY:
            issues.append(RowIssue(column, "not_allowed", f"Only for the employee (SELF), not {relation}."))
        elif column == "event_date" and relation and relation not in EVENT_RELATIONS:
            issues.append(RowIssue(column, "not_allowed", "Only for a SPOUSE (marriage) or a CHILD (birth)."))
    for column in ("date_of_birth", "event_date"):
        if column in dates and dates[column] > today:
            issues.append(RowIssue(column, "date_in_future", f"{values[column]} is in the future."))
    if action == "CORRECTION" and not issues and not any(c in values for c in CORRECTABLE):
        issues.append(RowIssue("", "nothing_to_correct", "A correction needs at least one new value."))
    if issues:
        return None, issues
    return values, []


def content_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 of the normalised content: names case-folded, dates ISO, codes upper-case."""
    get = values.get
    text = "\x1f".join(
        (
            get("action", ""),
            get("employee_code", ""),
            get("relation", ""),
            get("first_name", "").casefold(),
            get("last_name", "").casefold(),
            get("date_of_birth", ""),
            get("gender", ""),
            get("email", "").casefold(),
            get("phone", ""),
            get("date_of_joining", ""),
            get("event_date", ""),
            get("effective_date", ""),
            get("policy_number", ""),
            get("plan_code", ""),
            str(get("sum_insured", "")),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def member_key(*, employee_code: str, relation: str, first_name: str = "") -> str:
    """Who a request is about: the employee, their one spouse, or a dependant by first name."""
    if relation in ("SELF", "SPOUSE"):
        return f"{employee_code}|{relation}"
    return f"{employee_code}|{relation}|{first_name.strip().casefold()}"


# --- stage 2: business rules, set-based ---------------------------------------------------


@dataclass
class Decision:
    state: str  # VALIDATED, REJECTED or SUPERSEDED
    changes: dict = field(default_factory=dict)
    duplicate: bool = False


@dataclass
class Assessment:
    decisions: dict[int, Decision]
    # older unsent requests that a newer one in this set replaces: (older, newer id)
    superseded_older: list[tuple[EndorsementRequest, int]]


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


@dataclass
class _Lookups:
    policies: dict[str, Policy]
    plans: dict[tuple[int, str], Plan]
    plans_by_id: dict[int, Plan]
    rates: pricing.RateCard
    members: dict[str, list]  # rows of _MEMBER_FIELDS by employee code
    open_cover: dict[tuple[int, int], Any]  # rows of _COVER_FIELDS by (member, policy)


_MEMBER_FIELDS = (
    "pk",
    "employee_code",
    "relation",
    "first_name",
    "last_name",
    "date_of_birth",
    "gender",
    "email",
    "phone",
)
_COVER_FIELDS = ("member_id", "policy_id", "plan_id", "sum_insured", "start_date")


@dataclass(frozen=True)
class PolicyBook:
    """An employer's policies, plans and rate card: read once for a whole file."""

    policies: dict[str, Policy]
    plans: dict[tuple[int, str], Plan]
    rates: pricing.RateCard


def policy_book_load(employer_id: int) -> PolicyBook:
    # No model ordering (it joins the employer, or the plan and policy, for a sort nobody
    # needs here): read for every validation drain of the API, where it was a quarter of
    # the worker's time.
    return PolicyBook(
        policies={p.number.upper(): p for p in Policy.objects.filter(employer_id=employer_id).order_by()},
        plans={
            (plan.policy_id, plan.code.upper()): plan
            for plan in Plan.objects.filter(policy__employer_id=employer_id).order_by()
        },
        rates=pricing.RateCard(
            PlanRate.objects.filter(plan__policy__employer_id=employer_id)
            .order_by()
            .values_list(
                "plan_id", "relation", "sum_insured", "age_from", "age_to", "annual_premium", named=True
            )
        ),
    )


def _lookups_load(employer_id: int, codes: Iterable[str], book: PolicyBook | None) -> _Lookups:
    book = book or policy_book_load(employer_id)
    policies, plans, rates = book.policies, book.plans, book.rates
    # Rows with the attributes the rules read, not model instances: a chunk of a file
    # names thousands of employee codes.
    members: dict[str, list] = {}
    member_ids = []
    for member in (
        filter_any(Member.objects.filter(employer_id=employer_id), "employee_code", set(codes))
        .order_by()
        .values_list(*_MEMBER_FIELDS, named=True)
    ):
        members.setdefault(member.employee_code, []).append(member)
        member_ids.append(member.pk)
    open_cover = {
        (c.member_id, c.policy_id): c
        for c in filter_any(
            Coverage.objects.filter(status__in=["PENDING", "ACTIVE"]).order_by(), "member_id", member_ids
        ).values_list(*_COVER_FIELDS, named=True)
    }
    return _Lookups(
        policies=policies,
        plans=plans,
        plans_by_id={plan.pk: plan for plan in plans.values()},
        rates=rates,
        members=members,
        open_cover=open_cover,
    )


def _reason(field_name: str, code: str, message: str, **extra) -> dict:
    return {"field": field_name, "code": code, "message": message, **extra}


def _member_resolve(lookups: _Lookups, values: dict) -> tuple[Any, dict | None]:
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
            return None, _reason(
                "first_name",
                "member_ambiguous",
                f"{code} has several {relation} members; give the first name (or date of birth) of one.",
            )
    if not candidates:
        return None, _reason(
            "employee_code", "member_not_found", f"No {relation} member {code} at this employer."
        )
    return candidates[0], None


def _age_check(plan: Plan, relation: str, age: int) -> dict | None:
    limits = (plan.age_limits or {}).get(relation)
    if limits and not (limits[0] <= age <= limits[1]):
        return _reason(
            "date_of_birth",
            "age_out_of_range",
            f"Age {age} on the effective date is outside {limits[0]}–{limits[1]}"
            f" for {relation} on plan {plan.code}.",
        )
    return None


def _mid_term_check(policy: Policy, values: dict, effective: date, today: date) -> dict | None:
    """Additions after the policy's start: new joiners, newly-weds and newborns, each within N days."""
    if effective <= policy.start_date:
        return None
    relation = values["relation"]
    if relation == "SELF":
        joined = values.get("date_of_joining")
        if not joined:
            return _reason(
                "date_of_joining", "joining_date_required", "Required to add an employee mid-term."
            )
        joined_on = date.fromisoformat(joined)
        if effective < joined_on:
            return _reason("effective_date", "effective_before_event", "Cover cannot start before joining.")
        if (today - joined_on).days > policy.joiner_window_days:
            return _reason(
                "date_of_joining",
                "joiner_window_passed",
                f"Mid-term additions must come within {policy.joiner_window_days} days of joining.",
            )
        return None
    if relation in EVENT_RELATIONS:
        event = values.get("event_date") or (values.get("date_of_birth") if relation == "CHILD" else None)
        if not event:
            return _reason(
                "event_date", "event_date_required", "Give the marriage date to add a spouse mid-term."
            )
        event_on = date.fromisoformat(event)
        window = policy.marriage_window_days if relation == "SPOUSE" else policy.newborn_window_days
        if effective < event_on:
            return _reason(
                "effective_date", "effective_before_event", "Cover cannot start before the event date."
            )
        if (today - event_on).days > window:
            what = "marriage" if relation == "SPOUSE" else "birth"
            return _reason(
                "event_date",
                "event_window_passed",
                f"Mid-term additions must come within {window} days of the {what}.",
            )
        return None
    return _reason(
        "relation", "mid_term_not_allowed", f"A {relation} can only be added from the policy's start date."
    )


def _policy_checks(lookups: _Lookups, values: dict, today: date) -> tuple[Policy | None, date, dict | None]:
    effective = date.fromisoformat(values["effective_date"])
    policy = lookups.policies.get(values["policy_number"])
    if policy is None or not policy.is_active:
        return (
            None,
            effective,
            _reason(
                "policy_number",
                "policy_not_found",
                f"No active policy {values['policy_number']} at this employer.",
            ),
        )
    if not (policy.start_date <= effective <= policy.end_date):
        return (
            policy,
            effective,
            _reason(
                "effective_date",
                "effective_date_outside_policy",
                f"Must be within the policy period {policy.start_date} to {policy.end_date}.",
            ),
        )
    if effective < today - timedelta(days=policy.backdating_limit_days):
        return (
            policy,
            effective,
            _reason(
                "effective_date",
                "backdated_too_far",
                f"At most {policy.backdating_limit_days} days in the past.",
            ),
        )
    return policy, effective, None


def _assess_add(lookups, values, policy, effective, today) -> tuple[dict | None, dict]:
    relation = values["relation"]
    code = values["employee_code"]
    plan = lookups.plans.get((policy.pk, values["plan_code"]))
    if plan is None:
        return _reason("plan_code", "plan_not_found", f"No plan {values['plan_code']} on this policy."), {}
    sum_insured = values["sum_insured"]
    if sum_insured not in [int(x) for x in plan.sum_insured_options]:
        return _reason(
            "sum_insured",
            "sum_insured_not_offered",
            f"Plan {plan.code} offers {', '.join(str(x) for x in plan.sum_insured_options)}.",
        ), {}
    age = pricing.age_on(date.fromisoformat(values["date_of_birth"]), effective)
    problem = _age_check(plan, relation, age)
    if problem:
        return problem, {}
    family = lookups.members.get(code, ())
    first_name = values["first_name"].casefold()
    for member in family:
        if member.relation != relation or (member.pk, policy.pk) not in lookups.open_cover:
            continue
        if relation in ("SELF", "SPOUSE") or member.first_name.casefold() == first_name:
            what = "the employee" if relation == "SELF" else f"this {relation}"
            return _reason("employee_code", "already_covered", f"{code}: {what} is already covered."), {}
    problem = _mid_term_check(policy, values, effective, today)
    if problem:
        return problem, {}
    annual = lookups.rates.annual_premium(
        plan_id=plan.pk, relation=relation, sum_insured=sum_insured, age=age
    )
    if annual is None:
        return _reason(
            "sum_insured",
            "rate_not_found",
            f"Plan {plan.code} has no rate for {relation}, age {age}, {sum_insured}.",
        ), {}
    price = pricing.addition_price(annual_premium=annual, policy=policy, effective_date=effective)
    key = member_key(employee_code=code, relation=relation, first_name=values["first_name"])
    return None, {
        "premium_amount": price.total,
        "tax_amount": price.tax,
        "member_id": None,
        "member_key": key,
        "policy_id": policy.pk,
    }


def _assess_existing(lookups, values, policy, effective, request_type) -> tuple[dict | None, dict]:
    member, problem = _member_resolve(lookups, values)
    if problem:
        return problem, {}
    cover = lookups.open_cover.get((member.pk, policy.pk))
    if cover is None:
        return _reason(
            "employee_code",
            "not_covered",
            f"{member.employee_code} {member.relation} has no cover on this policy.",
        ), {}
    if effective < cover.start_date:
        return _reason(
            "effective_date", "effective_before_cover", f"Cover started on {cover.start_date}."
        ), {}
    relation = member.relation
    key = member_key(employee_code=member.employee_code, relation=relation, first_name=member.first_name)
    base = {"member_id": member.pk, "member_key": key, "policy_id": policy.pk}
    old_plan = lookups.plans_by_id.get(cover.plan_id)
    if request_type == "DELETE":
        age = pricing.age_on(member.date_of_birth, max(cover.start_date, policy.start_date))
        annual = lookups.rates.annual_premium(
            plan_id=cover.plan_id, relation=relation, sum_insured=int(cover.sum_insured), age=age
        )
        if annual is None:
            return _reason(
                "sum_insured", "rate_not_found", "The cover's plan has no rate for this member."
            ), {}
        price = pricing.deletion_refund(
            annual_premium=annual, policy=policy, effective_date=effective, cover_start=cover.start_date
        )
        return None, {**base, "premium_amount": price.total, "tax_amount": price.tax}
    # CORRECTION: compare each new value with what is on record.
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
    changed = [c for c in CORRECTABLE if c in values and values[c] != current[c]]
    if not changed:
        return _reason("", "nothing_to_correct", "Every value given is already on record."), {}
    new_plan = lookups.plans.get((policy.pk, values["plan_code"])) if "plan_code" in values else old_plan
    if new_plan is None:
        return _reason("plan_code", "plan_not_found", f"No plan {values['plan_code']} on this policy."), {}
    new_sum = values.get("sum_insured", int(cover.sum_insured))
    if new_sum not in [int(x) for x in new_plan.sum_insured_options]:
        return _reason(
            "sum_insured",
            "sum_insured_not_offered",
            f"Plan {new_plan.code} offers {', '.join(str(x) for x in new_plan.sum_insured_options)}.",
        ), {}
    old_age = pricing.age_on(member.date_of_birth, effective)
    new_dob = (
        date.fromisoformat(values["date_of_birth"]) if "date_of_birth" in values else member.date_of_birth
    )
    new_age = pricing.age_on(new_dob, effective)
    problem = _age_check(new_plan, relation, new_age)
    if problem:
        return problem, {}
    old_annual = lookups.rates.annual_premium(
        plan_id=cover.plan_id, relation=relation, sum_insured=int(cover.sum_insured), age=old_age
    )
    new_annual = lookups.rates.annual_premium(
        plan_id=new_plan.pk, relation=relation, sum_insured=new_sum, age=new_age
    )
    if old_annual is None or new_annual is None:
        return _reason("sum_insured", "rate_not_found", "The plan has no rate for this member."), {}
    price = pricing.correction_price(
        old_annual_premium=old_annual, new_annual_premium=new_annual, policy=policy, effective_date=effective
    )
    return None, {**base, "premium_amount": price.total, "tax_amount": price.tax}


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

    Duplicates: a request repeats another live request with the same content hash. The
    original is the earliest of this set with that hash, or a stored live request, except
    a stored one still RECEIVED with a later id (that one is assessed after this one and
    will be the duplicate).
    """
    requests = sorted(endorsements, key=lambda r: r.pk)
    own_ids = {r.pk for r in requests}
    codes = {r.member_data.get("employee_code", "") for r in requests}
    lookups = _lookups_load(employer_id, codes, book)
    stored: dict[str, list[tuple[int, str, str, int | None, int | None]]] = {}
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
            stored.setdefault(row[1], []).append((row[0], row[2], row[3], row[4], row[5]))
    first_in_set: dict[str, Any] = {}

    def original_of(request) -> tuple[str, int | None, int | None] | None:
        """(tracking id, batch id, row number) of the request this one repeats, if any."""
        for pk, state, tracking_id, batch_id, row_number in stored.get(request.content_hash, ()):
            if state != "RECEIVED" or pk < request.pk:
                return tracking_id, batch_id, row_number
        earlier = first_in_set.setdefault(request.content_hash, request)
        if earlier is not request:
            return earlier.tracking_id, earlier.batch_id, earlier.row_number
        return None

    decisions: dict[int, Decision] = {}
    for request in requests:
        values = request.member_data
        original = original_of(request)
        if original:
            where = (
                f" (row {original[2]} of this file)"
                if original[1] is not None and original[1] == request.batch_id
                else ""
            )
            reason = _reason(
                "", "duplicate", f"Duplicate of {original[0]}{where}.", original_tracking_id=original[0]
            )
            decisions[request.pk] = Decision("REJECTED", {"rejection_reasons": [reason]}, duplicate=True)
            continue
        policy, effective, problem = _policy_checks(lookups, values, today)
        changes: dict = {}
        if problem is None:
            if request.type == "ADD":
                problem, changes = _assess_add(lookups, values, policy, effective, today)
            else:
                problem, changes = _assess_existing(lookups, values, policy, effective, request.type)
        if problem:
            decisions[request.pk] = Decision("REJECTED", {"rejection_reasons": [problem]})
        else:
            decisions[request.pk] = Decision("VALIDATED", changes)

    # A dependant needs an employee with cover, or an employee addition on its way.
    by_id = {r.pk: r for r in requests}
    validated_self_adds = {
        (d.changes["policy_id"], d.changes["member_key"])
        for pk, d in decisions.items()
        if d.state == "VALIDATED" and by_id[pk].type == "ADD" and by_id[pk].member_data["relation"] == "SELF"
    }
    dependant_adds = [
        r
        for r in requests
        if decisions[r.pk].state == "VALIDATED" and r.type == "ADD" and r.member_data["relation"] != "SELF"
    ]
    if dependant_adds:
        pending_self = {
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
                type="ADD",
                state__in=LIVE_STATES,
            )
            if pk not in own_ids
        }
        for r in dependant_adds:
            code = r.member_data["employee_code"]
            policy_id = decisions[r.pk].changes["policy_id"]
            employee = next((m for m in lookups.members.get(code, ()) if m.relation == "SELF"), None)
            covered = employee is not None and (employee.pk, policy_id) in lookups.open_cover
            key = f"{code}|SELF"
            if not (covered or (policy_id, key) in pending_self or (policy_id, key) in validated_self_adds):
                decisions[r.pk] = Decision(
                    "REJECTED",
                    {
                        "rejection_reasons": [
                            _reason(
                                "employee_code",
                                "employee_not_covered",
                                f"Employee {code} has no cover on this policy (nor an addition on its way).",
                            )
                        ]
                    },
                )

    # Supersede: the newest request per member and policy wins.
    superseded_older: list[tuple[EndorsementRequest, int]] = []
    groups: dict[tuple[int, str], list[int]] = {}
    for pk, decision in decisions.items():
        if decision.state == "VALIDATED":
            groups.setdefault((decision.changes["policy_id"], decision.changes["member_key"]), []).append(pk)
    if groups:
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
        for older in EndorsementRequest.objects.filter(pk__in=older_ids) if older_ids else ():
            ids = groups.get((older.policy_id, older.member_key))
            if ids:
                groups[(older.policy_id, older.member_key)] = sorted([*ids, older.pk])
                by_id.setdefault(older.pk, older)
        for ids in groups.values():
            ids.sort()
            winner = ids[-1]
            for loser in ids[:-1]:
                if loser in decisions:
                    decisions[loser] = Decision(
                        "SUPERSEDED", {**decisions[loser].changes, "superseded_by_id": winner}
                    )
                else:
                    superseded_older.append((by_id[loser], winner))
    return Assessment(decisions=decisions, superseded_older=superseded_older)
