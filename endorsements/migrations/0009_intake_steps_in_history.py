"""A file's row's arrival and intake decision move from the row (`intake_state`) into its
history (`EndorsementTransition`), as one compact intake step: `"" -> <decided state>` by
`batch:<id>`, the reason the decision's rejection codes. Then the column goes."""

from django.db import migrations

BATCH = 2000


def _codes(reasons) -> str:
    return "; ".join(r.get("code", "") for r in reasons or [] if isinstance(r, dict))[:500]


def steps_from_rows(apps, schema_editor):
    request_model = apps.get_model("endorsements", "EndorsementRequest")
    transition_model = apps.get_model("endorsements", "EndorsementTransition")
    rows = (
        request_model.objects.exclude(intake_state="")
        .order_by("pk")
        .values_list("pk", "batch_id", "intake_state", "rejection_reasons", "received_at")
    )
    pending = []
    for pk, batch_id, state, reasons, received_at in rows.iterator(chunk_size=BATCH):
        pending.append(
            transition_model(
                endorsement_id=pk,
                from_state="",
                to_state=state,
                actor=f"batch:{batch_id}",
                reason=_codes(reasons),
                at=received_at,
            )
        )
        if len(pending) >= BATCH:
            transition_model.objects.bulk_create(pending)
            pending = []
    transition_model.objects.bulk_create(pending)


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
