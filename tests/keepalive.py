"""A check shared by the tests of our two HTTP servers (webhook and health/metrics)."""

from __future__ import annotations

import socket
from typing import Any


def assert_connections_nodelay(server: Any) -> None:
    """Every open keep-alive connection of this uvicorn ``Server`` has TCP_NODELAY set,
    so a response is not held ~40 ms by Nagle waiting for the client's delayed ACK."""
    assert server is not None
    conns = list(server.server_state.connections)
    assert conns, "the keep-alive connection is still open"
    for proto in conns:
        sock = proto.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
