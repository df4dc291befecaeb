"""Upload files: storing them, checking them whole, and streaming their rows.

How it works
- `upload_store` copies an upload (a Django UploadedFile or any file-like object) to
  MEDIA_ROOT/uploads/ in 64 KiB pieces, computing its SHA-256 and size as it goes and
  refusing it (UploadTooLarge, 413) as soon as it passes UPLOAD_MAX_BYTES — so memory is
  bounded whatever arrives. It also counts line endings: an upper bound on the rows.
- `upload_check` refuses, before anything is written to the database, what no row of the
  file could survive: empty, binary, UTF-16 without a BOM (or JSON in UTF-16), a bad CSV
  header (missing, unknown or duplicate columns; one of our error reports may carry its
  own columns, see `endorsements.spreadsheet_cells`), a header with no rows or with only
  the template's example rows, JSON that is not
  an array, or more rows than UPLOAD_MAX_ROWS. It reads only the first kilobytes, except
  to count rows exactly when the cheap bound passes the limit (or the file is UTF-16), and
  to check a JSON file's syntax in one streaming pass.
- `csv_records` yields `(row_number, cells, issues)` one at a time from a streaming
  `csv.reader` over a UTF-8 decoder (BOM dropped), or a UTF-16 one for a file that starts
  with a UTF-16 BOM; bytes that are not text in it become an `encoding_invalid` issue on
  their row only; CRLF, LF or CR line ends. `json_records` does the same from an
  incremental decoder of a (UTF-8) JSON array. Row numbers are what a spreadsheet shows:
  the header is row 1, so the first data row is row 2 (for JSON, the first element is row 1).
  An error report uploaded again is read as the rows it holds: its own columns dropped and
  its formula escape undone (`_report_rows`).
"""

import codecs
import csv
import hashlib
import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from ems.errors import ErrorDetail
from ems.parsers import json_shape_problem
from endorsements.columns import COLUMN_SET, HEADER_REQUIRED, RESUBMITS, is_example_code
from endorsements.errors import (
    UploadEmpty,
    UploadEncodingUnsupported,
    UploadFormatUnknown,
    UploadHeaderInvalid,
    UploadJsonInvalid,
    UploadJsonNotArray,
    UploadNoRows,
    UploadNotText,
    UploadTemplateUnchanged,
    UploadTooLarge,
    UploadTooManyRows,
)
from endorsements.spreadsheet_cells import REPORT_COLUMNS, REPORT_MARKERS, spreadsheet_unescape
from endorsements.validation import text_printable

PIECE = 64 * 1024
csv.field_size_limit(1024 * 1024)


@dataclass(frozen=True)
class StoredUpload:
    path: Path
    relative_path: str
    sha256: str
    size: int
    row_bound: int  # at least the number of records in the file
    head: bytes


def upload_format(name: str, content_type: str = "", declared: str = "") -> str:
    """CSV or JSON: as declared, else by the file's extension or content type."""
    if declared:
        return declared.upper()
    lowered = (name or "").lower()
    if lowered.endswith(".csv") or "csv" in (content_type or ""):
        return "CSV"
    if lowered.endswith(".json") or "json" in (content_type or ""):
        return "JSON"
    raise UploadFormatUnknown(
        "Say the format (CSV or JSON) in the `format` field or by the file's extension."
    )


def media_path(relative: str | Path) -> Path:
    return Path(str(settings.MEDIA_ROOT)) / relative


def _pieces(upload) -> Iterator[bytes]:
    if hasattr(upload, "chunks"):
        yield from upload.chunks(PIECE)
        return
    while True:
        piece = upload.read(PIECE)
        if not piece:
            return
        yield piece if isinstance(piece, bytes) else piece.encode()


def upload_store(*, upload, employer_id: int, file_format: str) -> StoredUpload:
    limit = settings.UPLOAD_MAX_BYTES
    relative = Path("uploads") / str(employer_id) / f"{uuid.uuid4().hex}.{file_format.lower()}"
    path = media_path(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    endings = 0
    head = b""
    last = b""
    try:
        with open(path, "wb") as out:
            for piece in _pieces(upload):
                size += len(piece)
                if size > limit:
                    raise UploadTooLarge(f"The file is larger than the limit of {limit} bytes.")
                digest.update(piece)
                endings += piece.count(b"\n") + piece.count(b"\r") - piece.count(b"\r\n")
                last = piece[-1:]
                if len(head) < PIECE:
                    head += piece[: PIECE - len(head)]
                out.write(piece)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return StoredUpload(
        path=path,
        relative_path=str(relative),
        sha256=digest.hexdigest(),
        size=size,
        # A line end closes every line but an unterminated last one.
        row_bound=endings + (0 if last in (b"\n", b"\r") else 1),
        head=head,
    )


def upload_discard(stored: StoredUpload) -> None:
    stored.path.unlink(missing_ok=True)


def uploads_aged(*, older_than: float, newer_than: float) -> Iterator[str]:
    """Relative paths (as stored on a batch) of uploaded files last written between
    `older_than` and `newer_than` seconds ago."""
    root = media_path("uploads")
    now = time.time()
    if not root.is_dir():
        return
    for path in root.glob("*/*"):
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue  # removed meanwhile
        if older_than < age < newer_than and path.is_file():
            yield str(path.relative_to(media_path("")))


# --- whole-file checks --------------------------------------------------------------------


_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _is_utf16(head: bytes) -> bool:
    """A file read as UTF-16: it starts with a UTF-16 byte-order mark."""
    return head[:2] in _UTF16_BOMS


def _text_check(head: bytes) -> None:
    if _is_utf16(head):
        # Excel's "Unicode text" and some HRIS exports: read as UTF-16 (the BOM says which
        # byte order); checked as text, since every other byte of its ASCII is a zero.
        body = head[: len(head) - len(head) % 2].decode("utf-16", errors="replace")
        if not body.strip():
            raise UploadEmpty()
        sample = [ord(char) for char in body[:4096]]
    else:
        body = head.removeprefix(codecs.BOM_UTF8)
        if not body.strip():
            raise UploadEmpty()
        sample = body[:4096]
        if b"\x00" in sample:
            # UTF-16 without a BOM has a zero byte in every other position.
            if sample[1::2].count(0) > len(sample) // 4 or sample[0::2].count(0) > len(sample) // 4:
                raise UploadEncodingUnsupported()
            raise UploadNotText()
    if 0 in sample:
        raise UploadNotText()
    controls = sum(1 for code in sample if code < 32 and code not in (9, 10, 13))
    if controls > len(sample) // 20:
        raise UploadNotText()


def _header_columns(header: list[str]) -> list[str | None]:
    """Canonical column names for a header row, or UploadHeaderInvalid naming every problem.

    In one of our error reports (the header has `row_number` and `errors`) the report's own
    columns are None: read past, never member data. Any other file refuses them by name.
    """
    header = [text_printable(cell) for cell in header]
    names = [cell.strip().lower() for cell in header]
    own = REPORT_COLUMNS if REPORT_MARKERS.issubset(names) else ()
    details: list[ErrorDetail] = []
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name:
            details.append(
                ErrorDetail(f"column {position}", "column_empty", f"Column {position} has no name.")
            )
        elif name not in COLUMN_SET and name != RESUBMITS and name not in own:
            details.append(ErrorDetail(name, "column_unknown", f"Unknown column {header[position - 1]!r}."))
        elif name in seen:
            details.append(ErrorDetail(name, "column_duplicate", f"Column {name!r} appears more than once."))
        seen.add(name)
    for name in HEADER_REQUIRED:
        if name not in seen:
            details.append(ErrorDetail(name, "column_missing", f"Required column {name!r} is missing."))
    if details:
        raise UploadHeaderInvalid(details=details)
    return [None if name in own else name for name in names]


def _report_rows(columns: list[str | None], reader: Iterator[list[str]]) -> Iterator[list[str]]:
    """A re-uploaded error report's rows without its own columns, each cell's escape undone
    (cells past the header's width are kept, so a ragged row stays ragged)."""
    width = len(columns)
    kept = [position for position, name in enumerate(columns) if name is not None]
    for cells in reader:
        if len(cells) == width:
            yield [spreadsheet_unescape(cells[position]) for position in kept]
        else:
            yield [
                spreadsheet_unescape(cell)
                for position, cell in enumerate(cells)
                if position >= width or columns[position] is not None
            ]


def _bytes_escape(error: UnicodeDecodeError) -> tuple[str, int]:
    """Decoding errors: each byte that is not text becomes U+DC00 + byte (as Python's
    surrogateescape does for UTF-8, but for any byte, so a broken UTF-16 unit too), which
    `row_parse` refuses as `encoding_invalid` on that row only."""
    return "".join(chr(0xDC00 + byte) for byte in error.object[error.start : error.end]), error.end


codecs.register_error("ems.bytes_escape", _bytes_escape)


def _text_stream(path: Path) -> io.TextIOWrapper:
    """The file as text: UTF-16 when it starts with a UTF-16 BOM, else UTF-8 (BOM dropped)."""
    raw = open(path, "rb")  # noqa: SIM115 - closed with the wrapper
    encoding = "utf-16" if _is_utf16(raw.peek(2)) else "utf-8-sig"
    return io.TextIOWrapper(
        raw, encoding=encoding, errors="ems.bytes_escape", newline="", write_through=False
    )


def _is_blank(cells: list[str]) -> bool:
    return not any(cell.strip() for cell in cells)


def _rows_check(reader: Iterator[list[str]], code_at: int) -> None:
    """Refuse a file without rows, or with only the template's example rows. Reads to the
    first row with a value that is not an example (the first row, in any real file)."""
    examples_only = None
    for cells in reader:
        if _is_blank(cells):
            continue
        if not is_example_code(cells[code_at] if code_at < len(cells) else ""):
            return
        examples_only = True
    if examples_only is None:
        raise UploadNoRows()
    raise UploadTemplateUnchanged()


def upload_check(*, stored: StoredUpload, file_format: str) -> int:
    """Refuse a file no row could survive. Returns the row bound used for progress."""
    _text_check(stored.head)
    limit = settings.UPLOAD_MAX_ROWS
    if file_format == "JSON":
        if _is_utf16(stored.head):
            raise UploadEncodingUnsupported("A JSON file must be UTF-8 (RFC 8259); this one is UTF-16.")
        return _json_check(stored.path, limit)
    with _text_stream(stored.path) as text:
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None or _is_blank(header):
            raise UploadEmpty("The file has no header row.")
        code_at = _header_columns(header).index("employee_code")
        _rows_check(reader, code_at)
    bound = stored.row_bound
    # UTF-16's line ends are two bytes each (and other characters hold 0x0A or 0x0D bytes):
    # the byte count is no bound worth showing, so such a file is counted exactly.
    if bound - 1 > limit or _is_utf16(stored.head):
        with _text_stream(stored.path) as text:
            rows = sum(1 for cells in csv.reader(text) if not _is_blank(cells)) - 1
        if rows > limit:
            raise UploadTooManyRows(f"The file has {rows} rows; the limit is {limit}.")
        bound = rows + 1
    return max(bound - 1, 1)


# --- streaming rows ------------------------------------------------------------------------


def csv_records(
    path: Path, *, select: Callable[[int, str | None], bool] | None = None
) -> Iterator[tuple[int, dict | None, list[ErrorDetail], dict] | None]:
    """(row number, cells by column, issues, raw cells) for each non-blank data row.

    With `select(row number, employee code cell or None for a ragged row)`, a row it
    declines is yielded as None (still counted, never built into a dict): a partition
    reading the file skips the other partitions' rows cheaply.
    """
    with _text_stream(path) as text:
        reader = csv.reader(text)
        columns = _header_columns(next(reader))
        if None in columns:
            reader = _report_rows(columns, reader)
            columns = [name for name in columns if name is not None]
        width = len(columns)
        code_at = columns.index("employee_code")
        for row_number, cells in enumerate(reader, start=2):
            if len(cells) == width:
                if not cells[0] and not "".join(cells).strip():
                    continue
                if select is not None and not select(row_number, cells[code_at]):
                    yield None
                    continue
                record = dict(zip(columns, cells, strict=True))
                yield row_number, record, [], record
                continue
            if not cells or _is_blank(cells):
                continue
            if select is not None and not select(row_number, None):
                yield None
                continue
            raw = dict(zip(columns, cells, strict=False))
            if len(cells) > width:
                raw["_extra"] = " | ".join(cells[width:])
            issue = ErrorDetail(
                "",
                "row_ragged",
                f"The row has {len(cells)} cells; the header has {width}.",
            )
            yield row_number, None, [issue], raw


def _json_elements(path: Path) -> Iterator[tuple[int, object]]:
    """Decode a JSON array element by element from a file, in bounded memory."""
    with open(path, encoding="utf-8-sig", errors="strict") as text:
        yield from _JsonArrayReader(text).elements()


class _JsonArrayReader:
    """A JSON array read from text in pieces of PIECE characters: the buffer holds the
    unread text from `position`, refilled when a value may continue past its end."""

    def __init__(self, text) -> None:
        self.text = text
        self.decoder = json.JSONDecoder()
        self.buffer = ""
        self.position = 0
        self.eof = False

    def elements(self) -> Iterator[tuple[int, object]]:
        self._skip_space()
        if self.position >= len(self.buffer) or self.buffer[self.position] != "[":
            raise UploadJsonNotArray()
        self.position += 1
        index = 0
        while True:
            char = self._next_char(index)
            if char == "]":
                return
            if index > 0:
                if char != ",":
                    raise UploadJsonInvalid(f"Expected ',' or ']' after element {index}.")
                self.position += 1
                if self._next_char(index) == "]":
                    raise UploadJsonInvalid(f"A value is missing after element {index}.")
            index += 1
            yield index, self._value(index)

    def _next_char(self, index: int) -> str:
        self._skip_space()
        if self.position >= len(self.buffer):
            raise UploadJsonInvalid("The JSON array is not closed.")
        return self.buffer[self.position]

    def _fill(self) -> bool:
        piece = self.text.read(PIECE)
        if not piece:
            self.eof = True
            return False
        self.buffer = self.buffer[self.position :] + piece
        self.position = 0
        return True

    def _skip_space(self) -> None:
        while True:
            while self.position < len(self.buffer) and self.buffer[self.position] in " \t\r\n":
                self.position += 1
            if self.position < len(self.buffer) or not self._fill():
                return

    def _value(self, index: int) -> object:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as error:
                if not self.eof and self._fill():
                    continue
                raise UploadJsonInvalid(f"Element {index} is not valid JSON: {error.msg}.") from None
            except RecursionError:
                raise UploadJsonInvalid(f"Element {index} is nested too deeply.") from None
            if end == len(self.buffer) and not self.eof and self._fill():
                continue  # a number may continue in the next piece: decode again with more text
            problem = json_shape_problem(value, settings.API_JSON_MAX_DEPTH)
            if problem:
                raise UploadJsonInvalid(f"Element {index}: {problem}")
            self.position = end
            return value


def _json_check(path: Path, limit: int) -> int:
    count = 0
    try:
        for count, _value in _json_elements(path):  # noqa: B007
            if count > limit:
                raise UploadTooManyRows(f"The array has more than {limit} elements; the limit is {limit}.")
    except UnicodeDecodeError as error:
        raise UploadJsonInvalid(f"The JSON is not UTF-8 (byte 0x{error.object[error.start]:02X}).") from None
    if count == 0:
        raise UploadNoRows("The JSON array is empty.")
    return count


def json_records(
    path: Path, *, select: Callable[[int, object], bool] | None = None
) -> Iterator[tuple[int, dict | None, list[ErrorDetail], dict] | None]:
    """As `csv_records`, for a JSON array of objects (`select` sees the raw employee code)."""
    for row_number, value in _json_elements(path):
        if select is not None:
            code = value.get("employee_code") if isinstance(value, dict) else None
            if not select(row_number, code):
                yield None
                continue
        if not isinstance(value, dict):
            issue = ErrorDetail("", "row_not_object", "Each element must be an object of column: value.")
            yield row_number, None, [issue], {"_value": json.dumps(value)[:500]}
            continue
        cells = {str(key).strip().lower(): item for key, item in value.items()}
        raw = {key: item if isinstance(item, str) else json.dumps(item) for key, item in cells.items()}
        yield row_number, cells, [], raw
