"""Pricing an endorsement: rate card lookup, pro rata, tax. Integer minor units only.

How it works
- The annual premium comes from the plan's rate card: relation × age band (age in full
  years on the effective date) × sum insured (`RateCard`, built once per batch).
- Additions pay pro rata by day: `annual × days_remaining ÷ days_in_term`, where
  `days_remaining` counts from the effective date to the policy's last day, both
  included, and `days_in_term` is the whole policy term, both ends included (366 when
  the term contains 29 February).
- Deletions are refunded by the policy's `refund_method`: `DAILY` (the same formula as an
  addition, from the effective date — the first day without cover — to the last day) or
  `SHORT_PERIOD` (the insurer keeps a percentage of the premium charged for the cover,
  looked up by the months the cover was in force; see `short_period_retained_percent`).
- Corrections pay (or are refunded) the difference between the new and the old annual
  premium, pro rata by day from the effective date.
- Tax is `premium × tax_rate_bps ÷ 10000`, computed on the rounded premium.

One rounding rule, everywhere: each division is rounded half-up to the paisa, i.e. to the
nearest integer, halves away from zero (a refund of -0.5 paise becomes -1). Premium and tax
are each rounded once; the total is their sum. Credits are negative.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Protocol


class PolicyTerms(Protocol):
    start_date: date
    end_date: date
    tax_rate_bps: int
    refund_method: str
    short_period_scale: list


@dataclass(frozen=True)
class Price:
    premium: int  # signed minor units, before tax
    tax: int  # signed minor units

    @property
    def total(self) -> int:
        return self.premium + self.tax


ZERO = Price(premium=0, tax=0)


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator ÷ denominator rounded to the nearest integer, halves away from zero."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    magnitude = (2 * abs(numerator) + denominator) // (2 * denominator)
    return magnitude if numerator >= 0 else -magnitude


def age_on(date_of_birth: date, on: date) -> int:
    """Age in full years on a date (someone born on 29 February turns a year older on 1 March)."""
    years = on.year - date_of_birth.year
    if (on.month, on.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years


def days_in_term(policy: PolicyTerms) -> int:
    return (policy.end_date - policy.start_date).days + 1


def days_remaining(policy: PolicyTerms, effective_date: date) -> int:
    """Days from the effective date to the policy's last day, both included."""
    return (policy.end_date - effective_date).days + 1


def tax_on(premium: int, tax_rate_bps: int) -> int:
    return round_half_up(premium * tax_rate_bps, 10000)


def _priced(premium: int, policy: PolicyTerms) -> Price:
    return Price(premium=premium, tax=tax_on(premium, policy.tax_rate_bps))


def pro_rata_daily(annual_premium: int, policy: PolicyTerms, effective_date: date) -> int:
    return round_half_up(annual_premium * days_remaining(policy, effective_date), days_in_term(policy))


def addition_price(*, annual_premium: int, policy: PolicyTerms, effective_date: date) -> Price:
    return _priced(pro_rata_daily(annual_premium, policy, effective_date), policy)


def correction_price(
    *, old_annual_premium: int, new_annual_premium: int, policy: PolicyTerms, effective_date: date
) -> Price:
    difference = new_annual_premium - old_annual_premium
    if difference == 0:
        return ZERO
    return _priced(pro_rata_daily(difference, policy, effective_date), policy)


def months_in_force(cover_start: date, effective_date: date) -> int:
    """Started months of cover before the effective date (a part month counts as a month)."""
    months = (effective_date.year - cover_start.year) * 12 + (effective_date.month - cover_start.month)
    if effective_date.day > cover_start.day:
        months += 1
    return max(months, 0)


def short_period_retained_percent(scale: Iterable, months: int) -> int:
    """The percentage of premium the insurer keeps after `months` of cover.

    `scale` is `[[months_up_to, percent_retained], ...]` in increasing months; the first
    row whose months_up_to reaches `months` applies; past the last row the insurer keeps
    100%. No cover at all (0 months) keeps nothing.
    """
    if months <= 0:
        return 0
    for months_up_to, percent in sorted((int(m), int(p)) for m, p in scale):
        if months <= months_up_to:
            return percent
    return 100


def deletion_refund(
    *, annual_premium: int, policy: PolicyTerms, effective_date: date, cover_start: date
) -> Price:
    """The refund expected for a deletion (negative), by the policy's refund method."""
    if policy.refund_method == "SHORT_PERIOD":
        charged_from = max(cover_start, policy.start_date)
        charged = pro_rata_daily(annual_premium, policy, charged_from)
        retained = short_period_retained_percent(
            policy.short_period_scale, months_in_force(charged_from, effective_date)
        )
        refund = round_half_up(charged * (100 - retained), 100)
    else:
        refund = pro_rata_daily(annual_premium, policy, effective_date)
    return _priced(-refund, policy)


@dataclass(frozen=True)
class RateBand:
    age_from: int
    age_to: int
    annual_premium: int


class RateCard:
    """Every rate cell of some plans, loaded once, looked up without a query."""

    def __init__(self, rates: Iterable) -> None:
        self._bands: dict[tuple[int, str, int], list[RateBand]] = {}
        for rate in rates:
            key = (rate.plan_id, rate.relation, int(rate.sum_insured))
            self._bands.setdefault(key, []).append(RateBand(rate.age_from, rate.age_to, rate.annual_premium))

    def annual_premium(self, *, plan_id: int, relation: str, sum_insured: int, age: int) -> int | None:
        for band in self._bands.get((plan_id, relation, sum_insured), ()):
            if band.age_from <= age <= band.age_to:
                return band.annual_premium
        return None
