"""Settings for the ledger_vs_hordak benchmark only: EMS plus django-hordak, on the bench database.

Both ledgers live in the same database (`ems_bench`) and run in the same process, so the
comparison is like for like. The application never loads these settings.
"""

from ems.settings.base import *  # noqa: F403
from ems.settings.base import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "mptt", "djmoney", "import_export", "hordak"]
DEFAULT_CURRENCY = "INR"
CURRENCIES = ["INR"]
HORDAK_CURRENCIES = ["INR"]
HORDAK_INTERNAL_CURRENCY = "INR"
