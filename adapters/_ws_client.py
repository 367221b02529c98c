"""The websocket client shell shared by the ``websocket`` and ``ari`` adapters.

One connection at a time; on every end of it (closed, refused, timed out) the
loop waits a jittered, growing delay (reset after a successful connect) and
connects again, until :meth:`ReconnectingClient.stop`. Keepalive pings detect a
half-open TCP connection (``ping_interval`` / ``ping_timeout``); every network
step has a timeout (``open_timeout``, ``close_timeout``).

Subclasses say how to connect (:meth:`_connect_target`) and how to serve an open
connection (:meth:`_serve`); everything about state, reconnects and health is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from adapters._base import AdapterHealth, AdapterState

__all__ = [
    "ClientTimeouts",
    "ConnectTarget",
    "ReconnectingClient",
    "backoff",
    "log_reason",
    "redact_uri",
]

log = structlog.get_logger("adapters.ws")

# A connection that lived this long counts as a success (the backoff starts over).
_STABLE_S = 10.0


def backoff(
    initial_s: float = 1.0,
    maximum_s: float = 60.0,
    factor: float = 1.618,
    *,
    rng: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Reconnect delays: a jittered first delay, then geometric growth to a ceiling.

    Every delay is drawn between half and all of its step ("equal jitter"), so a
    fleet of daemons does not reconnect to a restarted dialer in lockstep.
    """
    yield initial_s * rng()
    step = initial_s
    while True:
        step = min(step * factor, maximum_s)
        yield step * (0.5 + rng() / 2)


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """Timeouts of one websocket connection (seconds)."""

    # Timeouts
    open_s: float = 10.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    close_s: float = 5.0
    # Reconnect backoff
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ConnectTarget:
    uri: str
    headers: Sequence[tuple[str, str]] = ()
    ssl_context: ssl.SSLContext | None = None
    max_queue: int = 1024
    max_size: int = 2**20
    # permessage-deflate costs more CPU per event than it saves on a LAN feed.
    compression: bool = False


def redact_uri(uri: str) -> str:
    """The URI without its query (tokens and ``api_key`` live there) or user info."""
    base = uri.split("?", 1)[0]
    scheme, sep, rest = base.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def log_reason(reason: str) -> str:
    """A rejection reason for the log: what was wrong, without the offending values.

    The full reason (values included) is kept with the raw input in the quarantine
    table; logs may travel further, and values can be phone numbers or names.
    """
    return _QUOTED.sub("'…'", reason)[:300]


def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """System trust plus an optional extra CA bundle (a private dialer CA)."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def describe_error(exc: BaseException) -> str:
    """One line for logs and health, never a URL query or a header value."""
    if isinstance(exc, InvalidStatus):
        return f"server refused the handshake: HTTP {exc.response.status_code}"
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text.split("?", 1)[0][:300]


class ReconnectingClient:
    """Start/run/stop/health for an adapter that is a websocket client."""

    type: str = "websocket"

    def __init__(
        self,
        name: str,
        *,
        timeouts: ClientTimeouts,
        reconnect_delays: Callable[[], Iterator[float]] | None = None,
    ) -> None:
        self.name = name
        self._timeouts = timeouts
        self._delays_factory = reconnect_delays or (
            lambda: backoff(timeouts.reconnect_initial_s, timeouts.reconnect_max_s)
        )
        self._health = AdapterHealth(name=name, type=self.type)
        self._stopping = asyncio.Event()
        self._conn: ClientConnection | None = None
        self._first: ClientConnection | None = None
        # A refusal (spool full) asks for at least this long before reconnecting.
        self._hold_off_s = 0.0
        self._log = log.bind(adapter=name, type=self.type)

    # ------------------------------------------------------------------ subclass hooks

    async def _connect_target(self) -> ConnectTarget:
        raise NotImplementedError

    async def _on_open(self, conn: ClientConnection) -> None:
        """Called once per connection before serving (resume / subscribe messages)."""

    async def _serve(self, conn: ClientConnection) -> None:
        raise NotImplementedError

    async def _on_stop(self) -> None:
        """Called by run() after the last connection (flush what is held)."""

    # ------------------------------------------------------------------ Adapter

    def health(self) -> AdapterHealth:
        return self._health

    async def start(self) -> None:
        """Try the first connection; if the dialer is not up yet, run() keeps trying.

        A daemon must start (and say READY) while its dialer is down; the state says
        ``reconnecting`` until the first connection succeeds.
        """
        if self._stopping.is_set():
            return
        try:
            self._first = await self._open()
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._set_error(exc)
            self._health.state = AdapterState.RECONNECTING
            self._log.warning("ws_connect_failed", error=describe_error(exc))

    async def run(self) -> None:
        """Serve connections, reconnecting with backoff, until stop()."""
        delays = self._delays_factory()
        try:
            while not self._stopping.is_set():
                conn, self._first = self._first, None
                if conn is None:
                    try:
                        conn = await self._open()
                    except (OSError, TimeoutError, WebSocketException) as exc:
                        self._set_error(exc)
                        await self._wait_reconnect(delays, describe_error(exc))
                        continue
                opened = asyncio.get_running_loop().time()
                try:
                    await self._serve_one(conn)
                except (OSError, TimeoutError, WebSocketException) as exc:
                    self._set_error(exc)
                if asyncio.get_running_loop().time() - opened >= _STABLE_S:
                    # Reset the backoff only after a connection that held: a server
                    # that accepts and drops at once must not get a hot reconnect loop.
                    delays = self._delays_factory()
                if not self._stopping.is_set():
                    reason = self._health.last_error or "connection closed"
                    await self._wait_reconnect(delays, reason)
        except Exception:
            self._log.exception("ws_adapter_crashed")
            raise
        finally:
            try:
                await self._on_stop()
            finally:
                self._health.state = AdapterState.STOPPED

    async def stop(self) -> None:
        """Stop intake: close the connection; run() commits what it holds and returns."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._health.state is not AdapterState.STOPPED:
            self._health.state = AdapterState.STOPPING
        for conn in (self._conn, self._first):
            if conn is not None:
                await conn.close(1001, "daemon stopping")

    # ------------------------------------------------------------------ internals

    def _set_error(self, exc: BaseException) -> None:
        self._health.last_error = describe_error(exc)

    async def _open(self) -> ClientConnection:
        target = await self._connect_target()
        t = self._timeouts
        conn = await connect(
            target.uri,
            additional_headers=list(target.headers),
            ssl=target.ssl_context,
            open_timeout=t.open_s,
            ping_interval=t.ping_interval_s,
            ping_timeout=t.ping_timeout_s,
            close_timeout=t.close_s,
            max_queue=target.max_queue,
            max_size=target.max_size,
            compression="deflate" if target.compression else None,
            proxy=None,  # a dialer is on the site's network; never an env proxy
            user_agent_header="dispo-sync",
        )
        try:
            await self._on_open(conn)
        except BaseException:
            await conn.close()
            raise
        self._health.state = AdapterState.CONNECTED
        self._health.last_error = None
        self._log.info("ws_connected", uri=redact_uri(target.uri))
        return conn

    async def _serve_one(self, conn: ClientConnection) -> None:
        self._conn = conn
        try:
            if self._stopping.is_set():
                await conn.close(1001, "daemon stopping")
            await self._serve(conn)
        finally:
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.close()
            if conn.close_code not in (None, 1000, 1001) and self._health.last_error is None:
                self._health.last_error = (
                    f"connection closed: code {conn.close_code} {conn.close_reason or ''}".strip()
                )

    async def _wait_reconnect(self, delays: Iterator[float], reason: str) -> None:
        if self._stopping.is_set():
            return
        delay = max(next(delays), self._hold_off_s)
        self._hold_off_s = 0.0
        self._health.state = AdapterState.RECONNECTING
        self._health.reconnects += 1
        self._log.info("ws_reconnect", delay_s=round(delay, 3), reason=reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def _extra(self, key: str, n: int = 1) -> None:
        self._health.extra[key] = self._health.extra.get(key, 0) + n


def json_headers(headers: Any) -> list[tuple[str, str]]:
    """Validate a ``headers`` table: string keys and values only."""
    if not isinstance(headers, dict):
        raise ValueError("must be a table of header names to values")
    out: list[tuple[str, str]] = []
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"header {key!r}: names and values must be strings")
        out.append((key, value))
    return out
