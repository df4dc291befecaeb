"""The error report's cells: the formula escape it applies, and that escape undone exactly.

The report (`selectors.batch_error_report_csv`) is a file HR opens in a spreadsheet, fixes
and uploads again. A cell that starts with `= + - @`, a tab or a CR would run as a formula
(OWASP CSV injection), so the report writes it with a leading apostrophe. A cell that
already starts with apostrophes before such a character gets one more, so that undoing the
escape (one apostrophe off, only before those characters) gives back exactly what the row
held: `'+9198…` → `+9198…`, `''=x` → `'=x`, and `'plain` stays `'plain`.

Intake knows one of these reports by its header (`row_number` and `errors`, see
`REPORT_MARKERS`): it ignores the report's own columns and undoes the escape on the rest.
"""

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# The report's own columns: not member data, so a re-uploaded report's are ignored.
REPORT_COLUMNS = ("row_number", "tracking_id", "errors")
# A header with both of these is one of our reports.
REPORT_MARKERS = frozenset({"row_number", "errors"})


def _escaped_form(text: str) -> bool:
    return text.lstrip("'").startswith(FORMULA_PREFIXES)


def spreadsheet_safe(value) -> str:
    """A cell as text that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    if _escaped_form(text):
        return "'" + text
    return text


def spreadsheet_unescape(text: str) -> str:
    """The cell `spreadsheet_safe` was given: its escape, and only its escape, undone."""
    if text.startswith("'") and _escaped_form(text):
        return text[1:]
    return text
