"""A dialer-like JSON event stream served over loopback, for the websocket adapter tests.

Each connection may resume (``?last_event_id=``), may be cut after a given number
of events (the TCP connection is aborted mid-stream, as a crashing dialer or a
dropped network would), and records every ack it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

T0 = datetime(2025, 3, 14, 10, 0, tzinfo=UTC)
STATUSES = ("connected", "voicemail", "no_answer", "busy")


def call_event(n: int, **over: Any) -> dict[str, Any]:
    """One call.ended event, shaped like a typical dialer stream (ids as strings)."""
    ended = T0 + timedelta(seconds=n)
    body: dict[str, Any] = {
        "id": f"e{n}",
        "type": "call.ended",
        "data": {
            "call_id": f"call-{n}",
            "status": STATUSES[n % len(STATUSES)],
            "ended_at": ended.isoformat(),
            "to": f"+1512555{n % 10000:04d}",
        },
    }
    body["data"].update(over)
    return body


class FeedServer:
    def __init__(
        self,
        events: list[dict[str, Any] | str],
        *,
        cut_after: list[int] | None = None,
        token: str | None = None,
    ) -> None:
        self.events = events
        self.cut_after = list(cut_after or [])
        self.token = token
        self.connections = 0
        self.resume_ids: list[str | None] = []
        self.acks: list[Any] = []
        self.messages: list[Any] = []  # everything the client sent, in order
        self.close_codes: list[int | None] = []
        self.changed = asyncio.Event()
        self.server: Server | None = None
        self.scheme = "ws"

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{self.scheme}://{host}:{port}/events"

    def _ids(self) -> list[str | None]:
        out: list[str | None] = []
        for e in self.events:
            out.append(e.get("id") if isinstance(e, dict) else None)
        return out

    def check_auth(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.token is None:
            return None
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return conn.respond(401, "bad token\n")
        return None

    async def handler(self, conn: ServerConnection) -> None:
        self.connections += 1
        assert conn.request is not None
        query = parse_qs(urlsplit(conn.request.path).query)
        after = query.get("last_event_id", [None])[0]
        self.resume_ids.append(after)
        ids = self._ids()
        start = ids.index(after) + 1 if after is not None and after in ids else 0
        limit = self.cut_after.pop(0) if self.cut_after else None
        reader = asyncio.create_task(self._read(conn))
        try:
            chunk = self.events[start:] if limit is None else self.events[start : start + limit]
            for event in chunk:
                await conn.send(event if isinstance(event, str) else json.dumps(event))
            if limit is not None:
                # Mid-stream cut: no closing handshake, whatever is buffered is lost.
                assert conn.transport is not None
                conn.transport.abort()
            await conn.wait_closed()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.close_codes.append(conn.close_code)
            self.changed.set()

    async def _read(self, conn: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in conn:
                body = json.loads(message)
                self.messages.append(body)
                if body.get("type") == "ack":
                    self.acks.append(body.get("id", body.get("ids")))
                self.changed.set()

    async def wait_for(self, predicate: Any, limit_s: float = 10.0) -> None:
        """Wait until predicate() holds (woken by every server-side change)."""
        async with asyncio.timeout(limit_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def feed_server(
    events: list[dict[str, Any] | str], *, ssl: Any = None, **kw: Any
) -> AsyncIterator[FeedServer]:
    feed = FeedServer(events, **kw)
    async with serve(
        feed.handler,
        "127.0.0.1",
        0,
        process_request=feed.check_auth,
        max_queue=4096,
        ssl=ssl,
    ) as server:
        feed.server = server
        feed.scheme = "wss" if ssl is not None else "ws"
        yield feed


__all__ = ["FeedServer", "call_event", "feed_server"]
