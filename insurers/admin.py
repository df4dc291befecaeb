"""Insurer admin: connection settings and health at a glance; secrets never displayed.

Webhook secrets and credentials are write-once here: they are entered when an insurer is
added and shown masked afterwards (rotation belongs to a service, not to a form field).
"""

from django.contrib import admin
from django.db.models import Count

from insurers.models import Insurer, WebhookEvent

MASK = "••••••••"


def secret_masked(value: str) -> str:
    """Enough to tell two secrets apart, never enough to use one."""
    if not value:
        return "—"
    return f"{MASK}{value[-4:]}" if len(value) >= 16 else MASK


@admin.register(Insurer)
class InsurerAdmin(admin.ModelAdmin):
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
        ("Circuit breaker", {"fields": ("circuit_state", "circuit_opened_at")}),
        ("SLA", {"fields": ("sla_inclusion_days", "sla_correction_days")}),
    )
    masked_fieldset = (
        "Secrets",
        {
            "fields": (
                "webhook_secret_primary_masked",
                "webhook_secret_secondary_masked",
                "credentials_masked",
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
        readonly = ["circuit_state", "circuit_opened_at"]
        if obj is not None:
            readonly += [
                "code",
                "webhook_secret_primary_masked",
                "webhook_secret_secondary_masked",
                "credentials_masked",
            ]
        return readonly

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


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    """Read-only: what insurers told us, as received. Filter by flag for the ops queue."""

    list_display = ("event_id", "insurer", "type", "tracking_id", "flag", "received_at", "processed_at")
    list_filter = ("flag", "type", "insurer", ("processed_at", admin.EmptyFieldListFilter))
    search_fields = ("event_id", "tracking_id")
    list_select_related = ("insurer",)
    date_hierarchy = "received_at"
    readonly_fields = [field.name for field in WebhookEvent._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
