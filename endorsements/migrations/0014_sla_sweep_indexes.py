"""The SLA sweep's indexes: running clocks not yet breached by deadline (FAILED included:
the insurer does not have those yet), and running clocks still without a deadline."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("endorsements", "0013_coverage_void"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="endorsementrequest",
            name="endorsement_sla_open_idx",
        ),
        migrations.AddIndex(
            model_name="endorsementrequest",
            index=models.Index(
                condition=models.Q(
                    ("sla_deadline__isnull", False),
                    (
                        "state__in",
                        ("VALIDATED", "ON_HOLD_FUNDS", "ON_HOLD_REVIEW", "FUND_LOCKED", "SENT", "FAILED"),
                    ),
                    models.Q(("sla_status", "BREACHED"), _negated=True),
                ),
                fields=["sla_deadline"],
                name="endorsement_sla_open_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="endorsementrequest",
            index=models.Index(
                condition=models.Q(
                    ("sla_deadline__isnull", True),
                    (
                        "state__in",
                        ("VALIDATED", "ON_HOLD_FUNDS", "ON_HOLD_REVIEW", "FUND_LOCKED", "SENT", "FAILED"),
                    ),
                ),
                fields=["received_at"],
                name="endorsement_sla_unset_idx",
            ),
        ),
    ]
