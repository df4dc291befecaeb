"""Business rules of `endorsements.services.endorsements_validate` (via `validation.endorsements_assess`).

Each case submits through `endorsement_submit` (as the API does) and lets validation run
on commit, then asserts the decision and its reasons exactly.
"""

import datetime

import pytest

from ems.tenancy import Caller
from endorsements.models import Coverage, EndorsementRequest
from endorsements.services import endorsement_submit
from ledger.models import Hold
from tests.factories import AccountFactory, EmployerFactory, MemberFactory
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
