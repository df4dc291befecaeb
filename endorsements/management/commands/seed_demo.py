"""`manage.py seed_demo [--json]`: idempotent demo data (see endorsements/demo_data.py)."""

import json

from django.core.management.base import BaseCommand

from endorsements.demo_data import demo_seed


class Command(BaseCommand):
    help = "Create demo insurers, employers, policies, members and logins (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json",
            action="store_true",
            help="print every login, client credential and webhook secret as JSON (DESIGN.md shape)",
        )

    def handle(self, *args, **options):
        result = demo_seed()
        if options["json"]:
            self.stdout.write(json.dumps(result.payload, indent=2))
            return
        self.stdout.write(self.summary(result))

    @staticmethod
    def summary(result) -> str:
        created = ", ".join(f"{count} {kind}" for kind, count in result.created.items() if count) or "nothing"
        totals = ", ".join(f"{count} {kind}" for kind, count in result.totals.items())
        lines = [
            f"Demo data: {totals}.",
            f"Created by this run: {created}.",
        ]
        lines.append("")
        lines.append("Operations (admin, /admin/):")
        for user in result.payload["ops_users"]:
            lines.append(f"  {user['username']:<16} {user['password']:<24} {', '.join(user['groups'])}")
        lines.append("HR users (portal, /portal/) and API clients (POST /api/v1/auth/token):")
        for employer in result.payload["employers"]:
            hr, client = employer["hr_user"], employer["api_client"]
            lines.append(f"  {employer['code']:<10} {hr['username']:<16} {hr['password']}")
            lines.append(
                f"  {'':<10} client_id={client['client_id']} client_secret={client['client_secret']}"
            )
        lines.append("Insurers (webhook secrets):")
        for insurer in result.payload["insurers"]:
            columns = f"{insurer['id']:<4} {insurer['code']:<10} {insurer['protocol']:<5}"
            lines.append(f"  {columns} {insurer['webhook_secret']}")
        return "\n".join(lines)
