"""systemd notify: real datagrams on $NOTIFY_SOCKET, watchdog pings stop when the loop blocks."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.notify import Notifier, watchdog_loop


class Listener:
    """A unix datagram socket standing in for systemd, recording (time, message)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def texts(self) -> list[str]:
        return [m for _, m in self.messages]

    def wait_for(self, predicate: object, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(predicate) and predicate():
                return
            time.sleep(0.005)
        raise AssertionError(f"condition not met; got {self.texts()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(str(tmp_path / "notify.sock"))
    yield lst
    lst.close()


def test_messages_arrive_on_a_path_socket(listener: Listener) -> None:
    """READY, STATUS, RELOADING and STOPPING reach the socket named by NOTIFY_SOCKET."""
    n = Notifier.from_environ({"NOTIFY_SOCKET": listener.address})
    assert n.enabled
    assert n.ready("spool open, 2 adapters listening")
    assert n.status("pending=3\noldest=2s")
    assert n.reloading()
    assert n.stopping()
    listener.wait_for(lambda: len(listener.messages) == 4)
    texts = listener.texts()
    assert texts[0] == "READY=1\nSTATUS=spool open, 2 adapters listening"
    assert texts[1] == "STATUS=pending=3 oldest=2s"
    assert texts[2].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert texts[3] == "STOPPING=1"
    n.close()


def test_abstract_socket_address() -> None:
    """An '@name' NOTIFY_SOCKET is an abstract socket, reached with a leading NUL."""
    name = f"@dispo-sync-test-{os.getpid()}-{time.monotonic_ns()}"
    lst = Listener(name)
    try:
        n = Notifier.from_environ({"NOTIFY_SOCKET": name})
        assert n.ready()
        lst.wait_for(lambda: lst.texts() == ["READY=1"])
        n.close()
    finally:
        lst.close()


def test_no_socket_means_no_op_and_a_dead_socket_never_raises(tmp_path: Path) -> None:
    """Without systemd nothing is sent; a vanished socket is logged once, never raised."""
    assert not Notifier.from_environ({}).ready()
    gone = Notifier(str(tmp_path / "missing.sock"))
    assert not gone.ready()
    assert not gone.status("x")
    gone.close()


def test_watchdog_settings_from_environment() -> None:
    """Ping interval is half WATCHDOG_USEC; a foreign WATCHDOG_PID disables pings."""
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environ(env).watchdog_interval_s == 15.0
    mine = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environ(mine).watchdog_interval_s == 15.0
    other = {**env, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_environ(other).watchdog_interval_s is None
    assert Notifier.from_environ({"WATCHDOG_USEC": "1000"}).watchdog_interval_s is None


async def test_watchdog_pings_stop_while_the_loop_is_blocked(listener: Listener) -> None:
    """WATCHDOG=1 comes from the event loop: blocking the loop stops the pings."""
    n = Notifier.from_environ({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "60000"})
    assert n.watchdog_interval_s == pytest.approx(0.03)
    stop = asyncio.Event()

    def pings() -> list[float]:
        return [t for t, m in listener.messages if m == "WATCHDOG=1"]

    async def until(predicate: object) -> None:
        async with asyncio.timeout(5):
            # The listener thread appends; poll it with a deadline.
            while not (callable(predicate) and predicate()):  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(watchdog_loop(n, stop))
        await until(lambda: len(pings()) >= 3)
        blocked_from = time.monotonic()
        time.sleep(0.4)  # noqa: ASYNC251 - a wedged loop: synchronous work that never yields
        blocked_until = time.monotonic()
        before = len(pings())
        await until(lambda: len(pings()) > before)
        stop.set()
    during = [t for t in pings() if blocked_from + 0.02 < t < blocked_until]
    assert during == []
    # Healthy: pings at about the interval, far more often than during the block.
    assert len(pings()) >= 4
    n.close()


async def test_watchdog_skips_pings_when_alive_check_fails(listener: Listener) -> None:
    """A failing liveness check withholds the ping, so systemd restarts us."""
    n = Notifier.from_environ({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "20000"})
    stop = asyncio.Event()
    calls = 0

    async def alive() -> bool:
        nonlocal calls
        calls += 1
        if calls >= 5:
            stop.set()
        return False

    async with asyncio.timeout(5):
        await watchdog_loop(n, stop, alive=alive)
    assert calls >= 5
    assert "WATCHDOG=1" not in listener.texts()
    n.close()
