"""``dispo-sync demo``: the whole chain on this machine, nothing to configure.

What runs, all on loopback in one process:

- a simulated Salesforce org (sfsim) with 200 Leads carrying ``Dialer_Lead_Id__c``;
- a simulated dialer: a websocket server that reports ``--rate`` calls per
  second for ``--seconds`` seconds (a mix of dispositions, about 5 %
  do-not-call and callback requests, a few re-deliveries of the same call and
  one malformed event), and waits for the daemon's acknowledgement of each;
- the real service (:class:`daemon.runner.Daemon`) between them, configured
  from a generated TOML file: a ``websocket`` adapter, the spool in a temporary
  directory, the live/collections/bulk rails.

At the end it checks the org: one Task per call (re-deliveries did not
duplicate anything), every do-not-call Lead flagged, nothing left pending. The
exit code is 0 only when all of that holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

__all__ = ["run_demo"]

_LEADS = 200
# (disposition, weight): roughly what an outbound campaign reports.
_MIX = (
    ("no_answer", 30),
    ("voicemail", 25),
    ("connected", 20),
    ("busy", 10),
    ("callback_requested", 5),
    ("do_not_call", 5),
    ("wrong_number", 3),
    ("fax", 2),
)
_HUMAN = frozenset({"connected", "callback_requested", "do_not_call"})
_REDELIVER_EVERY = 25  # every 25th call is reported twice (dialers do that)


@dataclass
class _Dialer:
    """The simulated dialer's side: what it reported and what was acknowledged."""

    seconds: float
    rate: float
    rng: random.Random
    sent: int = 0
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    all_acked: asyncio.Event = field(default_factory=asyncio.Event)
    emitting: bool = False
    emitted: bool = False

    def event(self, n: int, now: datetime) -> dict[str, Any]:
        dispositions, weights = zip(*_MIX, strict=True)
        disposition = self.rng.choices(dispositions, weights)[0]
        lead = f"L{self.rng.randrange(_LEADS):04d}"
        call: dict[str, Any] = {
            "id": f"evt-{n}",
            "type": "call.ended",
            "call_id": f"demo-{n:06d}",
            "disposition": disposition,
            "ended_at": now.isoformat(),
            "started_at": (now - timedelta(seconds=40)).isoformat(),
            "duration_s": 40,
            "campaign": "demo",
            "lead_external_key": lead,
        }
        if disposition in _HUMAN:
            # An agent spoke to someone: the adapter marks these live (screen-pop).
            call["agent_id"] = f"agent{self.rng.randrange(12):02d}"
        if disposition == "callback_requested":
            call["callback_at"] = (now + timedelta(days=1)).isoformat()
        return call

    async def handler(self, ws: Any) -> None:
        """One connection from the daemon's websocket adapter.

        The first connection gets the whole run; a reconnect gets the events not
        acknowledged yet (as a real dialer would resend them), nothing more.
        """
        self.connected.set()

        async def read_acks() -> None:
            async for message in ws:
                data = json.loads(message)
                if data.get("type") == "ack":
                    self.acked.add(str(data["id"]))
                    self._check_acked()

        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(read_acks())
            if not self.emitting:
                self.emitting = True
                await self._emit(ws)
                self.emitted = True
            else:
                for call in list(self.calls.values()):
                    if call["id"] not in self.acked:
                        await ws.send(json.dumps(call))
            self._check_acked()
            # Wait for the acknowledgements (the daemon acks after its commit).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await self.all_acked.wait()
            self.done.set()
            # Stay connected until the daemon stops (it closes the connection).
            await ws.wait_closed()
            reader.cancel()

    def _check_acked(self) -> None:
        if self.emitted and all(c["id"] in self.acked for c in self.calls.values()):
            self.all_acked.set()

    async def _emit(self, ws: Any) -> None:
        total = max(1, int(self.seconds * self.rate))
        start = time.monotonic()
        # One malformed event (no ended_at): the daemon quarantines it and goes on.
        await ws.send(json.dumps({"id": "evt-bad", "type": "call.ended", "call_id": "demo-bad"}))
        for n in range(total):
            # Pace to the rate; the schedule, not the sleep, decides when.
            due = start + n / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            call = self.event(n, datetime.now(UTC))
            self.calls[call["call_id"]] = call
            await ws.send(json.dumps(call))
            self.sent += 1
            if n % _REDELIVER_EVERY == _REDELIVER_EVERY - 1:
                await ws.send(json.dumps({**call, "id": call["id"] + "-again"}))
                self.sent += 1


def _config(tmp: Path, sim_info: dict[str, Any], dialer_url: str, seconds: float) -> Path:
    path = tmp / "config.toml"
    bulk_interval = max(2.0, seconds / 4)
    path.write_text(
        f"""# Generated by `dispo-sync demo`.
[salesforce]
login_url = "{sim_info["instance_url"]}"
client_id = "{sim_info["client_id"]}"
client_secret = "{sim_info["client_secret"]}"

[spool]
path = "{tmp / "spool.db"}"
synchronous = "NORMAL"

[http]
listen = "127.0.0.1:0"

[rails]
bulk_interval_s = {bulk_interval}
bulk_min_records = 50

[log]
format = "logfmt"
level = "info"

[daemon]
status_interval_s = 1.0

[[adapter]]
type = "websocket"
name = "demo-dialer"
url = "{dialer_url}"
auth = "none"
event_types = ["call.ended"]
ack = "each"
ack_message = {{ type = "ack", id = "{{id}}" }}
fields = {{ call_id = "call_id", disposition = "disposition", ended_at = "ended_at", \
started_at = "started_at", duration_s = "duration_s", agent_id = "agent_id", \
campaign = "campaign", lead_external_key = "lead_external_key", callback_at = "callback_at" }}
"""
    )
    return path


def run_demo(*, seconds: float = 20.0, rate: float = 20.0, out: TextIO) -> int:
    """Run the demo; 0 when everything reported arrived in the org exactly once."""
    if seconds <= 0 or rate <= 0:
        print("--seconds and --rate must be positive", file=out)
        return 2
    return asyncio.run(_demo(seconds, rate, out))


async def _demo(seconds: float, rate: float, out: TextIO) -> int:
    import websockets

    from daemon.logging import configure_logging
    from daemon.notify import Notifier
    from daemon.runner import Daemon
    from daemon.settings import load_settings
    from sfsim import SimOrg
    from spool import read_stats

    console = Console(file=out, highlight=False)
    with tempfile.TemporaryDirectory(prefix="dispo-sync-demo-") as tmp_name:
        tmp = Path(tmp_name)
        log_file = (tmp / "daemon.log").open("w")
        # The daemon's own log lines go to a file; the screen shows the summary.
        configure_logging("logfmt", "info", stream=log_file, environ={})
        dialer = _Dialer(seconds=seconds, rate=rate, rng=random.Random(7))
        try:
            async with SimOrg(tls=False) as sim:
                store = sim.org.store
                for i in range(_LEADS):
                    store.insert(
                        "Lead",
                        {
                            "LastName": f"Demo {i}",
                            "Company": "Demo Inc.",
                            "Phone": f"+1555{i:07d}",
                            "Dialer_Lead_Id__c": f"L{i:04d}",
                        },
                        seed=True,
                    )
                async with websockets.serve(dialer.handler, "127.0.0.1", 0) as server:
                    port = server.sockets[0].getsockname()[1]
                    cfg = _config(tmp, sim.info, f"ws://127.0.0.1:{port}/events", seconds)
                    settings = load_settings(cfg, environ={})
                    console.print(
                        f"[bold]dispo-sync demo[/bold]: {int(seconds * rate)} calls at "
                        f"{rate:g}/s from a simulated dialer to a simulated Salesforce org "
                        f"({_LEADS} Leads)"
                    )
                    daemon = Daemon(settings, notifier=Notifier(None))
                    ok = await _run_and_watch(daemon, dialer, settings, console, read_stats)
                    stats = read_stats(settings.spool.path)
                    return _report(console, dialer, daemon, store, stats, ok)
        finally:
            from daemon.logging import reset_logging

            reset_logging()
            log_file.close()


async def _run_and_watch(
    daemon: Any, dialer: _Dialer, settings: Any, console: Console, read_stats: Any
) -> bool:
    deadline = time.monotonic() + dialer.seconds + 120
    drained = False
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(daemon.run())
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while time.monotonic() < deadline and not task.done():
                stats = _stats(read_stats, settings.spool.path) if daemon.started.is_set() else None
                live.update(_progress(dialer, stats, daemon))
                if (
                    dialer.done.is_set()
                    and stats is not None
                    and stats.pending == 0
                    and stats.inflight == 0
                ):
                    drained = True
                    break
                await asyncio.sleep(0.25)
        daemon.request_stop()
    return drained and task.result() == 0


def _stats(read_stats: Any, path: Path) -> Any:
    from spool import SpoolError

    try:
        return read_stats(path)
    except (SpoolError, OSError):  # being created or checkpointed this instant
        return None


def _progress(dialer: _Dialer, stats: Any, daemon: Any) -> Table:
    table = Table(title="live", title_justify="left")
    for col in ("dialer sent", "acked", "waiting", "sending", "in Salesforce", "dead", "API calls"):
        table.add_column(col, justify="right")
    calls = _api_calls(daemon)
    if stats is None:
        table.add_row(str(dialer.sent), str(len(dialer.acked)), "-", "-", "-", "-", str(calls))
    else:
        table.add_row(
            str(dialer.sent),
            str(len(dialer.acked)),
            str(stats.pending),
            str(stats.inflight),
            str(stats.done),
            str(stats.dead),
            str(calls),
        )
    return table


def _api_calls(daemon: Any) -> int:
    total = 0.0
    for metric in daemon.metrics.api_calls.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return int(total)


def _sent_by_rail(daemon: Any) -> Counter[str]:
    counts: Counter[str] = Counter()
    for metric in daemon.metrics.sent.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["rail"]] += int(sample.value)
    return counts


def _live_latency(daemon: Any) -> tuple[float | None, float | None]:
    """Upper bucket bounds holding 50 % and 95 % of the live latency observations."""
    buckets: list[tuple[float, float]] = []
    for metric in daemon.metrics.live_latency.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None, None

    def bound(q: float) -> float:
        return next(le for le, count in buckets if count >= q * total)

    return bound(0.5), bound(0.95)


def _report(
    console: Console, dialer: _Dialer, daemon: Any, store: Any, stats: Any, drained: bool
) -> int:
    tasks = [t for t in store.records("Task") if str(t.get("Call_Id__c", "")).startswith("demo")]
    keys = [str(t["Call_Id__c"]) for t in tasks]
    expected = {f"demo-dialer:{c}" for c in dialer.calls}
    dnc_leads = {
        c["lead_external_key"] for c in dialer.calls.values() if c["disposition"] == "do_not_call"
    }
    flagged = {
        str(lead.get("Dialer_Lead_Id__c"))
        for lead in store.records("Lead")
        if lead.get("DoNotCall") is True
    }
    checks = [
        (
            "every call reached Salesforce as a Task",
            set(keys) == expected,
            f"{len(set(keys))} of {len(expected)}",
        ),
        (
            "no duplicate Task (re-deliveries were harmless)",
            len(keys) == len(set(keys)),
            f"{len(keys) - len(set(keys))} duplicates",
        ),
        (
            "every do-not-call Lead flagged DoNotCall",
            dnc_leads <= flagged,
            f"{len(dnc_leads & flagged)} of {len(dnc_leads)}",
        ),
        (
            "nothing left waiting in the spool",
            drained and stats.pending == 0,
            f"pending={stats.pending} inflight={stats.inflight}",
        ),
        (
            "the malformed event was quarantined, not lost",
            stats.quarantined >= 1,
            f"{stats.quarantined} quarantined",
        ),
    ]
    table = Table(title="result", title_justify="left")
    table.add_column("check")
    table.add_column("ok")
    table.add_column("detail")
    for name, ok, detail in checks:
        table.add_row(name, "[green]yes[/green]" if ok else "[red]NO[/red]", detail)
    console.print(table)
    by_rail = _sent_by_rail(daemon)
    rails = ", ".join(f"{rail} {n}" for rail, n in sorted(by_rail.items())) or "none"
    console.print(
        f"sent by rail: {rails}; Salesforce API calls: {_api_calls(daemon)} "
        f"for {sum(by_rail.values())} outcomes"
    )
    p50, p95 = _live_latency(daemon)
    if p50 is not None:
        console.print(
            f"live rail: Salesforce confirmed within {p50:g} s of the call's end for half of "
            f"the urgent outcomes, within {p95:g} s for 95 %"
        )
    all_ok = all(ok for _, ok, _ in checks)
    console.print("demo passed" if all_ok else "[red]demo FAILED[/red]")
    return 0 if all_ok else 1
