"""ems/formatting.py: the one money and time formatter of the admin and the portal."""

import datetime

from django.template import Context, Template

from ems.formatting import money_text, time_text


def test_money_is_two_decimals_with_grouping_after_the_currency():
    assert money_text(123456, "INR") == "₹1,234.56"
    assert money_text(-5, "INR") == "-₹0.05"
    assert money_text(100_000_00, "USD") == "USD 100,000.00"


def test_money_without_a_currency_is_the_bare_figure_and_no_amount_is_a_dash():
    assert money_text(708_000) == "7,080.00"
    assert money_text(None, "INR") == "—"


def test_time_is_in_the_project_zone_with_the_zone_named(settings):
    settings.TIME_ZONE = "Asia/Kolkata"
    moment = datetime.datetime(2026, 12, 2, 12, 35, 9, tzinfo=datetime.UTC)
    assert time_text(moment) == "2026-12-02 18:05:09 IST"
    # a naive datetime (as stored in UTC) is taken as UTC
    assert time_text(moment.replace(tzinfo=None)) == "2026-12-02 18:05:09 IST"
    assert time_text(None) == "—"


def test_the_template_filters_call_the_same_formatters(settings):
    settings.TIME_ZONE = "Asia/Kolkata"
    source = "{% load formatting %}{{ amount|money:'INR' }} {{ amount|money }} {{ at|local_time }}"
    template = Template(source)
    context = Context({"amount": 708_000, "at": datetime.datetime(2026, 4, 1, tzinfo=datetime.UTC)})
    assert template.render(context) == "₹7,080.00 7,080.00 2026-04-01 05:30:00 IST"


def test_a_short_time_keeps_the_zone_named():
    import datetime

    from ems.formatting import time_short_text

    assert (
        time_short_text(datetime.datetime(2026, 12, 2, 12, 35, 9, tzinfo=datetime.UTC)) == "02 Dec 18:05 IST"
    )
    assert time_short_text(None) == "—"
