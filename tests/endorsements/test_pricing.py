"""Worked examples for `endorsements.pricing`, each figure computed by hand.

Policy P: 2026-04-01 to 2027-03-31 inclusive = 365 days; GST 18%. Annual premium ₹12,000
= 1,200,000 paise. Rounding: half-up to the paisa (halves away from zero), premium and
tax each rounded once.
"""

from datetime import date
from types import SimpleNamespace

import pytest

from endorsements.pricing import (
    Price,
    RateCard,
    addition_price,
    age_on,
    correction_price,
    days_in_term,
    deletion_refund,
    months_in_force,
    round_half_up,
    short_period_retained_percent,
)


def policy(start=date(2026, 4, 1), end=date(2027, 3, 31), refund_method="DAILY", scale=()):
    return SimpleNamespace(
        start_date=start,
        end_date=end,
        tax_rate_bps=1800,
        refund_method=refund_method,
        short_period_scale=list(scale),
    )


def test_a_member_added_on_the_first_day_pays_the_whole_annual_premium_plus_tax():
    # 1,200,000 × 365/365 = 1,200,000; tax 18% = 216,000.
    price = addition_price(annual_premium=1_200_000, policy=policy(), effective_date=date(2026, 4, 1))
    assert price == Price(premium=1_200_000, tax=216_000)
    assert price.total == 1_416_000


def test_a_mid_year_joiner_pays_for_the_days_left_including_the_effective_date():
    # 2026-10-01 .. 2027-03-31 = 31+30+31+31+28+31 = 182 days.
    # 1,200,000 × 182 / 365 = 598,356.16 -> 598,356; tax 107,704.08 -> 107,704.
    price = addition_price(annual_premium=1_200_000, policy=policy(), effective_date=date(2026, 10, 1))
    assert price == Price(premium=598_356, tax=107_704)
    assert price.total == 706_060


def test_an_addition_on_the_last_day_of_the_term_pays_for_one_day():
    # 1,200,000 / 365 = 3,287.67 -> 3,288; tax 591.84 -> 592.
    price = addition_price(annual_premium=1_200_000, policy=policy(), effective_date=date(2027, 3, 31))
    assert price == Price(premium=3_288, tax=592)


def test_a_leap_year_term_has_366_days_and_counts_29_february():
    leap = policy(start=date(2027, 4, 1), end=date(2028, 3, 31))
    assert days_in_term(leap) == 366
    # 2028-02-29 .. 2028-03-31 = 1 + 31 = 32 days: 1,200,000 × 32 / 366 = 104,918.03 -> 104,918;
    # tax 18,885.24 -> 18,885.
    price = addition_price(annual_premium=1_200_000, policy=leap, effective_date=date(2028, 2, 29))
    assert price == Price(premium=104_918, tax=18_885)


def test_a_half_paisa_of_tax_rounds_up():
    # 9,125 × 1/365 = 25 exactly; tax 25 × 18% = 4.5 -> 5.
    price = addition_price(annual_premium=9_125, policy=policy(), effective_date=date(2027, 3, 31))
    assert price == Price(premium=25, tax=5)


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(5, 2, 3), (7, 2, 4), (-5, 2, -3), (1, 3, 0), (2, 3, 1), (-2, 3, -1), (0, 7, 0)],
)
def test_round_half_up_goes_to_the_nearest_paisa_and_halves_away_from_zero(numerator, denominator, expected):
    assert round_half_up(numerator, denominator) == expected


def test_a_daily_refund_covers_the_effective_date_to_the_last_day():
    # Deleted from 2027-01-01: 31 + 28 + 31 = 90 days refunded.
    # 1,200,000 × 90 / 365 = 295,890.41 -> -295,890; tax -53,260.27... on -295,890 = -53,260.2 -> -53,260.
    price = deletion_refund(
        annual_premium=1_200_000,
        policy=policy(),
        effective_date=date(2027, 1, 1),
        cover_start=date(2026, 4, 1),
    )
    assert price == Price(premium=-295_890, tax=-53_260)
    assert price.total == -349_150


def test_a_short_period_refund_keeps_the_scale_percentage_for_the_months_in_force():
    scaled = policy(refund_method="SHORT_PERIOD", scale=[[1, 20], [3, 40], [6, 60], [9, 80]])
    # 2026-04-01 .. 2026-08-15: 4 whole months and part of a fifth = 5 months -> up to 6: keep 60%.
    # Charged 1,200,000 for the full term; refund 40% = 480,000; tax 86,400.
    price = deletion_refund(
        annual_premium=1_200_000,
        policy=scaled,
        effective_date=date(2026, 8, 15),
        cover_start=date(2026, 4, 1),
    )
    assert price == Price(premium=-480_000, tax=-86_400)


def test_the_short_period_scale_keeps_nothing_without_cover_and_everything_past_its_end():
    scale = [[1, 20], [3, 40]]
    assert short_period_retained_percent(scale, 0) == 0
    assert short_period_retained_percent(scale, 1) == 20
    assert short_period_retained_percent(scale, 2) == 40
    assert short_period_retained_percent(scale, 4) == 100
    assert months_in_force(date(2026, 4, 1), date(2026, 5, 1)) == 1
    assert months_in_force(date(2026, 4, 1), date(2026, 5, 2)) == 2


def test_a_correction_pays_the_difference_pro_rata_both_ways():
    # Sum insured 3 lakh (₹9,000) -> 5 lakh (₹12,000) from 2026-10-01 (182 days):
    # 300,000 × 182 / 365 = 149,589.04 -> 149,589; tax 26,926.02 -> 26,926.
    up = correction_price(
        old_annual_premium=900_000,
        new_annual_premium=1_200_000,
        policy=policy(),
        effective_date=date(2026, 10, 1),
    )
    down = correction_price(
        old_annual_premium=1_200_000,
        new_annual_premium=900_000,
        policy=policy(),
        effective_date=date(2026, 10, 1),
    )
    assert up == Price(premium=149_589, tax=26_926)
    assert down == Price(premium=-149_589, tax=-26_926)
    same = correction_price(
        old_annual_premium=900_000,
        new_annual_premium=900_000,
        policy=policy(),
        effective_date=date(2026, 10, 1),
    )
    assert same == Price(premium=0, tax=0)


def test_age_is_in_full_years_and_a_29_february_birthday_turns_on_1_march():
    assert age_on(date(2000, 2, 29), date(2026, 2, 28)) == 25
    assert age_on(date(2000, 2, 29), date(2026, 3, 1)) == 26
    assert age_on(date(1990, 5, 17), date(2026, 5, 16)) == 35
    assert age_on(date(1990, 5, 17), date(2026, 5, 17)) == 36


def test_the_rate_card_finds_the_band_for_relation_age_and_sum_insured():
    cells = [
        SimpleNamespace(
            plan_id=1, relation="SELF", sum_insured=500000, age_from=18, age_to=35, annual_premium=1_200_000
        ),
        SimpleNamespace(
            plan_id=1, relation="SELF", sum_insured=500000, age_from=36, age_to=65, annual_premium=1_800_000
        ),
    ]
    card = RateCard(cells)
    assert card.annual_premium(plan_id=1, relation="SELF", sum_insured=500000, age=35) == 1_200_000
    assert card.annual_premium(plan_id=1, relation="SELF", sum_insured=500000, age=36) == 1_800_000
    assert card.annual_premium(plan_id=1, relation="SELF", sum_insured=500000, age=66) is None
    assert card.annual_premium(plan_id=1, relation="SPOUSE", sum_insured=500000, age=30) is None
