"""What the demo shows: a refreshing status line while it runs, a summary table at the end."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from daemon.demo._verify import Verification

__all__ = ["Progress", "Snapshot", "Summary", "render_summary", "status_line"]


@dataclass(frozen=True)
class Snapshot:
    """One look at the run (every figure may be unknown while the daemon starts)."""

    reported: int
    acked: int
    received: int
    pending: int | None
    inflight: int | None
    sent_by_rail: dict[str, int]
    quota_used: int | None
    quota_max: int | None


def status_line(s: Snapshot) -> str:
    rails = " ".join(f"{rail}={n}" for rail, n in sorted(s.sent_by_rail.items())) or "-"
    quota = f"{s.quota_used}/{s.quota_max}" if s.quota_used is not None and s.quota_max else "-"
    pending = "-" if s.pending is None else str(s.pending)
    inflight = "-" if s.inflight is None else str(s.inflight)
    return (
        f"dialer reported {s.reported} (acked {s.acked}) | received {s.received} | "
        f"pending {pending} inflight {inflight} | sent {rails} | API quota {quota}"
    )


class Progress:
    """rich Live status line on a terminal; a plain line every ``every_s`` otherwise."""

    def __init__(self, console: Console, *, every_s: float = 2.0) -> None:
        self._console = console
        self._tty = console.is_terminal
        self._every = every_s
        self._last = 0.0
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        if self._tty:
            self._live = Live(console=self._console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def update(self, snapshot: Snapshot, *, final: bool = False) -> None:
        line = status_line(snapshot)
        if self._live is not None:
            self._live.update(Text(line))
            if final:
                self._console.print(line, soft_wrap=True)
            return
        now = time.monotonic()
        if final or now - self._last >= self._every:
            self._last = now
            self._console.print(line, soft_wrap=True)


@dataclass
class Summary:
    sent: Counter[tuple[str, str]]  # (rail, disposition) -> outcomes Salesforce confirmed
    reports: int  # reports the daemon acknowledged (duplicates and versions included)
    api_calls: int  # counted by the org
    naive_calls: int  # one REST call per Task write and per Lead write
    live_p50_s: float | None
    live_p99_s: float | None
    live_count: int
    verification: Verification
    failures_shown: int = 20
    notes: list[str] = field(default_factory=list)


def render_summary(console: Console, s: Summary) -> None:
    rails = sorted({rail for rail, _ in s.sent})
    table = Table(title="confirmed by Salesforce", title_justify="left")
    table.add_column("disposition")
    for rail in rails:
        table.add_column(rail, justify="right")
    table.add_column("total", justify="right")
    for disposition in sorted({d for _, d in s.sent}):
        row = [s.sent.get((rail, disposition), 0) for rail in rails]
        table.add_row(disposition, *map(str, row), str(sum(row)))
    totals = [sum(n for (r, _), n in s.sent.items() if r == rail) for rail in rails]
    table.add_row("[bold]all[/bold]", *map(str, totals), str(sum(totals)))
    console.print(table)

    v = s.verification
    facts = Table(title="run", title_justify="left", show_header=False)
    facts.add_column("what")
    facts.add_column("figure", justify="right")
    saved = 1 - s.api_calls / s.naive_calls if s.naive_calls else 0.0
    facts.add_row("reports the daemon acknowledged", str(s.reports))
    facts.add_row("Salesforce API calls", str(s.api_calls))
    delta = f"{saved:.0%} saved" if saved >= 0 else f"{-saved:.0%} more used"
    facts.add_row("naive: one call per Task/Lead write", f"{s.naive_calls} ({delta})")
    latency = (
        "-"
        if s.live_p50_s is None or s.live_p99_s is None
        else f"{s.live_p50_s * 1000:.0f} / {s.live_p99_s * 1000:.0f} ms ({s.live_count} calls)"
    )
    facts.add_row("live latency p50 / p99 (report to Task)", latency)
    facts.add_row("Tasks: one per call, newest version", f"{v.tasks_ok}/{v.tasks_expected}")
    facts.add_row("Leads: newest outcome", f"{v.leads_ok}/{v.leads_expected}")
    facts.add_row("do-not-call Leads flagged", f"{v.dnc_ok}/{v.dnc_expected}")
    for note in s.notes:
        facts.add_row("note", note)
    console.print(facts)
    if v.ok:
        console.print(
            f"[green]all records verified[/green]: {v.tasks_ok} Tasks, {v.leads_ok} Leads"
        )
        return
    console.print(f"[red]verification FAILED[/red]: {len(v.failures)} problem(s)")
    for failure in v.failures[: s.failures_shown]:
        console.print(f"  - {failure}", markup=False)
    if len(v.failures) > s.failures_shown:
        console.print(f"  ... and {len(v.failures) - s.failures_shown} more")


def make_console(out: TextIO) -> Console:
    return Console(file=out, highlight=False)
