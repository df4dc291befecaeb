"""What every app's admin shares: read-only views of rows only services write, and the actor.

- `ReadOnlyPermissions` refuses add, change and delete to everyone, superusers included;
  whoever has the view permission sees the rows. `ReadOnlyAdmin` and `ReadOnlyInline`
  are it on a model admin and on a tabular inline.
- `money_column(field, description)` is a change-list column of an amount in minor units,
  shown by `ems.formatting.money_text` in the currency its row names.
- `permission_check(permission)` is the `has_<name>_permission` method an admin action
  with `permissions=["<name>"]` asks: the user holds that permission.
- `actor_of(request)` names the staff user in the services' audit records ("user:<id>").
"""

import operator

from django.contrib import admin

from ems.formatting import money_text


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
