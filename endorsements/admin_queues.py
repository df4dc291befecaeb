"""The endorsement admin's work queues: requests on review hold and SLA clocks running out.

- `WorkQueueFilter`: "awaiting review" (ON_HOLD_REVIEW), and the running clocks marked
  near or past their SLA deadline (pipeline/sla.py).
- `ReviewActions`: "Approve review" and "Reject review" on the endorsement list, gated by
  `endorsements.review_endorsementrequest` (held by `ops_operator`, ems/roles.py). They
  call `pipeline.review.reviews_approve` / `reviews_reject` with the staff user as the
  actor (the transition records history, event and audit). Reject first shows a
  confirmation page that asks for the reason HR will read. A selection with a request
  not on review hold is refused whole, nothing changed.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from ems.admin_mixins import actor_of, permission_check
from ems.errors import EmsError
from endorsements.models import SLA_CLOCK_STATES, EndorsementState, SlaStatus
from endorsements.pipeline import review


class WorkQueueFilter(admin.SimpleListFilter):
    title = "work queue"
    parameter_name = "queue"

    QUEUES = {
        "review": ("awaiting review", {"state": EndorsementState.ON_HOLD_REVIEW}),
        "sla_breached": (
            "SLA breached, still open",
            {"sla_status": SlaStatus.BREACHED, "state__in": SLA_CLOCK_STATES},
        ),
        "sla_near": (
            "SLA near breach, still open",
            {"sla_status": SlaStatus.NEAR, "state__in": SLA_CLOCK_STATES},
        ),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _filters) in self.QUEUES.items()]

    def queryset(self, request, queryset):
        queue = self.QUEUES.get(self.value() or "")
        return queryset.filter(**queue[1]) if queue else queryset


class ReviewRejectForm(forms.Form):
    reason = forms.CharField(
        max_length=480,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="HR sees this as the rejection's message (code review_rejected).",
    )


class ReviewActions:
    """Mixed into the endorsement request admin; name the actions in its `actions`."""

    has_review_permission = permission_check("endorsements.review_endorsementrequest")

    def _review_run(self, request, service, done: str, **arguments) -> None:
        ids = arguments.pop("ids")
        try:
            moved = service(endorsement_ids=ids, actor=actor_of(request), **arguments)
        except EmsError as error:
            details = "; ".join(f"{d.field}: {d.message}" for d in error.details[:10])
            self.message_user(request, f"Nothing changed. {error.message} {details}".strip(), messages.ERROR)
            return
        self.message_user(request, f"{len(moved)} endorsement(s) {done}.", messages.SUCCESS)

    @admin.action(description="Approve review (on to the insurer's next window)", permissions=["review"])
    def approve_review(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        self._review_run(request, review.reviews_approve, "approved", ids=ids)

    @admin.action(description="Reject review (asks for the reason)", permissions=["review"])
    def reject_review(self, request, queryset):
        ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        form = ReviewRejectForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            self._review_run(
                request, review.reviews_reject, "rejected", ids=ids, reason=form.cleaned_data["reason"]
            )
            return None
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "title": "Reject the selected endorsements on review",
            "form": form,
            "tracking_ids": list(queryset.order_by("pk").values_list("tracking_id", flat=True)),
            "selected_ids": ids,
            "action": "reject_review",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/endorsements/review_reject.html", context)
