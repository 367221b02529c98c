"""Process harness shared by the disk, fuzz and security campaigns.

``sfsim`` and ``dispo-sync run`` each run as their own child process (as in
production: the daemon meets the org only on the wire). The daemon logs JSON
lines to a file; :class:`DaemonProc` reads it to learn the bound ports and to
let a campaign inspect every line the daemon wrote.

    async with sim_process(tmp) as sim, daemon_process(tmp, config_text(sim, ...)) as d:
        d.ports["hook"]      # the webhook adapter named "hook"
        d.lines()            # every log line so far, parsed
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DaemonExited",
    "DaemonProc",
    "SimProc",
    "config_text",
    "daemon_process",
    "load_average",
    "poll",
    "read_spool",
    "sim_process",
    "toml_value",
]

_START_S = 30.0


class DaemonExited(RuntimeError):
    """The daemon process ended before it was ready (its log tail is the message)."""

    def __init__(self, returncode: int | None, tail: str) -> None:
        super().__init__(f"dispo-sync run exited with {returncode}:\n{tail}")
        self.returncode = returncode
        self.tail = tail


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def poll(
    predicate: Callable[[], bool], *, within_s: float, every_s: float = 0.05, what: str = ""
) -> None:
    """Wait until ``predicate()`` holds; TimeoutError (naming ``what``) past the deadline."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within_s:g} s: {what or predicate}")
        await asyncio.sleep(every_s)


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


def _table(name: str, values: Mapping[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def config_text(
    sim: Mapping[str, Any],
    spool_path: Path,
    adapters: Iterable[Mapping[str, Any]] = (),
    *,
    salesforce: Mapping[str, Any] | None = None,
    spool: Mapping[str, Any] | None = None,
    rails: Mapping[str, Any] | None = None,
    level: str = "info",
) -> str:
    """A daemon TOML config talking to ``sim`` (its ``--print-json`` info)."""
    sf: dict[str, Any] = {
        "login_url": sim["instance_url"],
        "client_id": sim["client_id"],
        "client_secret": sim["client_secret"],
    }
    sf.update(salesforce or {})
    parts = [
        _table("salesforce", sf),
        _table("spool", {"path": str(spool_path), **(spool or {})}),
        _table("http", {"listen": "127.0.0.1:0"}),
        _table("rails", dict(rails or {"bulk_interval_s": 1})),
        _table("log", {"format": "json", "level": level}),
        _table("daemon", {"status_interval_s": 0.5}),
    ]
    for adapter in adapters:
        parts.append(
            "[[adapter]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in adapter.items())
        )
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


# --------------------------------------------------------------------------- sfsim


@dataclass
class SimProc:
    """A running ``dispo-sync sim`` child process and its ``--print-json`` info."""

    proc: asyncio.subprocess.Process
    info: dict[str, Any]
    state_dir: Path | None

    @property
    def url(self) -> str:
        return str(self.info["instance_url"])

    def verify(self) -> Any:
        import ssl

        ca = self.info.get("ca_file")
        return ssl.create_default_context(cafile=ca) if ca else True

    def state(self) -> dict[str, Any]:
        """The saved state (only after the process stopped, and only with a state dir)."""
        if self.state_dir is None:
            return {}
        out: dict[str, Any] = {}
        for path in sorted(self.state_dir.glob("*.json")):
            with contextlib.suppress(ValueError, OSError):
                out[path.name] = json.loads(path.read_text())
        return out


async def _stop(proc: asyncio.subprocess.Process, within_s: float = 20.0) -> int | None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within_s):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode


@contextlib.asynccontextmanager
async def sim_process(
    *, tls: bool = False, state_dir: Path | None = None, args: Iterable[str] = ()
) -> AsyncIterator[SimProc]:
    """``dispo-sync sim --print-json`` on a free loopback port; SIGTERM at the end."""
    argv = [sys.executable, "-m", "daemon", "sim", "--print-json", *args]
    if tls:
        argv.append("--tls")
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir)]
    with tempfile.TemporaryFile() as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=err
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(_START_S):
                line = await proc.stdout.readline()
            if not line:
                code = await proc.wait()
                err.seek(0)
                tail = err.read()[-2000:].decode("utf-8", "replace")
                raise RuntimeError(f"sfsim exited with {code} before printing its info:\n{tail}")
            yield SimProc(proc, json.loads(line), state_dir)
        finally:
            await _stop(proc)


# --------------------------------------------------------------------------- daemon


@dataclass
class DaemonProc:
    """A running ``dispo-sync run`` child; its JSON log lines are in ``log_path``."""

    proc: asyncio.subprocess.Process
    log_path: Path
    err_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    _offset: int = 0
    _lines: list[dict[str, Any]] = field(default_factory=list)
    _raw: list[str] = field(default_factory=list)

    def _read(self) -> None:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self._offset += end
        for raw in data[:end].decode("utf-8", "replace").splitlines():
            self._raw.append(raw)
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = {"event": "<not json>", "raw": raw}
            self._lines.append(parsed if isinstance(parsed, dict) else {"event": parsed})

    def lines(self) -> list[dict[str, Any]]:
        """Every log line written so far, parsed (a non-JSON line as ``{"raw": ...}``)."""
        self._read()
        return self._lines

    def raw_lines(self) -> list[str]:
        """Every log line written so far, as text (stdout and stderr)."""
        self._read()
        err = (
            self.err_path.read_text("utf-8", "replace").splitlines()
            if self.err_path.exists()
            else []
        )
        return [*self._raw, *err]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.lines() if e.get("event") == name]

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def stop(self, within_s: float = 30.0) -> int | None:
        code = await _stop(self.proc, within_s)
        if self.pumps:
            await asyncio.gather(*self.pumps)
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.raw_lines()[-n:])


def _write_config(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def _pump(stream: asyncio.StreamReader, path: Path) -> None:
    with path.open("ab") as f:
        while chunk := await stream.read(65536):
            f.write(chunk)
            f.flush()


async def start_daemon(
    workdir: Path,
    config: str,
    *,
    name: str = "daemon",
    wait_ready: bool = True,
    pipe_logs: bool = False,
) -> DaemonProc:
    """Write ``config`` and start ``dispo-sync run``; returns once it logged ready."""
    cfg = workdir / f"{name}.toml"
    await asyncio.to_thread(_write_config, cfg, config)
    log_path = workdir / f"{name}.log"
    err_path = workdir / f"{name}.err"
    argv = [sys.executable, "-m", "daemon", "run", "--config", str(cfg)]
    pumps: list[asyncio.Task[None]] = []
    if pipe_logs:
        # Through pipes: a file-size limit set on the daemon (RLIMIT_FSIZE) then hits
        # only its spool, never its log; this process appends the lines to the files.
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.create_task(_pump(proc.stdout, log_path)),
            asyncio.create_task(_pump(proc.stderr, err_path)),
        ]
    else:
        with log_path.open("ab") as out, err_path.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=err)
    d = DaemonProc(proc, log_path, err_path, pumps=pumps)
    d._offset = log_path.stat().st_size if log_path.exists() else 0
    # earlier runs' lines stay in the file; this object reads from its own start
    if not wait_ready:
        return d
    deadline = time.monotonic() + _START_S
    while True:
        for e in d.lines():
            if e.get("event") == "webhook_listening":
                d.ports[str(e["adapter"])] = int(str(e["listen"]).rsplit(":", 1)[1])
            elif e.get("event") == "health server listening":
                d.ports["health"] = int(str(e["listen"]).rsplit(":", 1)[1])
        if any(e.get("event") == "dispo-sync ready" for e in d._lines):
            return d
        if proc.returncode is not None or time.monotonic() > deadline:
            await d.stop()
            raise DaemonExited(proc.returncode, d.tail())
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def daemon_process(
    workdir: Path, config: str, *, name: str = "daemon", pipe_logs: bool = False
) -> AsyncIterator[DaemonProc]:
    d = await start_daemon(workdir, config, name=name, pipe_logs=pipe_logs)
    try:
        yield d
    finally:
        await d.stop()


# --------------------------------------------------------------------------- spool


def read_spool(path: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on a spool file another process writes."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(sql, tuple(params)).fetchall())
    finally:
        conn.close()
