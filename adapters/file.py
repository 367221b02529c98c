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
* a refusing spool (full, disk error) is waited out with backoff; the offset of
  the refused batch is not advanced.

The ``file`` adapter type ingests its configured file on start and, with
``watch_interval_s > 0``, picks up appended rows every that many seconds, the
way ``tail -F`` follows a log:

* a last line without its newline is the row the dialer is half-way through
  writing: it is left for a later pass, which reads it whole (a one-shot
  ``ingest`` takes it: that file is complete);
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
from adapters._cdr import decode_cdr_row, decode_csv_row
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


def _records(f: io.BufferedReader, *, complete: bool) -> Iterator[tuple[bytes, int]]:
    """Raw CSV records (quoted newlines joined) and the offset after each.

    ``complete``: nothing more will be written to the file (a one-shot ingest, a
    rotated file), so a last line without its newline is a record. Otherwise the
    file is being watched and such a line (or a quoted field still open at the
    end) is the row the writer is half-way through: it is not yielded, so the
    cursor stays before it and a later pass reads it whole.

    Memory stays bounded: a record longer than ``_MAX_RECORD_BYTES`` is yielded cut
    to ``_MAX_RECORD_BYTES + 1`` bytes (the caller rejects it) and the rest of its
    line is skipped.
    """
    pending = b""
    while True:
        line = f.readline(_MAX_RECORD_BYTES + 1 - len(pending))
        pending += line
        if line.endswith(b"\n"):
            if pending.count(b'"') % 2 == 0 or len(pending) > _MAX_RECORD_BYTES:
                if pending.strip():
                    yield pending, f.tell()
                pending = b""
            continue
        # No newline: the end of the file, or a record reaching its size limit.
        if len(pending) > _MAX_RECORD_BYTES and _skip_line(f):
            yield pending, f.tell()
            pending = b""
            continue
        if complete and pending.strip():
            yield pending, f.tell()
        return


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


def _parse(record: bytes) -> list[str]:
    text = record.decode("utf-8", "replace")
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0] if rows else []


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
        try:
            row = _parse(record)
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
        except (DecodeError, csv.Error) as exc:
            return str(exc)
        return Intake.validate(fields)

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
            header = [h.strip().lstrip("\ufeff") for h in _parse(first[0])]
            offset = max(offset, first[1])
        f.seek(offset)
        if progress is not None:
            progress(offset, size)
        batch: list[CallOutcome] = []
        end = offset
        for record, end in _records(f, complete=complete):
            summary.rows += 1
            self.intake.health.received += 1
            result = (
                self._decode(record, header)
                if len(record) <= _MAX_RECORD_BYTES
                else f"row: longer than {_MAX_RECORD_BYTES} bytes"
            )
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
