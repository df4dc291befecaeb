"""Admin for employers' people and policies, and the endorsement pipeline.

Thin, as STYLE.md asks: columns, filters, search; heavy columns annotated in
`get_queryset`; large foreign keys as autocomplete or raw ids. Rows that only services may
write (members, coverages, endorsement requests, batches and their errors and history) are
read-only here; ops actions on them (retry, cancel, approve) call services and are gated by
permissions. The employers, HR users and API clients are the platform's (`ems.admin`); the
employer's page here adds its employee and policy counts. "Add" on endorsement
requests and batches is the admin's door into intake: a form that sends one endorsement or
a file for an employer through `endorsement_submit` / `batch_submit`, the services the API
and the portal use (so the same validation, duplicate detection and audit apply).
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from ems.actor_names import names_for
from ems.admin import EmployerAdmin as TenantEmployerAdmin
from ems.admin_mixins import ReadOnlyAdmin, ReadOnlyInline, text_column, time_column
from ems.errors import EmsError
from ems.formatting import money_text, time_text
from ems.models import Employer
from ems.tenancy import caller_for_staff_acting_for
from endorsements import services as endorsement_services
from endorsements.admin_dead_letters import EndorsementActions
from endorsements.admin_forms import BatchUploadAdminForm, EndorsementSubmitForm
from endorsements.admin_queues import ReviewActions, WorkQueueFilter
from endorsements.models import (
    BatchRowError,
    Coverage,
    EndorsementBatch,
    EndorsementRequest,
    EndorsementTransition,
    Member,
    Plan,
    PlanRate,
    Policy,
    Source,
)


def count_subquery(model, parent_field: str, **filters) -> Coalesce:
    """COUNT of `model` rows per parent as a correlated subquery (no row multiplication)."""
    rows = (
        model.objects.filter(**{parent_field: OuterRef("pk")}, **filters)
        .order_by()
        .values(parent_field)
        .annotate(total=Count("pk"))
        .values("total")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), 0)


class ServiceManagedAdmin(admin.ModelAdmin):
    """Rows moved only by services: the change form is read-only, but the change
    permission still gates the changelist actions that call those services."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class IntakeAdmin(ServiceManagedAdmin):
    """Its "add" page is a form whose input goes through an intake service, never a model form."""

    intake_form: type
    intake_title: str
    intake_intro: str
    intake_submit_label: str

    def has_add_permission(self, request) -> bool:
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.add_{opts.model_name}")

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = self.intake_form(request.POST or None, request.FILES or None)
        status = 200
        if request.method == "POST":
            if not form.is_valid():
                status = 400
            else:
                caller = caller_for_staff_acting_for(request.user, form.cleaned_data["employer"].pk)
                try:
                    created = self.intake_send(caller, form)
                except EmsError as error:
                    _service_errors_show(form, error)
                    status = error.status
                else:
                    self.message_user(request, self.intake_sent_message(created), messages.SUCCESS)
                    opts = self.model._meta
                    return redirect(f"admin:{opts.app_label}_{opts.model_name}_change", created.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": self.intake_title,
            "intro": self.intake_intro,
            "submit_label": self.intake_submit_label,
            "form": form,
        }
        return TemplateResponse(request, "admin/endorsements/intake_form.html", context, status=status)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Django turns a POST with "_saveasnew" to a change page into an "add" through the
        # model form, whatever `save_as` says: the intake page is the only way in.
        if object_id is not None and "_saveasnew" in request.POST:
            raise PermissionDenied
        return super().changeform_view(request, object_id, form_url, extra_context)

    def intake_send(self, caller, form):
        raise NotImplementedError

    def intake_sent_message(self, created) -> str:
        raise NotImplementedError


def _service_errors_show(form, error: EmsError) -> None:
    """A service's refusal on the form: each detail on its column's field, the rest on top."""
    form.add_error(None, error.message)
    for detail in error.details:
        if detail.field in form.fields and detail.field != "employer":
            form.add_error(detail.field, f"{detail.message} ({detail.code})")
        else:
            where = f"{detail.field}: " if detail.field else ""
            form.add_error(None, f"{where}{detail.message} ({detail.code})")


# --- the employer as the workflow sees it -------------------------------------------------


admin.site.unregister(Employer)


@admin.register(Employer)
class EmployerAdmin(TenantEmployerAdmin):
    """The platform's employer admin (`ems.admin`) with its employees and policies counted."""

    list_display = ("code", "name", "contact_name", "contact_email", "employees", "policy_count", "is_active")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                employee_total=count_subquery(Member, "employer", relation="SELF"),
                policy_total=count_subquery(Policy, "employer"),
            )
        )

    @admin.display(description="employees", ordering="employee_total")
    def employees(self, obj: Employer) -> int:
        return obj.employee_total

    @admin.display(description="policies", ordering="policy_total")
    def policy_count(self, obj: Employer) -> int:
        return obj.policy_total


# --- policies and rate cards ------------------------------------------------------------


class PlanInline(admin.TabularInline):
    model = Plan
    extra = 0
    fields = ("code", "name", "sum_insured_options", "age_limits")
    show_change_link = True


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = (
        "number",
        "employer",
        "insurer",
        "start_date",
        "end_date",
        "pro_rata_method",
        "refund_method",
        "tax_rate",
        "plan_count",
        "is_active",
    )
    list_select_related = ("employer", "insurer")
    list_filter = ("is_active", "insurer", "pro_rata_method", "refund_method")
    search_fields = ("number", "employer__code", "employer__name", "insurer__code")
    autocomplete_fields = ("employer", "insurer")
    date_hierarchy = "start_date"
    readonly_fields = ("created_at",)
    inlines = (PlanInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(plan_total=count_subquery(Plan, "policy"))

    @admin.display(description="tax", ordering="tax_rate_bps")
    def tax_rate(self, obj: Policy) -> str:
        return f"{obj.tax_rate_bps / 100:.2f}%"

    @admin.display(description="plans", ordering="plan_total")
    def plan_count(self, obj: Policy) -> int:
        return obj.plan_total


class PlanRateInline(admin.TabularInline):
    model = PlanRate
    extra = 0
    fields = ("relation", "age_from", "age_to", "sum_insured", "annual_premium")


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "policy", "employer", "sum_insured_options", "rate_count")
    list_select_related = ("policy", "policy__employer")
    list_filter = ("policy__insurer",)
    search_fields = ("code", "name", "policy__number", "policy__employer__code")
    autocomplete_fields = ("policy",)
    inlines = (PlanRateInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(rate_total=count_subquery(PlanRate, "plan"))

    @admin.display(description="employer", ordering="policy__employer__code")
    def employer(self, obj: Plan) -> str:
        return obj.policy.employer.code

    @admin.display(description="rate cells", ordering="rate_total")
    def rate_count(self, obj: Plan) -> int:
        return obj.rate_total


@admin.register(PlanRate)
class PlanRateAdmin(admin.ModelAdmin):
    list_display = ("plan", "relation", "age_band", "sum_insured", "premium")
    list_select_related = ("plan", "plan__policy")
    list_filter = ("relation",)
    search_fields = ("plan__code", "plan__policy__number")
    raw_id_fields = ("plan",)

    @admin.display(description="age band", ordering="age_from")
    def age_band(self, obj: PlanRate) -> str:
        return f"{obj.age_from}–{obj.age_to}"

    @admin.display(description="annual premium (before tax)", ordering="annual_premium")
    def premium(self, obj: PlanRate) -> str:
        return money_text(obj.annual_premium, obj.plan.policy.currency)


# --- members and coverage (written by the endorsement pipeline) -------------------------


class CoverageInline(ReadOnlyInline):
    """A member's covers, newest first: ACTIVE, ENDED (the day before a deletion took
    effect) or VOID (deleted on its start date: never in force)."""

    model = Coverage
    fields = ("policy", "plan", "sum_insured", "start_date", "end_date", "status", "insurer_member_id")
    readonly_fields = fields
    ordering = ("-start_date", "-id")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("policy", "plan")


@admin.register(Member)
class MemberAdmin(ReadOnlyAdmin):
    inlines = (CoverageInline,)
    list_display = (
        "employee_code",
        "full_name",
        "relation",
        "employer",
        "date_of_birth",
        "gender",
        "date_of_joining",
        "open_coverages",
    )
    list_select_related = ("employer",)
    list_filter = ("relation", "gender", "employer")
    search_fields = ("employee_code", "first_name", "last_name", "email")
    raw_id_fields = ("primary",)
    autocomplete_fields = ("employer",)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                open_coverage_total=count_subquery(
                    Coverage, "member", status__in=[Coverage.Status.PENDING, Coverage.Status.ACTIVE]
                )
            )
        )

    @admin.display(description="name", ordering="first_name")
    def full_name(self, obj: Member) -> str:
        return f"{obj.first_name} {obj.last_name}".strip()

    @admin.display(description="open coverages", ordering="open_coverage_total")
    def open_coverages(self, obj: Member) -> int:
        return obj.open_coverage_total


@admin.register(Coverage)
class CoverageAdmin(ReadOnlyAdmin):
    list_display = (
        "member",
        "employer",
        "policy",
        "plan_code",
        "sum_insured",
        "start_date",
        "end_date",
        "status",
        "insurer_member_id",
    )
    list_select_related = ("member", "member__employer", "policy", "plan")
    list_filter = ("status", "policy__insurer")
    search_fields = ("member__employee_code", "member__first_name", "policy__number", "insurer_member_id")
    raw_id_fields = ("member",)
    autocomplete_fields = ("policy", "plan")
    date_hierarchy = "start_date"

    @admin.display(description="employer", ordering="member__employer__code")
    def employer(self, obj: Coverage) -> str:
        return obj.member.employer.code

    @admin.display(description="plan", ordering="plan__code")
    def plan_code(self, obj: Coverage) -> str:
        return obj.plan.code


# --- the endorsement pipeline -----------------------------------------------------------


class BatchRowErrorInline(ReadOnlyInline):
    model = BatchRowError
    fields = ("row_number", "tracking_id", "column", "code", "message")
    readonly_fields = fields
    verbose_name_plural = "row errors (first 100; see the row errors list for all)"
    shown = 100


@admin.register(EndorsementBatch)
class EndorsementBatchAdmin(IntakeAdmin):
    intake_form = BatchUploadAdminForm
    intake_title = "Upload a file for an employer"
    intake_intro = (
        "The file goes through the same checks as an HR upload: bad rows are reported with their "
        "reasons, good rows go on. Processing runs in the background; the batch page shows its progress."
    )
    intake_submit_label = "Upload"

    def intake_send(self, caller, form):
        upload = form.cleaned_data["file"]
        return endorsement_services.batch_submit(
            caller=caller, upload=upload, file_name=upload.name, file_format=form.file_format()
        )

    def intake_sent_message(self, created) -> str:
        return f"Batch {created.pk} ({created.file_name}) received; its rows are being checked."

    list_display = (
        "id",
        "employer",
        "file_name",
        "source",
        "file_format",
        "state",
        "rows_total",
        "accepted_count",
        "rejected_count",
        "duplicate_count",
        "progress_percent",
        "created_at",
        "completed_at",
    )
    list_select_related = ("employer",)
    list_filter = ("state", "source", "file_format", "employer")
    search_fields = ("=id", "file_name", "file_sha256", "employer__code")
    date_hierarchy = "created_at"
    inlines = (BatchRowErrorInline,)
    readonly_fields = (
        "employer",
        "uploaded_by",
        "api_client",
        "source",
        "file_name",
        "file_format",
        "file_path",
        "file_sha256",
        "file_bytes",
        "state",
        "rows_total",
        "accepted_count",
        "rejected_count",
        "duplicate_count",
        "progress",
        "rows_expected",
        "rows_parsed",
        "partitions",
        "partition_positions",
        "parsed_at",
        "failure_reason",
        "created_at",
        "completed_at",
        "row_errors_link",
    )

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, BatchRowErrorInline) and obj is not None:
            first = BatchRowError.objects.filter(batch=obj).order_by("row_number", "id").values("pk")
            kwargs["queryset"] = kwargs["queryset"].filter(pk__in=first[: inline.shown])
        return kwargs

    @admin.display(description="progress", ordering="progress")
    def progress_percent(self, obj: EndorsementBatch) -> str:
        return f"{obj.progress}%"

    @admin.display(description="row errors")
    def row_errors_link(self, obj: EndorsementBatch) -> str:
        url = reverse("admin:endorsements_batchrowerror_changelist") + f"?batch__id__exact={obj.pk}"
        return format_html('<a href="{}">{} row error(s)</a>', url, obj.row_errors.count())


@admin.register(BatchRowError)
class BatchRowErrorAdmin(ReadOnlyAdmin):
    list_display = ("batch", "row_number", "tracking_id", "column", "code", "message")
    list_select_related = ("batch",)
    list_filter = ("code",)
    search_fields = ("=batch__id", "=tracking_id", "code", "message", "column")
    raw_id_fields = ("batch",)


@admin.register(EndorsementRequest)
class EndorsementRequestAdmin(ReviewActions, EndorsementActions, IntakeAdmin):
    """State and money change only through the orchestrator's services; the actions call
    them (review: endorsements/admin_queues.py; cancel: endorsements/admin_dead_letters.py,
    where the dead letters' Retry is)."""

    actions = ("approve_review", "reject_review", "cancel_selected")

    intake_form = EndorsementSubmitForm
    intake_title = "Send an endorsement for an employer"
    intake_intro = (
        "The columns of the HR file. It is stored as RECEIVED and validated in the background, "
        "by the same rules as the API and the portal; empty cells in a correction mean unchanged."
    )
    intake_submit_label = "Send"

    def intake_send(self, caller, form):
        return endorsement_services.endorsement_submit(
            caller=caller, data=form.endorsement_data(), source=Source.ADMIN
        )

    def intake_sent_message(self, created) -> str:
        return f"Endorsement {created.tracking_id} received; it is being validated."

    # What an operator reads, narrow enough for a laptop (1366 px) beside the filters: ids,
    # names and times cut short with the whole in a tooltip; policy and attempts are on the page.
    list_display = (
        "tracking",
        "employer_name",
        "type",
        "state",
        "employee_code",
        "effective_date",
        "premium_display",
        "sla_status",
        "source",
        "received",
    )
    list_select_related = ("employer", "policy", "member")
    list_filter = (WorkQueueFilter, "state", "type", "sla_status", "source", "employer")
    search_fields = (
        "=tracking_id",
        "insurer_reference",
        "idempotency_key",
        # the code the row names: an ADD has no member to search through until it is active
        "member_data__employee_code",
        "=batch__id",
    )
    date_hierarchy = "received_at"
    raw_id_fields = ("member", "batch", "superseded_by")
    fieldsets = (
        (None, {"fields": ("tracking_id", "employer", "type", "state", "source", "batch", "row_number")}),
        ("Member", {"fields": ("member", "member_data", "policy", "effective_date", "linked_to")}),
        ("Money", {"fields": ("premium_display", "tax_display")}),
        ("Checks", {"fields": ("content_hash", "idempotency_key", "rejection_reasons", "superseded_by")}),
        ("Delivery", {"fields": ("attempts", "last_error", "insurer_reference", "insurer_member_id")}),
        ("SLA", {"fields": ("sla_deadline", "sla_status")}),
        ("Timeline", {"fields": (*EndorsementRequest.TIMELINE_FIELDS, "history_table")}),
    )
    # Every field shown is read-only: state and money change only through services.
    readonly_fields = tuple(field for _name, options in fieldsets for field in options["fields"])

    @admin.display(description="history")
    def history_table(self, obj: EndorsementRequest) -> str:
        """Every step, oldest first: a file's row's arrival and intake decision come from the row.
        Actors are named (a username, an API client's name), as in the audit trail."""
        steps = obj.history()
        names = names_for(actors=[step.actor for step in steps], employer_ids=())
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    time_text(step.at),
                    step.from_state or "—",
                    step.to_state,
                    names.actor(step.actor),
                    step.reason,
                )
                for step in steps
            ),
        )
        return format_html(
            "<table><thead><tr><th>at</th><th>from</th><th>to</th><th>actor</th><th>reason</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="tracking id", ordering="tracking_id")
    def tracking(self, obj: EndorsementRequest) -> str:
        """The id's last characters (its random part) after its prefix; the whole in the tooltip."""
        prefix, _, rest = obj.tracking_id.partition("-")
        return format_html(
            '<span title="{}" style="white-space: nowrap">{}-…{}</span>', obj.tracking_id, prefix, rest[-8:]
        )

    employer_name = text_column("employer.name", "employer", limit=28)
    received = time_column("received_at", "received")

    @admin.display(description="employee", ordering="member_data__employee_code")
    def employee_code(self, obj: EndorsementRequest) -> str:
        if obj.member_id is not None:
            return obj.member.employee_code
        return str(obj.member_data.get("employee_code", "")) if isinstance(obj.member_data, dict) else ""

    @staticmethod
    def currency_of(obj: EndorsementRequest) -> str:
        return obj.policy.currency if obj.policy_id is not None else "INR"

    @admin.display(description="premium incl. tax", ordering="premium_amount")
    def premium_display(self, obj: EndorsementRequest) -> str:
        return money_text(obj.premium_amount, self.currency_of(obj))

    @admin.display(description="tax")
    def tax_display(self, obj: EndorsementRequest) -> str:
        return money_text(obj.tax_amount, self.currency_of(obj))


@admin.register(EndorsementTransition)
class EndorsementTransitionAdmin(ReadOnlyAdmin):
    list_display = ("endorsement", "from_state", "to_state", "actor", "reason", "at")
    list_select_related = ("endorsement",)
    list_filter = ("to_state",)
    search_fields = ("=endorsement__tracking_id", "actor")
    date_hierarchy = "at"
    raw_id_fields = ("endorsement",)
