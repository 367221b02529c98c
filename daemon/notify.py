"""systemd notify protocol, spoken directly on ``$NOTIFY_SOCKET`` (sd_notify(3)).

The protocol is one datagram per message on a unix socket, newline-separated
``KEY=VALUE`` assignments. ``$NOTIFY_SOCKET`` is a filesystem path, or an
abstract socket name written with a leading ``@`` (sent as a NUL byte).
We send:

- ``READY=1`` once the spool is open and every adapter listens;
- ``STATUS=...`` every few seconds (shown by ``systemctl status``);
- ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` from the main event loop, so a
  loop that is blocked stops the pings and systemd restarts the service
  (``WatchdogSec=``); ``WATCHDOG_PID``, when set, must be our pid;
- ``RELOADING=1`` / ``READY=1`` around a SIGHUP reload, ``STOPPING=1`` on stop.

Sending never raises: a lost notification must not take the daemon down.
Failures are logged once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

__all__ = ["Notifier", "watchdog_loop"]

log = structlog.get_logger("daemon.notify")


class Notifier:
    """Sends sd_notify messages; a no-op when not started by systemd."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._warned = False
        self.sent = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if raw.isdigit() and (not pid or pid == str(os.getpid())):
            usec = int(raw)
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog timeout (sd_watchdog_enabled(3))."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def _target(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):
            return b"\0" + self.address[1:].encode()
        return self.address

    def notify(self, message: str) -> bool:
        """Send one datagram; True when it was handed to the socket."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), self._target())
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "systemd notify failed",
                    notify_socket=self.address,
                    error=f"{type(exc).__name__}: {exc.strerror or exc}",
                )
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        # One line: a newline would start a new assignment.
        return self.notify("STATUS=" + text.replace("\n", " "))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload units match the reload (systemd >= 253).
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def watchdog_loop(
    notifier: Notifier,
    stop: asyncio.Event,
    *,
    alive: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Ping ``WATCHDOG=1`` from this event loop until ``stop`` is set.

    The pings come from a coroutine on the main loop, so if anything blocks the
    loop the pings stop and systemd's watchdog fires. ``alive`` may add a
    deeper check (e.g. the spool answers); a False skips that ping.
    """
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    while not stop.is_set():
        if alive is None or await alive():
            notifier.watchdog()
        try:
            async with asyncio.timeout(interval):
                await stop.wait()
        except TimeoutError:
            pass
