"""The webhook's HTTP protocol: one socket write per response, a bounded request head."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any
from urllib.parse import urlencode

from adapters._http_proto import MAX_HEADER_BYTES, MAX_TARGET_BYTES, CoalescingTransport
from adapters._json_hook import sign_body
from spool import Spool
from tests.adapters.hooks import hook_table, serving


class _Recording(asyncio.Transport):
    """A transport that keeps what is written to it (and whether it was closed)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def _next_step() -> None:
    await asyncio.sleep(0)  # one loop step: call_soon callbacks queued before it run


async def test_writes_of_one_step_leave_in_one_write() -> None:
    """Head and body written in one step reach the socket as one write, in order."""
    real = _Recording()
    proxy = CoalescingTransport(real, asyncio.get_running_loop())
    proxy.write(b"HTTP/1.1 200 OK\r\n\r\n")
    proxy.write(memoryview(b"body"))
    proxy.write(b"")
    assert real.writes == []
    await _next_step()
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    proxy.write(b"next")
    await _next_step()
    assert real.writes[1:] == [b"next"]
    assert proxy.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_close_flushes_first_and_abort_drops() -> None:
    """close() sends what is pending before closing; abort() and a closed socket drop it."""
    real = _Recording()
    proxy = CoalescingTransport(real, asyncio.get_running_loop())
    proxy.write(b"last words")
    assert proxy.get_write_buffer_size() == len(b"last words")
    proxy.close()
    assert (real.writes, real.closed) == ([b"last words"], True)
    proxy.write(b"too late")
    await _next_step()
    assert real.writes == [b"last words"]

    other = _Recording()
    aborted = CoalescingTransport(other, asyncio.get_running_loop())
    aborted.write(b"never sent")
    aborted.abort()
    await _next_step()
    assert (other.writes, other.closed) == ([], True)


def _request(body: bytes, *, close: bool = False) -> bytes:
    head = (
        "POST /outcomes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"X-Signature: {sign_body(body, 's3cr3t-token')}\r\nContent-Length: {len(body)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode() + body


def _outcome(call_id: str) -> bytes:
    return json.dumps(
        {"call_id": call_id, "disposition": "busy", "ended_at": "2025-03-14T10:02:20Z",
         "phone": "+15125550199"}
    ).encode()  # fmt: skip


async def test_pipelined_requests_and_connection_close_over_a_real_socket(spool: Spool) -> None:
    """Two pipelined requests get two whole responses in order; 'Connection: close' gets
    its whole response before the server closes (nothing left in the proxy)."""
    async with serving(spool, hook_table("json")) as (hook, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", hook.bound_port)
        writer.write(_request(_outcome("p-1")) + _request(_outcome("p-2"), close=True))
        data = await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
        writer.close()
        await writer.wait_closed()
    responses = re.findall(rb"HTTP/1.1 (\d{3}) [^\r]*\r\n.*?\r\n\r\n(\{[^}]*\})", data, re.S)
    assert [(status, json.loads(body)["call_id"]) for status, body in responses] == [
        (b"200", "p-1"),
        (b"200", "p-2"),
    ]
    assert (await spool.stats()).pending == 2


async def test_endless_request_line_is_refused_not_buffered(spool: Spool) -> None:
    """A client that never finishes its request line cannot grow the daemon's memory.

    uvicorn's httptools protocol appends every piece of the target (``self.url += url``)
    with no limit: the server used to buffer all 16 MiB. Now it answers 414 (or hangs up)
    long before.
    """
    async with serving(spool, hook_table("twilio")) as (hook, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", hook.bound_port)
        refused = False
        try:
            writer.write(b"GET /twilio?x=")
            chunk = b"a" * 65536
            async with asyncio.timeout(60):
                for _ in range(256):  # 16 MiB of request line, never terminated
                    if reader.at_eof():
                        refused = True
                        break
                    writer.write(chunk)
                    await writer.drain()
            if not refused:
                # give the server a deadline to answer or hang up
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        data = await reader.read(1024)
                        refused = True if data == b"" else data.startswith(b"HTTP/1.1 414")
        except (ConnectionResetError, BrokenPipeError):
            refused = True
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        assert hook.health().received == 0
    assert refused, "the server buffered a 16 MiB request line without refusing it"


async def _answer(port: int, request: bytes) -> bytes:
    """Send ``request`` (complete or not) and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_long_target_is_414_and_long_header_fields_431(spool: Spool) -> None:
    """Past the limits the answer is 414 (target) or 431 (header fields) and the connection
    is closed, whether the head is still arriving or came whole; the app never sees it."""
    async with serving(spool, hook_table("json")) as (hook, _):
        port = hook.bound_port
        assert port is not None
        target = b"/outcomes?x=" + b"a" * MAX_TARGET_BYTES
        unfinished_target = await _answer(port, b"POST " + target)
        whole_target = await _answer(port, b"POST " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        unfinished_field = await _answer(
            port, b"POST /outcomes HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * MAX_HEADER_BYTES
        )
        many = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(70))
        body = _outcome("never-1")
        whole_fields = await _answer(
            port,
            b"POST /outcomes HTTP/1.1\r\nHost: t\r\n"
            + many
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
            + _request(_outcome("never-2")),  # pipelined behind it: never served either
        )
        assert hook.health().received == 0
    for answer, status in [
        (unfinished_target, b"414"),
        (whole_target, b"414"),
        (unfinished_field, b"431"),
        (whole_fields, b"431"),
    ]:
        assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:80]
        assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed
        assert b"connection: close" in answer.lower()
        assert b"bytes" in answer.split(b"\r\n\r\n", 1)[1]  # the body names the limit
    assert (await spool.stats()).pending == 0


async def test_vicidial_dispo_with_long_notes_in_the_query_is_stored(spool: Spool) -> None:
    """VICIdial sends a disposition as one GET (no retry), notes and lead fields in the
    query: a 20 kB query is under the target limit and is stored."""
    notes = "Customer asked about the premium plan; call back after the 20th. " * 300
    query = urlencode(
        {
            "token": "s3cr3t-token",
            "uniqueid": "1710410531.842",
            "dispo": "SALE",
            "call_notes": notes,
        }
    )
    assert 20_000 < len(query) < MAX_TARGET_BYTES
    async with serving(spool, hook_table("vicidial")) as (_, client):
        r = await client.get(f"/vicidial/dispo?{query}")
    assert r.status_code == 200, r.text
    assert (await spool.stats()).pending == 1
