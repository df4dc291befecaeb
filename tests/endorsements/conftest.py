"""Fixtures for intake tests: one employer's policy around today, a plan and its rate card.

The policy runs for a year from 120 days ago, so "mid-term" rules apply to an effective
date of today and every date stays valid whenever the suite runs.
"""

import datetime
from dataclasses import dataclass

import pytest
from django.utils import timezone

from endorsements.models import Coverage, Member, Plan, PlanRate, Policy
from tests.factories import CoverageFactory, InsurerFactory, MemberFactory, PolicyFactory


@dataclass
class Book:
    employer: object
    policy: Policy
    plan: Plan
    today: datetime.date

    def add_row(self, **overrides) -> dict:
        """A valid ADD of a new joiner (SELF), as the API/CSV columns."""
        row = {
            "action": "ADD",
            "employee_code": "E1001",
            "relation": "SELF",
            "first_name": "Asha",
            "last_name": "Rao",
            "date_of_birth": "1990-05-17",
            "gender": "F",
            "email": "asha.rao@example.com",
            "phone": "+919812345678",
            "date_of_joining": (self.today - datetime.timedelta(days=5)).isoformat(),
            "effective_date": self.today.isoformat(),
            "policy_number": self.policy.number,
            "plan_code": self.plan.code,
            "sum_insured": "500000",
        }
        row.update(overrides)
        return {k: v for k, v in row.items() if v is not None}

    def covered_member(self, *, code: str, relation: str = "SELF", primary=None, **fields) -> Member:
        member = MemberFactory(
            employer=self.employer, employee_code=code, relation=relation, primary=primary, **fields
        )
        CoverageFactory(
            member=member,
            plan=self.plan,
            policy=self.policy,
            sum_insured=500000,
            start_date=self.policy.start_date,
            status=Coverage.Status.ACTIVE,
        )
        return member


def rate_card(plan: Plan) -> None:
    """Annual premiums in paise: SELF/SPOUSE 18-35 ₹12,000 and 36-65 ₹18,000 at 5 lakh; less at 3 lakh."""
    cells = []
    for relation in ("SELF", "SPOUSE"):
        cells += [
            (relation, 18, 35, 500000, 1_200_000),
            (relation, 36, 65, 500000, 1_800_000),
            (relation, 18, 35, 300000, 900_000),
            (relation, 36, 65, 300000, 1_350_000),
        ]
    cells += [("CHILD", 0, 25, 500000, 600_000), ("CHILD", 0, 25, 300000, 450_000)]
    cells += [("PARENT", 35, 80, 500000, 3_000_000), ("PARENT_IN_LAW", 35, 80, 500000, 3_000_000)]
    PlanRate.objects.bulk_create(
        PlanRate(plan=plan, relation=r, age_from=a, age_to=b, sum_insured=s, annual_premium=p)
        for r, a, b, s, p in cells
    )


@pytest.fixture
def today():
    return timezone.localdate()


@pytest.fixture
def book(employer, today) -> Book:
    return book_create(employer, today)


def book_create(employer, today: datetime.date, *, insurer=None, number: str = "GHP-2026-001") -> Book:
    """The employer's policy (a year from 120 days before `today`) at `insurer` (a new one by
    default), its GOLD plan and rate card."""
    start = today - datetime.timedelta(days=120)
    policy = PolicyFactory(
        employer=employer,
        insurer=insurer or InsurerFactory(),
        number=number,
        start_date=start,
        end_date=start + datetime.timedelta(days=364),
    )
    plan = Plan.objects.create(
        policy=policy,
        code="GOLD",
        name="Gold",
        sum_insured_options=[300000, 500000],
        age_limits={"SELF": [18, 65], "SPOUSE": [18, 65], "CHILD": [0, 25], "PARENT": [35, 80]},
    )
    rate_card(plan)
    return Book(employer=employer, policy=policy, plan=plan, today=today)


@pytest.fixture
def portal_hr(client, book):
    """A test client signed in to the portal as an HR user of `book`'s employer (on `.book`)."""
    from tests.factories import hr_user_create

    client.force_login(hr_user_create(employer=book.employer))
    client.book = book
    return client
