"""`dispo-sync run`: READY after start, clean exit 0 on SIGTERM/SIGINT, SIGHUP reload, deadlines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import structlog.testing

from adapters._json_hook import sign_body
from daemon.http import ReadinessCheck
from daemon.metrics import Metrics
from daemon.notify import Notifier
from daemon.runner import Daemon, event_loop_factory
from daemon.settings import Settings, load_settings

pytest.importorskip("spool", reason="spool package")
if not hasattr(__import__("spool"), "open_spool"):  # pragma: no cover - until SPOOL lands
    pytest.skip("spool.open_spool is not in this build yet", allow_module_level=True)


T_END = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


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
        self.quota_state = "ok"

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
        return {"used": 250, "max": 15000, "state": self.quota_state}

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
    """READY, STATUS, WATCHDOG; on SIGTERM STOPPING=1, the in-flight call completes, exit 0."""
    sock = notify_socket
    settings = load_settings(config(tmp_path), environ={})
    rails = SlowRails(0.2)
    notifier = Notifier(sock.path, watchdog_usec=100_000)
    daemon = Daemon(settings, notifier=notifier, rails_factory=factory(rails))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(daemon.run())
        ready = await sock.wait_for("READY=1")
        assert "pending" in ready and "API quota 250/15000" in ready
        assert daemon.health is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.health.port}") as c:
            r = await c.get("/readyz")
            assert r.status_code == 200, r.text
            assert "dispo_api_quota_max 15000.0" in (await c.get("/metrics")).text
        status = await sock.wait_for("STATUS=")
        # Pending count, oldest pending age, quota headroom (what `systemctl status` shows).
        assert status == "STATUS=0 pending, none waiting, API quota 250/15000 (98% left)"
        await sock.wait_for("WATCHDOG=1")
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


async def test_cli_run_process_notifies_and_exits_0_on_sigterm(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """`dispo-sync run` as a process: READY=1, watchdog pings, SIGTERM -> STOPPING=1, exit 0."""
    from sfsim.testing import running_sim

    async with running_sim(tls=False) as sim:
        info = sim.info
        cfg = config(tmp_path)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": notify_socket.path,
            "WATCHDOG_USEC": "400000",
            "DISPO_SALESFORCE__LOGIN_URL": info["instance_url"],
            "DISPO_SALESFORCE__CLIENT_ID": info["client_id"],
            "DISPO_SALESFORCE__CLIENT_SECRET": info["client_secret"],
        }
        env.pop("JOURNAL_STREAM", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon",
            "run",
            "--config",
            str(cfg),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await notify_socket.wait_for("READY=1", within_s=30)
            await notify_socket.wait_for("WATCHDOG=1")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await notify_socket.wait_for("STOPPING=1")
            async with asyncio.timeout(30):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert time.monotonic() - t0 < 30
    events = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    names = [e["event"] for e in events]
    assert "dispo-sync ready" in names and "stopped" in names
    # The service runs on uvloop when it is installed (a runtime dependency on CPython).
    starting = next(e for e in events if e["event"] == "dispo-sync starting")
    assert starting["event_loop"] == ("uvloop" if find_spec("uvloop") else "asyncio")
    assert info["client_secret"] not in (out + err).decode()


async def test_run_sends_to_the_org_and_stops_cleanly(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """The real rails send spooled outcomes to sfsim; /readyz, /metrics agree; SIGTERM exits 0."""
    from sfsim.testing import SimControl, running_sim
    from spool import CallOutcome, Disposition, open_spool, read_stats

    async with running_sim(tls=False) as sim:
        info = sim.info
        cfg = tmp_path / "sim.toml"
        cfg.write_text(
            f"""
[salesforce]
login_url = "{info["instance_url"]}"
client_id = "{info["client_id"]}"
client_secret = "{info["client_secret"]}"
[spool]
path = "{tmp_path / "spool.db"}"
[http]
listen = "127.0.0.1:0"
[rails]
bulk_interval_s = 1
[daemon]
status_interval_s = 0.1
[[adapter]]
type = "webhook"
preset = "json"
name = "crm-hook"
listen = "127.0.0.1:0"
secret = "a-long-enough-secret"
"""
        )
        settings = load_settings(cfg, environ={})
        ended = T_END
        async with open_spool(settings.spool.path) as spool:
            for n in range(6):
                disposition = Disposition.DO_NOT_CALL if n < 2 else Disposition.VOICEMAIL
                await spool.put(
                    CallOutcome(
                        source="vicidial", call_id=f"c{n}", disposition=disposition, ended_at=ended
                    )
                )
        daemon = Daemon(settings, notifier=Notifier(notify_socket.path))
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(daemon.run())
            await notify_socket.wait_for("READY=1")
            async with asyncio.timeout(60):
                while True:
                    stats = read_stats(settings.spool.path)
                    if stats.pending == 0 and stats.inflight == 0:
                        break
                    await asyncio.sleep(0.05)
            assert stats.done == 6 and stats.dead == 0
            assert daemon.health is not None
            (hook,) = daemon.adapters
            async with httpx.AsyncClient() as c:
                # No credentials: refused, and counted among the adapter's own figures.
                refused = await c.post(f"http://127.0.0.1:{hook.bound_port}/outcomes", json={})
                assert refused.status_code == 401
                # An accepted outcome is logged once (the daemon's line), not once more
                # by the adapter.
                body = json.dumps(
                    {"call_id": "h1", "disposition": "busy", "ended_at": "2026-05-04T10:00:00Z"}
                ).encode()
                with structlog.testing.capture_logs() as logs:
                    accepted = await c.post(
                        f"http://127.0.0.1:{hook.bound_port}/outcomes",
                        content=body,
                        headers={
                            "X-Signature": sign_body(body, "a-long-enough-secret"),
                            "Content-Type": "application/json",
                        },
                    )
                assert accepted.status_code == 200, accepted.text
                per_call = [e["event"] for e in logs if e.get("call_id") == "h1"]
                assert per_call == ["outcome received"]
                base = f"http://127.0.0.1:{daemon.health.port}"
                ready = await c.get(f"{base}/readyz")
                assert ready.status_code == 200, ready.text
                text = (await c.get(f"{base}/metrics")).text
            assert 'dispo_outcomes_sent_total{disposition="do_not_call"' in text
            assert "dispo_api_calls_total" in text
            for line in (
                'dispo_adapter_up{adapter="crm-hook",type="webhook"} 1.0',
                'dispo_adapter_state{adapter="crm-hook",state="listening"} 1.0',
                'dispo_adapter_state{adapter="crm-hook",state="stopped"} 0.0',
                'dispo_adapter_extra{adapter="crm-hook",name="unauthorized"} 1.0',
            ):
                assert line in text, line
            os.kill(os.getpid(), signal.SIGTERM)
        assert task.result() == 0
        async with SimControl.open(sim) as control:
            tasks = await control.records("Task")
        keys = sorted(str(t.get("Call_Id__c")) for t in tasks)
        assert [k for k in keys if k.startswith("vicidial:")] == [
            f"vicidial:c{n}" for n in range(6)
        ]


async def test_quota_state_changes_are_logged_once(tmp_path: Path) -> None:
    """Quota going low, exhausted and back to ok gives one log line per change."""
    settings = load_settings(config(tmp_path), environ={})
    rails = SlowRails(0)
    daemon = Daemon(settings, notifier=Notifier(None), rails_factory=factory(rails))
    with structlog.testing.capture_logs() as logs:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(daemon.run())
            async with asyncio.timeout(10):
                await daemon.started.wait()
                for state in ("low", "exhausted", "ok"):
                    rails.quota_state = state
                    # The status loop (every 0.05 s) reads the quota and logs a change.
                    while daemon._quota_state != state:  # noqa: ASYNC110 - polled, deadline above
                        await asyncio.sleep(0.01)
            daemon.request_stop()
    assert task.result() == 0
    quota_lines = [e for e in logs if str(e["event"]).startswith("API quota")]
    assert [e["log_level"] for e in quota_lines] == ["warning", "error", "info"]
    assert quota_lines[0]["used"] == 250 and quota_lines[0]["max"] == 15000


async def test_stop_mid_bulk_job_leaves_it_recorded_and_the_next_start_finishes_it(
    tmp_path: Path,
) -> None:
    """SIGTERM during a Bulk job: exit 0 at once, job kept in the spool, collected after restart."""
    from sfsim.testing import SimControl, running_sim
    from spool import CallOutcome, Disposition, open_spool, read_stats

    total = 60  # above bulk_min_records below: the backlog goes to a Bulk job
    async with running_sim(tls=False, bulk_rate=20) as sim:
        info = sim.info
        cfg = tmp_path / "sim.toml"
        cfg.write_text(
            f"""
[salesforce]
login_url = "{info["instance_url"]}"
client_id = "{info["client_id"]}"
client_secret = "{info["client_secret"]}"
[spool]
path = "{tmp_path / "spool.db"}"
[http]
listen = "127.0.0.1:0"
[rails]
bulk_interval_s = 1
bulk_min_records = 50
[daemon]
status_interval_s = 0.1
"""
        )
        settings = load_settings(cfg, environ={})
        async with open_spool(settings.spool.path) as spool:
            await spool.put_many(
                [
                    CallOutcome(
                        source="vicidial",
                        call_id=f"b{n}",
                        disposition=Disposition.NO_ANSWER,
                        ended_at=T_END,
                    )
                    for n in range(total)
                ]
            )

        def jobs_in_flight() -> int:
            return read_stats(settings.spool.path).jobs_in_flight

        first = Daemon(settings, notifier=Notifier(None))
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(first.run())
            async with asyncio.timeout(30):
                while jobs_in_flight() == 0:  # noqa: ASYNC110 - polled, deadline above
                    await asyncio.sleep(0.05)
            t0 = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)  # what `systemctl stop` sends
        assert task.result() == 0
        assert time.monotonic() - t0 < 5
        stats = read_stats(settings.spool.path)
        assert stats.jobs_in_flight >= 1 and stats.done < total

        second = Daemon(settings, notifier=Notifier(None))
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(second.run())
            async with asyncio.timeout(90):
                while read_stats(settings.spool.path).done < total:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            second.request_stop()
        assert task.result() == 0
        stats = read_stats(settings.spool.path)
        assert (stats.done, stats.dead, stats.jobs_in_flight) == (total, 0, 0)
        async with SimControl.open(sim) as control:
            tasks = await control.records("Task")
        assert len({t["Call_Id__c"] for t in tasks}) == len(tasks) == total


async def test_sighup_reloads_a_real_mapping_file_and_refuses_a_broken_one(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """SIGHUP with the real rails: a valid file is applied, a broken one keeps the old mapping."""
    from sfsim.testing import running_sim

    default = Path(__import__("daemon.mapping").mapping.__file__).parent / "default.toml"
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(default.read_text())
    async with running_sim(tls=False) as sim:
        info = sim.info
        cfg = tmp_path / "sim.toml"
        cfg.write_text(
            f"""
[salesforce]
login_url = "{info["instance_url"]}"
client_id = "{info["client_id"]}"
client_secret = "{info["client_secret"]}"
[spool]
path = "{tmp_path / "spool.db"}"
[http]
listen = "127.0.0.1:0"
[mapping]
file = "{mapping}"
"""
        )
        daemon = Daemon(load_settings(cfg, environ={}), notifier=Notifier(notify_socket.path))
        with structlog.testing.capture_logs() as logs:
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(daemon.run())
                await notify_socket.wait_for("READY=1")
                mapping.write_text(default.read_text().replace("Call: ", "Dialer call: "))
                os.kill(os.getpid(), signal.SIGHUP)
                await notify_socket.wait_for("RELOADING=1")
                await notify_socket.wait_for("READY=1")
                mapping.write_text("[task\nbroken")
                os.kill(os.getpid(), signal.SIGHUP)
                await notify_socket.wait_for("RELOADING=1")
                await notify_socket.wait_for("READY=1")
                daemon.request_stop()
        assert task.result() == 0
    events = [e["event"] for e in logs]
    assert "mapping reloaded" in events
    failed = next(
        e for e in logs if e["event"] == "mapping reload failed; keeping the previous mapping"
    )
    assert "not valid TOML" in failed["error"]
    assert events.index("mapping reloaded") < events.index(failed["event"])


async def test_a_taken_http_port_fails_the_start_with_exit_1(tmp_path: Path) -> None:
    """If [http] listen is taken, run() logs why and returns 1 instead of hanging."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = config(tmp_path).read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}")
        (tmp_path / "taken.toml").write_text(text)
        settings = load_settings(tmp_path / "taken.toml", environ={})
        daemon = Daemon(settings, notifier=Notifier(None), rails_factory=factory(SlowRails(0)))
        with structlog.testing.capture_logs() as logs:
            async with asyncio.timeout(10):
                assert await daemon.run() == 1
    (line,) = [e for e in logs if e["event"] == "dispo-sync stopped on an error"]
    assert "Address already in use" in line["error"]
    assert not daemon.started.is_set()


def test_event_loop_choice() -> None:
    """[daemon] event_loop: asyncio's own loop on request; auto prefers uvloop when installed."""
    assert event_loop_factory("asyncio") == ("asyncio", None)
    name, factory = event_loop_factory("auto")
    if find_spec("uvloop") is None:
        assert (name, factory) == ("asyncio", None)
    else:
        import uvloop

        assert (name, factory) == ("uvloop", uvloop.new_event_loop)
