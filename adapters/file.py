"""``file`` adapter and ``dispo-sync ingest FILE``: backfill from CDR / CSV exports.

Idempotent and resumable:

* every row becomes one outcome whose identity is stable across runs (the CDR
  ``uniqueid``, the CSV's call id column, or a hash of the row), so re-reading a
  file adds nothing;
* rows are stored in batches with ``put_many(..., cursor=(key, offset))``: the
  byte offset after the batch is committed in the same transaction as its rows,
  so an interrupted run resumes exactly where the last commit ended;
* the cursor also remembers a hash of the file's first bytes: a rotated or
  replaced file (different head) or a truncated one (shorter than the offset)
  is read from the start again (harmless: duplicates are recognised);
* bad rows are quarantined with their reason and counted; the run goes on;
* a refusing spool (full, disk error) is waited out with backoff; the offset of
  the refused batch is not advanced.

The ``file`` adapter type ingests its configured file on start and, with
``watch_interval_s > 0``, picks up appended rows every that many seconds.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
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


def _records(f: io.BufferedReader) -> Iterator[tuple[bytes, int]]:
    """Raw CSV records (quoted newlines joined) and the offset after each."""
    pending = b""
    while True:
        line = f.readline()
        if not line:
            if pending.strip():
                yield pending, f.tell()
            return
        pending += line
        if pending.count(b'"') % 2 == 0 or len(pending) > _MAX_RECORD_BYTES:
            if pending.strip():
                yield pending, f.tell()
            pending = b""


def _parse(record: bytes) -> list[str]:
    text = record.decode("utf-8", "replace")
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0] if rows else []


def _reason_key(reason: str) -> str:
    """Group rejection reasons by the field they name (for the summary)."""
    return reason.split(":", 1)[0][:64]


class _FileIngest:
    """One pass over a file: the decoder, the spool cursor and the counters."""

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

    async def _start_offset(self, head: bytes, size: int) -> int:
        saved = await self.intake.spool.get_cursor(self.cursor_key)
        if not saved:
            return 0
        try:
            state = json.loads(saved)
            offset, old_head = int(state["offset"]), str(state["head"])
            head_len = int(state["head_len"])
        except (ValueError, KeyError, TypeError):
            return 0
        # the same file grown (appended rows) keeps its first bytes; a rotated,
        # replaced or truncated one does not
        if offset > size or head_len > len(head) or _head_hash(head[:head_len]) != old_head:
            log.info("file_restarted", path=str(self.path), reason="file replaced or truncated")
            return 0
        return offset

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
        size = self.path.stat().st_size
        with self.path.open("rb") as f:
            head = f.read(_HEAD_BYTES)
            f.seek(0)
            offset = await self._start_offset(head, size)
            summary.resumed_from = offset
            header: list[str] | None = None
            if self.format == "csv":
                first = next(_records(f), None)
                if first is None:
                    return
                header = [h.strip().lstrip("\ufeff") for h in _parse(first[0])]
                offset = max(offset, first[1])
            f.seek(offset)
            if progress is not None:
                progress(offset, size)
            batch: list[CallOutcome] = []
            end = offset
            for record, end in _records(f):
                summary.rows += 1
                self.intake.health.received += 1
                result = self._decode(record, header)
                if isinstance(result, str):
                    summary.rejected += 1
                    key = _reason_key(result)
                    summary.reasons[key] = summary.reasons.get(key, 0) + 1
                    await self._retrying(lambda r=record, why=result: self.intake.reject(r, why))
                else:
                    batch.append(result)
                if len(batch) >= self.batch_size:
                    await self._commit(batch, end, head, summary)
                    batch = []
                    if progress is not None:
                        progress(end, size)
            await self._commit(batch, end, head, summary)
            if progress is not None:
                progress(end, size)

    async def _commit(
        self, batch: list[CallOutcome], end: int, head: bytes, summary: IngestSummary
    ) -> None:
        head_len = min(len(head), end)
        state = {"offset": end, "head": _head_hash(head[:head_len]), "head_len": head_len}
        cursor = (self.cursor_key, json.dumps(state))
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

    ``progress`` shows a progress bar on stderr (default: when stderr is a terminal).
    """
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; one of: {', '.join(FORMATS)}")
    check_tz(tz)
    overrides, problems = parse_overrides(dispositions)
    if problems:
        raise ValueError("; ".join(problems))
    src = source or ("cdr" if format == "asterisk-cdr" else "csv")
    platform = "asterisk-cdr" if format == "asterisk-cdr" else "vocabulary"
    job = _FileIngest(
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
    summary = IngestSummary(path=str(path), format=format, source=src)
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
    log.info(
        "file_ingested",
        path=str(path),
        rows=summary.rows,
        accepted=summary.accepted,
        duplicates=summary.duplicates,
        rejected=summary.rejected,
        reasons={k: v for k, v in summary.reasons.items()},
    )
    return summary


def validate(table: Mapping[str, Any], index: int) -> list[str]:
    """Every problem with a ``type = "file"`` table (empty when it is fine)."""
    return table_problems(FileConfig, table, index)[1]


def build(table: Mapping[str, Any], spool: Spool, *, default_tz: str = "UTC") -> FileAdapter:
    cfg, problems = table_problems(FileConfig, table, 0)
    if problems or not isinstance(cfg, FileConfig):
        raise ValueError("; ".join(problems))
    return FileAdapter(cfg, spool, default_tz=default_tz)


class FileAdapter:
    """Ingests one file on start; with ``watch_interval_s``, keeps picking up new rows."""

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

    def health(self) -> AdapterHealth:
        return self._health

    async def start(self) -> None:
        self._health.state = AdapterState.CONNECTED
        log.info("file_adapter_started", adapter=self.name, path=self.cfg.path)

    async def _one_pass(self) -> None:
        path = Path(self.cfg.path)
        if not path.is_file():  # noqa: ASYNC240 - one stat call per pass
            self._health.last_error = "file not found"
            log.warning("file_missing", adapter=self.name, path=str(path))
            return
        self.last_summary = await ingest_file(
            path,
            self.spool,
            format=self.cfg.format,
            source=self.name,
            mapping=self.cfg.mapping,
            tz=self.tz,
            progress=False,
            dispositions=self.cfg.dispositions,
            direction=self.cfg.direction,
            batch_size=self.cfg.batch_size,
            health=self._health,
        )
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
            self._health.state = AdapterState.STOPPED

    async def stop(self) -> None:
        if self._health.state is not AdapterState.STOPPED:
            self._health.state = AdapterState.STOPPING
        self._stop.set()

    async def wait_pass(self, n: int) -> None:
        """Return once ``n`` passes over the file are done."""
        async with self._pass_done:
            await self._pass_done.wait_for(lambda: self.passes >= n)
