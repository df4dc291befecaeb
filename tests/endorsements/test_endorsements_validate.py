"""Business rules of `endorsements.services.endorsements_validate` (via `assessment.endorsements_assess`).

Each case submits through `endorsement_submit` (as the API does) and lets validation run
on commit, then asserts the decision and its reasons exactly.
"""

import datetime
import functools

import pytest

from ems.tenancy import Caller
from endorsements.models import Coverage, EndorsementRequest, Plan
from endorsements.services import endorsement_submit
from ledger.models import Hold
from tests.factories import AccountFactory, EmployerFactory, MemberFactory, PlanFactory, PlanRateFactory
from tests.ledger.conftest import APPROVER_CODENAMES, fund, user_with_ledger_permissions


@pytest.fixture
def submit(book, django_capture_on_commit_callbacks):
    caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")

    def go(row: dict, who: Caller = caller) -> EndorsementRequest:
        with django_capture_on_commit_callbacks(execute=True):
            request = endorsement_submit(caller=who, data=row)
        request.refresh_from_db()
        return request

    return go


def reasons(request):
    return [(r["field"], r["code"]) for r in request.rejection_reasons]


def days(n):
    return datetime.timedelta(days=n)


def test_an_employee_already_covered_cannot_be_added_again(book, submit):
    book.covered_member(code="E1001")
    request = submit(book.add_row())
    assert request.state == "REJECTED"
    assert request.rejection_reasons == [
        {
            "field": "employee_code",
            "code": "already_covered",
            "message": "E1001: the employee is already covered.",
        }
    ]
    assert request.premium_amount is None


def test_a_deletion_needs_cover_and_is_priced_as_an_expected_refund(book, submit):
    book.covered_member(code="E1", date_of_birth=datetime.date(1980, 1, 1))
    deletion = {
        "action": "DELETE",
        "employee_code": "E1",
        "relation": "SELF",
        "policy_number": book.policy.number,
    }
    request = submit({**deletion, "effective_date": book.today.isoformat()})
    # 1,800,000 (age 46 at cover start, 5 lakh) × 245 / 365 = 1,208,219 back; tax 217,479
    assert request.state == "VALIDATED"
    assert (request.premium_amount, request.tax_amount) == (-1_425_698, -217_479)
    uncovered = submit({**deletion, "employee_code": "E404", "effective_date": book.today.isoformat()})
    assert uncovered.state == "REJECTED"
    assert uncovered.rejection_reasons == [
        {
            "field": "employee_code",
            "code": "member_not_found",
            "message": "No SELF member E404 at this employer.",
        }
    ]


def test_an_employee_code_of_another_employer_is_not_found_here(book, submit):
    MemberFactory(employer=EmployerFactory(), employee_code="X-77", relation="SELF")
    row = {
        "action": "DELETE",
        "employee_code": "X-77",
        "relation": "SELF",
        "policy_number": book.policy.number,
    }
    request = submit({**row, "effective_date": book.today.isoformat()})
    assert request.state == "REJECTED"
    assert reasons(request) == [("employee_code", "member_not_found")]


def test_a_correction_of_sum_insured_pays_the_difference(book, submit):
    member = book.covered_member(code="E2", date_of_birth=datetime.date(1980, 1, 1))
    row = {
        "action": "CORRECTION",
        "employee_code": "E2",
        "relation": "SELF",
        "policy_number": book.policy.number,
    }
    request = submit({**row, "effective_date": book.today.isoformat(), "sum_insured": "300000"})
    # 1,350,000 - 1,800,000 = -450,000 × 245 / 365 = -302,054.79 -> -302,055; tax -54,369.9 -> -54,370
    assert request.state == "VALIDATED"
    assert (request.premium_amount, request.tax_amount) == (-356_425, -54_370)
    assert request.member_id == member.pk
    same = submit({**row, "effective_date": book.today.isoformat(), "sum_insured": "500000"})
    assert same.state == "REJECTED"
    assert reasons(same) == [("", "nothing_to_correct")]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"policy_number": "NOPE-1"}, ("policy_number", "policy_not_found")),
        ({"plan_code": "PLATINUM"}, ("plan_code", "plan_not_found")),
        ({"sum_insured": "700000"}, ("sum_insured", "sum_insured_not_offered")),
        ({"date_of_birth": "2010-01-01"}, ("date_of_birth", "age_out_of_range")),
        ({"date_of_joining": None}, ("date_of_joining", "joining_date_required")),
    ],
)
def test_additions_break_one_rule_each(book, submit, overrides, expected):
    request = submit(book.add_row(**overrides))
    assert request.state == "REJECTED"
    assert reasons(request) == [expected]


def test_effective_dates_must_fit_the_policy_and_the_backdating_limit(book, submit):
    late = submit(book.add_row(effective_date=(book.policy.end_date + days(1)).isoformat()))
    assert reasons(late) == [("effective_date", "effective_date_outside_policy")]
    book.policy.backdating_limit_days = 10
    book.policy.save(update_fields=["backdating_limit_days"])
    backdated = submit(
        book.add_row(
            employee_code="E5",
            effective_date=(book.today - days(11)).isoformat(),
            date_of_joining=(book.today - days(12)).isoformat(),
        )
    )
    assert backdated.rejection_reasons == [
        {"field": "effective_date", "code": "backdated_too_far", "message": "At most 10 days in the past."}
    ]


def test_mid_term_joiners_must_come_within_the_window(book, submit):
    stale = submit(book.add_row(date_of_joining=(book.today - days(31)).isoformat()))
    assert stale.rejection_reasons == [
        {
            "field": "date_of_joining",
            "code": "joiner_window_passed",
            "message": "Mid-term additions must come within 30 days of joining.",
        }
    ]
    on_time = submit(book.add_row(employee_code="E6", date_of_joining=(book.today - days(30)).isoformat()))
    assert on_time.state == "VALIDATED"


def dependant(book, relation, **fields):
    row = book.add_row(**{"first_name": "Ravi", "date_of_birth": "1988-03-03", "gender": "M", **fields})
    row["relation"] = relation
    for column in ("email", "phone", "date_of_joining"):
        row.pop(column)
    return row


def test_a_spouse_needs_a_covered_employee_a_recent_marriage_and_is_the_only_one(book, submit):
    alone = submit(dependant(book, "SPOUSE", event_date=(book.today - days(3)).isoformat()))
    assert reasons(alone) == [("employee_code", "employee_not_covered")]
    employee = book.covered_member(code="E1001")
    spouse = submit(dependant(book, "SPOUSE", event_date=(book.today - days(3)).isoformat()))
    assert spouse.state == "VALIDATED"
    assert spouse.member_key == "E1001|SPOUSE"
    old_marriage = submit(
        dependant(book, "SPOUSE", employee_code="E1001", event_date=(book.today - days(40)).isoformat())
    )
    assert reasons(old_marriage) == [("event_date", "event_window_passed")]
    # a covered spouse already exists
    book.covered_member(code="E1001", relation="SPOUSE", primary=employee, first_name="Mira")
    second = submit(
        dependant(book, "SPOUSE", first_name="Zoya", event_date=(book.today - days(2)).isoformat())
    )
    assert reasons(second) == [("employee_code", "already_covered")]


def test_a_spouse_may_join_with_an_employee_addition_on_its_way(book, submit):
    submit(book.add_row())
    spouse = submit(dependant(book, "SPOUSE", event_date=(book.today - days(3)).isoformat()))
    assert spouse.state == "VALIDATED"


def test_a_newborn_within_the_window_is_added_and_a_parent_is_not_added_mid_term(book, submit):
    book.covered_member(code="E1001")
    born = (book.today - days(10)).isoformat()
    child = submit(dependant(book, "CHILD", date_of_birth=born, event_date=born, first_name="Tara"))
    assert child.state == "VALIDATED"
    assert child.member_key == "E1001|CHILD|tara"
    parent = submit(dependant(book, "PARENT", date_of_birth="1955-01-01"))
    assert reasons(parent) == [("relation", "mid_term_not_allowed")]


def test_a_duplicate_of_a_live_request_names_the_original(book, submit):
    first = submit(book.add_row())
    second = submit(book.add_row(first_name="ASHA "))
    assert second.state == "REJECTED"
    assert second.rejection_reasons == [
        {
            "field": "",
            "code": "duplicate",
            "message": f"Duplicate of {first.tracking_id}.",
            "original_tracking_id": first.tracking_id,
        }
    ]


def test_a_rejected_request_does_not_block_its_corrected_resubmission(book, submit):
    bad = submit(book.add_row(plan_code="PLATINUM"))
    assert bad.state == "REJECTED"
    again = submit(book.add_row(plan_code="PLATINUM"))
    assert reasons(again) == [("plan_code", "plan_not_found")]


def test_a_newer_request_for_the_same_member_supersedes_an_unsent_one(book, submit):
    older = submit(book.add_row(sum_insured="300000"))
    newer = submit(book.add_row(sum_insured="500000"))
    older.refresh_from_db()
    assert newer.state == "VALIDATED"
    assert older.state == "SUPERSEDED"
    assert older.superseded_by_id == newer.pk
    assert older.closed_at is not None
    assert list(older.transitions.values_list("to_state", "reason")) == [
        ("RECEIVED", ""),
        ("VALIDATED", ""),
        ("SUPERSEDED", f"superseded by {newer.tracking_id}"),
    ]


def test_superseding_a_fund_locked_request_releases_its_hold(book, submit):
    from endorsements.transitions import endorsement_transition
    from ledger.services import hold_place

    account = AccountFactory(employer=book.employer, insurer=book.policy.insurer)
    fund(account, 5_000_000, user_with_ledger_permissions(*APPROVER_CODENAMES, is_staff=True))
    older = submit(book.add_row(sum_insured="300000"))
    hold_place(
        account_id=account.pk,
        amount=older.premium_amount,
        reference=older.tracking_id,
        idempotency_key=f"hold:{older.tracking_id}",
        actor="test",
    )
    endorsement_transition(endorsement=older, to_state="FUND_LOCKED", actor="test")
    newer = submit(book.add_row(sum_insured="500000"))
    older.refresh_from_db()
    assert older.state == "SUPERSEDED"
    assert older.superseded_by_id == newer.pk
    hold = Hold.objects.get(reference=older.tracking_id)
    assert hold.state == "RELEASED"
    account.refresh_from_db()
    assert account.held == 0


def test_a_sent_request_is_not_superseded(book, submit):
    from endorsements.transitions import endorsement_transition

    older = submit(book.add_row(sum_insured="300000"))
    endorsement_transition(endorsement=older, to_state="SENT", actor="test")
    newer = submit(book.add_row(sum_insured="500000"))
    older.refresh_from_db()
    assert older.state == "SENT"
    assert newer.state == "VALIDATED"
    assert Coverage.objects.count() == 0


# --- age limits per plan and relation ------------------------------------------------------


def born_aged(age: int, on: datetime.date) -> datetime.date:
    """The latest date of birth that makes someone `age` full years old on `on`."""
    try:
        return on.replace(year=on.year - age)
    except ValueError:  # 29 February, in a year without one
        return on.replace(year=on.year - age, day=28)


def age_out_of_range(age: int, low: int, high: int, relation: str, plan_code: str) -> list[dict]:
    return [
        {
            "field": "date_of_birth",
            "code": "age_out_of_range",
            "message": f"Age {age} on the effective date is outside {low}–{high}"
            f" for {relation} on plan {plan_code}.",
        }
    ]


def existing(book, action: str, code: str, relation: str = "SELF", **fields) -> dict:
    """A DELETE or CORRECTION row for a member on record, effective today unless given."""
    return {
        "action": action,
        "employee_code": code,
        "relation": relation,
        "policy_number": book.policy.number,
        "effective_date": book.today.isoformat(),
        **fields,
    }


def test_a_child_is_refused_above_the_plans_child_limit_and_accepted_at_it(book, submit):
    # given a covered employee, and additions effective on the policy's first day (so no
    # mid-term rule applies) on GOLD, whose CHILD limit is 0-25
    book.policy.backdating_limit_days = 365
    book.policy.save(update_fields=["backdating_limit_days"])
    book.covered_member(code="E1001")
    start = book.policy.start_date
    first_day = {"effective_date": start.isoformat()}
    # when a child aged 26 on that day is added, it is refused
    too_old = submit(dependant(book, "CHILD", date_of_birth=born_aged(26, start).isoformat(), **first_day))
    assert too_old.state == "REJECTED"
    assert too_old.rejection_reasons == age_out_of_range(26, 0, 25, "CHILD", "GOLD")
    assert too_old.premium_amount is None
    # and a child one day short of 26 is accepted at the full year's ₹6,000 plus 18% tax
    at_limit = born_aged(26, start) + days(1)
    child = submit(
        dependant(book, "CHILD", first_name="Kabir", date_of_birth=at_limit.isoformat(), **first_day)
    )
    assert child.state == "VALIDATED"
    assert (child.premium_amount, child.tax_amount) == (708_000, 108_000)


def silver(book, **age_limits) -> Plan:
    """A second plan on the book's policy: its own age limits, 5 lakh at ₹15,000 a year for 18-65."""
    plan = PlanFactory(policy=book.policy, code="SILVER", sum_insured_options=[500000], age_limits=age_limits)
    PlanRateFactory(plan=plan, relation="SELF", age_from=18, age_to=65, annual_premium=1_500_000)
    return plan


def test_another_plan_applies_its_own_age_limits_to_the_same_relation(book, submit):
    # given GOLD takes employees up to 65 and SILVER only up to 55
    silver(book, SELF=[18, 55])
    aged_56 = born_aged(56, book.today)
    # when the same 56-year-old joins each plan
    on_gold = submit(book.add_row(employee_code="E1", date_of_birth=aged_56.isoformat()))
    on_silver = submit(
        book.add_row(employee_code="E2", date_of_birth=aged_56.isoformat(), plan_code="SILVER")
    )
    # then GOLD accepts and SILVER refuses, naming its own limits
    assert on_gold.state == "VALIDATED"
    assert on_silver.state == "REJECTED"
    assert on_silver.rejection_reasons == age_out_of_range(56, 18, 55, "SELF", "SILVER")
    assert on_silver.premium_amount is None
    # and a 55-year-old joins SILVER: 1,500,000 × 245 / 365 = 1,006,849; tax 181,233
    aged_55 = born_aged(56, book.today) + days(1)
    at_limit = submit(book.add_row(employee_code="E3", date_of_birth=aged_55.isoformat(), plan_code="SILVER"))
    assert at_limit.state == "VALIDATED"
    assert (at_limit.premium_amount, at_limit.tax_amount) == (1_188_082, 181_233)


def test_a_correction_is_refused_when_the_new_birth_date_or_plan_puts_the_age_out_of_limits(book, submit):
    # given an employee aged 46 covered on GOLD (SELF 18-65), and SILVER taking SELF 18-40
    born = born_aged(46, book.today)
    member = book.covered_member(code="E2", date_of_birth=born)
    silver(book, SELF=[18, 40])
    correction = functools.partial(existing, book, "CORRECTION", "E2")
    # when the birth date is corrected to one that makes the employee 66, or 17
    too_old = submit(correction(date_of_birth=born_aged(66, book.today).isoformat()))
    too_young = submit(correction(date_of_birth=(born_aged(18, book.today) + days(1)).isoformat()))
    # then each is refused by GOLD's limits, with nothing priced
    assert too_old.rejection_reasons == age_out_of_range(66, 18, 65, "SELF", "GOLD")
    assert too_young.rejection_reasons == age_out_of_range(17, 18, 65, "SELF", "GOLD")
    # and a move to SILVER is refused for the age on record
    moved = submit(correction(plan_code="SILVER"))
    assert moved.rejection_reasons == age_out_of_range(46, 18, 40, "SELF", "SILVER")
    assert [r.premium_amount for r in (too_old, too_young, moved)] == [None, None, None]
    # while a birth date making the employee 30 moves them to the 18-35 band:
    # (1,200,000 - 1,800,000) × 245 / 365 = -402,739.73 -> -402,740; tax -72,493
    younger = submit(correction(date_of_birth=born_aged(30, book.today).isoformat()))
    assert younger.state == "VALIDATED"
    assert (younger.premium_amount, younger.tax_amount) == (-475_233, -72_493)
    member.refresh_from_db()
    assert member.date_of_birth == born


# --- a deletion or correction needs the member's open cover -------------------------------


@pytest.mark.parametrize(("action", "fields"), [("DELETE", {}), ("CORRECTION", {"sum_insured": "300000"})])
def test_a_member_whose_cover_has_ended_is_not_covered(book, submit, action, fields):
    # given an employee on record whose cover on this policy ended yesterday
    member = book.covered_member(code="E3")
    Coverage.objects.filter(member=member).update(status=Coverage.Status.ENDED, end_date=book.today - days(1))
    # when
    request = submit(existing(book, action, "E3", **fields))
    # then
    assert request.state == "REJECTED"
    assert request.rejection_reasons == [
        {"field": "employee_code", "code": "not_covered", "message": "E3 SELF has no cover on this policy."}
    ]
    assert (request.member_id, request.premium_amount) == (None, None)


@pytest.mark.parametrize(("action", "fields"), [("DELETE", {}), ("CORRECTION", {"sum_insured": "300000"})])
def test_a_change_cannot_take_effect_before_the_cover_started(book, submit, action, fields):
    # given cover that started five days ago
    member = book.covered_member(code="E4", date_of_birth=datetime.date(1980, 1, 1))
    started = book.today - days(5)
    Coverage.objects.filter(member=member).update(start_date=started)
    # when the change is effective the day before
    early = submit(existing(book, action, "E4", effective_date=(started - days(1)).isoformat(), **fields))
    # then
    assert early.state == "REJECTED"
    assert early.rejection_reasons == [
        {
            "field": "effective_date",
            "code": "effective_before_cover",
            "message": f"Cover started on {started}.",
        }
    ]
    assert early.premium_amount is None
    # and on the day the cover started it is accepted
    on_start = submit(existing(book, action, "E4", effective_date=started.isoformat(), **fields))
    assert on_start.state == "VALIDATED"
    assert on_start.member_id == member.pk


def test_a_deletion_among_several_children_must_say_which_one(book, submit):
    # given an employee with two covered children
    employee = book.covered_member(code="E1001")
    tara, veer = (
        book.covered_member(
            code="E1001", relation="CHILD", primary=employee, first_name=name, date_of_birth=born
        )
        for name, born in (("Tara", datetime.date(2015, 1, 1)), ("Veer", datetime.date(2018, 6, 6)))
    )
    deletion = functools.partial(existing, book, "DELETE", "E1001", "CHILD")
    ambiguous = [
        {
            "field": "first_name",
            "code": "member_ambiguous",
            "message": "E1001 has several CHILD members; give the first name (or date of birth) of one.",
        }
    ]
    # when neither is named, or the name and birth date match neither, then it is refused
    unnamed = submit(deletion())
    assert unnamed.state == "REJECTED"
    assert unnamed.rejection_reasons == ambiguous
    assert (unnamed.member_id, unnamed.premium_amount) == (None, None)
    nobody = submit(deletion(first_name="Nina", date_of_birth="2016-02-02"))
    assert nobody.rejection_reasons == ambiguous
    # and a first name (any case) or a birth date picks one
    by_name = submit(deletion(first_name="VEER"))
    assert (by_name.state, by_name.member_id, by_name.member_key) == (
        "VALIDATED",
        veer.pk,
        "E1001|CHILD|veer",
    )
    by_birth = submit(deletion(first_name="Nina", date_of_birth="2015-01-01"))
    assert (by_birth.state, by_birth.member_id, by_birth.member_key) == (
        "VALIDATED",
        tara.pk,
        "E1001|CHILD|tara",
    )


# --- the newborn window --------------------------------------------------------------------


@pytest.fixture
def newborn(book):
    """A covered employee, a 14-day newborn window, and a CHILD addition effective today."""
    book.covered_member(code="E1001")
    book.policy.newborn_window_days = 14
    book.policy.save(update_fields=["newborn_window_days"])

    def row(*, born: datetime.date, event: datetime.date | None = None, **fields) -> dict:
        event_date = {"event_date": event.isoformat()} if event else {}
        return dependant(
            book, "CHILD", first_name="Tara", date_of_birth=born.isoformat(), **event_date, **fields
        )

    return row


WINDOW_PASSED = [
    {
        "field": "event_date",
        "code": "event_window_passed",
        "message": "Mid-term additions must come within 14 days of the birth.",
    }
]


def test_a_child_born_before_the_newborn_window_is_refused(book, submit, newborn):
    late = submit(newborn(born=book.today - days(15), event=book.today - days(15)))
    assert late.state == "REJECTED"
    assert late.rejection_reasons == WINDOW_PASSED
    assert late.premium_amount is None
    # 600,000 × 245 / 365 = 402,740; tax 72,493
    on_time = submit(newborn(born=book.today - days(14), event=book.today - days(14)))
    assert on_time.state == "VALIDATED"
    assert (on_time.premium_amount, on_time.tax_amount) == (475_233, 72_493)


def test_without_an_event_date_the_childs_birth_date_opens_the_window(book, submit, newborn):
    late = submit(newborn(born=book.today - days(15)))
    assert late.state == "REJECTED"
    assert late.rejection_reasons == WINDOW_PASSED
    on_time = submit(newborn(born=book.today - days(14)))
    assert on_time.state == "VALIDATED"
    # and an event date, when given, opens the window instead (an adoption of an older child)
    adopted = submit(newborn(born=datetime.date(2020, 3, 3), event=book.today - days(3)))
    assert adopted.state == "VALIDATED"
