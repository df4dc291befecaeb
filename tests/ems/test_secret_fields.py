"""Secret columns (`ems.secret_fields`): encrypted at rest, rotated, never searched.

Rows are read back raw (SQL) to prove what the database holds; the model reads plaintext.
"""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from ems.secret_fields import derived_key, secret_cipher
from insurers.models import Insurer
from tests.factories import InsurerFactory
from tests.migration_steps import leaf_nodes, migrate_to

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def stored(insurer_id: int) -> tuple[str, str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT webhook_secret_primary, webhook_secret_secondary, credentials "
            "FROM insurers_insurer WHERE id = %s",
            [insurer_id],
        )
        return cursor.fetchone()


@pytest.mark.django_db
def test_secrets_are_stored_as_fernet_tokens_and_read_back_as_plaintext():
    # when
    insurer = InsurerFactory(
        webhook_secret_primary="whsec_at_rest_0123456789", credentials={"password": "pw-42"}
    )
    # then: the columns hold tokens that decrypt to the values; the empty secondary stays empty
    primary, secondary, credentials = stored(insurer.pk)
    assert primary.startswith("gAAAAA") and "whsec_at_rest" not in primary
    assert secret_cipher().decrypt(primary.encode()) == b"whsec_at_rest_0123456789"
    assert secret_cipher().decrypt(credentials.encode()) == b'{"password": "pw-42"}'
    assert secondary == ""
    fresh = Insurer.objects.get(pk=insurer.pk)
    assert (fresh.webhook_secret_primary, fresh.webhook_secret_secondary, fresh.credentials) == (
        "whsec_at_rest_0123456789",
        "",
        {"password": "pw-42"},
    )


@pytest.mark.django_db
def test_the_development_key_is_derived_from_secret_key_and_its_fallbacks(settings):
    settings.EMS_SECRET_KEYS = []
    insurer = InsurerFactory(webhook_secret_primary="whsec_derived_0123456789")
    token = stored(insurer.pk)[0].encode()
    assert Fernet(derived_key(settings.SECRET_KEY)).decrypt(token) == b"whsec_derived_0123456789"
    # Django's key rotation: the old key a fallback, the secret still reads
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-rotated-secret-key-0123456789abcdef-0123456789"
    assert Insurer.objects.get(pk=insurer.pk).webhook_secret_primary == "whsec_derived_0123456789"


@pytest.mark.django_db
def test_a_new_key_first_then_rotate_then_drop_the_old_one(settings):
    # given: secrets written under the old key
    settings.EMS_SECRET_KEYS = [OLD_KEY]
    insurer = InsurerFactory(webhook_secret_primary="whsec_rotated_0123456789", credentials={"token": "t-1"})
    # when: the new key goes first and the rows are re-encrypted
    settings.EMS_SECRET_KEYS = [NEW_KEY, OLD_KEY]
    assert Insurer.objects.get(pk=insurer.pk).webhook_secret_primary == "whsec_rotated_0123456789"
    out = io.StringIO()
    call_command("secrets_rotate", stdout=out)
    # then: every row is under the new key alone, and the old key can go
    assert '"insurers.Insurer": 1' in out.getvalue()
    primary, secondary, credentials = stored(insurer.pk)
    assert Fernet(NEW_KEY.encode()).decrypt(primary.encode()) == b"whsec_rotated_0123456789"
    assert Fernet(NEW_KEY.encode()).decrypt(credentials.encode()) == b'{"token": "t-1"}'
    assert secondary == ""
    settings.EMS_SECRET_KEYS = [NEW_KEY]
    fresh = Insurer.objects.get(pk=insurer.pk)
    assert (fresh.webhook_secret_primary, fresh.credentials) == ("whsec_rotated_0123456789", {"token": "t-1"})


@pytest.mark.django_db
def test_a_key_dropped_before_rotation_is_named_not_a_garbled_secret(settings):
    settings.EMS_SECRET_KEYS = [OLD_KEY]
    insurer = InsurerFactory()
    settings.EMS_SECRET_KEYS = [NEW_KEY]
    with pytest.raises(ImproperlyConfigured, match="none of EMS_SECRET_KEYS decrypts"):
        Insurer.objects.get(pk=insurer.pk)


@pytest.mark.django_db
def test_a_secret_column_cannot_be_searched():
    InsurerFactory(webhook_secret_primary="whsec_search_me_0123456789")
    lookups = ("webhook_secret_primary__startswith", "credentials__icontains", "webhook_secret_secondary__gt")
    for lookup in lookups:
        with pytest.raises(FieldError, match="Unsupported lookup"):
            list(Insurer.objects.filter(**{lookup: "whsec"}))
    # isnull and exact (only useful for "not set") remain
    assert Insurer.objects.filter(webhook_secret_secondary="").count() == 1


# --- the migration that encrypts existing rows (insurers/0004) -----------------------------

BEFORE = ("insurers", "0003_webhook_events")
ENCRYPT = ("insurers", "0004_insurer_secrets_encrypted")


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_existing_rows_and_reverses():
    try:
        # given: an insurer stored in plaintext before the migration
        old = migrate_to([BEFORE]).loader.project_state([BEFORE]).apps
        insurer_id = (
            old.get_model("insurers", "Insurer")
            .objects.create(
                code="old",
                name="Old",
                protocol="REST",
                credentials={"password": "plain-pw"},
                webhook_secret_primary="whsec_plain_0123456789",
                webhook_secret_secondary="whsec_prev_0123456789",
            )
            .pk
        )
        # when
        migrate_to([ENCRYPT])
        # then: tokens at rest, plaintext through the model
        primary, secondary, credentials = stored(insurer_id)
        assert {primary[:6], secondary[:6], credentials[:6]} == {"gAAAAA"}
        insurer = Insurer.objects.get(pk=insurer_id)
        assert (insurer.webhook_secret_primary, insurer.webhook_secret_secondary, insurer.credentials) == (
            "whsec_plain_0123456789",
            "whsec_prev_0123456789",
            {"password": "plain-pw"},
        )
        # and back: plaintext again, credentials as JSON
        migrate_to([BEFORE])
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT webhook_secret_primary, webhook_secret_secondary, credentials->>'password' "
                "FROM insurers_insurer WHERE id = %s",
                [insurer_id],
            )
            assert cursor.fetchone() == ("whsec_plain_0123456789", "whsec_prev_0123456789", "plain-pw")
    finally:
        migrate_to(leaf_nodes())
