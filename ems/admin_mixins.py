"""What every app's admin shares: read-only views of rows only services write, and the actor.

- `ReadOnlyPermissions` refuses add, change and delete to everyone, superusers included;
  whoever has the view permission sees the rows. `ReadOnlyAdmin` and `ReadOnlyInline`
  are it on a model admin and on a tabular inline.
- `money_column(field, description)` is a change-list column of an amount in minor units,
  shown by `ems.formatting.money_text` in the currency its row names.
- `MoneyFieldsAdmin` shows the amounts of `money_fields` the same way wherever a row's page
  shows them read-only (a decided top-up's "Amount: ₹100,000.00", not 10000000); an input
  for an amount (a form that adds or edits one) stays in minor units, as its label says.
- `time_column(field, description)` and `text_column(path, description, limit)` keep a
  list narrow (a laptop's 1366 px): a short time or text, the whole in its tooltip.
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
from django.utils.html import format_html
from django.utils.text import Truncator

from ems.formatting import money_text, time_short_text, time_text
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


def time_column(field: str, description: str):
    """A display method showing `obj.<field>` as a short time, the full one in its tooltip."""

    @admin.display(description=description, ordering=field)
    def column(self, obj) -> str:
        moment = getattr(obj, field)
        if moment is None:
            return time_short_text(None)
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            moment.isoformat(),
            time_text(moment),
            time_short_text(moment),
        )

    return column


def text_column(path: str, description: str, *, limit: int, ordering: str = ""):
    """A display method showing the text at `obj.<path>` cut to `limit` characters, whole in its tooltip."""
    text_of = operator.attrgetter(path)

    @admin.display(description=description, ordering=ordering or path.replace(".", "__"))
    def column(self, obj) -> str:
        text = str(text_of(obj))
        return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(limit))

    return column


class MoneyFieldsAdmin:
    """`money_fields = {"amount": "account.currency"}`: amount field -> dotted path of its currency.

    On a row's page each such field shown read-only is replaced by its `<field>_money`
    display (made here for each subclass), so it reads as money in the row's currency."""

    money_fields: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for field, currency in cls.money_fields.items():
            name = f"{field}_money"
            if name not in cls.__dict__:
                setattr(cls, name, money_column(field, field.replace("_", " "), currency=currency))

    def money_shown(self, fields) -> list:
        """`fields` with each money field as its display (an admin that lists its own
        read-only fields returns them through this)."""
        replaced = [f"{field}_money" if field in self.money_fields else field for field in fields]
        return list(dict.fromkeys(replaced))  # a field read-only and in the form appears once

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return fields if obj is None else self.money_shown(fields)

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is None:
            return fields
        if not self.has_change_permission(request, obj):
            return self.money_shown(fields)  # the whole page is read-only
        # an editable amount stays an input; one shown read-only is listed as its display
        read_only = set(self.get_readonly_fields(request, obj))
        return [f for f in fields if f not in self.money_fields or f"{f}_money" not in read_only]


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
