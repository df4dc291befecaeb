"""The upload file's column layout: which columns exist, which a file's header must have,
and which each action requires and allows (for API bodies too: one layout for every door).
"""

COLUMNS: tuple[str, ...] = (
    "action",
    "employee_code",
    "relation",
    "first_name",
    "last_name",
    "date_of_birth",
    "gender",
    "email",
    "phone",
    "date_of_joining",
    "event_date",
    "effective_date",
    "policy_number",
    "plan_code",
    "sum_insured",
)
COLUMN_SET = frozenset(COLUMNS)
# Not the member's data but about the request: the rejected request a corrected one names
# (its tracking id). Any door takes it; it is kept out of the member data and the content hash.
RESUBMITS = "resubmits"
# A file must have these columns, whatever its rows hold.
HEADER_REQUIRED: tuple[str, ...] = ("action", "employee_code", "relation", "effective_date", "policy_number")

_IDENTITY = frozenset({"action", "employee_code", "relation", "effective_date", "policy_number"})
REQUIRED: dict[str, frozenset[str]] = {
    "ADD": _IDENTITY | {"first_name", "last_name", "date_of_birth", "gender", "plan_code", "sum_insured"},
    "DELETE": _IDENTITY,
    "CORRECTION": _IDENTITY,
}
ALLOWED: dict[str, frozenset[str]] = {
    "ADD": COLUMN_SET,
    "DELETE": _IDENTITY | {"first_name", "last_name", "date_of_birth"},
    "CORRECTION": _IDENTITY
    | {"first_name", "last_name", "date_of_birth", "gender", "email", "phone", "plan_code", "sum_insured"},
}
SELF_ONLY = frozenset({"email", "phone", "date_of_joining"})
EVENT_RELATIONS = frozenset({"SPOUSE", "CHILD"})
CORRECTABLE = (
    "first_name",
    "last_name",
    "date_of_birth",
    "gender",
    "email",
    "phone",
    "plan_code",
    "sum_insured",
)

# The template's example rows name employees with this prefix: a row that still does is an
# example left in the file (refused per row; a file of nothing else is refused whole).
EXAMPLE_CODE_PREFIX = "EXAMPLE-"


def is_example_code(employee_code) -> bool:
    return isinstance(employee_code, str) and employee_code.strip().upper().startswith(EXAMPLE_CODE_PREFIX)
