"""The outbox has one relay, the `relay_outbox --loop` process: beat no longer relays too.

django-celery-beat keeps the entries it once synced from CELERY_BEAT_SCHEDULE, so a
database that ran beat before still has the 5-second relay task; this removes it.
"""

from django.db import migrations

ENTRY = "ems-outbox-relay"


def beat_relay_remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=ENTRY).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("ems", "0006_apiclient_secret_hash_is_secret"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(beat_relay_remove, migrations.RunPython.noop)]
