"""`manage.py secrets_rotate`: re-encrypt every secret column under the first EMS_SECRET_KEYS key."""

import json

from django.core.management.base import BaseCommand

from ems.secret_fields import secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted column under the first key of EMS_SECRET_KEYS; run it after "
        "putting a new key first and before dropping the old one. Prints {model: rows}."
    )

    def handle(self, *args, **options):
        self.stdout.write(json.dumps(secrets_rotate(), sort_keys=True))
