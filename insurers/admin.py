"""Insurer admin: connection settings and health at a glance; secrets never displayed.

Webhook secrets and credentials are write-only here: typed when an insurer is added (the
inputs never render a value back), shown masked afterwards, and replaced on the change
form through write-only fields ("new webhook secret" rotates: the current one stays
accepted as the previous secret until dropped). Saving goes through
`insurers.services.insurer_settings_save`, which audits which of the endpoint, connection,
credentials and secrets changed. No filter passes through a secret (SecretLookupRefusal).
"""

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from pymongo.errors import PyMongoError

from ems.admin_mixins import ReadOnlyAdmin, ReadOnlyInline, SecretLookupRefusal, actor_of, permission_check
from ems.formatting import money_text
from insurers.breaker import breaker_reset
from insurers.models import Dispatch, DispatchItem, Insurer, WebhookEvent
from insurers.selectors import exchanges_for_dispatch
from insurers.services import insurer_settings_save

MASK = "••••••••"


def secret_masked(value: str) -> str:
    """Enough to tell two secrets apart, never enough to use one."""
    if not value:
        return "—"
    return f"{MASK}{value[-4:]}" if len(value) >= 16 else MASK


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders its value back (a secret typed in stays unseen)."""

    def format_value(self, value):
        return None


def write_only_input() -> forms.PasswordInput:
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


class InsurerAdminForm(forms.ModelForm):
    new_webhook_secret = forms.CharField(
        required=False,
        max_length=128,
        widget=write_only_input(),
        label="New webhook secret",
        help_text="Empty keeps the current secret. A new one rotates: the current secret stays "
        "accepted as the previous one until you drop it.",
    )
    drop_previous_secret = forms.BooleanField(
        required=False, label="Drop the previous webhook secret (the insurer signs with the new one)"
    )
    new_credentials = forms.JSONField(
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 3}),
        label="New credentials",
        help_text="Empty keeps the current credentials; a JSON object replaces them whole.",
    )

    class Meta:  # the admin supplies the model and, from its fieldsets, the fields
        widgets = {
            "webhook_secret_primary": write_only_input(),
            "webhook_secret_secondary": write_only_input(),
            "credentials": WriteOnlyTextarea(attrs={"rows": 3}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "credentials" in self.fields:
            # a callable default makes Django echo the value in a hidden "initial-" input
            self.fields["credentials"].show_hidden_initial = False

    def clean_credentials(self):
        return self._credentials_object(self.cleaned_data.get("credentials")) or {}

    def clean_new_credentials(self):
        return self._credentials_object(self.cleaned_data.get("new_credentials"))

    @staticmethod
    def _credentials_object(value):
        if value is not None and not isinstance(value, dict):
            raise forms.ValidationError("Credentials are a JSON object of names to secrets.")
        return value


@admin.register(Insurer)
class InsurerAdmin(SecretLookupRefusal, admin.ModelAdmin):
    form = InsurerAdminForm
    list_display = (
        "code",
        "name",
        "protocol",
        "endpoint_url",
        "circuit_state",
        "dispatch_window_seconds",
        "dispatch_batch_size",
        "webhook_secret",
        "policy_count",
        "is_active",
    )
    list_filter = ("protocol", "circuit_state", "is_active")
    actions = ["reset_circuit"]
    search_fields = ("code", "name")
    ordering = ("code",)
    secret_fields = ("webhook_secret_primary", "webhook_secret_secondary", "credentials")
    fieldsets = (
        (None, {"fields": ("code", "name", "protocol", "is_active")}),
        ("Connection", {"fields": ("endpoint_url", "connection", "request_timeout_seconds")}),
        (
            "Secrets",
            {"fields": ("webhook_secret_primary", "webhook_secret_secondary", "credentials")},
        ),
        (
            "Dispatch and retries",
            {
                "fields": (
                    "dispatch_window_seconds",
                    "dispatch_batch_size",
                    "retry_max_attempts",
                    "retry_base_seconds",
                )
            },
        ),
        (
            "Circuit breaker and rate limit",
            {
                "fields": (
                    "circuit_state",
                    "circuit_opened_at",
                    "circuit_failures",
                    "circuit_last_error",
                    "circuit_failure_threshold",
                    "circuit_cooldown_seconds",
                    "rate_limit_per_second",
                )
            },
        ),
        ("SLA", {"fields": ("sla_inclusion_days", "sla_correction_days")}),
    )
    masked_fieldset = (
        "Secrets",
        {
            "fields": (
                "webhook_secret_primary_masked",
                "webhook_secret_secondary_masked",
                "credentials_masked",
                "new_webhook_secret",
                "drop_previous_secret",
                "new_credentials",
            )
        },
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(policy_total=Count("policies", distinct=True))

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets
        return tuple(
            self.masked_fieldset if title == "Secrets" else (title, options)
            for title, options in self.fieldsets
        )

    def get_readonly_fields(self, request, obj=None):
        readonly = ["circuit_state", "circuit_opened_at", "circuit_failures", "circuit_last_error"]
        if obj is not None:
            readonly += [
                "code",
                "webhook_secret_primary_masked",
                "webhook_secret_secondary_masked",
                "credentials_masked",
            ]
        return readonly

    def save_model(self, request, obj, form, change):
        model_fields = {field.name for field in Insurer._meta.concrete_fields}
        data = form.cleaned_data
        insurer_settings_save(
            insurer=obj,
            changed=[name for name in form.changed_data if name in model_fields],
            actor=actor_of(request),
            created=not change,
            new_webhook_secret=data.get("new_webhook_secret", ""),
            drop_previous_secret=data.get("drop_previous_secret", False),
            new_credentials=data.get("new_credentials"),
        )

    @admin.display(description="webhook secret")
    def webhook_secret(self, obj: Insurer) -> str:
        secondary = (
            f" (+{secret_masked(obj.webhook_secret_secondary)})" if obj.webhook_secret_secondary else ""
        )
        return secret_masked(obj.webhook_secret_primary) + secondary

    @admin.display(description="webhook secret (primary)")
    def webhook_secret_primary_masked(self, obj: Insurer) -> str:
        return secret_masked(obj.webhook_secret_primary)

    @admin.display(description="webhook secret (previous, during rotation)")
    def webhook_secret_secondary_masked(self, obj: Insurer) -> str:
        return secret_masked(obj.webhook_secret_secondary)

    @admin.display(description="credentials")
    def credentials_masked(self, obj: Insurer) -> str:
        if not obj.credentials:
            return "—"
        return ", ".join(f"{key}: {MASK}" for key in sorted(obj.credentials))

    @admin.display(description="policies", ordering="policy_total")
    def policy_count(self, obj: Insurer) -> int:
        return obj.policy_total

    @admin.action(description="Reset the circuit breaker (close it)", permissions=["reset_circuit"])
    def reset_circuit(self, request, queryset) -> None:
        for insurer in queryset:
            breaker_reset(insurer=insurer)
        self.message_user(request, f"Circuit closed for {queryset.count()} insurer(s).", messages.SUCCESS)

    has_reset_circuit_permission = permission_check("insurers.reset_circuit")


class DispatchItemInline(ReadOnlyInline):
    model = DispatchItem
    fields = (
        "reference",
        "kind",
        "result",
        "insurer_reference",
        "insurer_member_id",
        "insurer_premium_display",
        "result_code",
        "result_reason",
        "result_at",
        "is_live",
    )
    readonly_fields = fields

    @admin.display(description="insurer premium")
    def insurer_premium_display(self, obj: DispatchItem) -> str:
        return money_text(obj.insurer_premium, obj.payload.get("currency", "INR"))


@admin.register(Dispatch)
class DispatchAdmin(ReadOnlyAdmin):
    list_display = ("idempotency_key", "insurer", "protocol", "state", "attempts", "created_at", "sent_at")
    list_filter = ("state", "protocol", "insurer")
    search_fields = ("idempotency_key", "items__reference")
    list_select_related = ("insurer",)
    readonly_fields = (
        "insurer",
        "idempotency_key",
        "protocol",
        "state",
        "attempts",
        "last_error",
        "next_attempt_at",
        "created_at",
        "sent_at",
        "completed_at",
    )
    inlines = [DispatchItemInline]
    change_form_template = "admin/insurers/dispatch/change_form.html"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        try:
            extra_context["exchanges"] = exchanges_for_dispatch(int(object_id))
        except (PyMongoError, ValueError):
            extra_context["exchanges_error"] = "The exchange log (MongoDB) is unreachable right now."
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    """What insurers told us, as received. Filter by flag for the ops queue (unknown tracking
    id, incomplete data); "processed at: empty" shows what still waits for its task."""

    list_display = ("event_id", "insurer", "type", "tracking_id", "flag", "received_at", "processed_at")
    list_filter = ("flag", "type", "insurer", ("processed_at", admin.EmptyFieldListFilter))
    search_fields = ("event_id", "tracking_id")
    list_select_related = ("insurer",)
    date_hierarchy = "received_at"
