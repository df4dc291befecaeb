"""Validation of one row: its schema and formats, for API bodies, file rows and the admin.

`row_parse` checks one row (a CSV record, a JSON object or an API body) before anything is
written, against the column layout of `columns.py`: known columns, required and allowed
columns per action and relation, ISO dates that exist, enums, E.164 phones, emails,
positive whole sums insured, no future birth dates, no bytes that are not UTF-8. It returns
the normalised values (stored as `member_data`) or its problems as `ErrorDetail`s (the one
shape of a reason: field, code, message). `content_hash` and `member_key` name what a
request is and who it is about. The business rules are `assessment.endorsements_assess`.

Dates are ISO `YYYY-MM-DD` only. Names keep their case but compare case-folded; codes
(action, relation, gender) are upper-cased; policy numbers and plan codes match
case-insensitively; employee codes match exactly (after trimming).
"""

import hashlib
import re
from collections.abc import Mapping
from datetime import date
from functools import lru_cache
from typing import Any

from ems.errors import ErrorDetail
from endorsements.columns import (
    ALLOWED,
    COLUMNS,
    CORRECTABLE,
    EVENT_RELATIONS,
    REQUIRED,
    RESUBMITS,
    SELF_ONLY,
    is_example_code,
)
from endorsements.models import EndorsementType, Gender, Relation

MAX_SUM_INSURED = 10_000_000_000  # whole currency units: ₹1,000 crore; anything above is absurd
EARLIEST_DATE = date(1900, 1, 1)

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EMPLOYEE_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
_POLICY_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/ -]{0,63}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}")
_PHONE = re.compile(r"\+[1-9]\d{6,14}")
_DIGITS = re.compile(r"[+-]?\d{1,30}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A byte the file's decoder could not read (U+DC00 + byte, intake._bytes_escape), or an
# unpaired surrogate from a JSON "\\ud800" escape: neither is text, nor storable as JSON.
_NOT_TEXT = re.compile(r"[\ud800-\udfff]")


# --- stage 1: one row -------------------------------------------------------------------


def _choice(choices: frozenset[str]):
    listed = ", ".join(sorted(choices))

    def parse(column: str, text: str):
        value = text.upper()
        if value not in choices:
            return None, ErrorDetail(column, "invalid_choice", f"{text!r} is not one of {listed}.")
        return value, None

    return parse


def _iso_date(column: str, text: str):
    if not _DATE.fullmatch(text):
        return None, ErrorDetail(column, "date_format", f"{text!r} is not a date in the form YYYY-MM-DD.")
    try:
        value = date.fromisoformat(text)
    except ValueError:
        return None, ErrorDetail(column, "date_invalid", f"{text} is not a calendar date.")
    if value < EARLIEST_DATE:
        return None, ErrorDetail(
            column, "date_out_of_range", f"{text} is before {EARLIEST_DATE.isoformat()}."
        )
    return value, None


def _name(column: str, text: str):
    if len(text) > 100:
        return None, ErrorDetail(column, "too_long", "At most 100 characters.")
    if _CONTROL.search(text):
        return None, ErrorDetail(column, "control_character", "Contains a control character.")
    return text, None


def _employee_code(column: str, text: str):
    if not _EMPLOYEE_CODE.fullmatch(text):
        return None, ErrorDetail(
            column,
            "employee_code_invalid",
            "Use 1 to 64 letters, digits or . _ / - (starting with a letter or digit).",
        )
    if is_example_code(text):
        return None, ErrorDetail(
            column,
            "example_row",
            f"{text} is one of the template's example rows: replace it with a real change or delete the row.",
        )
    return text, None


def _code(column: str, text: str):
    if not _POLICY_CODE.fullmatch(text):
        return None, ErrorDetail(column, "code_invalid", "Use 1 to 64 letters, digits, spaces or . _ / -.")
    return text.upper(), None


def _email(column: str, text: str):
    if len(text) > 254 or not _EMAIL.fullmatch(text):
        return None, ErrorDetail(column, "email_invalid", f"{text!r} is not an email address.")
    return text, None


def _phone(column: str, text: str):
    if not _PHONE.fullmatch(text):
        return None, ErrorDetail(
            column, "phone_invalid", "Use the E.164 form: + then 7 to 15 digits, e.g. +919812345678."
        )
    return text, None


def _sum_insured(column: str, value):
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        return None, ErrorDetail(column, "integer_invalid", "Must be a whole number of currency units.")
    elif _DIGITS.fullmatch(value):
        number = int(value)
    else:
        return None, ErrorDetail(
            column, "integer_invalid", f"{value!r} is not a whole number of currency units."
        )
    if number <= 0:
        return None, ErrorDetail(column, "sum_insured_not_positive", "Must be more than zero.")
    if number > MAX_SUM_INSURED:
        return None, ErrorDetail(column, "sum_insured_out_of_range", f"Must be at most {MAX_SUM_INSURED}.")
    return number, None


_PARSERS = {
    "action": _choice(frozenset(EndorsementType.values)),
    "employee_code": _employee_code,
    "relation": _choice(frozenset(Relation.values)),
    "first_name": _name,
    "last_name": _name,
    "date_of_birth": _iso_date,
    "gender": _choice(frozenset(Gender.values)),
    "email": _email,
    "phone": _phone,
    "date_of_joining": _iso_date,
    "event_date": _iso_date,
    "effective_date": _iso_date,
    "policy_number": _code,
    "plan_code": _code,
    "sum_insured": _sum_insured,
}
# Columns whose few distinct values repeat down a file (codes, dates, amounts): their
# parsers are pure, so each distinct cell is parsed once per process (bounded cache).
# Typed: a JSON sum insured of 500000.0 is refused, and must not hit 500000's entry.
for _column in (
    "action",
    "relation",
    "gender",
    "date_of_birth",
    "date_of_joining",
    "event_date",
    "effective_date",
    "policy_number",
    "plan_code",
    "sum_insured",
):
    _PARSERS[_column] = lru_cache(maxsize=8192, typed=True)(_PARSERS[_column])
del _column


def text_printable(text: str) -> str:
    """The text with each character that is not text (see _NOT_TEXT) as U+FFFD."""
    return text if text.isascii() else _NOT_TEXT.sub("\ufffd", text)


def _not_text_message(code: int) -> str:
    if 0xDC00 <= code <= 0xDCFF:
        return f"Contains a byte that cannot be read as text (0x{code - 0xDC00:02X}); save the file as UTF-8."
    return f"Contains an unpaired surrogate (U+{code:04X}), which is not text."


def resubmits_split(cells: Mapping[str, Any]) -> tuple[dict, str]:
    """A row's cells without `resubmits`, and its value ("" if none): it names the rejected
    request the row corrects, and is no part of the member's data or the content hash."""
    rest = dict(cells)
    value = rest.pop(RESUBMITS, None)
    return rest, "" if value is None else str(value).strip()


def row_parse(cells: Mapping[str, Any], *, today: date) -> tuple[dict | None, list[ErrorDetail]]:
    """Check one row's schema and formats. Returns (normalised values, []) or (None, issues).

    `cells` maps column names (already lower-case) to text, or JSON scalars for a JSON
    row. Empty cells are absent from the values ("unchanged" in a correction).
    """
    values, dates, issues = _cells_parse(cells)
    action = values.get("action")
    if action is None:
        if "action" not in {i.field for i in issues}:
            issues.append(ErrorDetail("action", "required", "Required: ADD, DELETE or CORRECTION."))
        return None, issues
    if not issues and _layout_fits(action, values, dates, today):
        return values, []  # the common case, decided with set operations
    issues += _layout_issues(action, values, dates, today, bad={i.field for i in issues})
    if action == "CORRECTION" and not issues and not any(c in values for c in CORRECTABLE):
        issues.append(ErrorDetail("", "nothing_to_correct", "A correction needs at least one new value."))
    if issues:
        return None, issues
    return values, []


_EMPTY = object()  # a cell with nothing in it: absent from the values


def _cells_parse(cells: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, date], list[ErrorDetail]]:
    """Each cell through its column's parser: (values, the dates among them, issues)."""
    issues: list[ErrorDetail] = []
    values: dict[str, Any] = {}
    dates: dict[str, date] = {}
    for column, raw in cells.items():
        if raw is None:
            continue
        parser = _PARSERS.get(column)
        if parser is None:
            name = text_printable(column)
            issues.append(ErrorDetail(name, "column_unknown", f"Unknown column {name!r}."))
            continue
        text, issue = _cell_text(column, raw)
        if issue is None and text is not _EMPTY:
            value, issue = parser(column, text)
        if issue is not None:
            issues.append(issue)
        elif text is not _EMPTY:
            if isinstance(value, date):
                dates[column] = value
                value = text
            values[column] = value
    return values, dates, issues


def _cell_text(column: str, raw) -> tuple[Any, ErrorDetail | None]:
    """What the column's parser reads: trimmed text, or a JSON number (_EMPTY: nothing)."""
    if isinstance(raw, str):
        if not raw.isascii() and (found := _NOT_TEXT.search(raw)):
            return _EMPTY, ErrorDetail(column, "encoding_invalid", _not_text_message(ord(found.group())))
        return raw.strip() or _EMPTY, None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        kind = "an object" if isinstance(raw, dict) else "a list" if isinstance(raw, list) else "true/false"
        return _EMPTY, ErrorDetail(column, "value_not_scalar", f"Must be text or a number, not {kind}.")
    return (raw if column == "sum_insured" else str(raw)), None


def _layout_fits(action: str, values: dict, dates: dict[str, date], today: date) -> bool:
    """True when the row breaks none of `_layout_issues`' rules (the fast path)."""
    given = values.keys()
    relation = values.get("relation")
    return (
        not (REQUIRED[action] - given)
        and not (given - ALLOWED[action])
        and (relation == "SELF" or not (given & SELF_ONLY))
        and ("event_date" not in given or relation in EVENT_RELATIONS)
        and not any(dates[c] > today for c in ("date_of_birth", "event_date") if c in dates)
        and (action != "CORRECTION" or any(c in values for c in CORRECTABLE))
    )


def _layout_issues(
    action: str, values: dict, dates: dict[str, date], today: date, *, bad: set[str]
) -> list[ErrorDetail]:
    """Every column the action requires but the row lacks (unless already named in `bad`),
    every column it may not have, and every date in the future."""
    issues = [
        ErrorDetail(column, "required", f"Required for {action}.")
        for column in COLUMNS
        if column in REQUIRED[action] and column not in values and column not in bad
    ]
    relation = values.get("relation")
    for column in values:
        issue = _placement_issue(action, relation, column)
        if issue is not None:
            issues.append(issue)
    issues += [
        ErrorDetail(column, "date_in_future", f"{values[column]} is in the future.")
        for column in ("date_of_birth", "event_date")
        if column in dates and dates[column] > today
    ]
    return issues


def _placement_issue(action: str, relation: str | None, column: str) -> ErrorDetail | None:
    if column not in ALLOWED[action]:
        return ErrorDetail(column, "not_allowed", f"Must be empty for {action}.")
    if relation and relation != "SELF" and column in SELF_ONLY:
        return ErrorDetail(column, "not_allowed", f"Only for the employee (SELF), not {relation}.")
    if column == "event_date" and relation and relation not in EVENT_RELATIONS:
        return ErrorDetail(column, "not_allowed", "Only for a SPOUSE (marriage) or a CHILD (birth).")
    return None


def content_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 of the normalised content: names case-folded, dates ISO, codes upper-case."""
    get = values.get
    text = "\x1f".join(
        (
            get("action", ""),
            get("employee_code", ""),
            get("relation", ""),
            get("first_name", "").casefold(),
            get("last_name", "").casefold(),
            get("date_of_birth", ""),
            get("gender", ""),
            get("email", "").casefold(),
            get("phone", ""),
            get("date_of_joining", ""),
            get("event_date", ""),
            get("effective_date", ""),
            get("policy_number", ""),
            get("plan_code", ""),
            str(get("sum_insured", "")),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def member_key(*, employee_code: str, relation: str, first_name: str = "") -> str:
    """Who a request is about: the employee, their one spouse, or a dependant by first name."""
    if relation in ("SELF", "SPOUSE"):
        return f"{employee_code}|{relation}"
    return f"{employee_code}|{relation}|{first_name.strip().casefold()}"
