"""`endorsements.validation.row_parse` and `content_hash`: schema and formats of one row."""

import hashlib
from datetime import date

import pytest

from ems.errors import ErrorDetail
from endorsements.columns import COLUMNS
from endorsements.validation import content_hash, row_parse

TODAY = date(2026, 11, 28)


def add(**overrides):
    row = {
        "action": "add",
        "employee_code": " E1001 ",
        "relation": "self",
        "first_name": "Asha",
        "last_name": "Rao",
        "date_of_birth": "1990-05-17",
        "gender": "f",
        "email": "asha@example.com",
        "phone": "+919812345678",
        "date_of_joining": "2026-11-20",
        "effective_date": "2026-11-28",
        "policy_number": "ghp-1",
        "plan_code": "gold",
        "sum_insured": "500000",
    }
    row.update(overrides)
    return row


def test_a_valid_addition_is_normalised():
    values, issues = row_parse(add(), today=TODAY)
    assert issues == []
    assert values == {
        "action": "ADD",
        "employee_code": "E1001",
        "relation": "SELF",
        "first_name": "Asha",
        "last_name": "Rao",
        "date_of_birth": "1990-05-17",
        "gender": "F",
        "email": "asha@example.com",
        "phone": "+919812345678",
        "date_of_joining": "2026-11-20",
        "effective_date": "2026-11-28",
        "policy_number": "GHP-1",
        "plan_code": "GOLD",
        "sum_insured": 500000,
    }


@pytest.mark.parametrize(
    ("column", "value", "issue"),
    [
        (
            "date_of_birth",
            "31/02/2026",
            ErrorDetail("date_of_birth", "date_format", "'31/02/2026' is not a date in the form YYYY-MM-DD."),
        ),
        (
            "effective_date",
            "2026-13-01",
            ErrorDetail("effective_date", "date_invalid", "2026-13-01 is not a calendar date."),
        ),
        (
            "date_of_birth",
            "2026-02-31",
            ErrorDetail("date_of_birth", "date_invalid", "2026-02-31 is not a calendar date."),
        ),
        (
            "date_of_birth",
            "2026-12-01",
            ErrorDetail("date_of_birth", "date_in_future", "2026-12-01 is in the future."),
        ),
        (
            "date_of_birth",
            "1899-12-31",
            ErrorDetail("date_of_birth", "date_out_of_range", "1899-12-31 is before 1900-01-01."),
        ),
        (
            "sum_insured",
            "-500000",
            ErrorDetail("sum_insured", "sum_insured_not_positive", "Must be more than zero."),
        ),
        (
            "sum_insured",
            "0",
            ErrorDetail("sum_insured", "sum_insured_not_positive", "Must be more than zero."),
        ),
        (
            "sum_insured",
            "99999999999999",
            ErrorDetail("sum_insured", "sum_insured_out_of_range", "Must be at most 10000000000."),
        ),
        (
            "sum_insured",
            "5e5",
            ErrorDetail("sum_insured", "integer_invalid", "'5e5' is not a whole number of currency units."),
        ),
        (
            "phone",
            "98123 45678",
            ErrorDetail(
                "phone", "phone_invalid", "Use the E.164 form: + then 7 to 15 digits, e.g. +919812345678."
            ),
        ),
        ("email", "asha@", ErrorDetail("email", "email_invalid", "'asha@' is not an email address.")),
        ("gender", "female", ErrorDetail("gender", "invalid_choice", "'female' is not one of F, M, X.")),
        (
            "relation",
            "COUSIN",
            ErrorDetail(
                "relation",
                "invalid_choice",
                "'COUSIN' is not one of CHILD, PARENT, PARENT_IN_LAW, SELF, SPOUSE.",
            ),
        ),
        (
            "employee_code",
            "=cmd|' /C calc'!A0",
            ErrorDetail(
                "employee_code",
                "employee_code_invalid",
                "Use 1 to 64 letters, digits or . _ / - (starting with a letter or digit).",
            ),
        ),
        (
            "last_name",
            "Rao\x07",
            ErrorDetail("last_name", "control_character", "Contains a control character."),
        ),
        (
            "first_name",
            "Jos\udce9",
            ErrorDetail(
                "first_name",
                "encoding_invalid",
                "Contains a byte that cannot be read as text (0xE9); save the file as UTF-8.",
            ),
        ),
        (
            "last_name",
            "Rao\ud800",  # a JSON "\\ud800" escape: not text, and PostgreSQL's jsonb refuses it
            ErrorDetail(
                "last_name", "encoding_invalid", "Contains an unpaired surrogate (U+D800), which is not text."
            ),
        ),
    ],
)
def test_each_bad_value_is_named_with_its_column_and_code(column, value, issue):
    values, issues = row_parse(add(**{column: value}), today=TODAY)
    assert values is None
    assert issues == [issue]


def test_required_columns_depend_on_the_action():
    values, issues = row_parse(add(first_name="", sum_insured=None), today=TODAY)
    assert values is None
    assert issues == [
        ErrorDetail("first_name", "required", "Required for ADD."),
        ErrorDetail("sum_insured", "required", "Required for ADD."),
    ]


def test_a_missing_action_is_reported_alone():
    assert row_parse({"employee_code": "E1"}, today=TODAY) == (
        None,
        [ErrorDetail("action", "required", "Required: ADD, DELETE or CORRECTION.")],
    )


def test_self_only_and_not_applicable_columns_are_refused_by_name():
    values, issues = row_parse(add(relation="CHILD", event_date="2026-11-01"), today=TODAY)
    assert values is None
    assert issues == [
        ErrorDetail("email", "not_allowed", "Only for the employee (SELF), not CHILD."),
        ErrorDetail("phone", "not_allowed", "Only for the employee (SELF), not CHILD."),
        ErrorDetail("date_of_joining", "not_allowed", "Only for the employee (SELF), not CHILD."),
    ]
    deletion = {"action": "DELETE", "employee_code": "E1", "relation": "SELF", "effective_date": "2026-11-28"}
    values, issues = row_parse({**deletion, "policy_number": "P1", "plan_code": "GOLD"}, today=TODAY)
    assert issues == [ErrorDetail("plan_code", "not_allowed", "Must be empty for DELETE.")]


def test_a_correction_needs_a_new_value_and_empty_means_unchanged():
    base = {"action": "CORRECTION", "employee_code": "E1", "relation": "SELF", "effective_date": "2026-11-28"}
    base["policy_number"] = "P1"
    assert row_parse({**base, "first_name": "", "phone": "  "}, today=TODAY) == (
        None,
        [ErrorDetail("", "nothing_to_correct", "A correction needs at least one new value.")],
    )
    values, issues = row_parse({**base, "sum_insured": "300000", "first_name": ""}, today=TODAY)
    assert issues == []
    assert "first_name" not in values
    assert values["sum_insured"] == 300000


def test_formula_like_names_are_kept_as_text():
    values, issues = row_parse(
        add(first_name='=HYPERLINK("http://x","y")', last_name="@SUM(A1)"), today=TODAY
    )
    assert issues == []
    assert values["first_name"] == '=HYPERLINK("http://x","y")'
    assert values["last_name"] == "@SUM(A1)"


def test_json_values_must_be_scalars_and_unknown_columns_are_named():
    values, issues = row_parse(add(first_name={"a": 1}, sum_insured=500000, salary="1"), today=TODAY)
    assert values is None
    assert issues == [
        ErrorDetail("first_name", "value_not_scalar", "Must be text or a number, not an object."),
        ErrorDetail("salary", "column_unknown", "Unknown column 'salary'."),
    ]


def test_the_content_hash_ignores_case_and_spacing_of_names_and_codes_but_not_values():
    first, _ = row_parse(add(), today=TODAY)
    second, _ = row_parse(
        add(first_name=" ASHA ", last_name="rao", gender="F", plan_code="GOLD "), today=TODAY
    )
    third, _ = row_parse(add(sum_insured="300000"), today=TODAY)
    assert content_hash(first) == content_hash(second)
    assert content_hash(first) != content_hash(third)
    assert len(content_hash(first)) == 64


def test_a_fractional_json_sum_insured_is_refused_even_after_the_same_whole_number():
    # given a JSON row with the whole number parsed first (its result is remembered)
    values, issues = row_parse(add(sum_insured=500000), today=TODAY)
    assert (values["sum_insured"], issues) == (500000, [])
    # when the next row sends the same amount as a float
    values, issues = row_parse(add(sum_insured=500000.0), today=TODAY)
    # then it is refused on its own terms, not answered from the whole number's entry
    assert values is None
    assert issues == [
        ErrorDetail("sum_insured", "integer_invalid", "Must be a whole number of currency units.")
    ]


def test_the_content_hash_covers_every_column_in_order_with_names_and_email_case_folded():
    # Stored hashes must stay comparable: the digest is the documented normalisation of
    # every file column, in COLUMNS order, so a column added to COLUMNS is hashed too.
    values = {column: f"Value-{index}" for index, column in enumerate(COLUMNS)}
    values["sum_insured"] = 500000
    folded = {"first_name", "last_name", "email"}
    expected = "\x1f".join(
        str(values[column]).casefold() if column in folded else str(values[column]) for column in COLUMNS
    )
    assert content_hash(values) == hashlib.sha256(expected.encode()).hexdigest()
    for column in COLUMNS:
        changed = {**values, column: "other"}
        assert content_hash(changed) != content_hash(values), column
