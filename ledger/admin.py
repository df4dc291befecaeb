"""Admin for the EA ledger. Thin: columns, filters and actions that call the ledger's services.

- Accounts: balances, available and the parked queue annotated in `get_queryset` (one
  query per page). Ops open an account or change its low-balance threshold (services);
  posted and held are never editable. "Wake parked queue now" needs `ledger.wake_parked`.
- Entries and holds: read-only for everyone, superusers included. "Release" on pending
  holds needs `ledger.release_hold`.
- Top-ups: ops record one (maker, `ledger.add_topup`); "Approve" / "Reject" need
  `ledger.approve_topup` (the finance_approver group); the service refuses the maker.
- Adjustments: the same maker-checker with `ledger.add_adjustment` and
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

from ledger import approvals, parking, selectors, services
from ledger.errors import LedgerError
from ledger.models import Account, Adjustment, Entry, Hold, ParkedRequest, TopUp
from ledger.validation import amount_valid


def money(minor: int | None, currency: str = "INR") -> str:
    """Integer minor units with two decimals and grouping: 123456 -> '₹1,234.56'."""
    if minor is None:
        return "—"
    symbol = "₹" if currency == "INR" else f"{currency} "
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 100)
    return f"{sign}{symbol}{whole:,}.{fraction:02d}"


def actor_of(request) -> str:
    return f"user:{request.user.pk}"


class NoteActionForm(ActionForm):
    note = forms.CharField(required=False, max_length=500, label="Note (reason)")


def _note(request, default: str) -> str:
    return (request.POST.get("note") or "").strip() or default


def _run_each(modeladmin, request, rows, call, done: str) -> None:
    """Call the service per row; report successes and each refusal with its code."""
    succeeded = 0
    for row in rows:
        try:
            call(row)
            succeeded += 1
        except LedgerError as exc:
            modeladmin.message_user(request, f"#{row.pk}: {exc.message} ({exc.code})", messages.ERROR)
    if succeeded:
        modeladmin.message_user(request, f"{succeeded} {done}.", messages.SUCCESS)


class ReadOnlyLedgerAdmin(admin.ModelAdmin):
    """Ledger rows: nobody adds, edits or deletes them here, superusers included."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


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
class AccountAdmin(admin.ModelAdmin):
    form = AccountForm
    list_display = [
        "id",
        "employer",
        "insurer",
        "currency",
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
        return ["employer", "insurer", "currency", "posted", "held"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_wake_parked_permission(self, request) -> bool:
        return request.user.has_perm("ledger.wake_parked")

    @admin.display(description="posted", ordering="posted")
    def posted_display(self, obj):
        return money(obj.posted, obj.currency)

    @admin.display(description="held", ordering="held")
    def held_display(self, obj):
        return money(obj.held, obj.currency)

    @admin.display(description="available", ordering="available_amount")
    def available_display(self, obj):
        return money(obj.available_amount, obj.currency)

    @admin.display(description="low-balance threshold", ordering="low_balance_threshold")
    def threshold_display(self, obj):
        return money(obj.low_balance_threshold, obj.currency)

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
            money(obj.parked_amount, obj.currency),
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
        placed = 0
        for account in queryset:
            placed += len(parking.parked_wake(account_id=account.pk, actor=actor_of(request)))
        self.message_user(request, f"{placed} parked request(s) placed.", messages.SUCCESS)


@admin.register(Entry)
class EntryAdmin(ReadOnlyLedgerAdmin):
    list_display = ["id", "account", "kind", "amount_display", "balance_display", "reference", "created_at"]
    list_select_related = ["account"]
    list_filter = ["kind"]
    search_fields = ["reference", "idempotency_key"]
    raw_id_fields = ["account", "hold"]
    date_hierarchy = "created_at"

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj):
        return money(obj.amount, obj.account.currency)

    @admin.display(description="balance after", ordering="balance_after")
    def balance_display(self, obj):
        return money(obj.balance_after, obj.account.currency)


@admin.register(Hold)
class HoldAdmin(ReadOnlyLedgerAdmin):
    list_display = [
        "id",
        "account",
        "reference",
        "amount_display",
        "state",
        "captured_display",
        "expires_at",
        "created_at",
        "resolved_at",
    ]
    list_select_related = ["account"]
    list_filter = ["state"]
    search_fields = ["reference", "idempotency_key"]
    raw_id_fields = ["account"]
    actions = ["release"]
    action_form = NoteActionForm

    def has_release_hold_permission(self, request) -> bool:
        return request.user.has_perm("ledger.release_hold")

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj):
        return money(obj.amount, obj.account.currency)

    @admin.display(description="captured", ordering="captured_amount")
    def captured_display(self, obj):
        return money(obj.captured_amount, obj.account.currency)

    @admin.action(description="Release selected pending holds", permissions=["release_hold"])
    def release(self, request, queryset):
        reason = _note(request, "released in admin")
        _run_each(
            self,
            request,
            queryset,
            lambda hold: services.hold_release(hold_id=hold.pk, reason=reason, actor=actor_of(request)),
            "hold(s) released",
        )


def _form_amount(value, *, signed: bool = False) -> int:
    try:
        return amount_valid(value, signed=signed)
    except LedgerError as exc:
        raise forms.ValidationError(exc.details[0].message if exc.details else exc.message) from None


class TopUpForm(forms.ModelForm):
    class Meta:
        model = TopUp
        fields = ["account", "amount", "payment_reference"]

    def clean_amount(self) -> int:
        return _form_amount(self.cleaned_data["amount"])


class DecisionAdmin(admin.ModelAdmin):
    """Maker-checker rows: added through a service, decided by actions, never edited."""

    action_form = NoteActionForm

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else [f.name for f in self.model._meta.fields]

    def save_model(self, request, obj, form, change) -> None:
        created = self.create_through_service(request, obj)
        obj.pk = created.pk
        obj.created_at = created.created_at

    def decide(self, request, queryset, *, approve: bool, done: str) -> None:
        """Approve, or reject with the note typed beside the action menu, each selected row."""
        note = "" if approve else _note(request, "rejected in admin")
        _run_each(
            self,
            request,
            queryset,
            lambda row: self.decide_through_service(row, approver=request.user, approve=approve, note=note),
            done,
        )


@admin.register(TopUp)
class TopUpAdmin(DecisionAdmin):
    form = TopUpForm
    list_display = [
        "id",
        "account",
        "amount_display",
        "payment_reference",
        "state",
        "requested_by",
        "decided_by",
        "created_at",
        "decided_at",
    ]
    list_select_related = ["account", "decided_by"]
    list_filter = ["state"]
    search_fields = ["payment_reference", "requested_by"]
    raw_id_fields = ["account"]
    actions = ["approve", "reject"]

    def has_approve_topup_permission(self, request) -> bool:
        return request.user.has_perm("ledger.approve_topup")

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj):
        return money(obj.amount, obj.account.currency)

    def create_through_service(self, request, obj):
        return approvals.account_topup(
            account_id=obj.account_id,
            amount=obj.amount,
            payment_reference=obj.payment_reference,
            idempotency_key=f"admin:{uuid.uuid4()}",
            requested_by=actor_of(request),
        )

    def decide_through_service(self, topup, **decision):
        return approvals.topup_decide(topup_id=topup.pk, **decision)

    @admin.action(description="Approve selected top-ups (posts them)", permissions=["approve_topup"])
    def approve(self, request, queryset):
        self.decide(request, queryset, approve=True, done="top-up(s) approved")

    @admin.action(description="Reject selected top-ups", permissions=["approve_topup"])
    def reject(self, request, queryset):
        self.decide(request, queryset, approve=False, done="top-up(s) rejected")


class AdjustmentForm(forms.ModelForm):
    class Meta:
        model = Adjustment
        fields = ["account", "amount", "reason"]

    def clean_amount(self) -> int:
        return _form_amount(self.cleaned_data["amount"], signed=True)


@admin.register(Adjustment)
class AdjustmentAdmin(DecisionAdmin):
    form = AdjustmentForm
    list_display = [
        "id",
        "account",
        "amount_display",
        "reason",
        "state",
        "requested_by",
        "decided_by",
        "created_at",
        "decided_at",
    ]
    list_select_related = ["account", "decided_by"]
    list_filter = ["state"]
    search_fields = ["reason", "requested_by"]
    raw_id_fields = ["account"]
    actions = ["approve", "reject"]

    def has_approve_adjustment_permission(self, request) -> bool:
        return request.user.has_perm("ledger.approve_adjustment")

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj):
        return money(obj.amount, obj.account.currency)

    def create_through_service(self, request, obj):
        return approvals.adjustment_request(
            account_id=obj.account_id,
            amount=obj.amount,
            reason=obj.reason,
            idempotency_key=f"admin:{uuid.uuid4()}",
            requested_by=actor_of(request),
        )

    def decide_through_service(self, adjustment, **decision):
        return approvals.adjustment_decide(adjustment_id=adjustment.pk, **decision)

    @admin.action(description="Approve selected adjustments (posts them)", permissions=["approve_adjustment"])
    def approve(self, request, queryset):
        self.decide(request, queryset, approve=True, done="adjustment(s) approved")

    @admin.action(description="Reject selected adjustments", permissions=["approve_adjustment"])
    def reject(self, request, queryset):
        self.decide(request, queryset, approve=False, done="adjustment(s) rejected")


@admin.register(ParkedRequest)
class ParkedRequestAdmin(ReadOnlyLedgerAdmin):
    """The parked queue: filter by account (linked from the account list), oldest first."""

    list_display = [
        "id",
        "account",
        "reference",
        "amount_display",
        "state",
        "hold",
        "created_at",
        "resolved_at",
    ]
    list_select_related = ["account"]
    list_filter = ["state"]
    search_fields = ["reference", "idempotency_key"]
    raw_id_fields = ["account", "hold"]
    ordering = ["account", "id"]
    actions = ["wake_now", "cancel"]
    action_form = NoteActionForm

    def has_wake_parked_permission(self, request) -> bool:
        return request.user.has_perm("ledger.wake_parked")

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj):
        return money(obj.amount, obj.account.currency)

    @admin.action(description="Wake now (the selected requests' accounts)", permissions=["wake_parked"])
    def wake_now(self, request, queryset):
        placed = 0
        for account_id in sorted(set(queryset.values_list("account_id", flat=True))):
            placed += len(parking.parked_wake(account_id=account_id, actor=actor_of(request)))
        self.message_user(request, f"{placed} parked request(s) placed.", messages.SUCCESS)

    @admin.action(description="Cancel selected parked requests", permissions=["wake_parked"])
    def cancel(self, request, queryset):
        reason = _note(request, "cancelled in admin")
        _run_each(
            self,
            request,
            queryset,
            lambda parked: parking.parked_cancel(
                parked_request_id=parked.pk, reason=reason, actor=actor_of(request)
            ),
            "parked request(s) cancelled",
        )
