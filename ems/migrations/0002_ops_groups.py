"""Create the operations groups. Their permissions are granted after migrate by
`ems.roles.role_permissions_sync` (Django creates permissions only after migrations run)."""

from django.db import migrations

ROLE_NAMES = ("ops_viewer", "ops_operator", "finance_approver")


def groups_create(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLE_NAMES:
        Group.objects.using(schema_editor.connection.alias).get_or_create(name=name)


def groups_delete(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name__in=ROLE_NAMES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("ems", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(groups_create, groups_delete)]
