"""`spreadsheet_cells`: the report's formula escape, and exactly that escape undone."""

import pytest

from endorsements.spreadsheet_cells import spreadsheet_safe, spreadsheet_unescape


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=A1", "'=A1"),
        ("+919812345678", "'+919812345678"),
        ("-1", "'-1"),
        ("@f", "'@f"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=x", "''=x"),
        ("''+1", "'''+1"),
        ("'plain", "'plain"),
        ("'", "'"),
        ("ok", "ok"),
        ("", ""),
    ],
)
def test_the_escape_is_undone_exactly(cell, written):
    assert spreadsheet_safe(cell) == written
    assert spreadsheet_unescape(written) == cell


def test_cells_the_report_never_escaped_are_read_as_they_are():
    cells = ["'plain", "'", "a'=b", "=raw"]
    assert [spreadsheet_unescape(cell) for cell in cells] == cells
