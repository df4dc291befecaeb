"""Forms of the admin's two doors into intake: one endorsement, or a file, for an employer.

Both only collect input: the columns are free text (choices offered, not enforced), so
every check and its message comes from the one validation service behind
`endorsement_submit` and `batch_submit`, as for the API and the portal.
"""

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import AutocompleteSelect

from ems.models import Employer
from endorsements.columns import COLUMNS
from endorsements.intake import upload_format
from endorsements.models import (
    EndorsementBatch,
    EndorsementRequest,
    EndorsementType,
    Gender,
    Relation,
)

_CHOICE_COLUMNS = {
    "action": EndorsementType.values,
    "relation": Relation.values,
    "gender": Gender.values,
}
_HELP = {
    "employee_code": "The employer's own code for the employee.",
    "date_of_birth": "YYYY-MM-DD",
    "phone": "E.164, e.g. +919812345678 (SELF only)",
    "email": "SELF only",
    "date_of_joining": "YYYY-MM-DD (SELF only)",
    "event_date": "YYYY-MM-DD: the marriage (SPOUSE) or birth (CHILD)",
    "effective_date": "YYYY-MM-DD",
    "sum_insured": "Whole currency units, one of the plan's options",
}


class _EmployerForm(forms.Form):
    """The employer as the admin's autocomplete (searched by code, name or email): an
    insurer's book holds too many employers for one select."""

    employer_of: type  # the model whose `employer` foreign key the autocomplete serves

    employer = forms.ModelChoiceField(
        queryset=Employer.objects.order_by("code"),
        help_text="The employer this is sent for; it is audited as your action.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["employer"]
        field.widget = AutocompleteSelect(self.employer_of._meta.get_field("employer"), admin.site)
        field.widget.choices = field.choices


class EndorsementSubmitForm(_EmployerForm):
    """The file columns of DESIGN.md; empty in a correction means unchanged."""

    employer_of = EndorsementRequest

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for column in COLUMNS:
            widget = None
            if column in _CHOICE_COLUMNS:
                widget = forms.Select(choices=[("", "—"), *((v, v) for v in _CHOICE_COLUMNS[column])])
            self.fields[column] = forms.CharField(
                required=False, strip=False, widget=widget, help_text=_HELP.get(column, "")
            )

    def endorsement_data(self) -> dict[str, str]:
        return {column: self.cleaned_data[column] for column in COLUMNS if self.cleaned_data[column]}


class BatchUploadAdminForm(_EmployerForm):
    employer_of = EndorsementBatch
    file = forms.FileField(help_text="A .csv file in the template's columns, or a .json array of rows.")

    def file_format(self) -> str:
        upload = self.cleaned_data["file"]
        return upload_format(upload.name, upload.content_type)
