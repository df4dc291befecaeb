"""Forms of the HR portal: login, the batch upload, a declared payment and the list filters.

Forms only parse and check the shape of what a person typed; every rule about the data
itself (columns, rows, limits, scoping) lives in the services and selectors they feed.
"""

import uuid
from decimal import Decimal

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.utils import timezone

from endorsements.models import EndorsementState, EndorsementType
from ledger.selectors import HISTORY_KINDS


class PortalAuthenticationForm(AuthenticationForm):
    """Username and password; only HR users linked to an employer may sign in here."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "not_hr_user": (
            "This account is not linked to an employer, so it cannot use the HR portal. "
            "Operations staff sign in to the admin."
        ),
    }

    def confirm_login_allowed(self, user) -> None:
        super().confirm_login_allowed(user)
        if user.is_staff or getattr(user, "employer_membership", None) is None:
            raise forms.ValidationError(self.error_messages["not_hr_user"], code="not_hr_user")


class BatchUploadForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text=(
            "A .csv file in the template's columns, UTF-8 (or UTF-16 with a byte-order mark). "
            "Bad rows are reported; good rows go on."
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not upload.name.lower().endswith(".csv"):
            raise forms.ValidationError("Choose a .csv file (the template is one).", code="not_csv")
        return upload


class PaymentDeclarationForm(forms.Form):
    """A payment HR says it made to an insurer: it becomes a pending top-up for finance.

    The amount is typed in rupees (two decimals) and handed on as minor units. The hidden
    `idempotency_key`, fixed when the form is first shown, makes a double submit one
    declaration; the ledger refuses a payment reference already declared on the account.
    """

    account_id = forms.TypedChoiceField(coerce=int, label="Account")
    amount = forms.DecimalField(
        label="Amount paid",
        min_value=Decimal("0.01"),
        max_digits=12,
        decimal_places=2,
        help_text="In the account's currency, with up to two decimals, for example 250000.00.",
    )
    payment_reference = forms.CharField(
        label="Payment reference",
        max_length=100,
        help_text="The bank transfer's reference (UTR), exactly as the bank shows it.",
    )
    payment_date = forms.DateField(
        label="Paid on", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    proof_note = forms.CharField(
        label="Proof note",
        required=False,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Optional: where finance finds the proof (a bank advice, an email).",
    )
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, accounts: list[tuple[int, str]], **kwargs) -> None:
        kwargs.setdefault("initial", {}).setdefault("idempotency_key", uuid.uuid4().hex)
        super().__init__(*args, **kwargs)
        self.fields["account_id"].choices = accounts
        if len(accounts) == 1:
            self.fields["account_id"].initial = accounts[0][0]

    def clean_payment_date(self):
        paid_on = self.cleaned_data["payment_date"]
        if paid_on is not None and paid_on > timezone.localdate():
            raise forms.ValidationError("The payment date cannot be after today.", code="payment_date_future")
        return paid_on

    def minor_units(self) -> int:
        """The amount in minor units (paise)."""
        return int(self.cleaned_data["amount"] * 100)


def _choices(values, *, empty_label: str) -> list[tuple[str, str]]:
    return [("", empty_label), *((value, value) for value in values)]


class _FilterForm(forms.Form):
    """A GET filter form: every field optional; `filters()` gives the selector's keywords.

    `selector_names` maps a field to the selector's keyword where the two differ.
    """

    selector_names: dict[str, str] = {}

    def filters(self) -> dict | None:
        """The selector's keyword arguments; {} when unfiltered, None when the filters are invalid."""
        if not self.is_bound:
            return {}
        if not self.is_valid():
            return None
        return {
            self.selector_names.get(name, name): value
            for name, value in self.cleaned_data.items()
            if value not in (None, "")
        }

    def clean(self):
        cleaned = super().clean()
        for start, end in getattr(self, "ranges", ()):
            if cleaned.get(start) and cleaned.get(end) and cleaned[start] > cleaned[end]:
                self.add_error(end, "The end date is before the start date.")
        return cleaned


class EndorsementFilterForm(_FilterForm):
    ranges = (("effective_from", "effective_to"), ("created_from", "created_to"))
    selector_names = {"batch": "batch_id"}

    state = forms.ChoiceField(
        required=False, choices=_choices(EndorsementState.values, empty_label="Any state")
    )
    type = forms.ChoiceField(required=False, choices=_choices(EndorsementType.values, empty_label="Any type"))
    employee_code = forms.CharField(required=False, max_length=64, label="Employee code")
    batch = forms.IntegerField(required=False, min_value=1, label="Batch number")
    effective_from = forms.DateField(
        required=False, label="Effective from", widget=forms.DateInput(attrs={"type": "date"})
    )
    effective_to = forms.DateField(
        required=False, label="Effective to", widget=forms.DateInput(attrs={"type": "date"})
    )
    created_from = forms.DateField(
        required=False, label="Received from", widget=forms.DateInput(attrs={"type": "date"})
    )
    created_to = forms.DateField(
        required=False, label="Received to", widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean_employee_code(self) -> str:
        return self.cleaned_data["employee_code"].strip()


class HistoryFilterForm(_FilterForm):
    ranges = (("date_from", "date_to"),)

    account_id = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Account")
    kind = forms.ChoiceField(required=False, choices=_choices(HISTORY_KINDS, empty_label="Any kind"))
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, accounts: list[tuple[int, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["account_id"].choices = [("", "All accounts"), *accounts]


class EndorsementCancelForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False, label="Reason (optional)")
