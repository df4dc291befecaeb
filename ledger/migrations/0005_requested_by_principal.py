"""`Adjustment.requested_by` becomes the maker's principal string, like `TopUp.requested_by`.

An adjustment's maker was a user foreign key; a top-up's a principal (`user:<id>` or
`client:<client_id>`). Both are now the principal, so maker-checker is one rule: the
existing rows get `user:<their user id>`, and the CHECK that the decider is not the
maker is the same on both tables (new on `ledger_topup`, where only the service checked).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models.functions import Cast, Concat


def _maker_is_not_checker(name: str) -> models.CheckConstraint:
    checker = Concat(models.Value("user:"), Cast("decided_by", output_field=models.CharField()))
    return models.CheckConstraint(
        condition=models.Q(decided_by__isnull=True) | ~models.Q(requested_by=checker),
        name=name,
    )


def _principal_from_user(apps, schema_editor):
    Adjustment = apps.get_model("ledger", "Adjustment")
    Adjustment.objects.update(
        requested_by=Concat(models.Value("user:"), Cast("requested_by_user", output_field=models.CharField()))
    )


def _user_from_principal(apps, schema_editor):
    Adjustment = apps.get_model("ledger", "Adjustment")
    for adjustment in Adjustment.objects.filter(requested_by__startswith="user:"):
        adjustment.requested_by_user_id = int(adjustment.requested_by.removeprefix("user:"))
        adjustment.save(update_fields=["requested_by_user"])


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0004_held_by_statement_triggers"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="adjustment", name="adjustment_maker_is_not_checker"),
        migrations.RenameField(
            model_name="adjustment", old_name="requested_by", new_name="requested_by_user"
        ),
        migrations.AlterField(
            model_name="adjustment",
            name="requested_by_user",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="adjustment",
            name="requested_by",
            field=models.CharField(default="", help_text="user:<id> or client:<client_id>", max_length=100),
            preserve_default=False,
        ),
        migrations.RunPython(_principal_from_user, _user_from_principal),
        migrations.RemoveField(model_name="adjustment", name="requested_by_user"),
        migrations.AddConstraint(
            model_name="adjustment", constraint=_maker_is_not_checker("adjustment_maker_is_not_checker")
        ),
        migrations.AddConstraint(
            model_name="topup", constraint=_maker_is_not_checker("topup_maker_is_not_checker")
        ),
    ]
