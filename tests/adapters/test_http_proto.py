"""One socket write per webhook response: the coalescing transport and the real server."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from adapters._http_proto import CoalescingTransport
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
