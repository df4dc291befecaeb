"""A file's row's arrival and intake decision move from the row (`intake_state`) into its
history (`EndorsementTransition`), as one compact intake step: `"" -> <decided state>` by
`batch:<id>`, the reason the decision's rejection codes. Then the column goes."""

from django.db import migrations

BATCH = 2000


def _codes(reasons) -> str:
    return "; ".join(r.get("code", "") for r in reasons or [] if isinstance(r, dict))[:500]


def steps_from_rows(apps, schema_editor):
    request_model = apps.get_model("endorsements", "EndorsementRequest")
    table = apps.get_model("endorsements", "EndorsementTransition")._meta.db_table
    # Plain INSERTs: the model's `at` is auto_now_add, and a step is dated at the row's arrival.
    insert = (
        f"INSERT INTO {schema_editor.quote_name(table)} (endorsement_id, from_state, to_state, actor, reason, at)"
        " VALUES (%s, '', %s, %s, %s, %s)"
    )
    rows = (
        request_model.objects.exclude(intake_state="")
        .order_by("pk")
        .values_list("pk", "batch_id", "intake_state", "rejection_reasons", "received_at")
    )
    pending = []
    with schema_editor.connection.cursor() as cursor:
        for pk, batch_id, state, reasons, received_at in rows.iterator(chunk_size=BATCH):
            pending.append((pk, state, f"batch:{batch_id}", _codes(reasons), received_at))
            if len(pending) >= BATCH:
                cursor.executemany(insert, pending)
                pending = []
        if pending:
            cursor.executemany(insert, pending)


def rows_from_steps(apps, schema_editor):
    request_model = apps.get_model("endorsements", "EndorsementRequest")
    transition_model = apps.get_model("endorsements", "EndorsementTransition")
    steps = transition_model.objects.filter(from_state="").exclude(to_state="RECEIVED")
    for pk, state in steps.values_list("endorsement_id", "to_state").iterator(chunk_size=BATCH):
        request_model.objects.filter(pk=pk).update(intake_state=state)
    steps.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("endorsements", "0008_batch_row_error_tracking_id"),
    ]

    operations = [
        migrations.RunPython(steps_from_rows, rows_from_steps),
        migrations.RemoveField(model_name="endorsementrequest", name="intake_state"),
    ]
