"""Wire encoding (pure): values, composite and collections bodies and results, Bulk CSV.

No sockets here. The client sends what these functions build, and these functions
read what it receives (reference §3 composite and collections, §4.8-4.9 Bulk CSV).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from daemon.mapping import Clear

from .errors import RecordError, parse_error_body, parse_sf_error_column

__all__ = [
    "CSV_NULL",
    "MAX_COLLECTION",
    "MAX_COMPOSITE",
    "MAX_UPLOAD_BYTES",
    "CarriageReturnError",
    "CsvLines",
    "CsvRows",
    "ItemResult",
    "LiteralNullError",
    "ResultColumns",
    "ResultRow",
    "collection_records",
    "composite_body",
    "csv_value",
    "iter_result_csv",
    "iter_result_errors",
    "iter_result_rows",
    "json_value",
    "key_fits_url",
    "parse_collection_results",
    "parse_composite_results",
    "sobject_path",
    "utf8_len",
]

MAX_COLLECTION = 200  # records per sObject Collections call (§3.2)
MAX_COMPOSITE = 25  # subrequests per composite call (§3.1)
# One PUT per Bulk job; 150 MB base64-encoded, so about 100 MB raw (§4.2). We keep
# a margin under it for the base64 growth and multi-byte characters.
MAX_UPLOAD_BYTES = 100_000_000
CSV_NULL = "#N/A"  # clears a field in Bulk (empty is ignored on update, §7.15)


def json_value(value: Any) -> Any:
    """A mapped value -> its JSON form for REST (dates as ISO, CLEAR as null)."""
    if isinstance(value, Clear):
        return None
    if isinstance(value, datetime):
        return _sf_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _sf_datetime(value: datetime) -> str:
    utc = value.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


class LiteralNullError(ValueError):
    """A text value is exactly ``#N/A``: Bulk would clear the field instead of storing it."""


class CarriageReturnError(LiteralNullError):
    """A text value holds a CR: in an LF job that can fail the whole job (§7.2).

    Salesforce's line-ending check may count a CR even inside a quoted value ([U], and
    sfsim takes that reading), so one such value would fail every record of the job and
    pause the Bulk rail. Like ``#N/A``, the record goes by REST instead.
    """


def csv_value(value: Any) -> str:
    """A mapped value -> its Bulk CSV text.

    Values are written as they are: Salesforce stores text literally, and a
    spreadsheet-formula guard (prefixing ``'`` to ``=+-@``) would corrupt real data
    such as ``+15551234567``; protecting spreadsheet exports is the exporter's job.
    A literal ``#N/A`` cannot be expressed in Bulk CSV, so it raises
    :class:`LiteralNullError` and the record goes by REST instead; so does a value
    holding a CR (:class:`CarriageReturnError`, a subclass).
    """
    kind = type(value)
    if kind is str:
        if value == CSV_NULL:
            raise LiteralNullError("the value '#N/A' would clear the field in Bulk")
        if "\r" in value:
            raise CarriageReturnError("a CR in a value can fail a whole Bulk job (LF)")
        return value  # type: ignore[no-any-return]
    if value is None:
        return ""
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is datetime:
        return _sf_datetime(value)
    if kind is date:
        return value.isoformat()  # type: ignore[no-any-return]
    if isinstance(value, Clear):
        return CSV_NULL
    if isinstance(value, str):
        return csv_value(str(value))
    if isinstance(value, datetime):
        return _sf_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class CsvRows:
    """Encode CSV rows: UTF-8, no BOM, LF line ends, RFC 4180 quoting.

    Python's ``csv`` quotes a value holding the delimiter, a quote or LF, but not
    a lone CR when the terminator is LF; a CR inside a value could trip Salesforce's
    line-ending check (§7.2), so rows holding one are written fully quoted.
    """

    def __init__(self) -> None:
        self._buf = io.StringIO()
        self._minimal = csv.writer(self._buf, lineterminator="\n")
        self._all = csv.writer(self._buf, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def encode(self, row: Sequence[str]) -> bytes:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        self._minimal.writerow(row)
        text = buf.getvalue()
        if "\r" in text:
            buf.seek(0)
            buf.truncate()
            self._all.writerow(row)
            text = buf.getvalue()
        return text.encode("utf-8")


class CsvLines:
    """Like :class:`CsvRows`, as ``str`` lines, for the Bulk hot path (encoded to UTF-8
    a chunk at a time on upload). :func:`utf8_len` gives a line's size in bytes."""

    def __init__(self) -> None:
        self._out: list[str] = []
        sink = SimpleNamespace(write=self._out.append)
        self._minimal = csv.writer(sink, lineterminator="\n")
        self._all = csv.writer(sink, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def line(self, row: Sequence[str]) -> str:
        self._minimal.writerow(row)
        text = self._out.pop()
        if "\r" in text:
            self._all.writerow(row)
            text = self._out.pop()
        return text


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (no copy for ASCII: ``isascii`` is O(1))."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def sobject_path(api_version: str, sobject: str, *parts: str) -> str:
    """``/services/data/vNN.N/sobjects/<sobject>/<part>...`` with each part URL-encoded."""
    tail = "".join("/" + quote(p, safe="") for p in parts)
    return f"/services/data/v{api_version}/sobjects/{sobject}{tail}"


def key_fits_url(value: str) -> bool:
    """False for an external id that cannot name a record in a URL
    (``.../sobjects/<sobject>/<field>/<value>``): one whose part after its last ``.`` is
    letters only. Salesforce may read such a tail as a response format extension:
    "some Top Level Domains may conflict with certain file format extensions ... using
    an email address, such as example@email.inc, as the External ID returns a 404 not
    found" (REST API guide, resources_sobject_upsert_patch; reference §2.6). Which
    suffixes clash is not documented, so every letters-only one is avoided; such a value
    goes in a body (sObject Collections), where it is a plain value."""
    _, dot, tail = value.rpartition(".")
    return not (dot and tail.isalpha())


def composite_body(
    subrequests: Sequence[dict[str, Any]], *, all_or_none: bool = False
) -> dict[str, Any]:
    if not 0 < len(subrequests) <= MAX_COMPOSITE:
        raise ValueError(f"a composite request takes 1-{MAX_COMPOSITE} subrequests")
    # collateSubrequests false: the Task upsert and the Lead update of one call
    # must run in the given order (v49+ defaults to true, §3.1).
    return {
        "allOrNone": all_or_none,
        "collateSubrequests": False,
        "compositeRequest": list(subrequests),
    }


def collection_records(sobject: str, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records for ``/composite/sobjects`` with ``attributes.type`` and JSON values."""
    out = []
    for record in records:
        body: dict[str, Any] = {"attributes": {"type": sobject}}
        for key, value in record.items():
            body[key] = json_value(value)
        out.append(body)
    if len(out) > MAX_COLLECTION:
        raise ValueError(f"sObject Collections take at most {MAX_COLLECTION} records")
    return out


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one record in a composite or collections call."""

    success: bool
    id: str | None = None
    created: bool | None = None
    errors: tuple[RecordError, ...] = ()
    status_code: int | None = None

    @property
    def error(self) -> RecordError | None:
        return self.errors[0] if self.errors else None


def parse_collection_results(body: Any, expected: int) -> list[ItemResult]:
    """A collections response (one entry per input, in order) -> ItemResults.

    HTTP 200 does not mean success: every item's ``success`` is read (§7.16). A
    short or malformed answer marks the missing items as retryable failures.
    """
    out: list[ItemResult] = []
    items = body if isinstance(body, list) else []
    for item in items[:expected]:
        if not isinstance(item, dict):
            out.append(ItemResult(False, errors=(RecordError("UNKNOWN_EXCEPTION", "bad item"),)))
            continue
        success = item.get("success") is True
        errors = parse_error_body(item.get("errors") or [])
        if not success and not errors:
            errors = (RecordError("UNKNOWN_EXCEPTION", "failed without an error"),)
        created = item.get("created")
        out.append(
            ItemResult(
                success,
                id=item.get("id"),
                created=created if isinstance(created, bool) and success else None,
                errors=() if success else errors,
            )
        )
    while len(out) < expected:
        out.append(
            ItemResult(
                False, errors=(RecordError("UNKNOWN_EXCEPTION", "no result for this record"),)
            )
        )
    return out


def parse_composite_results(body: Any) -> dict[str, ItemResult]:
    """``{"compositeResponse": [...]}`` -> referenceId -> ItemResult (statuses checked, §7.17)."""
    out: dict[str, ItemResult] = {}
    entries = body.get("compositeResponse", []) if isinstance(body, dict) else []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        ref = str(entry.get("referenceId", ""))
        status = entry.get("httpStatusCode")
        status_code = int(status) if isinstance(status, int) else 500
        sub = entry.get("body")
        if 200 <= status_code < 300:
            created = sub.get("created") if isinstance(sub, dict) else None
            out[ref] = ItemResult(
                True,
                id=sub.get("id") if isinstance(sub, dict) else None,
                created=created if isinstance(created, bool) else None,
                status_code=status_code,
            )
        else:
            errors = parse_error_body(sub) or (
                RecordError("UNKNOWN_EXCEPTION", f"HTTP {status_code}"),
            )
            if status_code >= 500:
                errors = tuple(
                    RecordError("SERVER_UNAVAILABLE", e.message, e.fields)
                    if e.kind.value == "permanent"
                    else e
                    for e in errors
                )
            out[ref] = ItemResult(False, errors=errors, status_code=status_code)
    return out


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One row of a Bulk result file."""

    key: str
    sf_id: str | None
    created: bool | None = None
    error: RecordError | None = None


async def iter_result_rows(
    chunks: AsyncIterator[bytes], *, batch: int = 5000
) -> AsyncIterator[list[list[str]]]:
    """Stream any CSV as batches of parsed rows (the header is the first row).

    Each chunk is cut after its last newline that lies outside quotes (an even count
    of quote characters before it), so values holding newlines stay whole; the part
    before the cut is parsed by one C ``csv.reader`` (no per-row Python parsing).
    """
    decoder = _Utf8Decoder()
    pending = ""
    out: list[list[str]] = []
    async for chunk in chunks:
        pending += decoder.decode(chunk)
        cut = _last_record_end(pending)
        if cut > 0:
            out.extend(csv.reader(io.StringIO(pending[:cut], newline="")))
            pending = pending[cut:]
        if len(out) >= batch:
            yield out
            out = []
    pending += decoder.decode(b"", final=True)
    if pending.strip():
        out.extend(csv.reader(io.StringIO(pending, newline="")))
    if out:
        yield out


def _last_record_end(text: str) -> int:
    """Index just after the last newline of ``text`` outside quotes (0: none yet)."""
    nl = text.rfind("\n")
    while nl >= 0:
        if text.count('"', 0, nl) % 2 == 0:
            return nl + 1
        nl = text.rfind("\n", 0, nl)
    return 0


@dataclass(frozen=True, slots=True)
class ResultColumns:
    """Where the columns of a Bulk result file are (found by name, §4.8)."""

    key: int
    sf_id: int = -1
    created: int = -1
    error: int = -1

    @classmethod
    def of(cls, header: Sequence[str], key_column: str) -> ResultColumns:
        names = [h.lstrip("\ufeff") for h in header]
        if key_column not in names:
            raise ValueError(f"result file has no {key_column!r} column: {names[:8]}")

        def index(name: str) -> int:
            return names.index(name) if name in names else -1

        return cls(
            names.index(key_column), index("sf__Id"), index("sf__Created"), index("sf__Error")
        )


async def iter_result_errors(
    chunks: AsyncIterator[bytes], *, key_column: str, batch: int = 5000
) -> AsyncIterator[list[tuple[str, RecordError | None]]]:
    """A Bulk result file as batches of ``(key, error or None)`` (the reconcile hot path)."""
    cols: ResultColumns | None = None
    async for rows in iter_result_rows(chunks, batch=batch):
        if cols is None:
            cols = ResultColumns.of(rows[0], key_column)
            rows = rows[1:]
        k, e = cols.key, cols.error
        if e < 0:
            yield [(r[k], None) for r in rows if len(r) > k]
        else:
            yield [
                (r[k], parse_sf_error_column(r[e]) if len(r) > e else None)
                for r in rows
                if len(r) > k
            ]


async def iter_result_csv(
    chunks: AsyncIterator[bytes], *, key_column: str, batch: int = 5000
) -> AsyncIterator[list[ResultRow]]:
    """Stream a Bulk result CSV (successful, failed or unprocessed) as batches of rows.

    Records are cut only where the count of quote characters is even, so values
    holding newlines stay whole. Columns are found by name: order is not
    guaranteed and headers may come back quoted or not (§4.8).
    """
    cols: ResultColumns | None = None
    async for rows in iter_result_rows(chunks, batch=batch):
        if cols is None:
            cols = ResultColumns.of(rows[0], key_column)
            rows = rows[1:]
        out = [
            ResultRow(
                key=r[cols.key],
                sf_id=(r[cols.sf_id] or None) if 0 <= cols.sf_id < len(r) else None,
                created=(r[cols.created].lower() == "true") if 0 <= cols.created < len(r) else None,
                error=parse_sf_error_column(r[cols.error]) if 0 <= cols.error < len(r) else None,
            )
            for r in rows
            if len(r) > cols.key
        ]
        if out:
            yield out


class _Utf8Decoder:
    def __init__(self) -> None:
        import codecs

        self._dec = codecs.getincrementaldecoder("utf-8")("replace")

    def decode(self, data: bytes, final: bool = False) -> str:
        return self._dec.decode(data, final)


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
