"""What the business rules read: an employer's policy book (policies, plans, rate card;
read once per file) and, for one set of requests, the members they name and their open
covers. One query each for the whole set, never per row; rows with the attributes the
rules read, not model instances (a chunk of a file names thousands of employee codes).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import F

from endorsements import pricing
from endorsements.bulk_writes import filter_any
from endorsements.models import Coverage, Member, Plan, PlanRate, Policy


@dataclass
class Lookups:
    """What the rules read for one set of requests: the book and the members it names."""

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
    "primary_id",
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
        # The insurer's SLA allowances ride along (one join, no query): a validated
        # request's deadline is set in the write that validates it (pipeline/sla.py).
        policies={
            p.number.upper(): p
            for p in Policy.objects.filter(employer_id=employer_id)
            .order_by()
            .annotate(
                sla_inclusion_days=F("insurer__sla_inclusion_days"),
                sla_correction_days=F("insurer__sla_correction_days"),
            )
        },
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


def lookups_load(employer_id: int, codes: Iterable[str], book: PolicyBook | None) -> Lookups:
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
    return Lookups(
        policies=policies,
        plans=plans,
        plans_by_id={plan.pk: plan for plan in plans.values()},
        rates=rates,
        members=members,
        open_cover=open_cover,
    )
