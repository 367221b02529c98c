"""`dispo-sync run`: READY after start, clean exit 0 on SIGTERM/SIGINT, SIGHUP reload, deadlines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.http import ReadinessCheck
from daemon.metrics import Metrics
from daemon.notify import Notifier
from daemon.runner import Daemon
from daemon.settings import Settings, load_settings

pytest.importorskip("spool", reason="spool package")
if not hasattr(__import__("spool"), "open_spool"):  # pragma: no cover - until SPOOL lands
    pytest.skip("spool.open_spool is not in this build yet", allow_module_level=True)


def config(tmp_path: Path, **daemon: float) -> Path:
    path = tmp_path / "config.toml"
    extra = "".join(f"{k} = {v}\n" for k, v in daemon.items())
    path.write_text(
        f"""
[salesforce]
login_url = "https://example.my.salesforce.com"
client_id = "id"
client_secret = "secret-value"
[spool]
path = "{tmp_path / "spool.db"}"
[http]
listen = "127.0.0.1:0"
[log]
format = "json"
[daemon]
status_interval_s = 0.05
{extra}"""
    )
    return path


class NotifySocket:
    """A real unix datagram socket playing systemd's part."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.seen: list[str] = []

    async def wait_for(self, prefix: str, within_s: float = 20.0) -> str:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within_s):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                self.seen.append(data.decode())
                if self.seen[-1].startswith(prefix):
                    return self.seen[-1]

    def close(self) -> None:
        self.sock.close()


class SlowRails:
    """Rails stand-in with one REST call in flight when stop arrives."""

    def __init__(self, finish_after_stop_s: float, *, honour_stop: bool = True) -> None:
        self.finish_after_stop_s = finish_after_stop_s
        self.honour_stop = honour_stop
        self.in_flight_finished = False
        self.cancelled = False
        self.reloads = 0

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await stop.wait()
            if not self.honour_stop:
                await asyncio.Event().wait()
            await asyncio.sleep(self.finish_after_stop_s)  # the in-flight call completing
            self.in_flight_finished = True
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def readiness(self) -> Sequence[ReadinessCheck]:
        return [ReadinessCheck("salesforce", True, "authenticated")]

    def quota(self) -> dict[str, Any] | None:
        return {"used": 250, "max": 15000}

    def reload_mapping(self) -> str:
        self.reloads += 1
        return "2 objects, 14 fields"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


def factory(rails: SlowRails) -> Any:
    async def build(settings: Settings, spool: Any, metrics: Metrics) -> SlowRails:
        return rails

    return build


async def test_sigterm_finishes_in_flight_work_and_exits_0(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """SIGTERM: STOPPING=1, the in-flight call completes, run() returns 0."""
    sock = notify_socket
    settings = load_settings(config(tmp_path), environ={})
    rails = SlowRails(0.2)
    daemon = Daemon(settings, notifier=Notifier(sock.path), rails_factory=factory(rails))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(daemon.run())
        ready = await sock.wait_for("READY=1")
        assert "pending" in ready and "API quota 250/15000" in ready
        assert daemon.health is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.health.port}") as c:
            r = await c.get("/readyz")
            assert r.status_code == 200, r.text
            assert "dispo_api_quota_max 15000.0" in (await c.get("/metrics")).text
        await sock.wait_for("STATUS=")
        t0 = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await sock.wait_for("STOPPING=1")
    assert task.result() == 0
    assert rails.in_flight_finished and not rails.cancelled
    assert time.monotonic() - t0 < 5


async def test_work_that_ignores_stop_is_cancelled_at_the_deadline(tmp_path: Path) -> None:
    """A rail that never finishes is cancelled at shutdown_timeout_s; exit is still 0."""
    settings = load_settings(config(tmp_path, shutdown_timeout_s=0.3), environ={})
    rails = SlowRails(0, honour_stop=False)
    daemon = Daemon(settings, notifier=Notifier(None), rails_factory=factory(rails))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(daemon.run())
        async with asyncio.timeout(10):
            await daemon.started.wait()
        t0 = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)
    assert task.result() == 0
    assert rails.cancelled
    assert 0.25 < time.monotonic() - t0 < 3


async def test_sighup_reloads_the_mapping(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """SIGHUP: RELOADING=1, the rails reload the mapping, READY=1 again."""
    sock = notify_socket
    settings = load_settings(config(tmp_path), environ={})
    rails = SlowRails(0)
    daemon = Daemon(settings, notifier=Notifier(sock.path), rails_factory=factory(rails))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(daemon.run())
        await sock.wait_for("READY=1")
        os.kill(os.getpid(), signal.SIGHUP)
        await sock.wait_for("RELOADING=1")
        await sock.wait_for("READY=1")
        assert rails.reloads == 1
        daemon.request_stop()
    assert task.result() == 0


# 2026-11-24: spool/spool.py logs extra={"created": ...}, a reserved LogRecord name, which
# raises at INFO level (reported to SPOOL). Remove this guard once that line is fixed.
_SPOOL_LOG_BUG = '"created": created' in Path(__import__("spool.spool").spool.__file__).read_text()


@pytest.mark.skipif(_SPOOL_LOG_BUG, reason="spool logs a reserved LogRecord key at INFO")
def test_cli_run_is_honest_without_rails_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`dispo-sync run` as a process: READY=1, says it is not sending, exits 0 on SIGTERM."""
    notify = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "200000"}
    env.pop("JOURNAL_STREAM", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--config", str(config(tmp_path))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        messages = []
        while not any(m.startswith("READY=1") for m in messages):
            messages.append(listener.recv(4096).decode())
        while "WATCHDOG=1" not in messages:
            messages.append(listener.recv(4096).decode())
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        listener.close()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "dispo-sync ready" in names and "stopped" in names
    assert any(n.startswith("no Salesforce rail") for n in names), names
    assert "secret-value" not in out + err
