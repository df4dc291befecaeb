"""Operations' actions on endorsement requests, and the dead-letter list they are used from.

- `EndorsementActions` gives a model admin "Cancel" (`endorsements.cancel_endorsementrequest`)
  and "Retry" (`endorsements.retry_endorsementrequest`), offered as its `actions` name them. Each
  first shows a confirmation page listing the selected requests (and, for cancel, a
  reason); confirming calls the service (`endorsements_cancel(as_ops=True)`,
  `dead_letters_retry`) for all of them at once, then reports what moved and each refusal
  with its reason and code. The moves are audited by the state machine; the refusals are
  logged by the services and shown here.
- `DeadLetterAdmin` is the list of FAILED and stuck requests (`dead_letters.dead_letter_filter`,
  the rule in docs/decisions.md): why each is there, its attempts and last error, its
  dispatch, and on its page the dispatch's state and the exchanges with the insurer.
"""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator
from pymongo.errors import PyMongoError

from ems.admin_mixins import ReadOnlyAdmin, actor_of, permission_check
from endorsements.models import DeadLetter, EndorsementRequest, EndorsementState
from endorsements.pipeline import dead_letters
from endorsements.pipeline.cancel import endorsements_cancel
from insurers.selectors import exchanges_for_reference

S = EndorsementState
CONFIRMED_FIELD = "confirmed"
# A confirmation lists (and its form carries) at most this many requests: the rest wait for the next round.
CONFIRM_MAX_ROWS = 500


def _confirmation(modeladmin, request, queryset, *, action: str, title: str, verb: str, asks_reason: bool):
    """The page that lists the selected requests and asks to confirm (None once confirmed)."""
    if request.POST.get(CONFIRMED_FIELD) == "yes":
        return None
    rows = list(queryset.select_related("employer").order_by("pk")[:CONFIRM_MAX_ROWS])
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "title": title,
        "verb": verb,
        "action": action,
        "rows": rows,
        "more": max(queryset.count() - len(rows), 0) if len(rows) == CONFIRM_MAX_ROWS else 0,
        "selected": [row.pk for row in rows],
        "asks_reason": asks_reason,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "confirmed_field": CONFIRMED_FIELD,
    }
    return TemplateResponse(request, "admin/endorsements/action_confirm.html", context)


def _report(modeladmin, request, *, done: list, done_text: str, refused: dict) -> None:
    if done:
        names = ", ".join(e.tracking_id for e in done[:20]) + (" …" if len(done) > 20 else "")
        modeladmin.message_user(request, f"{len(done)} {done_text}: {names}.", messages.SUCCESS)
    for tracking_id, error in refused.items():
        message = (
            error.message if error.message.startswith(tracking_id) else f"{tracking_id}: {error.message}"
        )
        modeladmin.message_user(request, f"{message} ({error.code})", messages.ERROR)


class EndorsementActions:
    """Cancel and Retry for a model admin of endorsement requests; its `actions` names those it offers."""

    @admin.action(description="Cancel selected endorsement requests…", permissions=["cancel"])
    def cancel_selected(self, request, queryset):
        page = _confirmation(
            self,
            request,
            queryset,
            action="cancel_selected",
            title="Cancel endorsement requests",
            verb="Cancel",
            asks_reason=True,
        )
        if page is not None:
            return page
        reason = (request.POST.get("reason") or "").strip()[:500]
        result = endorsements_cancel(
            endorsement_ids=list(queryset.values_list("pk", flat=True)),
            actor=actor_of(request),
            reason=reason,
            as_ops=True,
        )
        _report(self, request, done=result.cancelled, done_text="cancelled", refused=result.refused)
        if result.already_cancelled:
            self.message_user(
                request,
                f"{len(result.already_cancelled)} already cancelled; nothing changed.",
                messages.INFO,
            )
        return None

    @admin.action(description="Retry selected failed requests (same item keys)…", permissions=["retry"])
    def retry_selected(self, request, queryset):
        page = _confirmation(
            self,
            request,
            queryset,
            action="retry_selected",
            title="Retry failed endorsement requests",
            verb="Retry",
            asks_reason=False,
        )
        if page is not None:
            return page
        result = dead_letters.dead_letters_retry(
            endorsement_ids=list(queryset.values_list("pk", flat=True)), actor=actor_of(request)
        )
        dispatches = ", ".join(str(pk) for pk in result.dispatch_ids)
        _report(
            self,
            request,
            done=result.sent,
            done_text=f"sent again (dispatch {dispatches})",
            refused=result.refused,
        )
        return None

    has_cancel_permission = permission_check("endorsements.cancel_endorsementrequest")
    has_retry_permission = permission_check("endorsements.retry_endorsementrequest")


class ListedFilter(admin.SimpleListFilter):
    """FAILED (the dead-letter queue) or stuck (a live state past its limit)."""

    title = "listed as"
    parameter_name = "listed"

    def lookups(self, request, model_admin):
        return (("failed", "failed"), ("stuck", "stuck"))

    def queryset(self, request, queryset):
        if self.value() == "failed":
            return queryset.filter(state=S.FAILED)
        if self.value() == "stuck":
            return queryset.exclude(state=S.FAILED)
        return queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(EndorsementActions, ReadOnlyAdmin):
    actions = ["retry_selected", "cancel_selected"]
    list_display = (
        "tracking_id",
        "employer",
        "insurer",
        "type",
        "state",
        "why",
        "attempts",
        "last_error_short",
        "dispatch_link",
        "updated_at",
    )
    list_select_related = ("employer", "policy__insurer", "dispatch")
    list_filter = (ListedFilter, "state", "policy__insurer", "type")
    search_fields = ("=tracking_id", "last_error")
    fields = (
        "tracking_id",
        "employer",
        "insurer",
        "type",
        "state",
        "why",
        "attempts",
        "last_error",
        "dispatch_link",
        "dispatch_state",
        "endorsement_link",
        *EndorsementRequest.TIMELINE_FIELDS,
    )
    readonly_fields = fields
    change_form_template = "admin/endorsements/deadletter/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).filter(dead_letters.dead_letter_filter(timezone.now()))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        row = self.get_object(request, object_id)
        if row is not None:
            try:
                extra_context["exchanges"] = exchanges_for_reference(row.tracking_id)
            except PyMongoError:
                extra_context["exchanges_error"] = "The exchange log (MongoDB) is unreachable right now."
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="insurer", ordering="policy__insurer__code")
    def insurer(self, obj) -> str:
        return obj.policy.insurer.code if obj.policy_id is not None else "—"

    @admin.display(description="why listed")
    def why(self, obj) -> str:
        return dead_letters.stuck_text(obj)

    @admin.display(description="last error")
    def last_error_short(self, obj) -> str:
        return Truncator(obj.last_error).chars(120)

    @admin.display(description="dispatch")
    def dispatch_link(self, obj) -> str:
        if obj.dispatch_id is None:
            return "—"
        url = reverse("admin:insurers_dispatch_change", args=[obj.dispatch_id])
        return format_html('<a href="{}">{}</a>', url, obj.dispatch_id)

    @admin.display(description="dispatch state")
    def dispatch_state(self, obj) -> str:
        if obj.dispatch_id is None:
            return "—"
        dispatch = obj.dispatch
        error = f"; {Truncator(dispatch.last_error).chars(300)}" if dispatch.last_error else ""
        return f"{dispatch.state}, {dispatch.attempts} attempt(s){error}"

    @admin.display(description="request")
    def endorsement_link(self, obj) -> str:
        url = reverse("admin:endorsements_endorsementrequest_change", args=[obj.pk])
        return format_html('<a href="{}">full page and history</a>', url)
