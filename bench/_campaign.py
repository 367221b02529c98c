"""The campaigns' harness: sfsim and ``dispo-sync run`` as real processes, the daemon's
config, the spool read from outside, a load generator that records exactly what the
daemon acknowledged, and a verifier. Every campaign in ``bench/campaign_*.py`` uses it.

Processes (as in production: the daemon meets the org only on the wire):

- :class:`SimProcess`: ``dispo-sync sim --print-json`` as a child process. Started again
  (:meth:`~SimProcess.start` after :meth:`~SimProcess.stop`) it listens at the same
  address and, with a ``state_dir``, keeps its org (SIGTERM saves the state). Its control
  API (``/__sim/``): :meth:`~SimProcess.stats`, :meth:`~SimProcess.records`,
  :meth:`~SimProcess.seed`, :meth:`~SimProcess.faults`. :func:`sim_process` is the
  ``async with`` form.
- :class:`DaemonProcess`: ``dispo-sync run --config FILE`` as a child process:
  :meth:`~DaemonProcess.start` waits for its "dispo-sync ready" log line (every adapter
  and the health server bound); :meth:`~DaemonProcess.kill` is SIGKILL,
  :meth:`~DaemonProcess.stop` SIGTERM. Its stdout and stderr come through a pipe (a
  file-size limit set on the daemon then hits only its spool) into one log file (each
  start headed by a marker line) and are read as they come: the ports its adapters
  bound (:attr:`~DaemonProcess.ports`), the last time of the events a campaign aims its
  kills by (:attr:`~DaemonProcess.events`), every line (:meth:`~DaemonProcess.lines`,
  JSON or logfmt). :func:`start_daemon` and :func:`daemon_process` write a config and
  start one.
- :func:`config_text`: a daemon config talking to a sim (any adapters, any table
  overrides); :func:`campaign_config` is the one of the delivery campaigns (JSON webhook
  with a bearer secret + websocket feed, fixed ports, short bulk interval).

Delivery campaigns (crash, faults, kill-Salesforce):

- :func:`plan_load` (pure, seeded): deliveries of call outcomes over two channels (JSON
  webhook, websocket feed): mixed live and non-live, repeated Leads, re-sent duplicates,
  newer versions of earlier calls (explicit ``version`` bump, later end, other outcome),
  optionally invalid records (``call_id`` starting ``inv-``) an org validation rule refuses.
- :class:`LoadGenerator`: sends the plan. Webhook deliveries are POSTed in JSON batches,
  retried with backoff and jitter until a 2xx (connection refused while the daemon is dead,
  503 while it stops); websocket deliveries go to every daemon connection and are resent
  after a reconnect until acknowledged. Only a 2xx or an ack counts as acknowledged.
- :func:`verify` (pure): the org against what was acknowledged: one Task per call id with
  the newest acknowledged version's fields, each Lead showing its newest outcome, DoNotCall
  on exactly the Leads that asked for it; counts ``missing``, ``duplicates``,
  ``stale_tasks``, ``stale_leads``. A version sent but never acknowledged may legitimately
  be in the org (stored, then the daemon died before answering), so it is accepted too.
- :func:`session` and :func:`finish`: one run of those pieces, and its verdict.

Everything runs on loopback; nothing here mocks a component.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import httpx

from daemon.demo._dialer import MIX

__all__ = [
    "INVALID_PREFIX",
    "INVALID_RULE",
    "WEBHOOK_SOURCE",
    "WS_SOURCE",
    "DaemonExited",
    "DaemonProcess",
    "Delivery",
    "LoadGenerator",
    "Outcome",
    "Ports",
    "Session",
    "SimProcess",
    "Verdict",
    "attempts",
    "campaign_config",
    "campaign_main",
    "check_dead_letters",
    "config_text",
    "daemon_process",
    "dead_letters",
    "feed_adapter",
    "finish",
    "free_port",
    "lead_key",
    "load_average",
    "parse_log_line",
    "plan_load",
    "poll",
    "read_spool",
    "recent",
    "seed_leads",
    "session",
    "sim_process",
    "spool_stats",
    "start_daemon",
    "toml_value",
    "verify",
    "wait_drained",
]

WEBHOOK_SOURCE: Final = "camp-hook"
WS_SOURCE: Final = "camp-ws"
#: Calls whose id starts with this are refused by :data:`INVALID_RULE` in the org.
INVALID_PREFIX: Final = "inv-"
#: An org validation rule (sfsim) refusing the Task of every invalid call.
INVALID_RULE: Final = {
    "object": "Task",
    "field": "CallObject",
    "condition": "matches",
    "value": f"{INVALID_PREFIX}.*",
    "message": "Campaign test: this call id is refused by a validation rule",
    "error_field": "CallObject",
}
WEBHOOK_PATH: Final = "/outcomes"
_SECRET: Final = "campaign-webhook-secret-0123456789"
_START_TIMEOUT_S: Final = 60.0
_STOP_TIMEOUT_S: Final = 40.0

Channel = Literal["webhook", "ws"]
Kind = Literal["new", "duplicate", "update"]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (the machine is shared: say how busy it was)."""
    return [round(x, 2) for x in os.getloadavg()]


async def poll(
    predicate: Callable[[], bool], *, within_s: float, every_s: float = 0.05, what: str = ""
) -> None:
    """Wait until ``predicate()`` holds; TimeoutError (naming ``what``) past the deadline."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within_s:g} s: {what or predicate}")
        await asyncio.sleep(every_s)  # polling a condition with a deadline


def lead_key(index: int) -> str:
    """``Dialer_Lead_Id__c`` of seeded Lead ``index``."""
    return f"CL{index:06d}"


def _cli() -> list[str]:
    """How to run ``dispo-sync`` with this interpreter."""
    script = Path(sys.executable).with_name("dispo-sync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "daemon"]


async def _terminate(proc: asyncio.subprocess.Process, sig: int, within_s: float) -> int:
    """Send ``sig`` (if it still runs) and reap it; SIGKILL past ``within_s``."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        async with asyncio.timeout(within_s):
            return await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        return await proc.wait()


# --------------------------------------------------------------------------- config


def toml_value(value: Any) -> str:
    """A TOML literal for a str/int/float/bool/list/dict (inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _table(header: str, values: Mapping[str, Any]) -> str:
    return f"{header}\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def config_text(
    sim: Mapping[str, Any],
    spool_path: Path,
    adapters: Iterable[Mapping[str, Any]] = (),
    *,
    salesforce: Mapping[str, Any] | None = None,
    spool: Mapping[str, Any] | None = None,
    rails: Mapping[str, Any] | None = None,
    level: str = "info",
    log_format: str = "json",
    listen: str = "127.0.0.1:0",
    daemon: Mapping[str, Any] | None = None,
) -> str:
    """A daemon TOML config talking to ``sim`` (its ``--print-json`` info); each mapping
    adds keys to its table (``rails`` replaces the default ``bulk_interval_s = 1``)."""
    sf: dict[str, Any] = {
        "login_url": sim["instance_url"],
        "client_id": sim["client_id"],
        "client_secret": sim["client_secret"],
    }
    sf.update(salesforce or {})
    parts = [
        _table("[salesforce]", sf),
        _table("[spool]", {"path": str(spool_path), **(spool or {})}),
        _table("[http]", {"listen": listen}),
        _table("[rails]", dict(rails or {"bulk_interval_s": 1})),
        _table("[log]", {"format": log_format, "level": level}),
        _table("[daemon]", dict(daemon or {"status_interval_s": 0.5})),
    ]
    parts += [_table("[[adapter]]", adapter) for adapter in adapters]
    return "\n".join(parts)


def feed_adapter(port: int, **fields: str) -> dict[str, Any]:
    """The ``[[adapter]]`` table of a websocket adapter on a loopback feed of ``call.ended``
    events (acked one by one, resumed by query); ``fields`` adds event paths to the base map."""
    return {
        "type": "websocket",
        "name": "feed",
        "url": f"ws://127.0.0.1:{port}/events",
        "auth": "none",
        "event_types": ["call.ended"],
        "ack": "each",
        "ack_message": {"type": "ack", "id": "{id}"},
        "resume": "query",
        "reconnect_max_s": 0.2,
        "fields": {
            "call_id": "data.call_id",
            "disposition": "data.status",
            "ended_at": "data.ended_at",
            "live": "data.live",
            "notes": "data.notes",
            **fields,
        },
    }


@dataclass(frozen=True)
class Ports:
    """The delivery campaigns' fixed daemon addresses (the same across restarts)."""

    webhook: int
    http: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(webhook=free_port(), http=free_port())

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook}{WEBHOOK_PATH}"


def campaign_config(
    *,
    sim_info: Mapping[str, Any],
    ports: Ports,
    ws_url: str,
    spool_path: Path,
    bulk_interval_s: float = 2.0,
    bulk_min_records: int = 300,
    bulk_max_records: int = 5000,
    lease_s: float = 20.0,
    synchronous: str = "FULL",
    read_timeout_s: float = 30.0,
    log_level: str = "info",
    extra: str = "",
) -> str:
    """The delivery campaigns' config: JSON webhook (bearer secret) + websocket feed on
    :class:`LoadGenerator`'s plan, fixed ports, logfmt logs; ``extra`` is appended as is."""
    webhook = {
        "type": "webhook",
        "preset": "json",
        "name": WEBHOOK_SOURCE,
        "listen": f"127.0.0.1:{ports.webhook}",
        "path": WEBHOOK_PATH,
        "secret": _SECRET,
    }
    fields = "call_id disposition ended_at started_at duration_s agent_id lead_external_key"
    feed = {
        "type": "websocket",
        "name": WS_SOURCE,
        "url": ws_url,
        "auth": "none",
        "event_types": ["call.ended"],
        "ack": "each",
        "ack_message": {"type": "ack", "id": "{id}"},
        "reconnect_initial_s": 0.2,
        "reconnect_max_s": 2.0,
        "fields": {name: name for name in f"{fields} callback_at version live".split()},
    }
    text = config_text(
        sim_info,
        spool_path,
        [webhook, feed],
        salesforce={"connect_timeout_s": 5.0, "read_timeout_s": read_timeout_s},
        spool={"synchronous": synchronous, "lease_s": lease_s},
        rails={
            "bulk_interval_s": bulk_interval_s,
            "bulk_min_records": bulk_min_records,
            "bulk_max_records": bulk_max_records,
            "live_dispositions": ["do_not_call", "callback_requested"],
        },
        level=log_level,
        log_format="logfmt",
        listen=f"127.0.0.1:{ports.http}",
        daemon={"shutdown_timeout_s": 20.0, "status_interval_s": 1.0},
    )
    return f"# Generated by bench/_campaign.py\n{text}{extra}"


# --------------------------------------------------------------------------- sfsim


class SimProcess:
    """``dispo-sync sim`` in a child process; started again, at the same address.

    ``state_dir``: where it saves its org on SIGTERM and finds it at the next start
    (None: a fresh org each start). ``rules``: the org's validation rules, given on the
    command line so that they hold across restarts (rules set over the control API are
    not part of the state). Its stderr goes to ``sfsim.log`` beside ``state_dir`` (else
    to a temporary file, removed by :meth:`aclose`); its tail is in the error of a failed
    start.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        tls: bool = False,
        bulk_rate: float | None = None,
        rules: list[dict[str, Any]] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.tls = tls
        self.bulk_rate = bulk_rate
        self.rules = rules
        if state_dir is not None:
            self.log_path = state_dir.parent / "sfsim.log"
        else:
            fd, name = tempfile.mkstemp(prefix="sfsim-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        #: 0 (a free one) until the first start; then the same at every start
        self.port = 0
        self.info: dict[str, Any] = {}
        self.starts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def url(self) -> str:
        """``instance_url`` (known once started)."""
        return str(self.info["instance_url"])

    def verify(self) -> Any:
        """What an httpx client needs to trust it (its CA under ``tls``)."""
        import ssl

        ca = self.info.get("ca_file")
        return ssl.create_default_context(cafile=ca) if ca else True

    def _argv(self) -> list[str]:
        argv = [*_cli(), "sim", "--print-json", "--port", str(self.port)]
        if self.tls:
            argv.append("--tls")
        if self.state_dir is not None:
            argv += ["--state-dir", str(self.state_dir)]
        if self.bulk_rate is not None:
            argv += ["--bulk-rate", str(self.bulk_rate)]
        if self.rules:
            rules_file = self.log_path.with_name("sfsim-rules.json")
            rules_file.write_text(json.dumps(self.rules), encoding="utf-8")
            argv += ["--validation-rules", str(rules_file)]
        return argv

    def _tail(self) -> str:
        with self.log_path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 2000))
            return f.read().decode("utf-8", "replace")

    async def start(self) -> dict[str, Any]:
        """Start (again) and return its connection info once it accepts connections."""
        if self.running:
            raise RuntimeError("sfsim is already running")
        with self.log_path.open("ab") as err:
            self._proc = proc = await asyncio.create_subprocess_exec(
                *self._argv(),
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                stdin=asyncio.subprocess.DEVNULL,
            )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                line = await proc.stdout.readline()
        except TimeoutError:
            await _terminate(proc, signal.SIGKILL, 5)
            raise RuntimeError(f"sfsim did not start within {_START_TIMEOUT_S:g} s") from None
        if not line:
            code = await proc.wait()
            raise RuntimeError(f"sfsim exited with {code} at start:\n{self._tail()}")
        self.info = json.loads(line)
        self.port = urlsplit(self.url).port or 0  # a restart listens at the same address
        self.starts += 1
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.url, verify=self.verify(), timeout=60)
        return self.info

    async def stop(self) -> int:
        """SIGTERM: sfsim saves its state to ``state_dir`` and exits."""
        if self._proc is None:
            return 0
        code = await _terminate(self._proc, signal.SIGTERM, _STOP_TIMEOUT_S)
        self._proc = None
        return code

    async def restart_with_fresh_allocation(self) -> None:
        """Stop, zero the saved daily API usage, start again (state otherwise kept).

        sfsim's ``exhaust_daily_limit`` fault has no undo (the allocation is a rolling
        24 hours); a campaign that exhausts it "for a minute" restores it this way.
        Fault settings are not part of the saved state: set them again afterwards.
        """
        await self.stop()
        assert self.state_dir is not None, "needs a state_dir"
        path = self.state_dir / "sfsim-state.json"
        state = json.loads(path.read_text(encoding="utf-8"))
        state.setdefault("usage", {})["used"] = 0
        path.write_text(json.dumps(state, separators=(",", ":")), encoding="utf-8")
        await self.start()

    async def aclose(self) -> None:
        await self.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.state_dir is None:
            self.log_path.unlink(missing_ok=True)

    def state(self) -> dict[str, Any]:
        """The saved state files by name (once stopped, and only with a ``state_dir``)."""
        if self.state_dir is None:
            return {}
        out: dict[str, Any] = {}
        for path in sorted(self.state_dir.glob("*.json")):
            with contextlib.suppress(ValueError, OSError):
                out[path.name] = json.loads(path.read_text())
        return out

    # ---------------------------------------------------------------- control API
    @property
    def control(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("sfsim was never started")
        return self._client

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        r = await self.control.request(method, f"/__sim/{path}", json=body)
        r.raise_for_status()
        return r.json()

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", "stats")
        return result

    async def records(self, sobject: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._json("GET", f"records/{sobject}")
        return result

    async def seed(self, sobject: str, records: list[dict[str, Any]]) -> list[str]:
        return [str(i) for i in await self._json("POST", f"records/{sobject}", records)]

    async def faults(self, **settings: Any) -> dict[str, Any]:
        """Change fault injection (``sfsim.faults``); returns the settings and counters."""
        result: dict[str, Any] = await self._json("POST", "faults", settings)
        return result


@contextlib.asynccontextmanager
async def sim_process(state_dir: Path | None = None, **options: Any) -> AsyncIterator[SimProcess]:
    """A started :class:`SimProcess` (``options`` as there), stopped on the way out."""
    sim = SimProcess(state_dir, **options)
    try:
        await sim.start()
        yield sim
    finally:
        await sim.aclose()


async def seed_leads(sim: SimProcess, count: int) -> dict[str, str]:
    """Seed ``count`` Leads (``Dialer_Lead_Id__c`` = :func:`lead_key`); key -> Id."""
    keys = [lead_key(i) for i in range(count)]
    ids: list[str] = []
    for start in range(0, count, 5000):
        chunk = keys[start : start + 5000]
        ids += await sim.seed(
            "Lead",
            [
                {
                    "LastName": f"Campaign {k}",
                    "Company": "Campaign Inc.",
                    "Phone": f"+1555{i + start:07d}",
                    "Dialer_Lead_Id__c": k,
                }
                for i, k in enumerate(chunk)
            ],
        )
    return dict(zip(keys, ids, strict=True))


# --------------------------------------------------------------------------- daemon


class DaemonExited(RuntimeError):
    """The daemon did not get ready: it exited (or hung) at start; its log tail is here."""

    def __init__(self, returncode: int | None, tail: str) -> None:
        super().__init__(f"dispo-sync run exited with {returncode}:\n{tail}")
        self.returncode = returncode
        self.tail = tail


#: Log events a campaign aims its kills by (event -> name in ``events``/``event_counts``).
_WATCHED: Final = {
    "bulk_job_started": "bulk_job_started",
    "bulk_batch_done": "bulk_batch_done",
    "bulk_job_recovered": "bulk_job_recovered",
    "bulk_batch_retry": "bulk_batch_retry",
    "rail_paused": "rail_paused",
    "dispo-sync ready": "ready",
    "task failed": "task_failed",
}
#: Log events naming a bound port (event -> the ``ports`` key: the adapter, or "health").
_LISTENING: Final = ("webhook_listening", "health server listening")
_LOGFMT_LINE: Final = re.compile(r"\w+=")
_LOGFMT_PAIR: Final = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(raw: str) -> dict[str, Any]:
    """A daemon log line (JSON or logfmt) as a dict; anything else (a traceback on
    stderr) as ``{"event": "<not json>", "raw": raw}``."""
    if _LOGFMT_LINE.match(raw):
        out: dict[str, Any] = {}
        for key, value in _LOGFMT_PAIR.findall(raw):
            try:
                out[key] = json.loads(value) if value.startswith('"') else value
            except ValueError:
                out[key] = value.strip('"')
        return out
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"event": "<not json>", "raw": raw}
    return parsed if isinstance(parsed, dict) else {"event": parsed}


class DaemonProcess:
    """``dispo-sync run --config FILE`` as a child process, killed and restarted at will.

    ``argv_prefix`` runs it under another program (``setpriv``: as another user).
    """

    def __init__(self, config: Path, log_path: Path, *, argv_prefix: Sequence[str] = ()) -> None:
        self.config = config
        self.log_path = log_path
        self.argv_prefix = list(argv_prefix)
        self.starts = 0
        self.kills = 0
        #: name -> monotonic time of the latest such log line (see ``_WATCHED``)
        self.events: dict[str, float] = {}
        #: counts of the watched log events over every start
        self.event_counts: Counter[str] = Counter()
        #: adapter name (and "health") -> the port it bound, from the log
        self.ports: dict[str, int] = {}
        self.exit_codes: list[int] = []
        self._raw: list[str] = []
        self._parsed: list[dict[str, Any]] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self, *, timeout_s: float = _START_TIMEOUT_S) -> float:
        """Start and wait for its "dispo-sync ready" line; returns the seconds it took.

        DaemonExited (with its log's tail) if it exits first or is not ready in time.
        """
        if self.running:
            raise RuntimeError("the daemon is already running")
        t0 = time.monotonic()
        self.starts += 1
        ready_before = self.event_counts["ready"]
        with self.log_path.open("ab") as out:
            out.write(f"\n# ---- campaign: start {self.starts} at {time.time():.3f}\n".encode())
        self._proc = proc = await asyncio.create_subprocess_exec(
            *self.argv_prefix,
            *_cli(),
            "run",
            "--config",
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = asyncio.create_task(self._read_log(proc))
        with contextlib.suppress(TimeoutError):
            await poll(
                lambda: self.event_counts["ready"] > ready_before or proc.returncode is not None,
                within_s=timeout_s,
                what="dispo-sync ready",
            )
        if self.event_counts["ready"] > ready_before and proc.returncode is None:
            return time.monotonic() - t0
        await self._reap(signal.SIGKILL, 10.0)  # and its last lines are read
        raise DaemonExited(proc.returncode, self.tail())

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with self.log_path.open("ab") as out:
            while line := await proc.stdout.readline():
                out.write(line)
                raw = line.decode("utf-8", "replace").rstrip("\r\n")
                self._raw.append(raw)
                if "ready" in raw or "bulk" in raw or "rail" in raw or "task failed" in raw:
                    event = str(parse_log_line(raw).get("event"))
                    name = _WATCHED.get(event)
                    if name is not None:
                        self.events[name] = time.monotonic()
                        self.event_counts[name] += 1
                elif "listening" in raw:
                    e = parse_log_line(raw)
                    if e.get("event") in _LISTENING:
                        port = int(str(e["listen"]).rsplit(":", 1)[1])
                        self.ports[str(e.get("adapter", "health"))] = port

    async def _reap(self, sig: int, within_s: float) -> int:
        assert self._proc is not None
        code = await _terminate(self._proc, sig, within_s)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        self._proc = None
        self._reader = None
        self.exit_codes.append(code)
        return code

    async def kill(self) -> None:
        """SIGKILL, at once: no shutdown code runs."""
        if self._proc is None:
            return
        self.kills += 1
        await self._reap(signal.SIGKILL, 10.0)

    async def stop(self) -> int:
        """SIGTERM: the orderly stop; returns the exit status (0 expected)."""
        if self._proc is None:
            return 0
        return await self._reap(signal.SIGTERM, _STOP_TIMEOUT_S)

    async def aclose(self) -> None:
        await self.stop()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        """(status, body) of ``/readyz`` (on the health port it logged)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0)
        r = await self._http.get(f"http://127.0.0.1:{self.ports['health']}/readyz")
        body: dict[str, Any] = r.json()
        return r.status_code, body

    def raw_lines(self) -> list[str]:
        """Every line it wrote (stdout and stderr) since this object first started it."""
        return self._raw

    def lines(self) -> list[dict[str, Any]]:
        """:meth:`raw_lines`, each parsed by :func:`parse_log_line`."""
        self._parsed += [parse_log_line(raw) for raw in self._raw[len(self._parsed) :]]
        return self._parsed

    def tail(self, n: int = 30) -> str:
        return "\n".join(self._raw[-n:])


async def start_daemon(workdir: Path, config: str, *, name: str = "daemon") -> DaemonProcess:
    """Write ``config`` to ``workdir/NAME.toml`` and start ``dispo-sync run`` on it (its
    log: ``NAME.log``); returns once it is ready."""
    path = workdir / f"{name}.toml"
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(path.write_text, config)
    d = DaemonProcess(path, workdir / f"{name}.log")
    await d.start()
    return d


@contextlib.asynccontextmanager
async def daemon_process(
    workdir: Path, config: str, *, name: str = "daemon"
) -> AsyncIterator[DaemonProcess]:
    """:func:`start_daemon`, stopped (SIGTERM) on the way out."""
    d = await start_daemon(workdir, config, name=name)
    try:
        yield d
    finally:
        await d.aclose()


# --------------------------------------------------------------------------- the plan

_UPDATE_TO: Final = ("connected", "callback_requested", "voicemail")
_EPOCH: Final = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One report the generator sends: one version of one call (``seq`` is unique)."""

    seq: int
    kind: Kind
    channel: Channel
    call_id: str
    version: int
    disposition: str
    lead: str | None
    ended_at: datetime
    duration_s: int
    live: bool
    agent_id: str | None = None

    @property
    def source(self) -> str:
        return WEBHOOK_SOURCE if self.channel == "webhook" else WS_SOURCE

    @property
    def external_key(self) -> str:
        """The Task's ``Call_Id__c``."""
        return f"{self.source}:{self.call_id}"

    @property
    def invalid(self) -> bool:
        return self.call_id.startswith(INVALID_PREFIX)

    @property
    def delivery_id(self) -> str:
        return f"d{self.seq}"

    @property
    def callback_at(self) -> datetime | None:
        if self.disposition != "callback_requested":
            return None
        return (self.ended_at + timedelta(days=1)).replace(microsecond=0)

    def outcome(self) -> dict[str, Any]:
        """The ``CallOutcome``-shaped JSON the JSON webhook takes."""
        body: dict[str, Any] = {
            "call_id": self.call_id,
            "version": self.version,
            "disposition": self.disposition,
            "started_at": (self.ended_at - timedelta(seconds=self.duration_s)).isoformat(),
            "ended_at": self.ended_at.isoformat(),
            "duration_s": self.duration_s,
            "live": self.live,
        }
        if self.lead is not None:
            body["lead"] = {"external_key": self.lead}
        if self.agent_id is not None:
            body["agent_id"] = self.agent_id
        if self.callback_at is not None:
            body["callback_at"] = self.callback_at.isoformat()
        return body

    def ws_event(self) -> dict[str, Any]:
        """The flat event the websocket feed sends (``id`` for the ack)."""
        event = {"id": self.delivery_id, "type": "call.ended", **self.outcome()}
        lead = event.pop("lead", None)
        if lead is not None:
            event["lead_external_key"] = lead["external_key"]
        return event


def plan_load(
    total: int,
    *,
    leads: int,
    seed: int = 7,
    duplicate_rate: float = 0.05,
    update_rate: float = 0.07,
    invalid_rate: float = 0.0,
    live_share: float = 0.5,
) -> list[Delivery]:
    """``total`` deliveries, channels alternating; reproducible from ``seed``. New calls'
    outcomes are drawn with the demo dialer's weights (``daemon.demo._dialer.MIX``).

    Every delivery ends 10 ms after the one before, so no two reports of one Lead
    tie and "newest" is always defined. A duplicate re-sends an earlier delivery
    unchanged (same channel, version, fields); an update is a newer version of an
    earlier call (version + 1, its own later end, another outcome, a longer call).
    Do-not-call calls are never updated (DoNotCall is sticky: which version reached
    the org first would decide it). Invalid calls name no Lead and are never updated.
    """
    if total < 0 or leads < 1:
        raise ValueError("total must be >= 0 and leads >= 1")
    rng = random.Random(seed)
    names = [m.disposition for m in MIX]
    weights = [m.weight for m in MIX]
    agent = {m.disposition: m.agent for m in MIX}
    out: list[Delivery] = []
    newest: dict[str, Delivery] = {}  # external key -> newest version so far
    updatable: list[str] = []  # external keys that may get a newer version
    for seq in range(total):
        ended = _EPOCH + timedelta(milliseconds=10 * seq)
        roll = rng.random()
        if out and roll < duplicate_rate:
            original = out[rng.randrange(len(out))]
            out.append(_copy(original, seq=seq, kind="duplicate"))
            continue
        if updatable and roll < duplicate_rate + update_rate:
            key = updatable[rng.randrange(len(updatable))]
            prior = newest[key]
            disposition = rng.choice([d for d in _UPDATE_TO if d != prior.disposition])
            update = Delivery(
                seq=seq,
                kind="update",
                channel=prior.channel,
                call_id=prior.call_id,
                version=prior.version + 1,
                disposition=disposition,
                lead=prior.lead,
                ended_at=ended,
                duration_s=prior.duration_s + 7,
                live=agent[disposition] and rng.random() < live_share,
                agent_id=prior.agent_id or f"agent{rng.randrange(40):02d}",
            )
            out.append(update)
            newest[key] = update
            continue
        channel: Channel = "webhook" if seq % 2 == 0 else "ws"
        if invalid_rate and rng.random() < invalid_rate:
            bad = Delivery(
                seq=seq,
                kind="new",
                channel=channel,
                call_id=f"{INVALID_PREFIX}{seq:07d}",
                version=0,
                disposition="no_answer",
                lead=None,
                ended_at=ended,
                duration_s=0,
                live=False,
            )
            out.append(bad)
            newest[bad.external_key] = bad
            continue
        disposition = rng.choices(names, weights)[0]
        is_agent = agent[disposition]
        call = Delivery(
            seq=seq,
            kind="new",
            channel=channel,
            call_id=f"c{seq:07d}",
            version=0,
            disposition=disposition,
            lead=lead_key(rng.randrange(leads)),
            ended_at=ended,
            duration_s=rng.randrange(5, 600) if is_agent else rng.randrange(0, 40),
            live=is_agent and rng.random() < live_share,
            agent_id=f"agent{rng.randrange(40):02d}" if is_agent else None,
        )
        out.append(call)
        newest[call.external_key] = call
        if disposition != "do_not_call":
            updatable.append(call.external_key)
    return out


def _copy(d: Delivery, *, seq: int, kind: Kind) -> Delivery:
    return Delivery(
        seq=seq,
        kind=kind,
        channel=d.channel,
        call_id=d.call_id,
        version=d.version,
        disposition=d.disposition,
        lead=d.lead,
        ended_at=d.ended_at,
        duration_s=d.duration_s,
        live=d.live,
        agent_id=d.agent_id,
    )


# --------------------------------------------------------------------------- load


@dataclass
class LoadGenerator:
    """Sends a plan over the JSON webhook and a websocket feed; records what was acked.

    ``ws_url`` is where the daemon's websocket adapter connects (served here, across
    daemon restarts). Call :meth:`serve` (an async context manager) around the run,
    then :meth:`run`. ``rate`` caps deliveries per second (0: as fast as acked).
    """

    plan: Sequence[Delivery]
    webhook_url: str
    rate: float = 0.0
    webhook_workers: int = 4
    webhook_batch: int = 25
    ws_window: int = 1000
    secret: str = _SECRET
    sent: int = 0
    #: seq -> monotonic time of the acknowledgement
    acked: dict[int, float] = field(default_factory=dict)
    #: requests per outcome of the webhook (all attempts), for "retried without backoff"
    webhook_attempts: Counter[str] = field(default_factory=Counter)
    webhook_status: Counter[str] = field(default_factory=Counter)
    ws_connections: int = 0
    ws_resent: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # seq -> why (a 4xx)
    ws_url: str = ""
    _ws_queue: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)
    _ws_unacked: dict[str, Delivery] = field(default_factory=dict)
    _ws_slots: asyncio.Semaphore | None = None
    _ws_conns: set[Any] = field(default_factory=set)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    @property
    def acked_count(self) -> int:
        return len(self.acked)

    def acked_deliveries(self) -> list[Delivery]:
        return [d for d in self.plan if d.seq in self.acked]

    def sent_deliveries(self) -> list[Delivery]:
        return list(self.plan[: self.sent])

    @contextlib.asynccontextmanager
    async def serve(self) -> Any:
        """The websocket feed the daemon connects to; sets :attr:`ws_url`."""
        from websockets.asyncio.server import serve

        self._ws_slots = asyncio.Semaphore(self.ws_window)
        async with serve(self._ws_handler, "127.0.0.1", 0, max_queue=4096) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.ws_url = f"ws://127.0.0.1:{port}/events"
            try:
                yield self
            finally:
                self._stopping = True
                for ws in list(self._ws_conns):
                    with contextlib.suppress(Exception):
                        await ws.close()

    async def wait_acked(self, count: int, timeout_s: float | None = None) -> None:
        """Until at least ``count`` deliveries were acknowledged."""
        async with asyncio.timeout(timeout_s):
            while self.acked_count < count:
                self._progress.clear()
                await self._progress.wait()

    def _ack(self, seq: int) -> None:
        if seq not in self.acked:
            self.acked[seq] = time.monotonic()
            self._progress.set()

    async def run(self, *, give_up_after_s: float = 600.0) -> None:
        """Send every delivery; return once each was acked (or given up after the deadline)."""
        if self._ws_slots is None:
            raise RuntimeError("use `async with generator.serve():` around run()")
        hook_q: asyncio.Queue[Delivery | None] = asyncio.Queue(
            maxsize=self.webhook_workers * self.webhook_batch * 2
        )
        async with (
            httpx.AsyncClient(
                timeout=httpx.Timeout(30.0, connect=5.0),
                limits=httpx.Limits(max_connections=self.webhook_workers),
                headers={"Authorization": f"Bearer {self.secret}"},
            ) as client,
            asyncio.TaskGroup() as tg,
        ):
            workers = [
                tg.create_task(self._webhook_worker(client, hook_q, give_up_after_s))
                for _ in range(self.webhook_workers)
            ]
            start = time.monotonic()
            for n, d in enumerate(self.plan):
                if self.rate > 0:
                    delay = start + n / self.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)  # pacing to the schedule
                if d.channel == "webhook":
                    await hook_q.put(d)
                else:
                    await self._ws_slots.acquire()
                    self._ws_unacked[d.delivery_id] = d
                    self._ws_queue.put_nowait(d)
                self.sent += 1
            for _ in workers:
                await hook_q.put(None)
            await self._wait_ws_acked(give_up_after_s)

    async def _wait_ws_acked(self, within_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while self._ws_unacked:
                    self._progress.clear()
                    await self._progress.wait()
        for d in self._ws_unacked.values():
            self.rejected.setdefault(d.seq, "websocket: never acknowledged")

    async def _webhook_worker(
        self, client: httpx.AsyncClient, queue: asyncio.Queue[Delivery | None], within_s: float
    ) -> None:
        while True:
            first = await queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.webhook_batch:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    queue.put_nowait(None)  # for another worker (or us, next turn)
                    break
                batch.append(item)
            await self._post(client, batch, within_s)

    async def _post(
        self, client: httpx.AsyncClient, batch: list[Delivery], within_s: float
    ) -> None:
        body = json.dumps([d.outcome() for d in batch]).encode()
        deadline = time.monotonic() + within_s
        attempt = 0
        while True:
            for d in batch:
                self.webhook_attempts[d.delivery_id] += 1
            why: str
            try:
                r = await client.post(
                    self.webhook_url, content=body, headers={"Content-Type": "application/json"}
                )
            except httpx.HTTPError as exc:
                why = type(exc).__name__
                self.webhook_status[why] += 1
            else:
                self.webhook_status[str(r.status_code)] += 1
                if r.is_success:
                    for d in batch:
                        self._ack(d.seq)
                    return
                why = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code < 500 and r.status_code not in (408, 429):
                    for d in batch:
                        self.rejected[d.seq] = why
                    return
            if time.monotonic() > deadline:
                for d in batch:
                    self.rejected[d.seq] = f"given up: {why}"
                return
            # Exponential backoff with full jitter, capped (a dialer's retry policy).
            await asyncio.sleep(random.uniform(0.02, min(2.0, 0.05 * 2**attempt)))
            attempt += 1

    async def _ws_handler(self, ws: Any) -> None:
        """One connection of the daemon's websocket adapter: resend unacked, then stream."""
        self.ws_connections += 1
        self._ws_conns.add(ws)

        async def read_acks() -> None:
            async for message in ws:
                data = json.loads(message)
                if isinstance(data, dict) and data.get("type") == "ack":
                    d = self._ws_unacked.pop(str(data.get("id")), None)
                    if d is not None:
                        self._ack(d.seq)
                        assert self._ws_slots is not None
                        self._ws_slots.release()

        try:
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(read_acks())
                # A reconnect: resend what was not acknowledged (at-least-once).
                again = sorted(self._ws_unacked.values(), key=lambda d: d.seq)
                # The queue holds new ones; drain it first so nothing is sent twice here.
                queued: list[Delivery] = []
                while not self._ws_queue.empty():
                    queued.append(self._ws_queue.get_nowait())
                fresh = {d.delivery_id for d in queued}
                for d in again:
                    if d.delivery_id not in fresh:
                        self.ws_resent += 1
                        await ws.send(json.dumps(d.ws_event()))
                for d in queued:
                    await ws.send(json.dumps(d.ws_event()))
                while not self._stopping:
                    get = asyncio.ensure_future(self._ws_queue.get())
                    closed = asyncio.ensure_future(reader)
                    done, _ = await asyncio.wait([get, closed], return_when=asyncio.FIRST_COMPLETED)
                    if get not in done:
                        get.cancel()
                        # Put back what the cancelled get may have taken.
                        if get.done() and not get.cancelled():
                            self._ws_queue.put_nowait(get.result())
                        break
                    d = get.result()
                    try:
                        await ws.send(json.dumps(d.ws_event()))
                    except Exception:
                        break  # it stays unacked: the next connection resends it
        except* Exception:
            pass  # a killed daemon drops the connection mid-send: normal here
        finally:
            self._ws_conns.discard(ws)


# --------------------------------------------------------------------------- verify


@dataclass
class Verdict:
    """The org against what was acknowledged. ``ok`` when nothing is missing, doubled
    or stale (and no Task/Lead disagrees)."""

    acked: int = 0
    acked_calls: int = 0
    tasks: int = 0
    missing: int = 0
    duplicates: int = 0
    stale_tasks: int = 0
    stale_leads: int = 0
    dnc_wrong: int = 0
    unexpected_tasks: int = 0
    invalid_in_org: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.duplicates
            or self.stale_tasks
            or self.stale_leads
            or self.dnc_wrong
            or self.unexpected_tasks
            or self.invalid_in_org
        )

    def note(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)

    def as_json(self) -> dict[str, Any]:
        return {**self.counts(), "ok": self.ok, "examples": self.examples}

    def counts(self) -> dict[str, int]:
        """The figures every campaign reports."""
        return {
            "acked": self.acked,
            "acked_calls": self.acked_calls,
            "tasks": self.tasks,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "stale_tasks": self.stale_tasks,
            "stale_leads": self.stale_leads,
            "dnc_wrong": self.dnc_wrong,
            "unexpected_tasks": self.unexpected_tasks,
            "invalid_in_org": self.invalid_in_org,
        }


def _newer(a: Delivery, b: Delivery) -> bool:
    return (a.version, a.ended_at) > (b.version, b.ended_at)


def verify(
    acked: Iterable[Delivery],
    sent: Iterable[Delivery],
    tasks: Sequence[Mapping[str, Any]],
    leads: Sequence[Mapping[str, Any]],
) -> Verdict:
    """Compare the org with what the daemon acknowledged (``sent`` ⊇ ``acked``).

    Per call: exactly one Task (``Call_Id__c``), whose ``CallDisposition`` and
    ``CallDurationInSeconds`` are those of the newest acknowledged version, or of a newer
    version that was sent but not acknowledged. Per Lead: ``Last_Call_Outcome__c`` of the
    newest call (by end) among the calls' newest versions, with the same allowance; the
    Task's ``WhoId`` is that Lead. DoNotCall exactly on the Leads a do-not-call named.
    Invalid calls (``inv-``) must not be in the org.
    """
    v = Verdict()
    newest: dict[str, Delivery] = {}
    for d in acked:
        v.acked += 1
        cur = newest.get(d.external_key)
        if cur is None or _newer(d, cur):
            newest[d.external_key] = d
    # Newer versions sent but never acknowledged: allowed in the org instead.
    maybe: dict[str, list[Delivery]] = {}
    for d in sent:
        cur = newest.get(d.external_key)
        if cur is not None and _newer(d, cur):
            maybe.setdefault(d.external_key, []).append(d)
    sent_keys = set(newest) | set(maybe)
    valid = {k: d for k, d in newest.items() if not d.invalid}
    v.acked_calls = len(newest)

    prefixes = (f"{WEBHOOK_SOURCE}:", f"{WS_SOURCE}:")
    ours = [t for t in tasks if str(t.get("Call_Id__c") or "").startswith(prefixes)]
    v.tasks = len(ours)
    count = Counter(str(t["Call_Id__c"]) for t in ours)
    by_key = {str(t["Call_Id__c"]): t for t in ours}
    lead_ids = {str(r.get("Dialer_Lead_Id__c")): str(r.get("Id")) for r in leads}
    for key, d in valid.items():
        n = count.get(key, 0)
        if n == 0:
            v.missing += 1
            v.note(f"missing: Task {key}")
            continue
        if n > 1:
            v.duplicates += n - 1
            v.note(f"duplicate: {n} Tasks {key}")
        task = by_key[key]
        candidates = [d, *maybe.get(key, [])]
        if not any(_task_matches(task, c, lead_ids) for c in candidates):
            v.stale_tasks += 1
            v.note(
                f"stale Task {key}: CallDisposition={task.get('CallDisposition')!r} "
                f"CallDurationInSeconds={task.get('CallDurationInSeconds')!r}, newest acked "
                f"v{d.version} {d.disposition!r} {d.duration_s}"
            )
    for key, n in count.items():
        if key not in sent_keys:
            v.unexpected_tasks += n
            v.note(f"unexpected: Task {key} was never sent")
        elif key in newest and newest[key].invalid:
            v.invalid_in_org += n
            v.note(f"invalid call in the org: Task {key}")

    # Leads: the newest call by end, among each call's newest version (acked, or sent).
    def lead_candidates() -> dict[str, tuple[Delivery, list[Delivery]]]:
        best: dict[str, Delivery] = {}
        for d in valid.values():
            if d.lead is not None and (d.lead not in best or d.ended_at > best[d.lead].ended_at):
                best[d.lead] = d
        out: dict[str, tuple[Delivery, list[Delivery]]] = {}
        for lead, d in best.items():
            later = [
                m
                for key, ms in maybe.items()
                for m in ms
                if m.lead == lead and m.ended_at > d.ended_at
            ]
            out[lead] = (d, later)
        return out

    by_lead = {str(r.get("Dialer_Lead_Id__c")): r for r in leads if r.get("Dialer_Lead_Id__c")}
    dnc = {d.lead for d in valid.values() if d.disposition == "do_not_call" and d.lead}
    for ms in maybe.values():
        dnc |= {m.lead for m in ms if m.disposition == "do_not_call" and m.lead is not None}
    has_maybe = bool(maybe)
    for lead, (d, later) in lead_candidates().items():
        record = by_lead.get(lead)
        got = record.get("Last_Call_Outcome__c") if record else None
        if got != d.disposition and got not in {m.disposition for m in later}:
            v.stale_leads += 1
            v.note(f"stale Lead {lead}: Last_Call_Outcome__c={got!r}, newest {d.disposition!r}")
    for lead, record in by_lead.items():
        flagged = record.get("DoNotCall") is True
        if (lead in dnc) != flagged and not (flagged and has_maybe):
            v.dnc_wrong += 1
            v.note(f"DoNotCall={flagged} on Lead {lead}")
    return v


def _task_matches(task: Mapping[str, Any], d: Delivery, lead_ids: Mapping[str, str]) -> bool:
    if task.get("CallDisposition") != d.disposition:
        return False
    duration = task.get("CallDurationInSeconds")
    if duration is not None and int(duration) != d.duration_s:
        return False
    if d.lead is not None and task.get("WhoId") and lead_ids.get(d.lead):
        return str(task["WhoId"])[:15] == lead_ids[d.lead][:15]
    return True


# --------------------------------------------------------------------------- spool


def read_spool(path: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on a spool file another process writes."""
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10.0)
    try:
        return list(conn.execute(sql, tuple(params)).fetchall())
    finally:
        conn.close()


def spool_stats(path: Path) -> Any:
    """:class:`spool.SpoolStats` read from another process (None while unreadable)."""
    from spool import SpoolError, read_stats

    try:
        return read_stats(path)
    except (SpoolError, OSError):
        return None


async def wait_drained(path: Path, *, timeout_s: float, poll_s: float = 0.25) -> Any:
    """Until the spool has nothing pending or in flight and no unfinished bulk job.

    Returns the last stats; raises TimeoutError with what is left.
    """
    stats = None

    def drained() -> bool:
        nonlocal stats
        stats = spool_stats(path)
        return (
            stats is not None
            and stats.pending == 0
            and stats.inflight == 0
            and stats.jobs_in_flight == 0
        )

    with contextlib.suppress(TimeoutError):
        await poll(drained, within_s=timeout_s, every_s=poll_s)
        return stats
    left = (
        f"pending={stats.pending} inflight={stats.inflight} jobs={stats.jobs_by_state} "
        f"by_rail={stats.by_rail}"
        if stats is not None
        else "spool unreadable"
    )
    raise TimeoutError(f"the spool did not drain within {timeout_s:g} s: {left}")


async def dead_letters(path: Path) -> list[dict[str, Any]]:
    """Every dead letter in the spool (open it only while the daemon is stopped)."""
    from spool import open_spool

    out: list[dict[str, Any]] = []
    async with open_spool(path) as spool:
        offset = 0
        while True:
            page = await spool.dead_letters(limit=1000, offset=offset)
            if not page:
                break
            for dl in page:
                out.append(
                    {
                        "external_key": f"{dl.source}:{dl.call_id}",
                        "error_code": dl.error_code,
                        "error_message": dl.error_message,
                        "attempt": dl.attempt,
                        "rail": dl.rail,
                    }
                )
            offset += len(page)
    return out


def attempts(path: Path) -> Counter[int]:
    """Attempts per stored outcome (how many times each was claimed to be sent) -> count."""
    rows = read_spool(path, "SELECT attempt, count(*) FROM outcomes GROUP BY attempt")
    return Counter({int(a): int(n) for a, n in rows})


# --------------------------------------------------------------------------- a run


@dataclass
class Session:
    """One campaign run's processes and files (see :func:`session`)."""

    workdir: Path
    sim: SimProcess
    daemon: DaemonProcess
    gen: LoadGenerator
    spool_path: Path
    leads: dict[str, str]


@dataclass
class Outcome:
    """What a run left behind: the org, the spool's dead letters and attempts."""

    verdict: Verdict
    dead: list[dict[str, Any]]
    attempts: Counter[int]
    sim_stats: dict[str, Any]
    stop_status: int


@contextlib.asynccontextmanager
async def session(
    workdir: Path,
    plan: Sequence[Delivery],
    *,
    leads: int,
    rate: float = 0.0,
    bulk_rate: float | None = None,
    rules: list[dict[str, Any]] | None = None,
    **config: Any,
) -> AsyncIterator[Session]:
    """sfsim (seeded with ``leads`` Leads and ``rules``), the feed, and a started daemon.

    Keyword arguments go to :func:`campaign_config`. Everything is stopped on the way out.
    """
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    ports = Ports.pick()
    spool_path = workdir / "spool.db"
    gen = LoadGenerator(plan, webhook_url=ports.webhook_url, rate=rate)
    async with sim_process(workdir / "sim", bulk_rate=bulk_rate, rules=rules) as sim:
        ids = await seed_leads(sim, leads)
        async with gen.serve():
            text = campaign_config(
                sim_info=sim.info, ports=ports, ws_url=gen.ws_url, spool_path=spool_path, **config
            )
            async with daemon_process(workdir, text) as daemon:
                yield Session(workdir, sim, daemon, gen, spool_path, ids)


async def finish(s: Session, *, drain_timeout_s: float) -> Outcome:
    """Wait for the drain, stop the daemon (SIGTERM), read the org and the spool, verify."""
    await wait_drained(s.spool_path, timeout_s=drain_timeout_s)
    code = await s.daemon.stop()
    dead = await dead_letters(s.spool_path)
    tries = attempts(s.spool_path)
    tasks = await s.sim.records("Task")
    leads = await s.sim.records("Lead")
    stats = await s.sim.stats()
    verdict = verify(s.gen.acked_deliveries(), s.gen.sent_deliveries(), tasks, leads)
    return Outcome(verdict, dead, tries, stats, code)


def check_dead_letters(
    acked: Iterable[Delivery], dead: Iterable[Mapping[str, Any]], *, error_code: str
) -> dict[str, int]:
    """Only invalid calls dead-lettered, every one of them, each with the org's error."""
    invalid = {d.external_key for d in acked if d.invalid}
    seen: set[str] = set()
    out = {
        "invalid_acked": len(invalid),
        "dead_letters": 0,
        "dead_valid": 0,
        "invalid_not_dead": 0,
        "dead_wrong_error": 0,
    }
    for row in dead:
        out["dead_letters"] += 1
        key = str(row["external_key"])
        seen.add(key)
        if key not in invalid:
            out["dead_valid"] += 1
        elif row.get("error_code") != error_code or not row.get("error_message"):
            out["dead_wrong_error"] += 1
    out["invalid_not_dead"] = len(invalid - seen)
    return out


def campaign_main(
    go: Callable[[Path], Coroutine[Any, Any, dict[str, Any]]], workdir: Path | None, prefix: str
) -> int:
    """Run ``go`` in ``workdir`` (a temporary one when None), print its JSON on one line;
    the exit status says whether it was ``ok``."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        else:
            workdir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(go(workdir))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if result["ok"] else 1


def recent(times: Mapping[str, float], name: str, within_s: float) -> bool:
    """Whether event ``name`` happened in the last ``within_s`` seconds."""
    at = times.get(name)
    return at is not None and time.monotonic() - at <= within_s
