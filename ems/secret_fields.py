"""Secret columns: encrypted at rest, never filtered on, never shown.

How it works
- A field is *secret* when its class says so (`SecretField.is_secret`); `field_is_secret`
  is the one test every guard asks (the admin's lookup refusal, the system check that
  every admin of a model with one uses that refusal, the tests that walk them all).
- `EncryptedTextField` and `EncryptedJSONField` hold plaintext in Python and a Fernet
  token in the database: `get_db_prep_value` encrypts, `from_db_value` decrypts, so the
  gateway, the webhook signature checks and the redaction of exchanges read secrets as
  before. An empty text stays empty (so "a secret is set" can still be a CHECK
  constraint); JSON is always encrypted, `{}` included. Only `exact` (useful only for an
  empty text) and `isnull` lookups exist: ciphertext has nothing to search by.
- `SecretHashField` is a one-way hash (an API client's secret): not encrypted, but
  secret all the same, since a lookup on it leaks the hash a character at a time.
- Keys: `settings.EMS_SECRET_KEYS`, a list of Fernet keys; the first encrypts, all
  decrypt (`MultiFernet`), so a key is rotated by putting a new one first, running
  `manage.py secrets_rotate` (re-encrypts every secret column under the first key) and
  then dropping the old one (docs/runbook.md). With the list empty (development and
  tests) the keys are derived from `SECRET_KEY` (encrypts) and `SECRET_KEY_FALLBACKS`
  (decrypt), so Django's own key rotation keeps the secrets readable; production
  settings refuse to start without their own list.
"""

import base64
import functools
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.db.models import lookups
from django.dispatch import receiver

KEY_DERIVATION_CONTEXT = b"ems.secret_fields.v1:"


def derived_key(secret_key: str) -> bytes:
    """A Fernet key derived from Django's SECRET_KEY (development and tests only)."""
    digest = hashlib.sha256(KEY_DERIVATION_CONTEXT + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@functools.cache
def secret_cipher() -> MultiFernet:
    keys = [str(key).strip() for key in getattr(settings, "EMS_SECRET_KEYS", []) if str(key).strip()]
    if not keys:
        secret_keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
        return MultiFernet([Fernet(derived_key(key)) for key in secret_keys])
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(f"EMS_SECRET_KEYS holds a key that is not a Fernet key: {exc}") from None


@receiver(setting_changed)
def _cipher_forget(*, setting: str, **kwargs) -> None:
    if setting in {"EMS_SECRET_KEYS", "SECRET_KEY", "SECRET_KEY_FALLBACKS"}:
        secret_cipher.cache_clear()


def secret_encrypt(text: str) -> str:
    return secret_cipher().encrypt(text.encode()).decode("ascii")


def secret_decrypt(token: str) -> str:
    try:
        return secret_cipher().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeEncodeError):
        raise ImproperlyConfigured(
            "A secret column holds a value none of EMS_SECRET_KEYS decrypts "
            "(a key was dropped before `manage.py secrets_rotate` ran, or SECRET_KEY changed "
            "without the old one in SECRET_KEY_FALLBACKS)."
        ) from None


def secret_rotate(token: str) -> str:
    """The same secret encrypted under the first key (MultiFernet.rotate)."""
    if not token:
        return token
    return secret_cipher().rotate(token.encode("ascii")).decode("ascii")


class SecretField:
    """Marks a model field as secret: no admin filters on it, no page or export shows it."""

    is_secret = True

    def value_to_string(self, obj):
        return ""  # serializers (dumpdata) never carry a secret


def field_is_secret(field) -> bool:
    return bool(getattr(field, "is_secret", False))


class EncryptedLookupsOnly:
    """Only `exact` and `isnull`: a search through ciphertext means nothing."""

    allowed_lookups = (lookups.Exact, lookups.IsNull)

    def get_lookup(self, lookup_name):
        found = super().get_lookup(lookup_name)
        return found if found in self.allowed_lookups else None

    def get_transform(self, lookup_name):
        return None


class EncryptedTextField(SecretField, EncryptedLookupsOnly, models.TextField):
    """Text stored as a Fernet token; an empty text stays empty."""

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return value
        return secret_decrypt(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        value = super().get_db_prep_value(value, connection, prepared)
        if value in (None, ""):
            return value
        return secret_encrypt(str(value))


class EncryptedJSONField(SecretField, EncryptedLookupsOnly, models.TextField):
    """A JSON value (a dict of credentials) stored as the Fernet token of its JSON text."""

    def from_db_value(self, value, expression, connection):
        if value is None:
            return value
        return json.loads(secret_decrypt(value)) if value else {}

    def to_python(self, value):
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value

    def get_prep_value(self, value):
        return value

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return value
        return secret_encrypt(json.dumps(value, sort_keys=True))

    def formfield(self, **kwargs):
        from django import forms

        return super().formfield(**{"form_class": forms.JSONField, **kwargs})


class SecretHashField(SecretField, models.CharField):
    """A one-way hash of a secret: stored as is, never filtered on."""


def encrypted_columns() -> dict[type[models.Model], list[str]]:
    """Every model with encrypted fields, and those fields' column names."""
    from django.apps import apps

    found: dict[type[models.Model], list[str]] = {}
    for model in apps.get_models():
        columns = [
            field.column
            for field in model._meta.concrete_fields
            if isinstance(field, EncryptedTextField | EncryptedJSONField)
        ]
        if columns:
            found[model] = columns
    return found


def secrets_rotate() -> dict[str, int]:
    """Re-encrypt every secret column under the first key; {model label: rows rewritten}.

    Reads and writes the stored tokens as they are (raw SQL), so the plaintext never
    leaves the cipher; each model's rows are rewritten in one transaction. Safe to repeat:
    a token already under the first key is re-encrypted again (a new token, same secret).
    """
    from django.db import connection, transaction

    quote = connection.ops.quote_name
    rewritten: dict[str, int] = {}
    for model, columns in encrypted_columns().items():
        table, pk = quote(model._meta.db_table), quote(model._meta.pk.column)
        assignments = ", ".join(f"{quote(column)} = %s" for column in columns)
        count = 0
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SELECT {pk}, {', '.join(quote(c) for c in columns)} FROM {table} ORDER BY {pk}")
            for row_pk, *tokens in cursor.fetchall():
                cursor.execute(
                    f"UPDATE {table} SET {assignments} WHERE {pk} = %s",
                    [*(secret_rotate(token) for token in tokens), row_pk],
                )
                count += 1
        rewritten[model._meta.label] = count
    return rewritten
