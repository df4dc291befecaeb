"""A payment reference is declared once per account (unless the declaration was rejected).

Before the partial unique constraint, existing duplicates are resolved: in each group of
non-rejected top-ups sharing (account, payment_reference) the first one stays (an approved
one before a pending one, then the oldest); a later PENDING duplicate is rejected with a
note naming the one kept; a later APPROVED duplicate (money already posted, its entry
immutable) keeps its state and gets its reference suffixed with `#dup-<id>`.
"""

from django.db import migrations, models
from django.utils import timezone


def duplicates_resolve(apps, schema_editor):
    TopUp = apps.get_model("ledger", "TopUp")
    seen: dict[tuple[int, str], int] = {}
    live = TopUp.objects.exclude(state="REJECTED").order_by(
        models.Case(models.When(state="APPROVED", then=0), default=1), "id"
    )
    for topup in live.iterator():
        group = (topup.account_id, topup.payment_reference)
        kept = seen.setdefault(group, topup.pk)
        if kept == topup.pk:
            continue
        if topup.state == "PENDING":
            topup.state = "REJECTED"
            topup.decided_at = timezone.now()
            topup.decision_note = f"duplicate payment reference of top-up {kept}"
            topup.save(update_fields=["state", "decided_at", "decision_note"])
        else:
            suffix = f"#dup-{topup.pk}"
            topup.payment_reference = topup.payment_reference[: 100 - len(suffix)] + suffix
            topup.save(update_fields=["payment_reference"])


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0005_requested_by_principal"),
    ]

    operations = [
        migrations.RunPython(duplicates_resolve, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="topup",
            constraint=models.UniqueConstraint(
                condition=models.Q(("state", "REJECTED"), _negated=True),
                fields=("account", "payment_reference"),
                name="topup_payment_reference_once",
            ),
        ),
    ]
