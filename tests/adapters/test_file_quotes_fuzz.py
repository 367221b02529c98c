"""Stray quotes, cut lines and quoted newlines in any order: every good row comes out once.

Files are built from good rows, rows whose fields hold newlines, lines with a stray
``"`` inserted anywhere and lines cut short. Read through the file adapter's record
reader (no spool), whole and as a followed file growing chunk by chunk:

* every good row (one line or several) is decoded, once, in file order;
* the records read tile the file (blank lines aside): nothing skipped, nothing twice;
* following the file as it grows gives the same records and verdicts as reading it
  whole (the cursor is the end of the last record read, as the adapter commits it).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.file import _FileIngest, _job
from spool import CallOutcome
from tests.adapters.test_file_ingest import cdr_row

# generic CSV layouts: the field that may hold newlines last, or not
HEADERS = {
    "csv": "Call ID,Result,Ended,Agent,Lead,Notes\n",
    "csv-notes-second": "Call ID,Notes,Result,Ended,Agent,Lead\n",
}
MAPPING = {"call_id": "Call ID", "disposition": "Result", "ended_at": "Ended", "notes": "Notes"}
NOTE_TEXT = st.text(alphabet='ab ,"\n', max_size=12)
# Not drawn: a generic CSV row whose quoted field begins with a newline, a comma or a quote
# right after a line with a stray quote opening a field. Its opening quote can close the
# stray one (RFC 4180 reads the two lines as one well-formed row), so the reader cannot
# tell it from a legitimate field holding newlines: the rows merge and are quarantined or
# delivered as one. Master.csv rows begin with a quoted non-empty field: never merged.
CSV_NOTE_TEXT = NOTE_TEXT.filter(lambda t: t[:1] not in (",", '"', "\n"))


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _good(fmt: str, call_id: str, note: str | None) -> str:
    if fmt == "asterisk-cdr":
        row = cdr_row(call_id)
        return row if note is None else row.rstrip("\n") + "," + _quoted(note) + "\n"
    notes = "" if note is None else _quoted(note)
    if fmt == "csv":
        return f"{call_id},busy,2025-03-14 10:02:20,jdoe,48213,{notes}\n"
    return f"{call_id},{notes},busy,2025-03-14 10:02:20,jdoe,48213\n"


@st.composite
def files(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    """(format, file text, the call ids of its good rows in order)."""
    fmt = draw(st.sampled_from(["asterisk-cdr", *HEADERS]))
    text = HEADERS.get(fmt, "")
    good: list[str] = []
    for i in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["good", "good", "multi", "stray", "cut", "blank"]))
        if kind in ("good", "multi"):
            call_id = f"G-{i}"
            note = draw(CSV_NOTE_TEXT if fmt in HEADERS else NOTE_TEXT) if kind == "multi" else None
            text += _good(fmt, call_id, note)
            good.append(call_id)
        elif kind == "blank":
            text += "\n"
        else:
            row = _good(fmt, f"X-{i}", draw(st.none() | NOTE_TEXT)).split("\n")[0]
            # anywhere, or (more often) where a field starts: there a quote opens a field
            starts = [0] + [j + 1 for j, c in enumerate(row) if c == ","]
            at = draw(st.integers(0, len(row) - 1) | st.sampled_from(starts))
            bad = row[:at] + '"' + row[at:] if kind == "stray" else row[: max(1, at)]
            text += bad + "\n"
    return fmt, text, good


def _job_for(fmt: str, path: Path) -> _FileIngest:
    csv = fmt in HEADERS
    return _job(
        path,
        None,  # type: ignore[arg-type]  # the record reader never touches the spool
        format="csv" if csv else fmt,
        source=None,
        mapping=MAPPING if csv else None,
        tz="UTC",
        dispositions=None,
        direction="outbound",
        batch_size=500,
        health=None,
    )


def _verdict(result: CallOutcome | str) -> Any:
    return result.model_dump() if isinstance(result, CallOutcome) else result


def _read(job: _FileIngest, path: Path, start: int, *, complete: bool) -> list[Any]:
    header = path.read_text().split("\n")[0].split(",") if job.format == "csv" else None
    with path.open("rb") as f:
        f.seek(start)
        return [(r, end, _verdict(res)) for r, end, res in job._rows(f, header, complete=complete)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files(), st.lists(st.integers(0, 4000), max_size=6))
def test_every_good_row_once_whole_or_followed(
    case: tuple[str, str, list[str]], cuts: list[int]
) -> None:
    fmt, text, good = case
    data = text.encode()
    start = len(HEADERS.get(fmt, ""))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calls.csv"
        path.write_bytes(data)
        whole = _read(_job_for(fmt, path), path, start, complete=True)

        # tiling: each record starts where the last one ended, after blank lines only
        at = start
        for record, end, _ in whole:
            gap = data[at : end - len(record)]
            assert gap.strip() == b"", (gap, record)
            assert data[end - len(record) : end] == record
            at = end
        assert data[at:].strip() == b""

        ids = [v["call_id"] for _, _, v in whole if isinstance(v, dict)]
        assert [i for i in ids if i.startswith("G-")] == good

        # followed: the file grows chunk by chunk, each pass reads from the cursor
        path.write_bytes(data[:start])
        job = _job_for(fmt, path)
        followed: list[Any] = []
        cursor = start
        for cut in [*sorted({min(c, len(data)) for c in cuts if c > start}), len(data)]:
            with path.open("ab") as fh:
                fh.write(data[path.stat().st_size : cut])
            got = _read(job, path, cursor, complete=False)
            followed += got
            cursor = got[-1][1] if got else cursor
        followed += _read(job, path, cursor, complete=True)
        assert followed == whole
