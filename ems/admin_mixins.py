"""What every app's admin shares: read-only views of rows only services write, and the actor.

- `ReadOnlyPermissions` refuses add, change and delete to everyone, superusers included;
  whoever has the view permission sees the rows. `ReadOnlyAdmin` and `ReadOnlyInline`
  are it on a model admin and on a tabular inline.
- `money_column(field, description)` is a change-list column of an amount in minor units,
  shown by `ems.formatting.money_text` in the currency its row names.
- `permission_check(permission)` is the `has_<name>_permission` method an admin action
  with `permissions=["<name>"]` asks: the user holds that permission.
- `actor_of(request)` names the staff user in the services' audit records ("user:<id>").
- `SecretLookupRefusal` refuses every change-list lookup that passes through a secret
  field (`ems.secret_fields.field_is_secret`, or a name in `secret_field_names` for a
  model we do not own): `?webhook_secret_primary__startswith=a` answers 400 instead of
  one row or none. Django already refuses most lookups through a relation; this closes
  the model's own fields. `secret_lookup_check` (a system check) fails start-up when an
  admin of a model with a secret field does not use it.
"""

import operator

from django.apps import apps
from django.contrib import admin
from django.core import checks
from django.core.exceptions import FieldDoesNotExist
from django.db.models.constants import LOOKUP_SEP

from ems.formatting import money_text
from ems.secret_fields import field_is_secret


class ReadOnlyPermissions:
    """Nobody adds, edits or deletes these rows here, superusers included."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnlyPermissions, admin.ModelAdmin):
    """Rows written only by services (ledger entries, the outbox, history): view only."""


class ReadOnlyInline(ReadOnlyPermissions, admin.TabularInline):
    extra = 0
    can_delete = False


def money_column(field: str, description: str, *, currency: str = "account.currency", ordering: str = ""):
    """A display method showing `obj.<field>` in the currency at `obj.<currency>` (a dotted path)."""
    amount_of = operator.attrgetter(field)
    currency_of = operator.attrgetter(currency)

    @admin.display(description=description, ordering=ordering or field)
    def column(self, obj) -> str:
        return money_text(amount_of(obj), currency_of(obj))

    return column


def permission_check(permission: str):
    """`has_<name>_permission = permission_check("app.codename")` gates an action on it."""

    def check(self, request) -> bool:
        return request.user.has_perm(permission)

    return check


def actor_of(request) -> str:
    """The staff user behind an admin request, as the services record an actor."""
    return f"user:{request.user.pk}"


def lookup_touches_secret(model, lookup: str, extra_names: tuple[str, ...] = ()) -> bool:
    """Whether a lookup path (`insurer__credentials__icontains`) passes through a secret field."""
    for depth, part in enumerate(lookup.split(LOOKUP_SEP)):
        if depth == 0 and part in extra_names:
            return True
        try:
            field = model._meta.get_field(part)
        except FieldDoesNotExist:
            return False  # a transform or a lookup name: the walk is over
        if field_is_secret(field):
            return True
        if not field.is_relation or field.related_model is None:
            return False
        model = field.related_model
    return False


class SecretLookupRefusal:
    """A model admin that accepts no filter through a secret field (the admin answers 400)."""

    secret_field_names: tuple[str, ...] = ()

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        if lookup_touches_secret(self.model, lookup, self.secret_field_names):
            return False
        return super().lookup_allowed(lookup, value, request)


def model_secret_fields(model) -> list[str]:
    return [field.name for field in model._meta.get_fields() if field_is_secret(field)]


@checks.register(checks.Tags.admin, checks.Tags.security)
def secret_lookup_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every registered admin of a model with a secret field refuses lookups through it."""
    problems = []
    for model in apps.get_models():
        if not admin.site.is_registered(model):
            continue
        model_admin = admin.site.get_model_admin(model)
        secrets = model_secret_fields(model)
        if secrets and not isinstance(model_admin, SecretLookupRefusal):
            problems.append(
                checks.Error(
                    f"{type(model_admin).__qualname__} shows {model._meta.label}, whose fields "
                    f"{', '.join(secrets)} are secret, without SecretLookupRefusal.",
                    hint="Put ems.admin_mixins.SecretLookupRefusal first in its bases.",
                    obj=model_admin,
                    id="ems.E001",
                )
            )
        searched = {name.lstrip("^=@") for name in model_admin.search_fields or ()}
        for name in sorted(searched):
            if lookup_touches_secret(model, name, getattr(model_admin, "secret_field_names", ())):
                problems.append(
                    checks.Error(
                        f"{type(model_admin).__qualname__} searches the secret field {name}.",
                        obj=model_admin,
                        id="ems.E002",
                    )
                )
    return problems
