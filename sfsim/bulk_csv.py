"""Bulk API 2.0 CSV rules, as pure functions: dialects, file-level checks, rows, result files.

Wire facts: shared/reference/salesforce-api.md §4.8 (result files), §4.9 (CSV rules), §7 items 2, 3
and 15. Nothing here touches sockets, asyncio or the record store.

A *file-level* problem (wrong line ending, invalid UTF-8, an unknown header) fails the whole job
with a documented ``errorMessage``; it is raised as :class:`BulkFileError`. A *row-level* problem
(an unparseable row, a wrong column count) fails only that row and is returned as a
:class:`BadRow`.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Final

__all__ = [
    "COLUMN_DELIMITERS",
    "LINE_ENDINGS",
    "NULL_MARKER",
    "BadRow",
    "BulkFileError",
    "UploadScanner",
    "base64_size",
    "client_input_error",
    "format_sf_error",
    "invalid_batch",
    "iter_data_rows",
    "open_upload",
    "result_header",
    "write_rows",
]

#: ``columnDelimiter`` values and their characters [S-BULK create job].
COLUMN_DELIMITERS: Final[dict[str, str]] = {
    "COMMA": ",",
    "BACKQUOTE": "`",
    "CARET": "^",
    "PIPE": "|",
    "SEMICOLON": ";",
    "TAB": "\t",
}
#: ``lineEnding`` values [S-BULK create job].
LINE_ENDINGS: Final[dict[str, str]] = {"LF": "\n", "CRLF": "\r\n"}
#: A cell with this value sets the field to null; an empty cell leaves it unchanged (§4.9, §7.15).
NULL_MARKER: Final = "#N/A"


class BulkFileError(Exception):
    """A problem with the uploaded file as a whole: the job ends ``Failed`` with this message."""

    def __init__(self, error_message: str) -> None:
        super().__init__(error_message)
        self.error_message = error_message


def invalid_batch(detail: str) -> BulkFileError:
    """The ``InvalidBatch`` job failure in the doubled form Salesforce prints (§4.5, §7.3)."""
    return BulkFileError(f"InvalidBatch : InvalidBatch : {detail}. Batch will not be retried.")


def client_input_error(detail: str) -> BulkFileError:
    """The ``ClientInputError`` job failure (§7.2)."""
    return BulkFileError(f"ClientInputError : {detail}")


@dataclass(frozen=True, slots=True)
class BadRow:
    """A data row that could not be parsed; it fails alone with ``message`` (§4.9 quoting rules)."""

    message: str
    values: list[str]
    #: The CSV reader refused the text (not one line = one row any more).
    unparsed: bool = False


def base64_size(raw_size: int) -> int:
    """Size of ``raw_size`` bytes once base64-encoded: what the 150 MB limit measures (§4.2)."""
    return (raw_size + 2) // 3 * 4


class UploadScanner:
    """Looks at an upload as it streams in: size, line endings, UTF-8 validity.

    It keeps counters only, never the bytes, so the upload can go straight to disk.
    """

    def __init__(self) -> None:
        self.size = 0
        self._lf = 0
        self._cr = 0
        self._crlf = 0
        self._last_was_cr = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._utf8_error: str | None = None
        #: No quote and no NUL anywhere: every line is one row of cells split at the delimiter
        #: (what the CSV reader makes of it), so result files can be written without re-parsing.
        self.plain = True

    def feed(self, chunk: bytes) -> None:
        """Account for the next piece of the body."""
        if not chunk:
            return
        self.size += len(chunk)
        if self.plain and (b'"' in chunk or b"\0" in chunk):
            self.plain = False
        self._lf += chunk.count(b"\n")
        self._cr += chunk.count(b"\r")
        self._crlf += chunk.count(b"\r\n")
        if self._last_was_cr and chunk[0] == 0x0A:
            self._crlf += 1
        self._last_was_cr = chunk[-1] == 0x0D
        if self._utf8_error is None:
            try:
                self._decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                self._utf8_error = f"invalid UTF-8 near byte {self.size - len(chunk) + exc.start}"

    def finish(self, line_ending: str) -> BulkFileError | None:
        """The file-level problem with the whole upload, or None when it is acceptable."""
        if self._utf8_error is None:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                self._utf8_error = "invalid UTF-8 at the end of the data"
        if self._utf8_error is not None:
            # [U] The exact text for non-UTF-8 data is undocumented; the docs only say files
            # must be UTF-8 (§4.9). We fail the job rather than guess at a decoding.
            return client_input_error(f"Unable to read the CSV data: {self._utf8_error}")
        # §7.2: a mismatch fails the job. [U] Third-party reports say a CR/LF embedded in a quoted
        # value trips the same check; we take that stricter reading and look at every line break,
        # quoted or not: an LF job must contain no CR at all, a CRLF job no bare LF or bare CR
        # (Python's CSV reader, like Excel, would take a bare CR for a line end).
        if line_ending == "LF":
            bad = self._cr > 0
        else:
            bad = self._lf != self._crlf or self._cr != self._crlf
        if bad:
            return client_input_error(
                f"LineEnding is invalid on user data. Current LineEnding setting is {line_ending}"
            )
        return None


def open_upload(path: str) -> IO[str]:
    """Open a spilled upload for reading as the CSV reader wants it (UTF-8, newlines kept)."""
    return open(path, encoding="utf-8", newline="")


def iter_data_rows(
    text: IO[str], delimiter: str, *, plain: bool = False
) -> tuple[list[str], Iterator[list[str] | BadRow]]:
    """Read the header, then yield each data row (or a :class:`BadRow`) in file order.

    ``text`` must be opened with ``newline=""`` (see :func:`open_upload`) and its bytes must
    have passed :meth:`UploadScanner.finish`. The header is returned as
    read: a UTF-8 BOM is *not* stripped (§4.9), so it stays glued to the first column name and
    that column is then unknown, as on a real org (§7.3). Blank lines are skipped. Values are not
    trimmed. Raises :class:`BulkFileError` for a missing or unreadable header.

    ``plain=True`` (the upload has no quote and no NUL: :attr:`UploadScanner.plain`) splits each
    line at the delimiter instead of running the CSV reader, which then makes the same rows:
    without quotes a record is one line. A line long enough to pass the reader's field limit
    still goes through the reader, for its error.
    """
    lines: Iterable[str] = text
    if plain:
        first = text.readline()
        lines = [first] if first else []
    reader = _reader(lines, delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise invalid_batch("The CSV data has no header row") from None
    except csv.Error as exc:
        raise invalid_batch(f"Unable to parse the header row: {exc}") from None
    if not header or header == [""]:
        raise invalid_batch("The CSV data has no header row")
    if plain:
        return header, _plain_rows(text, delimiter, len(header))
    return header, _rows(reader, len(header))


def _reader(lines: Iterable[str], delimiter: str) -> Iterator[list[str]]:
    return csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)


def _plain_rows(lines: Iterable[str], delimiter: str, width: int) -> Iterator[list[str] | BadRow]:
    """``_rows`` for an upload with no quote and no NUL: one line, one row."""
    limit = csv.field_size_limit()
    for line in lines:
        body = line.rstrip("\r\n")  # the one line end (UploadScanner allows no other CR/LF)
        if not body:
            continue  # a blank line: the reader makes no row of it
        if len(body) > limit:
            # Maybe a field over the reader's limit: the reader decides, as for any file.
            yield from _rows(_reader([line], delimiter), width)
            continue
        row = body.split(delimiter)
        if len(row) != width:
            # [U] Salesforce's wording for a short or long row is undocumented; fail the row.
            yield BadRow(f"The row has {len(row)} values but the header has {width} columns", row)
            continue
        yield row


def _rows(reader: Iterator[list[str]], width: int) -> Iterator[list[str] | BadRow]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # strict=True refuses `"John" ,x` (text after a closing quote); the reader resumes at
            # the next line, so only this row fails (§4.9). [U] code and wording are ours.
            yield BadRow(f"Unable to parse the row: {exc}", [], unparsed=True)
            continue
        if not row:
            continue
        if len(row) != width:
            # [U] Salesforce's wording for a short or long row is undocumented; fail the row.
            yield BadRow(f"The row has {len(row)} values but the header has {width} columns", row)
            continue
        joined = "\x1f" + "\x1f".join(row)
        if "\x1f " in joined and any(v[:1] == " " and v.lstrip(" ")[:1] == '"' for v in row):
            # §4.9: a space between the delimiter and an opening quote is an error for the row.
            yield BadRow("A space between a quote and the delimiter is not allowed", row)
            continue
        yield row


def format_sf_error(code: str, message: str, fields: Iterable[str] = ()) -> str:
    """``sf__Error`` text: ``CODE:message:fields --`` (§4.8), e.g.

    ``REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --`` or, with no fields,
    ``INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--``.
    """
    names = ",".join(fields)
    return f"{code}:{message}:{names} --" if names else f"{code}:{message}:--"


def result_header(kind: str, header: list[str]) -> list[str]:
    """Header of a result file: ``sf__Id,sf__Created`` / ``sf__Id,sf__Error`` / the original."""
    if kind == "successful":
        return ["sf__Id", "sf__Created", *header]
    if kind == "failed":
        return ["sf__Id", "sf__Error", *header]
    return list(header)


def write_rows(rows: Iterable[list[str]]) -> str:
    """Result CSV text: every value quoted, comma-delimited, LF line endings.

    Results are always comma/LF whatever the job used: simple-salesforce, written against real
    orgs, parses them with ``delimiter=','`` and ``lineterminator='\\n'`` (bulk2.py
    ``get_all_ingest_records``), and the doc examples quote every value (§4.8).
    """
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return out.getvalue()
