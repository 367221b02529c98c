"""uvicorn's httptools protocol with one socket write per response instead of two.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body on ``http.response.body``: two ``send()``
system calls for every webhook answer, the single most expensive step of a
request on loopback (bench/ingest_throughput.py profile: ~15 % of the server's
CPU per request). :class:`CoalescingHttpToolsProtocol` hands uvicorn a transport
that gathers the writes made during one event-loop step and passes them on in
one ``write()`` right after it (``loop.call_soon``), or at once when the
connection is closed, aborted or upgraded. Everything else goes to the real
transport unchanged (flow control, addresses, TLS information).

It also bounds a request's head, which uvicorn's httptools protocol does not:
it appends every piece of the request target (``self.url += url``) and httptools
joins the pieces of a header field, for as long as the client keeps sending, so
one unauthenticated connection could make the daemon hold any amount of memory
(the body has ``max_body_bytes``; uvicorn's only head limit,
``h11_max_incomplete_event_size``, applies to its h11 protocol alone). A target
longer than :data:`MAX_TARGET_BYTES` is answered 414, header fields beyond
:data:`MAX_HEADER_BYTES` 431 (RFC 9110 section 15.5.15, RFC 6585 section 5), and
the connection is closed.
"""

from __future__ import annotations

import asyncio
import http
import json
from typing import Any, Final

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_TARGET_BYTES",
    "CoalescingHttpToolsProtocol",
    "CoalescingTransport",
]

log = structlog.get_logger("adapters.webhook")

# Limits
# The request target (path and query). Larger than the usual 8 KiB of web servers:
# VICIdial sends a disposition as a GET whose query can carry the agent's call notes
# and lead fields, and it never retries, so a 414 loses that call for good. 64 KiB
# still bounds a connection's head to a small fraction of the 1 MiB body limit.
MAX_TARGET_BYTES: Final = 65_536
# Header fields, names and values together (dialers send a few hundred bytes).
MAX_HEADER_BYTES: Final = 65_536


class CoalescingTransport:
    """A transport proxy: writes made in one loop step leave in one ``write()``."""

    __slots__ = ("_buffer", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what was gathered to the real transport (a no-op when nothing is)."""
        if not self._buffer:
            return
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._buffer.clear()
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        # an upgrade (websocket) takes the connection over: nothing may stay behind
        self.flush()
        self._transport.set_protocol(protocol)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._buffer))

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, resume_reading, ... as they are
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.Config(http=...)``: httptools parsing, one write per response, a
    bounded request head."""

    max_target_bytes: int = MAX_TARGET_BYTES
    max_header_bytes: int = MAX_HEADER_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Per connection: are the next bytes part of a request head, how many bytes of
        # that head have arrived, a count of head/body boundaries crossed, and whether
        # the connection was refused (and is closing).
        self._in_head = True
        self._head_bytes = 0
        self._boundaries = 0
        self._refused = False
        proxy = CoalescingTransport(transport, self.loop)
        super().connection_made(proxy)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered 414/431 and closing: the rest is not parsed
        boundaries = self._boundaries
        super().data_received(data)
        if self._refused or not self._in_head:
            return
        if self._boundaries == boundaries:
            # No head or body ended in this chunk: all of it belongs to the head still
            # being received. (A head that starts after a body's end in the same chunk
            # is counted from the next chunk: at most one read late, still bounded.)
            self._head_bytes += len(data)
        # self.url: what uvicorn gathered of the target (set when a request begins)
        target = len(getattr(self, "url", b""))
        self._over(target, self._head_bytes - target)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._boundaries += 1
        self._head_bytes = 0
        if self._refused:
            return  # a request pipelined after a refused one, in the same chunk
        # The whole head arrived in one chunk (or its last one): measured exactly here,
        # before uvicorn starts the application on it.
        fields = sum(len(name) + len(value) + 4 for name, value in self.headers)  # ": ", CRLF
        if not self._over(len(self.url), fields):
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:  # a refused request has no cycle to take its body
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._boundaries += 1
        self._head_bytes = 0
        if not self._refused:
            super().on_message_complete()

    def _over(self, target: int, fields: int) -> bool:
        """Refuse (414, 431) a head whose target or header fields exceed the limits."""
        if target > self.max_target_bytes:
            self._refuse(414, f"request target longer than {self.max_target_bytes} bytes")
        elif fields > self.max_header_bytes:
            self._refuse(431, f"header fields longer than {self.max_header_bytes} bytes")
        else:
            return False
        return True

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` and close: the request is not handed to the application."""
        self._refused = True
        log.warning("webhook_request_head_too_large", status=status, reason=reason)
        body = json.dumps({"error": reason}, separators=(",", ":")).encode()
        phrase = http.HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()
