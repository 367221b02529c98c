"""``file`` adapter and ``dispo-sync ingest FILE``: backfill from CDR / CSV exports.

Idempotent and resumable:

* every row becomes one outcome whose identity is stable across runs (the CDR
  ``uniqueid``, the CSV's call id column, or a hash of the row), so re-reading a
  file adds nothing;
* rows are stored in batches with ``put_many(..., cursor=(key, offset))``: the
  byte offset after the batch is committed in the same transaction as its rows,
  so an interrupted run resumes exactly where the last commit ended;
* the cursor also remembers the file's inode and a hash of its first bytes:
  another file at the path (different inode or head) or a truncated one
  (shorter than the offset) is read from the start again (harmless: duplicates
  are recognised);
* bad rows are quarantined with their reason and counted; the run goes on;
* a line whose double quotes do not balance (a name with an undoubled ``"``, a
  line cut short inside a quoted field) is quarantined alone, as an unbalanced
  quote on its line number; the rows after it are read on their own. A quoted
  field may still hold newlines (RFC 4180; ``cdr_csv`` writes a newline inside a
  string as it is): its lines are one row when together they are one well-formed
  row of the file's width and none of the lines after the first is a row itself;
* a refusing spool (full, disk error) is waited out with backoff; the offset of
  the refused batch is not advanced.

The ``file`` adapter type ingests its configured file on start and, with
``watch_interval_s > 0``, picks up appended rows every that many seconds, the
way ``tail -F`` follows a log:

* a last line without its newline is the row the dialer is half-way through
  writing: it is left for a later pass, which reads it whole (a one-shot
  ``ingest`` takes it: that file is complete);
* so is a quoted field still open at the end of the file (a row holding
  newlines, being written), unless a line after the one that opened it is a row
  of its own: then that line is the bad one, and the rows after it do not wait;
* the followed file stays open between passes. When the path names another
  file (logrotate renamed ours away and the dialer started a new one), the old
  file is first read to its end from the committed offset, then the new one
  from its start. After a restart, a cursor that names a file no longer at the
  path is looked for by its inode in the same directory (``Master.csv.1``) and
  read to its end first. Rows written to the old file after that (a writer
  that keeps it open) or to a rotated file compressed or moved elsewhere before
  it was read are not seen (logged as ``file_rotated_unread``).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import structlog

from adapters._base import AdapterHealth, AdapterState
from adapters._cdr import CDR_COLUMNS, CDR_MAX_COLUMNS, decode_cdr_row, decode_csv_row
from adapters._decode_util import DecodeError
from adapters._ingest import Intake, Refused, log_reason
from adapters.config import FileConfig, check_tz, table_problems
from adapters.dispositions import DispositionMap, parse_overrides
from spool import CallOutcome, PutStatus, Spool
from spool.record import Direction

__all__ = ["FileAdapter", "IngestSummary", "build", "ingest_file", "validate"]

log = structlog.get_logger("adapters.file")

_HEAD_BYTES: Final = 4096
_MAX_RECORD_BYTES: Final = 1_048_576  # one CSV record (quoted newlines included)
_APART: Final = "; the lines after it are read on their own"
_REFUSED_BACKOFF_MAX_S: Final = 30.0
_REFUSED_GIVE_UP_S: Final = 600.0
FORMATS: Final = ("asterisk-cdr", "csv")


@dataclass
class IngestSummary:
    """What one ingest run did (printed by ``dispo-sync ingest``)."""

    path: str
    format: str
    source: str
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    resumed_from: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def _head_hash(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()[:16]


# The kinds of record _records yields
_LINE: Final = 0  # one line, its quotes balanced (or a line over the size limit, cut)
_JOINED: Final = 1  # lines joined by a quoted field that holds newlines, closed
_OPEN: Final = 2  # a quoted field still open where the file ends or the size limit falls


def _records(f: io.BufferedReader, *, complete: bool) -> Iterator[tuple[bytes, int, int]]:
    """Raw CSV records, the offset after each and its kind (``_LINE``, ``_JOINED``, ``_OPEN``).

    A line with an odd number of ``"`` opens a quoted field that goes on over the next
    lines (RFC 4180 lets a field hold newlines) until a line with an odd number closes
    it: those lines are one ``_JOINED`` record. A field still open where the file ends,
    or when the record passes ``_MAX_RECORD_BYTES``, makes an ``_OPEN`` record, the last
    one yielded: the caller goes on from a position of its choice with a new
    ``_records`` (its offset is no record's end).

    ``complete``: nothing more will be written to the file (a one-shot ingest, a
    rotated file), so a last line without its newline is a record. Otherwise the
    file is being watched and such a line is the row the writer is half-way through:
    it is not yielded, so the cursor stays before it and a later pass reads it whole
    (an ``_OPEN`` record ends with it, if any: it is no line of its own yet).

    Memory stays bounded: a line longer than ``_MAX_RECORD_BYTES`` is yielded cut to
    ``_MAX_RECORD_BYTES + 1`` bytes (the caller rejects it) and the rest of it is skipped.
    """
    readline = f.readline
    pending = b""  # the lines of a record whose quoted field is open
    while True:
        line = readline(_MAX_RECORD_BYTES + 1 - len(pending))
        odd = line.count(b'"') & 1
        if not pending:
            if line.endswith(b"\n"):
                if odd:
                    pending = line
                elif line.strip():
                    yield line, f.tell(), _LINE
                continue
            # No newline: the end of the file, or a line reaching the size limit.
            if len(line) > _MAX_RECORD_BYTES:
                if _skip_line(f):
                    yield line, f.tell(), _LINE
                    continue
                if complete:
                    yield line, f.tell(), _LINE
            elif complete and line.strip():
                yield line, f.tell(), _OPEN if odd else _LINE
            return
        pending += line
        if len(pending) > _MAX_RECORD_BYTES or not line.endswith(b"\n"):
            # the size limit, or the end of the file: there a last line without its
            # newline that closes the field ends the record if the file is complete
            closed = complete and odd and len(pending) <= _MAX_RECORD_BYTES
            yield pending, f.tell(), _JOINED if closed else _OPEN
            return
        if odd:
            yield pending, f.tell(), _JOINED
            pending = b""


def _skip_line(f: io.BufferedReader) -> bool:
    """Read past the rest of the current line; False when the file ends first."""
    while True:
        chunk = f.readline(65_536)
        if chunk.endswith(b"\n"):
            return True
        if not chunk:
            return False


def _identity(st: os.stat_result) -> tuple[int, int]:
    """Which file this is, while the daemon runs. Only the inode is kept in the cursor:
    a device number can change across a reboot (device-mapper, NFS), an inode does
    not, and a directory's files share one filesystem."""
    return st.st_dev, st.st_ino


def _find_by_inode(path: Path, inode: int) -> Path | None:
    """Another name, in ``path``'s directory, of the file with ``inode``.

    logrotate's default renames the file in place (``Master.csv`` -> ``Master.csv.1``),
    which keeps its inode. ``DirEntry.inode()`` comes from the directory listing: no
    stat per entry.
    """
    try:
        with os.scandir(path.parent) as entries:
            for entry in entries:
                if (
                    entry.name != path.name
                    and entry.inode() == inode
                    and entry.is_file(follow_symlinks=False)
                ):
                    return Path(entry.path)
    except OSError:
        return None
    return None


# One line of RFC 4180 CSV: each field quoted (quotes doubled inside) or free of quotes
_RFC4180_LINE: Final = re.compile(
    rb'(?:"(?:[^"]|"")*"|[^",\r\n]*)(?:,(?:"(?:[^"]|"")*"|[^",\r\n]*))*\r?\n?'
)


def _parse(record: bytes, *, strict: bool = False) -> list[list[str]]:
    """The CSV rows of ``record``. ``strict``: a quote that does not close a field (or a
    field still open at the end) is a ``csv.Error``; otherwise it is kept as a
    character, as the csv reader does."""
    return list(csv.reader(io.StringIO(record.decode("utf-8", "replace")), strict=strict))


def _split_lines(record: bytes) -> list[bytes]:
    """The lines of ``record``, each with its newline (the last one may have none)."""
    lines = [line + b"\n" for line in record.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    return lines


def _count_lines(fd: int, start: int, end: int) -> int:
    """The newlines in bytes ``start`` to ``end`` of the file ``fd`` (not moving its offset)."""
    n = 0
    while start < end:
        chunk = os.pread(fd, min(end - start, 1 << 20), start)
        if not chunk:
            break
        n += chunk.count(b"\n")
        start += len(chunk)
    return n


def _reason_key(reason: str) -> str:
    """Group rejection reasons by the field they name (for the summary)."""
    return reason.split(":", 1)[0][:64]


@dataclass(frozen=True, slots=True)
class _Cursor:
    """The committed position in a file: the offset and which file it belongs to."""

    offset: int
    head: str  # _head_hash of the file's first head_len bytes
    head_len: int
    inode: int | None  # None in cursors written by older versions

    @classmethod
    def at(cls, offset: int, head: bytes, inode: int) -> _Cursor:
        """The cursor after ``offset`` in the file whose first bytes are ``head``."""
        head_len = min(len(head), offset)
        return cls(offset, _head_hash(head[:head_len]), head_len, inode)

    def names(self, head: bytes, size: int, inode: int) -> bool:
        """Whether this cursor is a position in that file (inode, first bytes, size)."""
        # the same file grown (appended rows) keeps its inode and first bytes; a
        # rotated, replaced or truncated one does not (the head catches a reused inode)
        return (
            (self.inode is None or self.inode == inode)
            and self.offset <= size
            and self.head_len <= len(head)
            and _head_hash(head[: self.head_len]) == self.head
        )

    def to_json(self) -> str:
        state: dict[str, Any] = {
            "offset": self.offset,
            "head": self.head,
            "head_len": self.head_len,
        }
        if self.inode is not None:
            state["ino"] = self.inode
        return json.dumps(state)

    @classmethod
    def from_json(cls, saved: str | None) -> _Cursor | None:
        if not saved:
            return None
        try:
            state = json.loads(saved)
            inode = int(state["ino"]) if "ino" in state else None
            return cls(int(state["offset"]), str(state["head"]), int(state["head_len"]), inode)
        except (ValueError, KeyError, TypeError):
            return None


class _FileIngest:
    """Reading a file into the spool: the decoder, the spool cursor and the counters.

    :meth:`run` reads one file once (``dispo-sync ingest``); :meth:`follow` is one
    pass of the ``file`` adapter, which keeps the followed file open between passes.
    """

    def __init__(
        self,
        path: Path,
        spool: Spool,
        *,
        format: str,
        source: str,
        mapping: Mapping[str, str],
        tz: tzinfo,
        dmap: DispositionMap,
        direction: Direction,
        health: AdapterHealth,
        batch_size: int,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; one of: {', '.join(FORMATS)}")
        self.path = path
        self.format = format
        self.source = source
        self.mapping = dict(mapping)
        self.tz = tz
        self.dmap = dmap
        self.direction = direction
        self.intake = Intake(spool, health, source=source)
        self.batch_size = batch_size
        self.cursor_key = f"file:{source}:{path.resolve()}"[:255]
        # follow(): the file being followed (open across passes) and its identity
        self._followed: io.BufferedReader | None = None
        self._followed_id: tuple[int, int] | None = None
        # _line_number(): (file identity and head hash, offset, line number there)
        self._lines: tuple[tuple[tuple[int, int], str], int, int] | None = None

    async def _saved(self) -> _Cursor | None:
        return _Cursor.from_json(await self.intake.spool.get_cursor(self.cursor_key))

    def _start_offset(self, saved: _Cursor | None, head: bytes, size: int, inode: int) -> int:
        if saved is None:
            return 0
        if not saved.names(head, size, inode):
            log.info("file_restarted", path=str(self.path), reason="another file or truncated")
            return 0
        return saved.offset

    def _decode(self, record: bytes, header: list[str] | None) -> CallOutcome | str:
        """The outcome of a one-line record, or why it is rejected."""
        if len(record) > _MAX_RECORD_BYTES:
            return f"row: longer than {_MAX_RECORD_BYTES} bytes"
        try:
            rows = _parse(record)
        except csv.Error as exc:
            return str(exc)
        return self._outcome(rows[0] if rows else [], record, header)

    def _alone(
        self, line: bytes, header: list[str] | None, *, rfc: bool = False
    ) -> CallOutcome | None:
        """The outcome of ``line`` read on its own with no quote left open or misplaced;
        None when it is not such a row. ``rfc``: with quotes only around whole fields, as
        RFC 4180 writes them (not ``5" screen``, which the csv reader takes as it is)."""
        if rfc and _RFC4180_LINE.fullmatch(line) is None:
            return None
        try:
            rows = _parse(line, strict=True)
        except csv.Error:
            return None
        if len(rows) != 1:
            return None
        outcome = self._outcome(rows[0], line, header)
        return outcome if isinstance(outcome, CallOutcome) else None

    def _outcome(
        self, row: list[str], record: bytes, header: list[str] | None
    ) -> CallOutcome | str:
        try:
            if self.format == "asterisk-cdr":
                fields = decode_cdr_row(
                    row,
                    record,
                    source=self.source,
                    dmap=self.dmap,
                    tz=self.tz,
                    direction=self.direction,
                )
            else:
                assert header is not None
                if len(row) != len(header):
                    raise DecodeError(f"row: {len(row)} columns where the header has {len(header)}")
                fields = decode_csv_row(
                    dict(zip(header, row, strict=True)),
                    mapping=self.mapping,
                    source=self.source,
                    dmap=self.dmap,
                    tz=self.tz,
                    direction=self.direction,
                )
        except DecodeError as exc:
            return str(exc)
        return Intake.validate(fields)

    def _one_row(self, record: bytes, header: list[str] | None) -> CallOutcome | str | None:
        """A record of several lines (a quoted field holding newlines): its outcome, or why
        it is rejected, when it is one row; None when it is not, because a quote is out
        of place (it is not one row of the file's width with every quote where RFC 4180
        allows it) or because a line after the first is a row of its own or the start of
        one: then a stray quote on the first line swallowed the rows after it."""
        try:
            rows = _parse(record, strict=True)
        except csv.Error:
            return None
        if len(rows) != 1 or not self._fits(rows[0], header):
            return None
        if any(self._is_row(line, header) for line in _split_lines(record)[1:]):
            return None
        return self._outcome(rows[0], record, header)

    def _fits(self, row: list[str], header: list[str] | None) -> bool:
        """Whether ``row`` has as many columns as a row of this file can have."""
        if header is not None:
            return len(row) == len(header)
        return len(CDR_COLUMNS) <= len(row) <= CDR_MAX_COLUMNS

    def _is_row(self, line: bytes, header: list[str] | None) -> bool:
        """Whether ``line`` is a row on its own, or the first line of one whose last field,
        quoted, goes on over the next lines; written as RFC 4180 has it: the last line of
        a field holding newlines, read alone, has its closing quote inside a field
        (``two",busy,...``), which the csv reader would take for a row."""
        if self._alone(line, header, rfc=True) is not None:
            return True
        if line.count(b'"') & 1:
            return self._alone(line.rstrip(b"\r\n") + b'"\n', header, rfc=True) is not None
        return False

    def _line_number(self, fd: int, offset: int) -> int:
        """The number (from 1) of the line starting at ``offset`` of the file ``fd``.

        For a bad line's reason only: the lines are counted from the last line asked
        for in the same file (or its start), not while reading.
        """
        st = os.fstat(fd)
        at = ((st.st_dev, st.st_ino), _head_hash(os.pread(fd, _HEAD_BYTES, 0)))
        start, number = 0, 1
        if self._lines is not None and self._lines[0] == at and self._lines[1] <= offset:
            start, number = self._lines[1], self._lines[2]
        number += _count_lines(fd, start, offset)
        self._lines = (at, offset, number)
        return number

    def _rows(
        self, f: io.BufferedReader, header: list[str] | None, *, complete: bool
    ) -> Iterator[tuple[bytes, int, CallOutcome | str]]:
        """The records of ``f`` from its position: each one's bytes, the offset after it
        and its outcome (or why it is rejected).

        A line whose quotes leave a field open is one row with the lines after it when
        they make one well-formed row (see :meth:`_one_row`). Otherwise it is the bad
        line: it is taken alone (a row if it is one with its quote as a plain character,
        else rejected as an unbalanced quote) and the lines after it are read on their
        own. In a followed file, a field still open at its end may be a row being
        written: it is waited for unless a line after the first is a row of its own.
        """
        while True:
            for record, end, kind in _records(f, complete=complete):
                if kind == _LINE:
                    yield record, end, self._decode(record, header)
                    continue
                if kind == _JOINED:
                    result = self._one_row(record, header)
                    if result is not None:
                        yield record, end, result
                        continue
                start = end - len(record)
                lines = _split_lines(record)
                first = lines[0]
                alone = self._alone(first, header)
                if (
                    kind == _OPEN
                    and not complete
                    and alone is None
                    and len(record) <= _MAX_RECORD_BYTES
                    and not any(
                        self._is_row(line, header) for line in lines[1:] if line.endswith(b"\n")
                    )
                ):
                    return  # the rest of the field may be on its way
                after = start + len(first)
                if alone is not None:
                    yield first, after, alone
                else:
                    n = self._line_number(f.fileno(), start)
                    yield first, after, f"row: unbalanced double quote on line {n}" + _APART
                f.seek(after)
                break
            else:
                return

    async def run(self, summary: IngestSummary, progress: Any | None = None) -> None:
        """Read the file once, to its end: it is complete (an unterminated last line too)."""
        with self.path.open("rb") as f:
            await self._read(f, summary, complete=True, progress=progress)

    async def follow(self, summary: IngestSummary) -> bool:
        """One pass of ``tail -F``: what was appended since the last commit.

        When the path names another file than the one followed (logrotate renamed it
        and the dialer started a new one), the old file is read to its end first, then
        the new one from its start. False when no file is at the path (the old one,
        if still open, was read as far as it goes).
        """
        try:
            identity: tuple[int, int] | None = _identity(self.path.stat())
        except FileNotFoundError:
            identity = None
        followed = self._followed
        if followed is not None and identity != self._followed_id:
            # The path names another file, or none. With a new file there, the old one
            # is finished: read to its end, an unterminated last line included. With
            # none, it was renamed and its writer may still add to it (it stays open)
            # unless it was deleted (no name left to write to).
            done = identity is not None or os.fstat(followed.fileno()).st_nlink == 0
            await self._read(followed, summary, complete=done)
            if not done:
                return False
            self.close()
            followed = None
            switched = True
        else:
            switched = False
        if identity is None:
            return False
        if followed is None:
            followed = self.path.open("rb")
            try:
                # the identity of the file opened (the path may have changed since stat)
                opened = _identity(os.fstat(followed.fileno()))
                if not switched:  # (re)start: the old file was not open to read
                    await self._read_rotated(opened[1], summary)
            except BaseException:
                followed.close()
                raise
            self._followed, self._followed_id = followed, opened
        await self._read(followed, summary, complete=False)
        return True

    async def _read_rotated(self, inode: int, summary: IngestSummary) -> None:
        """(Re)start: when the cursor names a file no longer at the path (``inode`` is
        the one there now) that is still in the directory under another name, what that
        file got after the last commit is read first, to its end."""
        saved = await self._saved()
        if saved is None or saved.inode is None or saved.inode == inode:
            return
        old = _find_by_inode(self.path, saved.inode)
        if old is not None:
            with old.open("rb") as f:
                st = os.fstat(f.fileno())
                head = os.pread(f.fileno(), _HEAD_BYTES, 0)
                if saved.names(head, st.st_size, st.st_ino):
                    log.info("file_rotated_read", path=str(self.path), rotated=old.name)
                    await self._read(f, summary, complete=True)
                    return
        log.warning(
            "file_rotated_unread",
            path=str(self.path),
            reason="the file of the last commit is no longer in its directory: rows it "
            "got after that commit may be missing (reconcile from the rotated file)",
            offset=saved.offset,
        )

    def close(self) -> None:
        if self._followed is not None:
            self._followed.close()
        self._followed = self._followed_id = None

    async def _read(
        self,
        f: io.BufferedReader,
        summary: IngestSummary,
        *,
        complete: bool,
        progress: Any | None = None,
    ) -> None:
        """Read ``f`` from its committed offset to its end, committing as it goes."""
        st = os.fstat(f.fileno())
        size = st.st_size
        # os.pread: the file's first bytes without moving f's position
        head = os.pread(f.fileno(), _HEAD_BYTES, 0)
        offset = self._start_offset(await self._saved(), head, size, st.st_ino)
        summary.resumed_from = offset
        header: list[str] | None = None
        if self.format == "csv":
            f.seek(0)
            first = next(_records(f, complete=complete), None)
            if first is None:
                return
            record, after, kind = first
            if kind == _OPEN:  # a quote left open in the header: its first line is the header
                line = _split_lines(record)[0]
                record, after = line, after - len(record) + len(line)
            try:
                rows = _parse(record)
            except csv.Error as exc:  # a ValueError: the adapter tries again, ingest stops
                raise ValueError(f"header: {exc}") from exc
            header = [h.strip().lstrip("\ufeff") for h in rows[0]] if rows else []
            offset = max(offset, after)
        f.seek(offset)
        if progress is not None:
            progress(offset, size)
        batch: list[CallOutcome] = []
        end = offset
        for record, end, result in self._rows(f, header, complete=complete):
            summary.rows += 1
            self.intake.health.received += 1
            if isinstance(result, str):
                summary.rejected += 1
                key = _reason_key(result)
                summary.reasons[key] = summary.reasons.get(key, 0) + 1
                await self._retrying(lambda r=record, why=result: self.intake.reject(r, why))
            else:
                batch.append(result)
            if len(batch) >= self.batch_size:
                await self._commit(batch, _Cursor.at(end, head, st.st_ino), summary)
                batch = []
                if progress is not None:
                    progress(end, size)
        await self._commit(batch, _Cursor.at(end, head, st.st_ino), summary)
        if progress is not None:
            progress(end, size)

    async def _commit(self, batch: list[CallOutcome], at: _Cursor, summary: IngestSummary) -> None:
        """Store ``batch`` and the cursor ``at`` (the offset after it) in one transaction."""
        cursor = (self.cursor_key, at.to_json())
        results = await self._retrying(lambda: self.intake.store(batch, cursor=cursor))
        counts = Counter(r.status for r in results)
        dup = counts[PutStatus.DUPLICATE] + counts[PutStatus.STALE]
        summary.duplicates += dup
        summary.accepted += len(results) - dup

    async def _retrying(self, op: Any) -> Any:
        """Run ``op`` until the spool takes it (backoff with jitter, capped; gives up late)."""
        delay = 0.5
        waited = 0.0
        while True:
            try:
                return await op()
            except Refused as exc:
                if waited >= _REFUSED_GIVE_UP_S:
                    raise
                pause = min(_REFUSED_BACKOFF_MAX_S, max(delay, exc.retry_after_s))
                pause *= random.uniform(0.8, 1.2)
                log.info("file_ingest_waiting", reason=exc.reason, delay_s=round(pause, 2))
                await asyncio.sleep(pause)
                waited += pause
                delay = min(_REFUSED_BACKOFF_MAX_S, delay * 2)


async def ingest_file(
    path: str | Path,
    spool: Spool,
    *,
    format: str = "asterisk-cdr",
    source: str | None = None,
    mapping: Mapping[str, str] | None = None,
    tz: str = "UTC",
    progress: bool | None = None,
    dispositions: Mapping[str, Any] | None = None,
    direction: str = "outbound",
    batch_size: int = 500,
    health: AdapterHealth | None = None,
) -> IngestSummary:
    """Backfill ``path`` into ``spool``; returns what was accepted, duplicate, rejected.

    The file is taken as complete: a last line without its newline is a row too.
    ``progress`` shows a progress bar on stderr (default: when stderr is a terminal).
    """
    path = Path(path)
    job = _job(
        path,
        spool,
        format=format,
        source=source,
        mapping=mapping,
        tz=tz,
        dispositions=dispositions,
        direction=direction,
        batch_size=batch_size,
        health=health,
    )
    summary = IngestSummary(path=str(path), format=format, source=job.source)
    show = sys.stderr.isatty() if progress is None else progress
    size = path.stat().st_size
    if not show:
        await job.run(summary)
    else:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=False,
        ) as bar:
            task = bar.add_task(path.name, total=size)
            await job.run(summary, lambda done, total: bar.update(task, completed=done))
    _log_summary(summary)
    return summary


def _job(
    path: Path,
    spool: Spool,
    *,
    format: str,
    source: str | None,
    mapping: Mapping[str, str] | None,
    tz: str,
    dispositions: Mapping[str, Any] | None,
    direction: str,
    batch_size: int,
    health: AdapterHealth | None,
) -> _FileIngest:
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; one of: {', '.join(FORMATS)}")
    check_tz(tz)
    overrides, problems = parse_overrides(dispositions)
    if problems:
        raise ValueError("; ".join(problems))
    src = source or ("cdr" if format == "asterisk-cdr" else "csv")
    platform = "asterisk-cdr" if format == "asterisk-cdr" else "vocabulary"
    return _FileIngest(
        path,
        spool,
        format=format,
        source=src,
        mapping=mapping or {},
        tz=ZoneInfo(tz),
        dmap=DispositionMap(platform, src, overrides),
        direction=Direction(direction),
        health=health or AdapterHealth(name=src, type="file"),
        batch_size=batch_size,
    )


def _log_summary(summary: IngestSummary) -> None:
    log.info(
        "file_ingested",
        path=summary.path,
        rows=summary.rows,
        accepted=summary.accepted,
        duplicates=summary.duplicates,
        rejected=summary.rejected,
        reasons={k: v for k, v in summary.reasons.items()},
    )


def validate(table: Mapping[str, Any], index: int) -> list[str]:
    """Every problem with a ``type = "file"`` table (empty when it is fine)."""
    return table_problems(FileConfig, table, index)[1]


def build(table: Mapping[str, Any], spool: Spool, *, default_tz: str = "UTC") -> FileAdapter:
    cfg, problems = table_problems(FileConfig, table, 0)
    if problems or not isinstance(cfg, FileConfig):
        raise ValueError("; ".join(problems))
    return FileAdapter(cfg, spool, default_tz=default_tz)


class FileAdapter:
    """Ingests one file on start; with ``watch_interval_s``, keeps picking up new rows
    (following the file across rotations, as ``tail -F`` does)."""

    def __init__(self, cfg: FileConfig, spool: Spool, *, default_tz: str = "UTC") -> None:
        self.cfg = cfg
        self.name = cfg.source
        self.spool = spool
        self.tz = cfg.tz or default_tz
        self._health = AdapterHealth(name=self.name, type="file")
        self._stop = asyncio.Event()
        self.last_summary: IngestSummary | None = None
        self.passes = 0
        self._pass_done = asyncio.Condition()
        self._job: _FileIngest | None = None  # built on the first pass, kept (open file)

    def health(self) -> AdapterHealth:
        return self._health

    async def start(self) -> None:
        self._health.state = AdapterState.CONNECTED
        log.info("file_adapter_started", adapter=self.name, path=self.cfg.path)

    async def _one_pass(self) -> None:
        path = Path(self.cfg.path)
        if self._job is None:
            self._job = _job(
                path,
                self.spool,
                format=self.cfg.format,
                source=self.name,
                mapping=self.cfg.mapping,
                tz=self.tz,
                dispositions=self.cfg.dispositions,
                direction=self.cfg.direction,
                batch_size=self.cfg.batch_size,
                health=self._health,
            )
        summary = IngestSummary(path=str(path), format=self.cfg.format, source=self.name)
        if self.cfg.watch_interval_s:
            found = await self._job.follow(summary)
        else:
            # Read once, on start: the file is taken as complete, as by `dispo-sync ingest`.
            found = path.is_file()  # noqa: ASYNC240 - one stat call per pass
            if found:
                await self._job.run(summary)
        self.last_summary = summary
        if not found:
            self._health.last_error = "file not found"
            log.warning("file_missing", adapter=self.name, path=str(path))
            return
        _log_summary(summary)
        self._health.last_error = None

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await self._one_pass()
                except Refused as exc:
                    self._health.last_error = exc.reason
                    log.warning("file_ingest_refused", adapter=self.name, reason=exc.reason)
                except (OSError, ValueError) as exc:
                    self._health.last_error = log_reason(str(exc))
                    log.warning("file_ingest_failed", adapter=self.name, error=log_reason(str(exc)))
                async with self._pass_done:
                    self.passes += 1
                    self._pass_done.notify_all()
                timeout = self.cfg.watch_interval_s or None
                try:
                    async with asyncio.timeout(timeout):
                        await self._stop.wait()
                except TimeoutError:
                    pass
        finally:
            if self._job is not None:
                self._job.close()
            self._health.state = AdapterState.STOPPED

    async def stop(self) -> None:
        if self._health.state is not AdapterState.STOPPED:
            self._health.state = AdapterState.STOPPING
        self._stop.set()

    async def wait_pass(self, n: int) -> None:
        """Return once ``n`` passes over the file are done."""
        async with self._pass_done:
            await self._pass_done.wait_for(lambda: self.passes >= n)
