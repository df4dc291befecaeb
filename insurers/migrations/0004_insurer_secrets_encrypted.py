"""Encrypt insurers' webhook secrets and credentials at rest (ems.secret_fields).

The columns become text holding Fernet tokens (`credentials` was jsonb: its JSON text is
kept, then encrypted). Existing rows are encrypted in place with the first key of
EMS_SECRET_KEYS (or the key derived from SECRET_KEY). Reversible: going back decrypts
every row and the column types return (text to jsonb through a cast), so the keys that
encrypted the rows must still be configured when migrating backwards.
"""

import json

from django.db import migrations

import ems.secret_fields
from ems.secret_fields import secret_decrypt, secret_encrypt

COLUMNS = ("credentials", "webhook_secret_primary", "webhook_secret_secondary")


def _rows_rewrite(apps, schema_editor, rewrite) -> None:
    Insurer = apps.get_model("insurers", "Insurer")
    connection = schema_editor.connection
    quote = connection.ops.quote_name
    table = quote(Insurer._meta.db_table)
    # Raw SQL: the historical model's fields would encrypt and decrypt on their own.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {', '.join(quote(c) for c in COLUMNS)} FROM {table}")
        rows = cursor.fetchall()
        assignments = ", ".join(f"{quote(c)} = %s" for c in COLUMNS)
        for pk, *values in rows:
            cursor.execute(f"UPDATE {table} SET {assignments} WHERE id = %s", [*rewrite(*values), pk])


def _encrypted(credentials, primary, secondary):
    credentials_text = json.dumps(json.loads(credentials) if credentials else {}, sort_keys=True)
    return (
        secret_encrypt(credentials_text),
        secret_encrypt(primary) if primary else primary,
        secret_encrypt(secondary) if secondary else secondary,
    )


def _decrypted(credentials, primary, secondary):
    return (
        secret_decrypt(credentials) if credentials else "{}",
        secret_decrypt(primary) if primary else primary,
        secret_decrypt(secondary) if secondary else secondary,
    )


def secrets_encrypt(apps, schema_editor) -> None:
    _rows_rewrite(apps, schema_editor, _encrypted)


def secrets_decrypt(apps, schema_editor) -> None:
    _rows_rewrite(apps, schema_editor, _decrypted)


class Migration(migrations.Migration):
    dependencies = [
        ("insurers", "0003_webhook_events"),
    ]

    operations = [
        migrations.AlterField(
            model_name="insurer",
            name="credentials",
            field=ems.secret_fields.EncryptedJSONField(
                blank=True, default=dict, help_text="secrets; never logged"
            ),
        ),
        migrations.AlterField(
            model_name="insurer",
            name="webhook_secret_primary",
            field=ems.secret_fields.EncryptedTextField(),
        ),
        migrations.AlterField(
            model_name="insurer",
            name="webhook_secret_secondary",
            field=ems.secret_fields.EncryptedTextField(
                blank=True, help_text="the previous secret, accepted during rotation"
            ),
        ),
        migrations.RunPython(secrets_encrypt, secrets_decrypt, elidable=False),
    ]
