"""`selectors.batch_error_report_csv`: rejected rows, one line each, cells safe for spreadsheets,
with the rejected request's tracking id where the row was stored as one."""

import csv
import io

from endorsements.columns import COLUMNS
from endorsements.models import BatchRowError, EndorsementBatch
from endorsements.selectors import batch_error_report_csv, spreadsheet_safe


def test_each_rejected_row_is_one_line_with_all_its_errors_and_escaped_cells(book):
    batch = EndorsementBatch.objects.create(employer=book.employer, source="CSV", file_format="CSV")
    raw = {
        "action": "ADD",
        "employee_code": "E1",
        "first_name": "=1+2",
        "last_name": "\tTab",
        "phone": "+9198",
    }
    # row 7 was stored as a request and rejected by two rules; its cells are on the first error
    for column, code, message, cells in (
        ("phone", "phone_invalid", "Bad.", raw),
        ("", "x_rule", "-Also bad.", {}),
    ):
        BatchRowError.objects.create(
            batch=batch,
            row_number=7,
            tracking_id="01JTRACKING0000000000000007",
            column=column,
            code=code,
            message=message,
            raw=cells,
        )
    BatchRowError.objects.create(
        batch=batch,
        row_number=3,
        column="",
        code="row_ragged",
        message="Ragged.",
        raw={"action": "@x", "_extra": "a | b"},
    )
    text = "".join(batch_error_report_csv(batch=batch))
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == ["row_number", "tracking_id", *COLUMNS, "errors"]
    row3 = dict(zip(lines[0], lines[1], strict=True))
    assert (row3["row_number"], row3["tracking_id"], row3["action"], row3["errors"]) == (
        "3",
        "",
        "'@x",
        "row_ragged: Ragged. | extra cells: a | b",
    )
    row7 = dict(zip(lines[0], lines[2], strict=True))
    assert row7["tracking_id"] == "01JTRACKING0000000000000007"
    assert (row7["first_name"], row7["last_name"], row7["phone"]) == ("'=1+2", "'\tTab", "'+9198")
    assert row7["errors"] == "phone: phone_invalid: Bad. | x_rule: -Also bad."
    assert len(lines) == 3
    assert text.endswith("\r\n")


def test_a_batch_without_errors_has_only_the_header(book):
    batch = EndorsementBatch.objects.create(employer=book.employer, source="CSV", file_format="CSV")
    assert list(batch_error_report_csv(batch=batch)) == [
        ",".join(["row_number", "tracking_id", *COLUMNS, "errors"]) + "\r\n"
    ]


def test_spreadsheet_safe_prefixes_every_formula_trigger():
    assert [spreadsheet_safe(v) for v in ("=A1", "+1", "-1", "@f", "\tx", "\rx", "ok", None, 5)] == [
        "'=A1",
        "'+1",
        "'-1",
        "'@f",
        "'\tx",
        "'\rx",
        "ok",
        "",
        "5",
    ]
