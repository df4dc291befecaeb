"""The employer, its HR users and API clients now live in `ems` (`ems/0001_initial`).

State only: this app's foreign keys point to `ems.Employer` / `ems.ApiClient`, which
are the same tables (`endorsements_employer`, `endorsements_apiclient`), so no
constraint changes; then the three models leave this app's state, their tables kept.
On a database that has their content types, they are relabelled `ems`, so the
permissions, their grants to groups and users, and the admin's history carry over.
"""

import django.db.models.deletion
from django.db import migrations, models


def _employer_key(related_name: str, **options) -> models.ForeignKey:
    return models.ForeignKey(
        on_delete=django.db.models.deletion.PROTECT, related_name=related_name, to="ems.employer", **options
    )


MOVED_MODELS = ("employer", "employermembership", "apiclient")


def _content_types_relabel(apps, schema_editor, *, source: str, target: str) -> None:
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(
        schema_editor.connection.alias
    )
    # where the new labels exist already (created by a later post_migrate), those rows stay
    taken = set(
        content_types.filter(app_label=target, model__in=MOVED_MODELS).values_list("model", flat=True)
    )
    content_types.filter(app_label=source, model__in=set(MOVED_MODELS) - taken).update(app_label=target)


def content_types_to_ems(apps, schema_editor) -> None:
    _content_types_relabel(apps, schema_editor, source="endorsements", target="ems")


def content_types_back(apps, schema_editor) -> None:
    _content_types_relabel(apps, schema_editor, source="ems", target="endorsements")


class Migration(migrations.Migration):
    dependencies = [
        ("endorsements", "0008_batch_row_error_tracking_id"),
        ("ems", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(model_name="policy", name="employer", field=_employer_key("policies")),
                migrations.AlterField(model_name="member", name="employer", field=_employer_key("members")),
                migrations.AlterField(
                    model_name="endorsementbatch", name="employer", field=_employer_key("batches")
                ),
                migrations.AlterField(
                    model_name="endorsementrequest",
                    name="employer",
                    field=_employer_key("endorsements", db_index=False),
                ),
                migrations.AlterField(
                    model_name="endorsementbatch",
                    name="api_client",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="batches",
                        to="ems.apiclient",
                    ),
                ),
                migrations.DeleteModel(name="ApiClient"),
                migrations.DeleteModel(name="EmployerMembership"),
                migrations.DeleteModel(name="Employer"),
            ],
        ),
        migrations.RunPython(content_types_to_ems, content_types_back),
    ]
