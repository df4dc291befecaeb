"""Admin for the platform: the tenant, the outbox and idempotency records (read-only) and the
audit trail.

- Employers, their HR users and API clients. API clients never show their secret hash: a
  new client's secret is shown once after adding it, and "revoke" goes through
  `ems.identity`; a client is revoked, never deleted. The endorsements admin extends the
  employer's page with its employee and policy counts.
- Outbox events: read-only for everyone, superusers included (rows change only through
  the relay). The "Retry now" action clears the backoff of the selected rows' sinks
  through `ems.outbox_relay.outbox_backoff_clear`; it needs `ems.retry_outboxevent`.
  The list page says which sinks are backing off and whether the Kafka relay is off.
- Idempotency records: read-only.
- Users: Django's own admin, with lookups through `password` (the hash) refused like
  every other secret field (`ems.admin_mixins.SecretLookupRefusal`).
- Login lockouts (django-axes' failed attempts): read-only; "Unlock" forgets the selected
  attempts through `ems.login_locks.login_locks_release` (audited); it needs
  `axes.delete_accessattempt`.
- Audit trail (`/admin/ems/audit-trail/`): audit records read from MongoDB through
  `ems.audit_reader`, filtered by actor, action, object, employer and date; it needs
  `ems.view_audit_trail`. The default admin site has no hook for extra pages, so
  `_audit_trail_install` wraps its `get_urls` (the page) and `get_app_list` (the link in
  the index and the sidebar). If MongoDB is unreachable the page says so (503).
"""

import datetime

from axes.models import AccessAttempt
from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import PermissionDenied
from django.http import QueryDict
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from pymongo.errors import PyMongoError

from ems import clients
from ems.actor_names import actor_recorded, names_for
from ems.admin_mixins import ReadOnlyAdmin, SecretLookupRefusal, actor_of, permission_check
from ems.audit_reader import audit_search
from ems.identity import api_client_create, api_client_revoke
from ems.login_locks import login_locks_release
from ems.models import ApiClient, Employer, EmployerMembership, IdempotencyRecord, OutboxEvent
from ems.outbox_relay import SINKS, backoff_remaining, outbox_backoff_clear

AUDIT_TRAIL_PERMISSION = "ems.view_audit_trail"
OUTBOX_RETRY_PERMISSION = "ems.retry_outboxevent"
AUDIT_PAGE_SIZE = 50


class DeliveredFilter(admin.SimpleListFilter):
    title = "delivered"
    parameter_name = "delivered"

    def lookups(self, request, model_admin):
        return (("yes", "Delivered"), ("no", "Pending"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(delivered_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(delivered_at__isnull=True)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    # What a row is and where it stands: in the list and on the row's page.
    row_columns = ("sink", "destination", "key", "event_count", "created_at", "delivered_at", "attempts")
    list_display = ("id", *row_columns, "error")
    list_filter = ("sink", DeliveredFilter)
    search_fields = ("=key", "=destination")
    ordering = ("-id",)
    list_per_page = 100
    show_full_result_count = False
    actions = ["retry_now"]
    fields = ("event_id", *row_columns, "last_error", "payload")
    readonly_fields = fields

    @admin.display(description="last error")
    def error(self, obj: OutboxEvent) -> str:
        return obj.last_error[:80]

    has_retry_permission = permission_check(OUTBOX_RETRY_PERMISSION)

    @admin.action(
        description="Retry now: clear the backoff of the selected rows' sinks", permissions=["retry"]
    )
    def retry_now(self, request, queryset) -> None:
        sinks = set(queryset.order_by().values_list("sink", flat=True).distinct())
        cleared = outbox_backoff_clear(sinks=sinks, actor=request.user.get_username())
        self.message_user(
            request,
            f"Backoff cleared for {', '.join(cleared)}; the next relay run tries now.",
            messages.SUCCESS,
        )

    def changelist_view(self, request, extra_context=None):
        if request.method == "GET":
            for sink in SINKS:
                if sink == OutboxEvent.Sink.KAFKA and not clients.kafka_enabled():
                    self.message_user(
                        request,
                        "The Kafka relay is off (KAFKA_BOOTSTRAP_SERVERS is empty): Kafka rows stay pending.",
                        messages.INFO,
                    )
                    continue
                waiting = backoff_remaining(sink)
                if waiting > 0:
                    self.message_user(
                        request,
                        f"{sink} is backing off after failures: next try in {waiting:.0f} s.",
                        messages.WARNING,
                    )
        return super().changelist_view(request, extra_context)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ("id", "caller", "scope", "key", "state", "response_status", "created_at")
    list_filter = ("state", "scope")
    search_fields = ("=caller", "=key")
    ordering = ("-id",)
    list_per_page = 100
    show_full_result_count = False


# --- users: Django's admin, no lookup through the password hash --------------------------

User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class UserAdmin(SecretLookupRefusal, DjangoUserAdmin):
    secret_field_names = ("password",)


@admin.register(AccessAttempt)
class LoginLockAdmin(ReadOnlyAdmin):
    list_display = ("username", "ip_address", "failures_since_start", "attempt_time", "path_info")
    list_filter = ("path_info",)
    search_fields = ("=username", "=ip_address")
    ordering = ("-attempt_time",)
    fields = ("username", "ip_address", "user_agent", "failures_since_start", "attempt_time", "path_info")
    readonly_fields = fields
    actions = ["unlock"]

    has_unlock_permission = permission_check("axes.delete_accessattempt")

    @admin.action(
        description="Unlock: forget these failed sign-ins (username and address)", permissions=["unlock"]
    )
    def unlock(self, request, queryset) -> None:
        released = login_locks_release(attempts=queryset, actor=actor_of(request))
        self.message_user(request, f"Unlocked {released} sign-in record(s).", messages.SUCCESS)


# --- the tenant: employers, HR users and API clients ------------------------------------


@admin.register(Employer)
class EmployerAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "contact_name", "contact_email", "is_active")
    list_filter = ("is_active",)
    search_fields = ("code", "name", "contact_email")
    readonly_fields = ("created_at",)


@admin.register(EmployerMembership)
class EmployerMembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "employer", "created_at")
    list_select_related = ("user", "employer")
    list_filter = ("employer",)
    search_fields = ("user__username", "user__email", "employer__code", "employer__name")
    raw_id_fields = ("user",)
    autocomplete_fields = ("employer",)
    readonly_fields = ("created_at",)


@admin.register(ApiClient)
class ApiClientAdmin(SecretLookupRefusal, admin.ModelAdmin):
    list_display = ("name", "client_id", "employer", "is_active", "created_at", "last_token_at", "revoked_at")
    list_select_related = ("employer",)
    list_filter = ("is_active", "employer")
    search_fields = ("name", "client_id", "employer__code", "employer__name")
    autocomplete_fields = ("employer",)
    actions = ("revoke",)
    # secret_hash is in no form, no column and no read-only field
    add_fields = ("employer", "name")
    change_fields = (
        "employer",
        "name",
        "client_id",
        "is_active",
        "created_at",
        "last_token_at",
        "revoked_at",
    )

    def get_fields(self, request, obj=None):
        return self.add_fields if obj is None else self.change_fields

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("employer", "client_id", "is_active", "created_at", "last_token_at", "revoked_at")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: batches and audit records keep pointing at the client

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        client, secret = api_client_create(employer=obj.employer, name=obj.name, actor=actor_of(request))
        # the admin goes on with `obj` (change message, redirect): make it the saved row
        obj.__dict__.update(
            {field.attname: getattr(client, field.attname) for field in ApiClient._meta.concrete_fields}
        )
        obj._state.adding = False
        obj._state.db = client._state.db
        messages.warning(
            request,
            format_html(
                "Client secret for <code>{}</code>: <code>{}</code> — copy it now; it is stored hashed "
                "and will not be shown again.",
                client.client_id,
                secret,
            ),
        )

    @admin.action(
        description="Revoke selected API clients (their tokens stop working at once)", permissions=["change"]
    )
    def revoke(self, request, queryset):
        revoked = sum(api_client_revoke(client=client, actor=actor_of(request)) for client in queryset)
        self.message_user(request, f"Revoked {revoked} API client(s).", messages.SUCCESS)


# --- the audit trail page ---------------------------------------------------------------


class AuditTrailFilterForm(forms.Form):
    actor = forms.CharField(
        required=False, max_length=150, help_text="a username, or an actor as recorded (client:…, system:…)"
    )
    action = forms.CharField(required=False, max_length=100)
    object_type = forms.CharField(required=False, max_length=100)
    object_id = forms.CharField(required=False, max_length=100)
    employer_id = forms.IntegerField(required=False, min_value=1)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="inclusive"
    )
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def search_filters(self) -> dict:
        data = self.cleaned_data
        return {
            "actor": actor_recorded(data["actor"]) or None,
            "action": data["action"] or None,
            "object_type": data["object_type"] or None,
            "object_id": data["object_id"] or None,
            "employer_id": data["employer_id"],
            "since": _day_start(data["since"]) if data["since"] else None,
            "until": _day_start(data["until"] + datetime.timedelta(days=1)) if data["until"] else None,
        }


def _day_start(day: datetime.date) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))


def audit_trail_view(request):
    if not request.user.has_perm(AUDIT_TRAIL_PERMISSION):
        raise PermissionDenied
    form = AuditTrailFilterForm(request.GET or None)
    records: list[dict] = []
    error = ""
    page = 1
    status = 200
    if not form.is_bound or form.is_valid():
        filters = form.search_filters() if form.is_bound else {}
        page = (form.cleaned_data.get("page") if form.is_bound else None) or 1
        try:
            records = audit_search(**filters, limit=AUDIT_PAGE_SIZE + 1, skip=(page - 1) * AUDIT_PAGE_SIZE)
        except PyMongoError as exc:
            status = 503
            error = (
                "The audit store (MongoDB) is unreachable, so the audit trail cannot be shown right now. "
                "No record is lost: audit records wait in the outbox and are delivered when MongoDB is back. "
                f"({type(exc).__name__})"
            )
    has_next = len(records) > AUDIT_PAGE_SIZE
    records = records[:AUDIT_PAGE_SIZE]
    names = names_for(
        actors=(record.get("actor", "") for record in records),
        employer_ids=(record.get("employer_id") for record in records),
    )
    for record in records:
        record["actor_name"] = names.actor(record.get("actor", ""))
        record["employer_name"] = names.employer(record.get("employer_id"))
    context = {
        **admin.site.each_context(request),
        "title": "Audit trail",
        "form": form,
        "records": records,
        "error": error,
        "page": page,
        "previous_query": _page_query(request, page - 1) if page > 1 else "",
        "next_query": _page_query(request, page + 1) if has_next else "",
    }
    return TemplateResponse(request, "admin/ems/audit_trail.html", context, status=status)


def _page_query(request, page: int) -> str:
    query: QueryDict = request.GET.copy()
    query["page"] = str(page)
    return query.urlencode()


def _audit_trail_install(site: admin.AdminSite) -> None:
    original_get_urls = site.get_urls
    original_get_app_list = site.get_app_list

    def get_urls():
        page = path("ems/audit-trail/", site.admin_view(audit_trail_view), name="ems_audit_trail")
        return [page, *original_get_urls()]

    def get_app_list(request, app_label=None):
        app_list = original_get_app_list(request, app_label)
        if request.user.has_perm(AUDIT_TRAIL_PERMISSION):
            for app in app_list:
                if app["app_label"] == "ems":
                    app["models"].append(
                        {
                            "model": None,
                            "name": "Audit trail",
                            "object_name": "AuditTrail",
                            "perms": {"add": False, "change": False, "delete": False, "view": True},
                            "admin_url": reverse("admin:ems_audit_trail", current_app=site.name),
                            "add_url": None,
                            "view_only": True,
                        }
                    )
                    app["models"].sort(key=lambda model: model["name"])
        return app_list

    site.get_urls = get_urls
    site.get_app_list = get_app_list


_audit_trail_install(admin.site)


def audit_trail_url(*, object_type: str, object_id: str | int) -> str:
    """The audit trail page filtered to one object; other apps' admins link to it."""
    query = QueryDict(mutable=True)
    query.update({"object_type": object_type, "object_id": str(object_id)})
    return f"{reverse('admin:ems_audit_trail')}?{query.urlencode()}"
