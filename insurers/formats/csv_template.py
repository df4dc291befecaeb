"""CSV files laid out by an insurer's column template.

A template is a list of `[header, field]` pairs from the insurer's `connection` settings
(`csv_columns` for the dispatch file, `response_columns` for its response files): the
header the insurer's system expects and the payload field (contract key) that fills it.
Adding an insurer with another layout is configuration. The file has a header row, UTF-8,
CRLF line ends (RFC 4180, what spreadsheet-minded insurer systems read).

Response files name each item by our reference and carry the insurer's outcome; with no
`response_columns` configured the layout is `RESPONSE_COLUMNS`.
"""

import csv
import io
from collections.abc import Sequence

# The dispatch layout when an insurer configures none: the item key and every payload field.
PAYLOAD_FIELDS = (
    "reference",
    "action",
    "policy_number",
    "employee_code",
    "relation",
    "first_name",
    "last_name",
    "date_of_birth",
    "gender",
    "email",
    "phone",
    "plan_code",
    "sum_insured",
    "effective_date",
    "premium",
    "currency",
)
DISPATCH_COLUMNS = [[field, field] for field in ("item_key", *PAYLOAD_FIELDS)]
RESPONSE_COLUMNS = [
    [field, field]
    for field in (
        "reference",
        "outcome",
        "insurer_reference",
        "insurer_member_id",
        "insurer_premium",
        "code",
        "reason",
        "effective_date",
        "sum_insured",
    )
]


class TemplateError(ValueError):
    """A file does not match its template (a missing header)."""


def document_write(*, rows: Sequence[dict], columns: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([header for header, _ in columns])
    for row in rows:
        writer.writerow(["" if row.get(field) is None else row.get(field) for _, field in columns])
    return buffer.getvalue()


def document_read(*, text: str, columns: Sequence[Sequence[str]]) -> list[dict]:
    """Rows as `{field: text}` by the template; refuses a file missing a templated header."""
    reader = csv.reader(io.StringIO(text))
    headers = next(reader, [])
    positions = {header: index for index, header in enumerate(headers)}
    missing = [header for header, _ in columns if header not in positions]
    if missing:
        raise TemplateError(f"missing columns: {', '.join(missing)}")
    return [
        {field: row[positions[header]] for header, field in columns}
        for row in reader
        if any(cell.strip() for cell in row)
    ]
