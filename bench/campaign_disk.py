"""Disk campaign (issue 7): the spool's disk fills up or stops taking writes, then recovers.

``dispo-sync run`` (child process) takes outcomes from a signed JSON webhook and a
websocket feed (acks after commit, resume by last event id) and sends them to
``dispo-sync sim``. Load runs the whole time; in the middle the spool's storage
fails in one of these ways, then comes back:

* ``tmpfs_full``: the spool lives on a small tmpfs (mounted here; needs root) and a
  ballast file takes every free byte: SQLite gets ENOSPC (``SQLITE_FULL``). Space
  returns when the ballast is deleted;
* ``write_error``: the daemon's file-size limit (``RLIMIT_FSIZE``, set on the running
  process with ``prlimit``) drops below the spool's size: every write that grows a file
  fails with EFBIG (``SQLITE_IOERR_WRITE``), as on a failing or read-only disk. The
  limit is lifted again to recover (no root needed);

(The spool's own ``max_bytes`` cap gives the same refusal; its rows are only freed by
the retention purge, so it is covered by the spool's tests, not here.)

Checked: while it lasts, the webhook answers 503 with ``Retry-After`` (never 2xx,
never another 5xx) and the websocket events go unacknowledged; the daemon stays up;
afterwards everything is accepted again, and every outcome ever acknowledged (HTTP
200 or websocket ack) is in the org as exactly one Task: ``lost_acked`` must be 0.

    .venv/bin/python -m bench.campaign_disk [--seconds 20] [--mode tmpfs_full ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hashlib
import hmac
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench._campaign import (
    DaemonExited,
    DaemonProcess,
    SimProcess,
    campaign_main,
    config_text,
    daemon_process,
    feed_adapter,
    load_average,
    poll,
    read_spool,
    sim_process,
)

__all__ = ["MODES", "main", "run_disk"]

SECRET = "disk-campaign-secret"
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DISPOSITIONS = ("voicemail", "no_answer", "busy", "connected", "do_not_call")
MODES = ("tmpfs_full", "write_error")
_STATE = {0: "pending", 1: "inflight", 2: "done", 3: "dead"}


def signed(body: bytes) -> dict[str, str]:
    return {"X-Signature": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}


def outcome(call_id: str, n: int) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "disposition": DISPOSITIONS[n % len(DISPOSITIONS)],
        "ended_at": (T0 + timedelta(seconds=n)).isoformat(),
        "live": n % 7 == 0,
        "notes": "n" * 200,  # a few hundred bytes a row: the disk fills at a useful pace
    }


# --------------------------------------------------------------------------- load


@dataclass
class HookLoad:
    """Clients posting one outcome each, retrying on 503 until it is accepted."""

    url: str
    acked: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    refused_without_retry_after: int = 0
    refused_during_fault: int = 0
    accepted_during_fault: int = 0
    fault: bool = False
    next_n: int = 0

    async def client(self, stop: asyncio.Event, prefix: str) -> None:
        async with httpx.AsyncClient(timeout=30) as c:
            while not stop.is_set():
                self.next_n += 1
                n = self.next_n
                call_id = f"{prefix}{n}"
                body = json.dumps(outcome(call_id, n)).encode()
                while True:
                    try:
                        r = await c.post(self.url, content=body, headers=signed(body))
                    except httpx.TransportError:
                        self.statuses[0] += 1
                        await asyncio.sleep(0.1)
                        continue
                    self.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        self.acked.add(call_id)
                        if self.fault:
                            self.accepted_during_fault += 1
                        break
                    if r.status_code == 503:
                        if self.fault:
                            self.refused_during_fault += 1
                        if "retry-after" not in r.headers:
                            self.refused_without_retry_after += 1
                    # any other status is counted (and fails the run); retry shortly
                    # (the Retry-After is whole seconds; a campaign cannot wait that long)
                    await asyncio.sleep(0.05 + random.random() * 0.05)


@dataclass
class Feed:
    """A dialer event stream: events appended over time, resumable, acks recorded."""

    events: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    acked_during_fault: int = 0
    connections: int = 0
    close_codes: Counter[int | None] = field(default_factory=Counter)
    fault: bool = False
    grew: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, n: int) -> None:
        event_id = f"e{n}"
        data = {**outcome(f"ws-{n}", n), "status": DISPOSITIONS[n % len(DISPOSITIONS)]}
        self.events.append(json.dumps({"id": event_id, "type": "call.ended", "data": data}))
        self.ids.append(event_id)
        self.grew.set()

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        assert ws.request is not None
        after = ws.request.path.partition("last_event_id=")[2] or None
        pos = self.ids.index(after) + 1 if after in self.ids else 0

        async def read_acks() -> None:
            async for message in ws:
                event_id = str(json.loads(message).get("id"))
                if event_id not in self.acked and self.fault:
                    self.acked_during_fault += 1
                self.acked.add(event_id)

        reader = asyncio.create_task(read_acks())
        try:
            while True:
                while pos < len(self.events):
                    await ws.send(self.events[pos])
                    pos += 1
                self.grew.clear()
                waiter = asyncio.create_task(self.grew.wait())
                done, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    waiter.cancel()
                    break
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reader
            self.close_codes[ws.close_code] += 1

    async def produce(self, stop: asyncio.Event, rate: float) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            self.add(n)
            await asyncio.sleep(1 / rate)


# --------------------------------------------------------------------------- faults


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Any:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def can_mount_tmpfs() -> bool:
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with tmpfs(Path(tmp) / "probe", "1m"):
                return True
        except (subprocess.CalledProcessError, OSError):
            return False


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the file system is full; returns bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        # the last few bytes too, so not even one page fits
        for size in (4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    written += f.write(b"\0" * size)
    return written


def spool_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.exists())


# --------------------------------------------------------------------------- run


async def _drain(sim: SimProcess, spool: Path, expect: set[str], within_s: float) -> dict[str, int]:
    """Wait until the spool has nothing unsent; Task count per call id in the org."""

    def settled() -> bool:
        sql = "SELECT count(*) FROM outcomes WHERE state IN (0, 1)"
        return int(read_spool(spool, sql)[0][0]) == 0

    with contextlib.suppress(TimeoutError):
        await poll(settled, within_s=within_s, every_s=0.2, what="the spool drained")
    tasks = await sim.records("Task")
    counts: Counter[str] = Counter()
    for t in tasks:
        key = str(t.get("Call_Id__c") or "")
        counts[key.split(":", 1)[1] if ":" in key else key] += 1
    return dict(counts)


async def run_mode(
    mode: str,
    tmp: Path,
    *,
    seconds: float = 6.0,
    clients: int = 4,
    ws_rate: float = 100.0,
    drain_s: float = 120.0,
    lease_s: float = 10.0,
) -> dict[str, Any]:
    """One fault: load before (1/4), during (1/2) and after (1/4) ``seconds``.

    ``lease_s``: the spool's lease. A record sent over REST whose "done" could not be
    written (the disk was full) is sent again when its lease expires (harmless: an
    upsert); the drain at the end waits for that.
    """
    work = tmp / mode
    work.mkdir(parents=True)
    feed = Feed()
    stack = contextlib.AsyncExitStack()
    async with stack:
        full = mode == "tmpfs_full"
        spool_dir = stack.enter_context(tmpfs(work / "mnt", "64m")) if full else work
        spool = spool_dir / "spool.db"
        server = await stack.enter_async_context(serve(feed.handler, "127.0.0.1", 0))
        ws_port = server.sockets[0].getsockname()[1]
        sim = await stack.enter_async_context(sim_process())
        adapters = [
            {
                "type": "webhook",
                "preset": "json",
                "name": "hook",
                "listen": "127.0.0.1:0",
                "path": "/hook",
                "secret": SECRET,
                "retry_after_s": 2,
            },
            feed_adapter(ws_port),
        ]
        cfg = config_text(
            sim.info,
            spool,
            adapters,
            spool={"synchronous": "NORMAL", "lease_s": lease_s},
            rails={"bulk_interval_s": 1, "bulk_min_records": 200},
        )
        d = await stack.enter_async_context(daemon_process(work, cfg))
        hook = HookLoad(f"http://127.0.0.1:{d.ports['hook']}/hook")
        stop = asyncio.Event()
        fault: dict[str, Any] = {}
        async with asyncio.TaskGroup() as tg:
            for i in range(clients):
                tg.create_task(hook.client(stop, f"h{i}-"))
            tg.create_task(feed.produce(stop, ws_rate))
            await asyncio.sleep(seconds / 4)
            fault = await _inject(mode, d, spool, hook, feed, seconds / 2)
            await asyncio.sleep(seconds / 4)
            stop.set()
        # whatever was refused is retried by the clients until accepted: all end up acked
        await poll(
            lambda: set(feed.ids) <= feed.acked, within_s=60, what="every event acked at last"
        )
        drain_started = time.monotonic()
        counts = await _drain(sim, spool, hook.acked | feed.acked, within_s=drain_s)
        drain_s_taken = round(time.monotonic() - drain_started, 1)
        states = dict(read_spool(spool, "SELECT state, count(*) FROM outcomes GROUP BY state"))
        now = time.time()
        stuck = [
            {"rail": r, "rows": n, "lease_left_s": round((lease or now) - now, 1), "attempt": a}
            for r, n, lease, a in read_spool(
                spool,
                "SELECT rail, count(*), max(lease_until), max(attempt) FROM outcomes"
                " WHERE state = 1 GROUP BY rail",
            )
        ]
        open_jobs = [
            {"job": j, "state": st, "records": n}
            for j, st, n in read_spool(
                spool, "SELECT sf_job_id, state, record_count FROM jobs WHERE finished = 0"
            )
        ]
        alive = d.running
        errors = Counter(
            str(e.get("event")) for e in d.lines() if e.get("level") in ("error", "critical")
        )
        refusals = Counter(
            str(e.get("reason")) for e in d.lines() if e.get("event") == "outcomes_refused"
        )
    acked_calls = hook.acked | {f"ws-{e[1:]}" for e in feed.acked}
    lost = sorted(c for c in acked_calls if counts.get(c, 0) == 0)
    dupes = sorted(c for c in acked_calls if counts.get(c, 0) > 1)
    bad_status = {s: n for s, n in hook.statuses.items() if s not in (200, 503)}
    result = {
        "mode": mode,
        **fault,
        "webhook_acked": len(hook.acked),
        "webhook_statuses": {str(k): v for k, v in sorted(hook.statuses.items())},
        "webhook_refused_during_fault": hook.refused_during_fault,
        "webhook_accepted_during_fault": hook.accepted_during_fault,
        "webhook_503_without_retry_after": hook.refused_without_retry_after,
        "ws_events": len(feed.ids),
        "ws_acked": len(feed.acked),
        "ws_acked_during_fault": feed.acked_during_fault,
        "ws_connections": feed.connections,
        "ws_close_codes": {str(k): v for k, v in feed.close_codes.items()},
        "refusal_log_lines": dict(refusals),
        "daemon_alive": alive,
        "error_log_lines": dict(errors),
        "drain_s": drain_s_taken,
        "spool_states_at_end": {_STATE.get(k, str(k)): v for k, v in sorted(states.items())},
        "inflight_at_end": stuck,
        "unfinished_jobs_at_end": open_jobs,
        "tasks_in_org": sum(counts.values()),
        "lost_acked": len(lost),
        "duplicates": len(dupes),
        "lost_sample": lost[:5],
    }
    result["ok"] = (
        alive
        and not lost
        and not dupes
        and not bad_status
        and hook.refused_without_retry_after == 0
        and hook.refused_during_fault > 0
        and fault.get("refused_window", False)
    )
    return result


async def _inject(
    mode: str, d: DaemonProcess, spool: Path, hook: HookLoad, feed: Feed, seconds: float
) -> dict[str, Any]:
    """Break the spool's storage for ``seconds`` (at least until a refusal is seen)."""
    out: dict[str, Any] = {"spool_bytes_before": spool_size(spool)}
    undo: Callable[[], None]
    if mode == "tmpfs_full":
        ballast = spool.parent / "ballast"
        out["ballast_bytes"] = await asyncio.to_thread(fill, ballast)

        def undo() -> None:
            ballast.unlink()

    elif mode == "write_error":
        limit = max(4096, (await asyncio.to_thread(spool.stat)).st_size // 2)
        pid = d.pid
        assert pid is not None
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        out["fsize_limit"] = limit

        def undo() -> None:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)

    else:
        raise ValueError(f"unknown mode {mode!r}")

    hook.fault = feed.fault = True
    started = time.monotonic()
    refused = False
    try:
        with contextlib.suppress(TimeoutError):
            await poll(
                lambda: hook.refused_during_fault > 0,
                within_s=max(seconds, 30.0),
                every_s=0.02,
                what="a refusal",
            )
            refused = True
        out["first_refusal_s"] = round(time.monotonic() - started, 2) if refused else None
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
    finally:
        # counters stop counting as "during the fault" before the space returns
        hook.fault = feed.fault = False
        await asyncio.to_thread(undo)
    out["refused_window"] = refused
    out["fault_s"] = round(time.monotonic() - started, 2)
    recovered = time.monotonic()
    before = len(hook.acked)
    await poll(lambda: len(hook.acked) > before, within_s=60, what="an accept after recovery")
    out["recovery_s"] = round(time.monotonic() - recovered, 2)
    return out


async def check_unwritable_at_start(tmp: Path) -> dict[str, Any]:
    """The spool file is read-only for the daemon's user: the start fails and says so.

    (A chmod while the daemon runs changes nothing: SQLite keeps its open descriptors.
    Write failures at run time are the ``write_error`` mode.) Needs root for ``setpriv``.
    """
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return {"ok": None, "skipped": "needs root and setpriv to run the daemon as nobody"}
    # in the system temp dir: the caller's may sit below a 0700 directory nobody cannot cross
    with tempfile.TemporaryDirectory(prefix="dispo-readonly-") as name:
        os.chmod(name, 0o777)
        return await _start_read_only(Path(name), setpriv)


async def _start_read_only(work: Path, setpriv: str) -> dict[str, Any]:
    from spool import open_spool

    spool = work / "spool.db"
    async with open_spool(spool):
        pass
    for entry in os.listdir(work):
        if entry.startswith("spool.db"):
            os.chown(work / entry, 65534, 65534)
            os.chmod(work / entry, 0o400)
    before = spool.stat().st_mtime_ns
    sim = {"instance_url": "http://127.0.0.1:9", "client_id": "x", "client_secret": "y"}
    cfg = work / "daemon.toml"
    cfg.write_text(config_text(sim, spool))
    cfg.chmod(0o644)
    started = time.monotonic()
    d = DaemonProcess(
        cfg,
        work / "daemon.log",
        argv_prefix=[setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"],
    )
    status: int | None = None
    try:
        await d.start()
    except DaemonExited as exc:
        status = exc.returncode
    else:
        await d.stop()
    says = next((ln for ln in d.raw_lines() if "not readable and writable" in ln), "")
    return {
        "ok": status not in (None, 0) and bool(says) and spool.stat().st_mtime_ns == before,
        "exit_status": status,
        "within_s": round(time.monotonic() - started, 2),
        "message": says[:300],
    }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)[:2000]
    return "".join(traceback.format_exception(exc)[-3:])[:2000]


async def run_disk(
    tmp: Path, modes: list[str] | None = None, *, seconds: float = 6.0, drain_s: float = 120.0
) -> dict[str, Any]:
    started = time.monotonic()
    chosen = list(modes or MODES)
    out: dict[str, Any] = {"campaign": "disk", "load_average": load_average()}
    if "tmpfs_full" in chosen and not can_mount_tmpfs():
        out["tmpfs_full"] = {"ok": None, "skipped": "cannot mount a tmpfs (needs root)"}
        chosen.remove("tmpfs_full")
    for mode in chosen:
        try:
            out[mode] = await run_mode(mode, tmp, seconds=seconds, drain_s=drain_s)
        except Exception as exc:  # reported as a failed mode, with what went wrong
            out[mode] = {"ok": False, "error": _describe(exc)}
    out["unwritable_at_start"] = await check_unwritable_at_start(tmp)
    out["failed"] = sorted(
        m
        for m in (*MODES, "unwritable_at_start")
        if isinstance(out.get(m), dict) and out[m]["ok"] is False
    )
    out["lost_acked"] = sum(int(out[m].get("lost_acked", 0)) for m in MODES if m in out)
    out["ok"] = not out["failed"]
    out["load_average_end"] = load_average()
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="load time per mode")
    p.add_argument("--mode", nargs="*", choices=MODES, help="only these modes")
    p.add_argument("--drain-s", type=float, default=120.0, help="longest wait for the drain")
    p.add_argument("--keep", metavar="DIR", help="work in DIR (kept: logs, spool files)")
    args = p.parse_args(argv)
    return campaign_main(
        lambda work: run_disk(work, args.mode, seconds=args.seconds, drain_s=args.drain_s),
        Path(args.keep) if args.keep else None,
        "campaign-disk-",
    )


if __name__ == "__main__":
    sys.exit(main())
