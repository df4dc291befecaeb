"""`manage.py create_api_client --employer CODE [--name N]`: print new client credentials once."""

import json

from django.core.management.base import BaseCommand, CommandError

from ems.identity import api_client_create
from ems.models import Employer


class Command(BaseCommand):
    help = 'Create an API client for an employer; prints {"client_id": ..., "client_secret": ...} once.'

    def add_arguments(self, parser):
        parser.add_argument("--employer", required=True, help="the employer's code")
        parser.add_argument(
            "--name", default="API client", help="a label for the client (default: %(default)s)"
        )

    def handle(self, *args, **options):
        code = options["employer"]
        employer = Employer.objects.filter(code=code).first()
        if employer is None:
            raise CommandError(f"Unknown employer code {code!r}.")
        if not employer.is_active:
            raise CommandError(f"Employer {code!r} is inactive.")
        client, secret = api_client_create(
            employer=employer, name=options["name"], actor="system:create_api_client"
        )
        self.stdout.write(json.dumps({"client_id": client.client_id, "client_secret": secret}))
