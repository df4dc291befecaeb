"""The HR portal: server-rendered pages for an employer's HR users.

How it works
- Every page goes through `portal_page`: login required (session), then the caller is
  resolved with `ems.tenancy.caller_for_user`. Only HR users linked to an employer get
  in; staff and unlinked users see a 403 page (operations use the admin).
- Views are thin: they parse a form, call one service or selector of the intake or ledger
  code with the caller, and render. Scoping lives in those selectors, so another
  employer's batch or endorsement is simply not found (404).
- The batch page shows a progress bar that `static/portal/batch.js` keeps live from the
  `/ws/notifications/` websocket, falling back to polling `batch_status` (JSON). Page,
  push and poll all show `batch_progress.progress_message`: the bar's figure and the
  sentence beside it come from one place, so they agree.
- Money arrives as integer minor units and leaves as `ems.formatting.money_text`, the
  admin's formatter too: with its currency, or bare in a table whose column or row names
  the currency. Times are shown by the `local_time` filter (the project's zone, named).
"""

from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ems.errors import EmsError, NotFound, PermissionDenied
from ems.formatting import money_text
from ems.models import EmployerMembership
from ems.tenancy import caller_for_user
from endorsements import selectors as endorsement_selectors
from endorsements import services as endorsement_services
from endorsements import upload_template
from endorsements.columns import COLUMNS
from endorsements.models import Relation
from endorsements.pipeline.cancel import endorsement_cancel, is_cancellable
from endorsements.portal_forms import (
    BatchUploadForm,
    EndorsementCancelForm,
    EndorsementFilterForm,
    HistoryFilterForm,
    PaymentDeclarationForm,
)
from endorsements.services.batch_progress import progress_message, rows_checked_text
from ledger import approvals as ledger_approvals
from ledger import selectors as ledger_selectors
from ledger.errors import PaymentReferenceDeclared

TEMPLATE_FILE_NAME = "endorsements-template.csv"
FINAL_BATCH_STATES = ("COMPLETED", "FAILED")


def portal_page(view):
    """Session login, then an HR caller on `request.caller`; 403 page for anyone else."""

    @login_required
    @never_cache
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not user.is_staff:
            # One query for the membership and its employer; caller_for_user reuses it.
            membership = EmployerMembership.objects.select_related("employer").filter(user=user).first()
            if membership is not None:
                user.employer_membership = membership
        try:
            caller = caller_for_user(user)
        except PermissionDenied:
            caller = None
        if caller is None or caller.employer_id is None:
            return render(request, "portal/forbidden.html", status=403)
        request.caller = caller
        request.employer = user.employer_membership.employer
        try:
            return view(request, *args, **kwargs)
        except NotFound:
            raise Http404("Not found.") from None

    return wrapper


def _page(request, object_list):
    return Paginator(object_list, settings.PORTAL_PAGE_SIZE).get_page(request.GET.get("page"))


# --- Upload -------------------------------------------------------------------------


@portal_page
@require_http_methods(["GET", "POST"])
def upload(request):
    status = 200
    if request.method != "POST":
        form = BatchUploadForm()
    else:
        form = BatchUploadForm(request.POST, request.FILES)
        if form.is_valid():
            upload_file = form.cleaned_data["file"]
            try:
                batch = endorsement_services.batch_submit(
                    caller=request.caller,
                    upload=upload_file,
                    file_name=upload_file.name,
                    file_format="CSV",
                )
            except EmsError as error:
                form.add_error(None, error.message)
                for detail in error.details:
                    form.add_error(None, detail.message)
                status = error.status
            else:
                return redirect("portal:batch", batch_id=batch.pk)
        else:
            status = 400
    context = {
        "section": "upload",
        "form": form,
        "columns": COLUMNS,
        "max_megabytes": settings.UPLOAD_MAX_BYTES // (1024 * 1024),
        "max_rows": f"{settings.UPLOAD_MAX_ROWS:,}",
        "recent_batches": [
            (batch, rows_checked_text(batch))
            for batch in endorsement_selectors.batch_list(caller=request.caller)
        ],
        "example_csv": upload_template.template_csv(
            policies=endorsement_selectors.policy_list(caller=request.caller), today=timezone.localdate()
        )
        .replace("\r\n", "\n")
        .rstrip(),
    }
    return render(request, "portal/upload.html", context, status=status)


# --- Policies and plans --------------------------------------------------------------


def _age_limits(plan) -> list[tuple[str, int, int]]:
    """(relation, youngest, oldest) in the order of the relation column's values."""
    limits = plan.age_limits or {}
    return [
        (relation, limits[relation][0], limits[relation][1])
        for relation in Relation.values
        if isinstance(limits.get(relation), list) and len(limits[relation]) == 2
    ]


@portal_page
@require_GET
def policies(request):
    rows = [
        {
            "policy": policy,
            "plans": [
                {
                    "plan": plan,
                    "sum_insured": [
                        money_text(option * 100, policy.currency) for option in plan.sum_insured_options
                    ],
                    "age_limits": _age_limits(plan),
                }
                for plan in policy.plans.all()
            ],
        }
        for policy in endorsement_selectors.policy_list(caller=request.caller)
    ]
    return render(request, "portal/policies.html", {"section": "policies", "policies": rows})


@portal_page
@require_GET
def template_csv(request):
    policies = endorsement_selectors.policy_list(caller=request.caller)
    text = upload_template.template_csv(policies=policies, today=timezone.localdate())
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{TEMPLATE_FILE_NAME}"'
    return response


# --- Batches ------------------------------------------------------------------------


@portal_page
@require_GET
def batch_detail(request, batch_id: int):
    batch = endorsement_selectors.batch_get(caller=request.caller, batch_id=batch_id)
    errors = _page(request, endorsement_selectors.batch_errors(caller=request.caller, batch_id=batch_id))
    context = {
        "section": "upload",
        "batch": batch,
        "is_final": batch.state in FINAL_BATCH_STATES,
        "status": progress_message(batch),
        "errors": errors,
    }
    return render(request, "portal/batch_detail.html", context)


@portal_page
@require_GET
def batch_status(request, batch_id: int):
    batch = endorsement_selectors.batch_get(caller=request.caller, batch_id=batch_id)
    return JsonResponse(progress_message(batch))


@portal_page
@require_GET
def batch_errors_csv(request, batch_id: int):
    batch = endorsement_selectors.batch_get(caller=request.caller, batch_id=batch_id)
    response = StreamingHttpResponse(
        endorsement_selectors.batch_error_report_csv(batch=batch),
        content_type="text/csv; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}-errors.csv"'
    return response


# --- Endorsements -------------------------------------------------------------------


@portal_page
@require_GET
def endorsement_list(request):
    form = EndorsementFilterForm(request.GET or None)
    filters = form.filters()
    page = None
    column_currency = None
    if filters is not None:
        endorsements = endorsement_selectors.endorsement_list(caller=request.caller, **filters)
        page = _page(request, endorsements)
        # One currency on the page goes in the column's heading; several go beside each figure.
        currencies = {row.policy_currency for row in page if row.premium_amount is not None}
        column_currency = currencies.pop() if len(currencies) == 1 else None
        for endorsement in page:
            figure_currency = None if column_currency else endorsement.policy_currency
            endorsement.premium_display = money_text(endorsement.premium_amount, figure_currency)
    context = {"section": "endorsements", "form": form, "page": page, "column_currency": column_currency}
    return render(request, "portal/endorsement_list.html", context)


@portal_page
@require_GET
def endorsement_detail(request, tracking_id: str):
    endorsement = endorsement_selectors.endorsement_get(caller=request.caller, tracking_id=tracking_id)
    just_cancelled = request.GET.get("cancelled") == "1" and endorsement.state == "CANCELLED"
    return _endorsement_page(request, endorsement, just_cancelled=just_cancelled)


@portal_page
@require_POST
def endorsement_cancel_view(request, tracking_id: str):
    """Cancel (the detail page's confirmed form): back to the page, or the page with the refusal."""
    form = EndorsementCancelForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        endorsement_cancel(caller=request.caller, tracking_id=tracking_id, reason=reason)
    except NotFound:
        raise
    except EmsError as error:
        endorsement = endorsement_selectors.endorsement_get(caller=request.caller, tracking_id=tracking_id)
        return _endorsement_page(request, endorsement, cancel_error=error, status=error.status)
    return redirect(reverse("portal:endorsement", args=[tracking_id]) + "?cancelled=1")


def _endorsement_page(request, endorsement, *, just_cancelled=False, cancel_error=None, status=200):
    currency = endorsement.policy.currency if endorsement.policy_id is not None else None
    context = {
        "section": "endorsements",
        "endorsement": endorsement,
        "is_cancellable": is_cancellable(endorsement),
        "cancel_form": EndorsementCancelForm(),
        "cancel_error": cancel_error,
        "just_cancelled": just_cancelled,
        "premium": money_text(endorsement.premium_amount, currency),
        "tax": money_text(endorsement.tax_amount, currency),
        "transitions": endorsement.history(),
        "member_fields": [
            (column, endorsement.member_data[column])
            for column in COLUMNS
            if endorsement.member_data.get(column) not in (None, "")
        ],
    }
    return render(request, "portal/endorsement_detail.html", context, status=status)


# --- The Endorsement Account ----------------------------------------------------------


def _account_label(account) -> str:
    return f"{account.insurer_name} ({account.currency})"


@portal_page
@require_GET
def balance(request):
    accounts = [
        {
            "account_id": account.account_id,
            "label": _account_label(account),
            "insurer_code": account.insurer_code,
            "currency": account.currency,
            "posted": money_text(account.posted),
            "held": money_text(account.held),
            "available": money_text(account.available),
            "threshold": money_text(account.low_balance_threshold),
            "below_threshold": account.below_threshold,
            "parked_count": account.parked_count,
            "parked_amount": money_text(account.parked_amount),
        }
        for account in ledger_selectors.account_balances(caller=request.caller)
    ]
    return render(request, "portal/balance.html", {"section": "balance", "accounts": accounts})


def _accounts(request) -> dict[int, str]:
    return {
        account.account_id: _account_label(account)
        for account in ledger_selectors.account_balances(caller=request.caller)
    }


@portal_page
@require_GET
def history(request):
    accounts = _accounts(request)
    form = HistoryFilterForm(request.GET or None, accounts=list(accounts.items()))
    filters = form.filters()
    page = None
    if filters is not None:
        page = _page(request, ledger_selectors.history(caller=request.caller, **filters))
        page.object_list = [_history_row(row, accounts) for row in page.object_list]
    declared = ledger_selectors.topups(caller=request.caller, account_id=(filters or {}).get("account_id"))
    context = {
        "section": "history",
        "form": form,
        "page": page,
        "has_accounts": bool(accounts),
        "declared": [_declared_row(topup) for topup in declared[:RECENT_DECLARATIONS]],
    }
    return render(request, "portal/history.html", context)


# --- Declared payments (top-ups) --------------------------------------------------------

RECENT_DECLARATIONS = 10
DECLARED_STATE_TEXT = {"PENDING": "Pending approval", "APPROVED": "Approved", "REJECTED": "Rejected"}


def _declared_row(topup) -> dict:
    return {
        "topup": topup,
        "account": _account_label_of(topup.account),
        "amount_display": money_text(topup.amount, topup.account.currency),
        "state_text": DECLARED_STATE_TEXT[topup.state],
    }


def _account_label_of(account) -> str:
    return f"{account.insurer.name} ({account.currency})"


@portal_page
@require_http_methods(["GET", "POST"])
def payments(request):
    accounts = _accounts(request)
    status = 200
    form = PaymentDeclarationForm(request.POST or None, accounts=list(accounts.items()))
    if request.method == "POST":
        if form.is_valid():
            try:
                topup = _declare(request, form)
            except PaymentReferenceDeclared as error:
                form.add_error("payment_reference", _declared_twice_text(form, error))
                status = error.status
            except EmsError as error:
                _form_errors_add(form, error)
                status = error.status
            else:
                return redirect(f"{request.path}?declared={topup.pk}")
        else:
            status = 400
    declared = ledger_selectors.topups(caller=request.caller)
    page = _page(request, declared)
    page.object_list = [_declared_row(topup) for topup in page.object_list]
    # The confirmation after the redirect; a form sent again shows its own outcome instead.
    just_declared = request.GET.get("declared", "") if request.method == "GET" else ""
    context = {
        "section": "payments",
        "form": form,
        "has_accounts": bool(accounts),
        "page": page,
        "declared_caption": _declared_caption(page),
        "just_declared": next(
            (row for row in page.object_list if str(row["topup"].pk) == just_declared), None
        ),
    }
    return render(request, "portal/payments.html", context, status=status)


def _declared_caption(page) -> str:
    count = page.paginator.count
    pages = f", page {page.number} of {page.paginator.num_pages}" if page.paginator.num_pages > 1 else ""
    return f"{count} payment{'' if count == 1 else 's'} declared, newest first{pages}"


def _declare(request, form):
    data = form.cleaned_data
    account = ledger_selectors.account_for_caller(caller=request.caller, account_id=data["account_id"])
    return ledger_approvals.account_topup(
        account_id=account.pk,
        amount=form.minor_units(),
        payment_reference=data["payment_reference"],
        payment_date=data["payment_date"],
        proof_note=data["proof_note"],
        idempotency_key=f"portal:{data['idempotency_key']}",
        requested_by=request.caller.principal,
    )


def _declared_twice_text(form, error: PaymentReferenceDeclared) -> str:
    topup_id = error.details[0].message if error.details else ""
    return (
        f"Payment reference {form.cleaned_data['payment_reference']} is already declared on this account "
        f"(declaration {topup_id}). A payment is declared once; declare it again only if finance rejected it."
    )


def _form_errors_add(form, error: EmsError) -> None:
    """A service's refusal on the form: each detail on its field where the form has one."""
    if not error.details:
        form.add_error(None, error.message)
    for detail in error.details:
        form.add_error(detail.field if detail.field in form.fields else None, detail.message)


def _history_row(row: dict, accounts: dict[int, str]) -> dict:
    row = ledger_selectors.history_row(row)
    is_hold = row["type"] == "hold"
    return {
        **row,
        "is_hold": is_hold,
        "account": accounts.get(row["account_id"], row["account_id"]),
        "amount_display": money_text(row["amount"]),
        "captured_display": money_text(row["captured_amount"]),
        "balance_display": money_text(row["balance_after"]),
        "is_endorsement": str(row["reference"]).startswith("END-"),
    }
