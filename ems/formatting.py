"""How the admin and the portal show money and time: one formatter for each.

- Money is stored as integer minor units (paise). `money_text` shows two decimals with
  thousands separators, after the currency (`₹` for rupees, the ISO code for any other):
  123456 -> "₹1,234.56". Without a currency it shows the figure alone, for a column or a
  row that already names the currency (the portal's balance and history tables). No
  amount is "—".
- Times are stored in UTC. `time_text` shows them in the project's zone (`TIME_ZONE`,
  Asia/Kolkata) with the zone named: "2026-12-02 18:05:09 IST". A naive datetime is
  taken as UTC.

  `time_short_text` is the same moment for a list's narrow column: "02 Dec 18:05 IST".

Templates use the same functions as the filters `money` and `local_time`
(`{% load formatting %}`, `ems/templatetags/formatting.py`).
"""

import datetime

from django.utils import timezone

NO_VALUE = "—"
_SYMBOLS = {"INR": "₹"}


def money_text(minor: int | None, currency: str | None = None) -> str:
    """Integer minor units as text with two decimals: (123456, "INR") -> "₹1,234.56"."""
    if minor is None:
        return NO_VALUE
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(int(minor)), 100)
    prefix = "" if currency is None else _SYMBOLS.get(currency, f"{currency} ")
    return f"{sign}{prefix}{whole:,}.{fraction:02d}"


def time_text(value: datetime.datetime | None) -> str:
    """A moment in the project's time zone, the zone named: "2026-12-02 18:05:09 IST"."""
    return _local_text(value, "%Y-%m-%d %H:%M:%S %Z")


def time_short_text(value: datetime.datetime | None) -> str:
    """A moment for a narrow column, the zone still named: "02 Dec 18:05 IST"."""
    return _local_text(value, "%d %b %H:%M %Z")


def _local_text(value: datetime.datetime | None, form: str) -> str:
    if value is None:
        return NO_VALUE
    if timezone.is_naive(value):
        value = timezone.make_aware(value, datetime.UTC)
    return timezone.localtime(value).strftime(form)
