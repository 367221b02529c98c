"""Admin commands on the spool file: ``status``, ``dead-letters``, ``ingest``.

``status`` only reads (``spool.read_stats`` plus a read-only look at the bulk
job and quota tables), so it works while the daemon runs and when it is
stopped, and never changes the file. ``dead-letters retry|drop`` change
records through the spool's own API; the running daemon picks retried records
up on its next claim.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from daemon.cli import EXIT_USAGE
from spool import UNREADABLE_PAYLOAD

__all__ = [
    "IngestOptions",
    "StatusReport",
    "dead_letters_command",
    "ingest_command",
    "read_status",
    "status_command",
]

# The spool kv key the daemon writes its last API quota reading to (daemon.runner).
QUOTA_STATE_KEY = "quota"
_PAGE = 500


@dataclass(frozen=True)
class StatusReport:
    """Everything ``status`` shows, as plain data (also the ``--json`` output)."""

    path: str
    stats: dict[str, Any]
    jobs: list[dict[str, Any]]
    quota: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"spool": self.path, **self.stats, "bulk_jobs": self.jobs, "quota": self.quota}


class SpoolMissing(Exception):
    """The spool file does not exist (yet)."""


def read_status(path: Path) -> StatusReport:
    """Read the status snapshot without writing to the file."""
    from spool import read_stats

    if not path.exists():
        raise SpoolMissing(str(path))
    stats = read_stats(path).to_dict()
    jobs: list[dict[str, Any]] = []
    quota: dict[str, Any] | None = None
    # Read-only connection (mode=ro): safe beside the running daemon's writer.
    # Tables per spool/_schema.py (jobs, kv).
    uri = path.resolve().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as conn:
        conn.execute("PRAGMA query_only = 1")
        rows = conn.execute(
            "SELECT sf_job_id, object, operation, state, record_count, counters, created_at,"
            " updated_at FROM jobs WHERE finished = 0 ORDER BY created_at"
        ).fetchall()
        for job_id, obj, op, state, count, counters, created, updated in rows:
            jobs.append(
                {
                    "job_id": job_id,
                    "object": obj,
                    "operation": op,
                    "state": state,
                    "records": count,
                    "counters": json.loads(counters or "{}"),
                    "created_at": created,
                    "updated_at": updated,
                }
            )
        # Spool.set_state(key) stores under "state:<key>" (spool/spool.py).
        row = conn.execute(
            "SELECT value FROM kv WHERE key = ?", ("state:" + QUOTA_STATE_KEY,)
        ).fetchone()
        if row is not None:
            try:
                loaded = json.loads(row[0])
                quota = loaded if isinstance(loaded, dict) else None
            except ValueError:
                quota = None
    return StatusReport(str(path), stats, jobs, quota)


def status_command(path: Path, out: TextIO, *, as_json: bool = False) -> int:
    """``dispo-sync status``."""
    from spool import SpoolError

    try:
        report = read_status(path)
    except SpoolError as exc:
        print(f"cannot read the spool file {path}: {exc}", file=out)
        return 1
    except SpoolMissing:
        print(
            f"no spool file at {path}: the service has not run yet, or [spool] path points "
            "elsewhere (use --config or --spool)",
            file=out,
        )
        return 1
    if as_json:
        json.dump(report.to_dict(), out, indent=2, sort_keys=True)
        out.write("\n")
        return 0
    _render_status(report, _console(out))
    return 0


# ------------------------------------------------------------------ rendering


def _console(out: TextIO) -> Console:
    return Console(file=out, highlight=False, soft_wrap=False, width=_width(out))


def _width(out: TextIO) -> int:
    try:
        return 120 if not out.isatty() else Console().width
    except (AttributeError, ValueError):
        return 120


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _render_status(report: StatusReport, console: Console) -> None:
    st = report.stats
    console.print(
        f"[bold]spool[/bold] {report.path} ({_size(st.get('file_bytes', 0))}, "
        f"schema {st.get('schema_version')})"
    )
    oldest = st.get("oldest_pending_age_s")
    console.print(
        f"waiting: [bold]{st['pending']}[/bold]   being sent: {st['inflight']}   "
        f"sent: {st['done']}   dead letters: [bold]{st['dead']}[/bold]   "
        f"oldest waiting: {_age(oldest) if oldest is not None else 'none'}"
    )

    by_rail: dict[str, dict[str, int]] = st.get("by_rail", {})
    rails = sorted({r for counts in by_rail.values() for r in counts if r})
    table = Table(title="records by state and rail", title_justify="left")
    table.add_column("state")
    for rail in rails:
        table.add_column(rail, justify="right")
    table.add_column("no rail yet", justify="right")
    table.add_column("total", justify="right")
    for state in ("pending", "inflight", "done", "dead"):
        counts = by_rail.get(state, {})
        table.add_row(
            state,
            *[str(counts.get(r, 0)) for r in rails],
            str(counts.get("", 0)),
            str(st["by_state"].get(state, 0)),
        )
    console.print(table)

    if report.jobs:
        jobs = Table(title="bulk jobs in progress", title_justify="left")
        for col in (
            "job id",
            "object",
            "operation",
            "state",
            "records",
            "processed",
            "failed",
            "age",
        ):
            jobs.add_column(
                col, justify="right" if col in ("records", "processed", "failed", "age") else "left"
            )
        now = time.time()
        for job in report.jobs:
            c = job["counters"]
            jobs.add_row(
                job["job_id"],
                job["object"],
                job["operation"],
                job["state"],
                str(job["records"]),
                str(c.get("numberRecordsProcessed", c.get("processed", "-"))),
                str(c.get("numberRecordsFailed", c.get("failed", "-"))),
                _age(now - job["created_at"]),
            )
        console.print(jobs)
    else:
        console.print("bulk jobs in progress: none")

    dead: dict[str, int] = st.get("dead_by_error", {})
    if dead:
        table = Table(title="dead letters by Salesforce error", title_justify="left")
        table.add_column("error code")
        table.add_column("count", justify="right")
        for code, n in sorted(dead.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(code or "(no code)", str(n))
        console.print(table)
        console.print("see them with: dispo-sync dead-letters list")
    if st.get("quarantined"):
        console.print(f"unreadable dialer input kept aside (quarantine): {st['quarantined']}")

    q = report.quota
    if q and q.get("max"):
        used, maximum = int(q["used"]), int(q["max"])
        left = 100.0 * (maximum - used) / maximum
        at = q.get("at")
        ago = f", {_age(time.time() - at)} ago" if isinstance(at, int | float) else ""
        console.print(f"API quota: {used} of {maximum} used ({left:.0f}% left{ago})")
    else:
        console.print("API quota: no reading yet")


# -------------------------------------------------------------- dead letters


@asynccontextmanager
async def _open(path: Path) -> AsyncIterator[Any]:
    """The spool for ``dead-letters``: it purges nothing. Retention is the service's
    (``[spool] retention_days``), which this command may not know (``--spool``); the
    library's default of 7 days would delete done calls the service keeps longer."""
    from spool import open_spool

    async with open_spool(path, purge_interval_s=math.inf) as spool:
        yield spool


async def _all_dead(spool: Any, error_code: str | None = None) -> list[Any]:
    out: list[Any] = []
    offset = 0
    while True:
        page = await spool.dead_letters(limit=_PAGE, offset=offset, error_code=error_code)
        out.extend(page)
        if len(page) < _PAGE:
            return out
        offset += _PAGE


def _raw_payload(d: Any) -> Any:
    """The stored payload as JSON when it parses, else the text itself."""
    try:
        return json.loads(d.payload)
    except (TypeError, ValueError):
        return d.payload


def _disposition(d: Any) -> str | None:
    if d.outcome is not None:
        return str(d.outcome.disposition)
    raw = _raw_payload(d)
    value = raw.get("disposition") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def _outcome_json(d: Any) -> str:
    """The outcome as JSON; the stored payload unchanged when it cannot be read."""
    return str(d.outcome.model_dump_json()) if d.outcome is not None else str(d.payload)


def _dead_dict(d: Any) -> dict[str, Any]:
    return {
        "id": d.record_id,
        "source": d.source,
        "call_id": d.call_id,
        "disposition": _disposition(d),
        "readable": d.outcome is not None,
        "rail": d.rail,
        "error_code": d.error_code,
        "error_message": d.error_message,
        "attempts": d.attempt,
        "received_at": _when(d.created_at),
        "failed_at": _when(d.failed_at),
    }


def dead_letters_command(args: Any, path: Path, out: TextIO, err: TextIO) -> int:
    """``dispo-sync dead-letters ACTION``."""
    if not path.exists():
        print(f"no spool file at {path} (use --config or --spool)", file=err)
        return 1
    action: str = args.dead_command
    handlers: dict[str, Callable[[Any, Any, TextIO, TextIO], Any]] = {
        "list": _dl_list,
        "show": _dl_show,
        "retry": _dl_retry,
        "drop": _dl_drop,
        "export": _dl_export,
    }

    async def go() -> int:
        async with _open(path) as spool:
            code: int = await handlers[action](spool, args, out, err)
            return code

    return asyncio.run(go())


async def _dl_list(spool: Any, args: Any, out: TextIO, err: TextIO) -> int:
    items = await spool.dead_letters(limit=args.limit, offset=0, error_code=args.error_code)
    rows = [_dead_dict(d) for d in items]
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        print(
            "no dead letters" + (f" with error {args.error_code}" if args.error_code else ""),
            file=out,
        )
        return 0
    table = Table(title=f"dead letters ({len(rows)} shown)", title_justify="left")
    for col in ("id", "call", "disposition", "rail", "error", "message", "failed at"):
        table.add_column(col, justify="right" if col == "id" else "left", overflow="fold")
    for r in rows:
        message = (r["error_message"] or "")[:80]
        table.add_row(
            str(r["id"]),
            f"{r['source']}:{r['call_id']}",
            r["disposition"] or "?",
            r["rail"] or "-",
            r["error_code"] or "-",
            message,
            r["failed_at"],
        )
    _console(out).print(table)
    return 0


async def _dl_show(spool: Any, args: Any, out: TextIO, err: TextIO) -> int:
    found = await spool.dead_letter(args.id)
    if found is None:
        print(f"no dead letter with id {args.id}", file=err)
        return 1
    for key, value in _dead_dict(found).items():
        print(f"{key:>14}: {value if value is not None else '-'}", file=out)
    if found.outcome is not None:
        print("       outcome:", file=out)
        shown: Any = json.loads(found.outcome.model_dump_json())
    else:
        print(
            "       outcome: this version of dispo-sync cannot read it; the stored payload"
            " is kept unchanged:",
            file=out,
        )
        shown = _raw_payload(found)
    text = json.dumps(shown, indent=2, sort_keys=True) if not isinstance(shown, str) else shown
    for line in text.splitlines():
        print(f"  {line}", file=out)
    return 0


async def _unreadable_in(spool: Any, args: Any) -> int:
    """How many of the dead letters a retry selects this version cannot read."""
    if args.id is not None:
        found = await spool.dead_letter(args.id)
        return int(found is not None and found.outcome is None)
    if args.error_code not in (None, UNREADABLE_PAYLOAD):
        return 0  # a record is dead-lettered as unreadable with that code only
    return sum(1 for d in await _all_dead(spool, UNREADABLE_PAYLOAD) if d.outcome is None)


async def _dl_retry(spool: Any, args: Any, out: TextIO, err: TextIO) -> int:
    unreadable = await _unreadable_in(spool, args)
    if args.id is not None:
        n = await spool.retry_dead(ids=[args.id])
        if n == 0:
            print(f"no dead letter with id {args.id}", file=err)
            return 1
    elif args.all:
        n = await spool.retry_dead(all=True)
    else:
        n = await spool.retry_dead(error_code=args.error_code)
    print(
        f"{n} dead letter{'s' if n != 1 else ''} queued to be sent again "
        "(the running service picks them up on its next pass)",
        file=out,
    )
    if unreadable:
        print(
            f"note: {unreadable} of them {'was' if unreadable == 1 else 'were'} stored in a form "
            f"this version cannot read ({UNREADABLE_PAYLOAD}); unless a version that reads "
            "it runs, they come back as dead letters",
            file=err,
        )
    return 0


async def _dl_drop(spool: Any, args: Any, out: TextIO, err: TextIO) -> int:
    n = await spool.drop_dead([args.id])
    if n == 0:
        print(f"no dead letter with id {args.id}", file=err)
        return 1
    print(f"dead letter {args.id} deleted", file=out)
    return 0


_CSV_COLUMNS = (
    "id",
    "source",
    "call_id",
    "disposition",
    "rail",
    "error_code",
    "error_message",
    "attempts",
    "received_at",
    "failed_at",
    "readable",
    "outcome_json",
)


def _csv_safe(value: Any) -> str:
    text = "" if value is None else str(value)
    # Spreadsheet formula injection: a cell starting with = + - @ runs as a formula.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


async def _dl_export(spool: Any, args: Any, out: TextIO, err: TextIO) -> int:
    items = await _all_dead(spool, args.error_code)
    path: Path = args.file
    tmp = path.with_name(path.name + ".tmp")
    # 0600 like the spool: dead letters carry phone numbers, notes and recording links.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(_CSV_COLUMNS)
        for d in items:
            row = _dead_dict(d)
            row["outcome_json"] = _outcome_json(d)
            writer.writerow([_csv_safe(row[c]) for c in _CSV_COLUMNS])
    tmp.replace(path)
    print(f"{len(items)} dead letter{'s' if len(items) != 1 else ''} written to {path}", file=out)
    return 0


# -------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class IngestOptions:
    """``dispo-sync ingest`` options; None / empty = from the adapter table or the default."""

    adapter: str | None = None
    file_format: str | None = None
    mapping: tuple[str, ...] = ()  # "FIELD=COLUMN"
    dispositions: tuple[str, ...] = ()  # "CODE=NAME"
    tz: str | None = None
    source: str | None = None
    direction: str | None = None


class _IngestUsage(Exception):
    """An ingest option's value is wrong, naming the option (message for the admin).

    Wrong usage, exit 2 like argparse's own errors: the [[adapter]] tables an option can
    name were validated with the configuration already (exit 78 when they are invalid).
    """


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise _IngestUsage(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _ingest_kwargs(settings: Any, options: IngestOptions) -> dict[str, Any]:
    """``adapters.file.ingest_file`` keyword arguments: options over the adapter table."""
    from adapters.config import CSV_FIELDS, check_tz
    from adapters.dispositions import parse_overrides

    table: dict[str, Any] = {}
    if options.adapter is not None:
        files = [dict(t) for t in settings.adapter if t.get("type") == "file"]
        found = [t for t in files if t.get("name") == options.adapter]
        if not found:
            names = ", ".join(str(t.get("name")) for t in files if t.get("name")) or "none"
            raise _IngestUsage(
                f'--adapter: no [[adapter]] with type = "file" and name = {options.adapter!r} '
                f"(file adapters with a name: {names})"
            )
        table = found[0]
    mapping = {**table.get("mapping", {}), **_pairs(options.mapping, "--mapping")}
    unknown = sorted(set(mapping) - set(CSV_FIELDS))
    if unknown:
        raise _IngestUsage(
            f"--mapping: unknown field(s) {', '.join(unknown)}; known: {', '.join(CSV_FIELDS)}"
        )
    dispositions: dict[str, Any] = {
        **table.get("dispositions", {}),
        **_pairs(options.dispositions, "--disposition"),
    }
    problems = parse_overrides(dispositions, "--disposition")[1]
    if problems:
        raise _IngestUsage("; ".join(problems))
    tz = options.tz or table.get("tz") or settings.daemon.default_tz
    try:
        check_tz(tz)
    except ValueError as exc:
        raise _IngestUsage(f"--tz: {exc}") from None
    file_format = options.file_format or table.get("format") or "asterisk-cdr"
    if mapping and file_format != "csv":
        raise _IngestUsage("--mapping applies to --format csv only")
    kwargs: dict[str, Any] = {
        "format": file_format,
        "source": options.source or table.get("name"),
        "mapping": mapping,
        "tz": tz,
        "dispositions": dispositions,
    }
    for key in ("direction", "batch_size"):
        if key in table:
            kwargs[key] = table[key]
    if options.direction is not None:
        kwargs["direction"] = options.direction
    return kwargs


def ingest_command(
    settings: Any, file: Path, out: TextIO, err: TextIO, options: IngestOptions | None = None
) -> int:
    """``dispo-sync ingest FILE``: backfill through the same spool (idempotent)."""
    from adapters.file import ingest_file

    if not file.is_file():
        print(f"no such file: {file}", file=err)
        return 1
    try:
        kwargs = _ingest_kwargs(settings, options or IngestOptions())
    except _IngestUsage as exc:
        print(f"dispo-sync ingest: {exc}", file=err)
        return EXIT_USAGE

    async def go() -> Any:
        from spool import open_spool

        s = settings.spool
        async with open_spool(
            s.path,
            synchronous=s.synchronous,
            max_pending=s.max_pending,
            max_bytes=s.max_bytes or None,
            # The same urgency rule as `run`: backfilled outcomes sort like live ones.
            urgent_dispositions=frozenset(str(d) for d in settings.rails.live_dispositions),
            retention_s=s.retention_days * 86400,
            lease_s=s.lease_s,
        ) as spool:
            return await ingest_file(file, spool, **kwargs)

    try:
        summary = asyncio.run(go())
    except (OSError, UnicodeError) as exc:
        print(f"cannot read {file}: {exc}", file=err)
        return 1
    print(
        f"{file} ({summary.format}, source {summary.source}, times without an offset read as "
        f"{kwargs['tz']}): {summary.rows} rows, {summary.accepted} queued, "
        f"{summary.duplicates} already known, {summary.rejected} refused"
        + (f" (continued from byte {summary.resumed_from})" if summary.resumed_from else ""),
        file=out,
    )
    for reason, n in sorted(summary.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  refused {n}: {reason}", file=out)
    if summary.rejected:
        print(
            "refused rows are kept aside (quarantine) and counted by `dispo-sync status`",
            file=out,
        )
        return 1
    return 0
