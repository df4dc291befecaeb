"""Admin for the EA ledger. Thin: columns, filters and actions that call the ledger's services.

- Accounts: balances, available and the parked queue annotated in `get_queryset` (one
  query per page). Ops open an account or change its low-balance threshold (services);
  posted and held are never editable. "Wake parked queue now" needs `ledger.wake_parked`.
- Entries and holds: read-only for everyone, superusers included. "Release" on pending
  holds needs `ledger.release_hold`.
- Top-ups: ops record one (maker, `ledger.add_topup`); "Approve" / "Reject" need
  `ledger.approve_topup` (the finance_approver group); the service refuses the maker.
- Adjustments: the same maker-checker (`DecisionAdmin`) with `ledger.add_adjustment` and
  `ledger.approve_adjustment`.
- Parked requests: the queue per account (linked from the account list), with
  "Wake now" and "Cancel" (`ledger.wake_parked`).
The note typed beside the action menu becomes the reason of a reject, cancel or release.
"""

import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.urls import reverse
from django.utils.html import format_html

from ems.admin_mixins import (
    MoneyFieldsAdmin,
    ReadOnlyAdmin,
    actor_of,
    money_column,
    permission_check,
    text_column,
)
from ems.formatting import money_text
from ledger import approvals, parking, selectors, services
from ledger.errors import LedgerError
from ledger.models import Account, Adjustment, Entry, Hold, ParkedRequest, TopUp
from ledger.validation import amount_valid


class NoteActionForm(ActionForm):
    note = forms.CharField(required=False, max_length=500, label="Note (reason)")


def _note(request, default: str) -> str:
    return (request.POST.get("note") or "").strip() or default


def _run_each(modeladmin, request, rows, call, done: str, *, note_default: str = "") -> None:
    """Call the service per row as `call(row, note)` (the note typed beside the action menu,
    or `note_default`); report successes and each refusal with its code."""
    note = _note(request, note_default)
    succeeded = 0
    for row in rows:
        try:
            call(row, note)
            succeeded += 1
        except LedgerError as exc:
            modeladmin.message_user(request, f"#{row.pk}: {exc.message} ({exc.code})", messages.ERROR)
    if succeeded:
        modeladmin.message_user(request, f"{succeeded} {done}.", messages.SUCCESS)


def _queues_wake(modeladmin, request, account_ids) -> None:
    """Wake each account's parked queue, oldest first; report how many requests were placed."""
    actor = actor_of(request)
    placed = sum(len(parking.parked_wake(account_id=account_id, actor=actor)) for account_id in account_ids)
    modeladmin.message_user(request, f"{placed} parked request(s) placed.", messages.SUCCESS)


class AccountForm(forms.ModelForm):
    class Meta:
        model = Account
        fields = ["employer", "insurer", "currency", "low_balance_threshold"]

    def clean_low_balance_threshold(self) -> int:
        value = self.cleaned_data["low_balance_threshold"]
        if value < 0:
            raise forms.ValidationError("The threshold is zero or more (minor units).")
        return value


@admin.register(Account)
class AccountAdmin(MoneyFieldsAdmin, admin.ModelAdmin):
    form = AccountForm
    money_fields = {"posted": "currency", "held": "currency", "low_balance_threshold": "currency"}
    # Narrow enough for a laptop (1366 px) beside the filters: names cut short (whole in the
    # tooltip), the currency in each figure rather than a column of its own.
    list_display = [
        "id",
        "employer_name",
        "insurer_name",
        "posted_display",
        "held_display",
        "available_display",
        "threshold_display",
        "parked_display",
    ]
    list_select_related = ["employer", "insurer"]
    list_filter = ["insurer", "currency"]
    search_fields = ["employer__code", "employer__name", "insurer__code"]
    raw_id_fields = ["employer", "insurer"]
    actions = ["wake_parked"]
    action_form = NoteActionForm

    def get_queryset(self, request):
        return selectors.accounts_annotated(super().get_queryset(request))

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["posted", "held"]
        return self.money_shown(["employer", "insurer", "currency", "posted", "held"])

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    has_wake_parked_permission = permission_check("ledger.wake_parked")

    employer_name = text_column("employer.name", "employer", limit=28)
    insurer_name = text_column("insurer.name", "insurer", limit=20)
    posted_display = money_column("posted", "posted", currency="currency")
    held_display = money_column("held", "held", currency="currency")
    available_display = money_column("available_amount", "available", currency="currency")
    threshold_display = money_column("low_balance_threshold", "alert below", currency="currency")

    @admin.display(description="parked", ordering="parked_count")
    def parked_display(self, obj):
        if not obj.parked_count:
            return "—"
        url = reverse("admin:ledger_parkedrequest_changelist")
        return format_html(
            '<a href="{}?account__id__exact={}&state__exact=PARKED">{} waiting ({})</a>',
            url,
            obj.pk,
            obj.parked_count,
            money_text(obj.parked_amount, obj.currency),
        )

    def save_model(self, request, obj, form, change) -> None:
        if change:
            services.account_update(
                account_id=obj.pk,
                low_balance_threshold=obj.low_balance_threshold,
                actor=actor_of(request),
            )
            return
        account = services.account_open(
            employer_id=obj.employer_id,
            insurer_id=obj.insurer_id,
            currency=obj.currency,
            low_balance_threshold=obj.low_balance_threshold,
            actor=actor_of(request),
        )
        obj.pk = account.pk
        obj.created_at = account.created_at

    @admin.action(description="Wake parked queue now", permissions=["wake_parked"])
    def wake_parked(self, request, queryset):
        _queues_wake(self, request, [account.pk for account in queryset])


# A hold's and a parked request's first columns: what it is for and where it stands.
HOLD_LIKE_COLUMNS = ("id", "account", "reference", "amount_display", "state")


class AccountRowAdmin(MoneyFieldsAdmin, ReadOnlyAdmin):
    """Read-only rows of an account (entries, holds, parked requests), found by reference or key."""

    money_fields = {"amount": "account.currency"}

    list_select_related = ["account"]
    search_fields = ["reference", "idempotency_key"]
    amount_display = money_column("amount", "amount")


@admin.register(Entry)
class EntryAdmin(AccountRowAdmin):
    list_display = ["id", "account", "kind", "amount_display", "balance_display", "reference", "created_at"]
    list_filter = ["kind"]
    raw_id_fields = ["account", "hold"]
    date_hierarchy = "created_at"
    money_fields = {"amount": "account.currency", "balance_after": "account.currency"}

    balance_display = money_column("balance_after", "balance after")


@admin.register(Hold)
class HoldAdmin(AccountRowAdmin):
    list_display = [*HOLD_LIKE_COLUMNS, "captured_display", "expires_at", "created_at", "resolved_at"]
    list_filter = ["state"]
    raw_id_fields = ["account"]
    actions = ["release"]
    money_fields = {"amount": "account.currency", "captured_amount": "account.currency"}
    action_form = NoteActionForm

    has_release_hold_permission = permission_check("ledger.release_hold")

    captured_display = money_column("captured_amount", "captured")

    @admin.action(description="Release selected pending holds", permissions=["release_hold"])
    def release(self, request, queryset):
        def release_one(hold, reason):
            return services.hold_release(hold_id=hold.pk, reason=reason, actor=actor_of(request))

        _run_each(self, request, queryset, release_one, "hold(s) released", note_default="released in admin")


def _form_amount(value, *, signed: bool = False) -> int:
    try:
        return amount_valid(value, signed=signed)
    except LedgerError as exc:
        raise forms.ValidationError(exc.details[0].message if exc.details else exc.message) from None


class TopUpForm(forms.ModelForm):
    class Meta:
        model = TopUp
        fields = ["account", "amount", "payment_reference", "payment_date", "proof_note"]

    def clean_amount(self) -> int:
        return _form_amount(self.cleaned_data["amount"])


# Where a maker-checker row stands, after what it is.
DECISION_COLUMNS = ("state", "requested_by", "decided_by", "created_at", "decided_at")


class DecisionAdmin(MoneyFieldsAdmin, admin.ModelAdmin):
    """Maker-checker rows: added through a service, decided by actions, never edited.

    A subclass names the permission that decides (`approve_permission`), what its rows are
    called in messages, and its two services: create, and decide (approve or reject).
    """

    action_form = NoteActionForm
    actions = ["approve", "reject"]
    raw_id_fields = ["account"]
    list_filter = ["state"]
    approve_permission: str
    rows_noun: str
    money_fields = {"amount": "account.currency"}

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm(self.approve_permission)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.money_shown(f.name for f in self.model._meta.fields)

    def save_model(self, request, obj, form, change) -> None:
        # What every maker's service takes; each admin adds its own fields.
        key = f"admin:{uuid.uuid4()}"
        common = {"account_id": obj.account_id, "amount": obj.amount, "idempotency_key": key}
        created = self.create_through_service(request, obj, common)
        obj.pk = created.pk
        obj.created_at = created.created_at

    amount_display = money_column("amount", "amount")

    @admin.action(
        description="Approve selected %(verbose_name_plural)s (posts them)", permissions=["approve"]
    )
    def approve(self, request, queryset):
        def approve_one(row, _unused_note):
            return self.decide_through_service(row, approver=request.user, approve=True)

        _run_each(self, request, queryset, approve_one, f"{self.rows_noun} approved")

    @admin.action(description="Reject selected %(verbose_name_plural)s", permissions=["approve"])
    def reject(self, request, queryset):
        def reject_one(row, note):
            return self.decide_through_service(row, approver=request.user, approve=False, note=note)

        done = f"{self.rows_noun} rejected"
        _run_each(self, request, queryset, reject_one, done, note_default="rejected in admin")

    def create_through_service(self, request, obj, common: dict):
        raise NotImplementedError

    def decide_through_service(self, row, *, approver, approve: bool, note: str = ""):
        raise NotImplementedError


@admin.register(TopUp)
class TopUpAdmin(DecisionAdmin):
    form = TopUpForm
    list_display = ["id", "account", "amount_display", "payment_reference", *DECISION_COLUMNS]
    list_select_related = ["account", "decided_by"]
    search_fields = ["payment_reference", "requested_by"]
    approve_permission = "ledger.approve_topup"
    rows_noun = "top-up(s)"

    def create_through_service(self, request, obj, common: dict):
        return approvals.account_topup(
            **common,
            payment_reference=obj.payment_reference,
            payment_date=obj.payment_date,
            proof_note=obj.proof_note,
            requested_by=actor_of(request),
        )

    def decide_through_service(self, row, **decision):
        return approvals.topup_decide(topup_id=row.pk, **decision)


class AdjustmentForm(forms.ModelForm):
    class Meta:
        model = Adjustment
        fields = ["account", "amount", "reason"]

    def clean_amount(self) -> int:
        return _form_amount(self.cleaned_data["amount"], signed=True)


@admin.register(Adjustment)
class AdjustmentAdmin(DecisionAdmin):
    form = AdjustmentForm
    list_display = ["id", "account", "amount_display", "reason", *DECISION_COLUMNS]
    list_select_related = ["account", "decided_by"]
    search_fields = ["reason", "requested_by"]
    approve_permission = "ledger.approve_adjustment"
    rows_noun = "adjustment(s)"

    def create_through_service(self, request, obj, common: dict):
        return approvals.adjustment_request(**common, reason=obj.reason, requested_by=actor_of(request))

    def decide_through_service(self, row, **decision):
        return approvals.adjustment_decide(adjustment_id=row.pk, **decision)


@admin.register(ParkedRequest)
class ParkedRequestAdmin(AccountRowAdmin):
    """The parked queue: filter by account (linked from the account list), oldest first."""

    list_display = [*HOLD_LIKE_COLUMNS, "hold", "created_at", "resolved_at"]
    list_filter = ["state"]
    raw_id_fields = ["account", "hold"]
    ordering = ["account", "id"]
    actions = ["wake_now", "cancel"]
    action_form = NoteActionForm

    has_wake_parked_permission = permission_check("ledger.wake_parked")

    @admin.action(description="Wake now (the selected requests' accounts)", permissions=["wake_parked"])
    def wake_now(self, request, queryset):
        _queues_wake(self, request, sorted(set(queryset.values_list("account_id", flat=True))))

    @admin.action(description="Cancel selected parked requests", permissions=["wake_parked"])
    def cancel(self, request, queryset):
        def cancel_one(parked, reason):
            return parking.parked_cancel(parked_request_id=parked.pk, reason=reason, actor=actor_of(request))

        done = "parked request(s) cancelled"
        _run_each(self, request, queryset, cancel_one, done, note_default="cancelled in admin")
