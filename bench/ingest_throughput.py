"""Ingest throughput: outcomes per second and time-to-ack through the adapters.

    .venv/bin/python bench/ingest_throughput.py [--requests 20000] [--clients 32]
        [--events 50000] [--log-level info] [--skip-websocket]

In one run, both with durable commits (``synchronous=FULL``: each ack is sent
only after the outcome's transaction is on disk):

(a) the JSON webhook: ``--clients`` concurrent HTTP/1.1 keep-alive connections,
    each posting one HMAC-signed outcome at a time and waiting for its 200. The
    load generator runs in a child process (its own core, as a real dialer
    would be). The time-to-ack is measured by the client from the first byte
    sent to the last byte of the response;
(b) the websocket adapter from a local feed (``bench/_ws_feed.py``).

``--baseline`` also times a bare ASGI "hello" app on uvicorn with the same
clients: on a shared machine that is the ceiling any webhook can reach.

The daemon's own logging is configured as in production (one line per stored
outcome at INFO) and written to /dev/null, so its cost is included. The server
side runs on the event loop the daemon picks (``[daemon] event_loop``, default
``auto``: uvloop when installed); ``--loop asyncio`` times asyncio's own loop.

Prints one JSON object with ``webhook_per_s``, ``webhook_p99_ack_ms``,
``websocket_per_s`` and details. Targets (issue 5, 2-core machine): webhook
>= 2,000/s with p99 ack <= 50 ms; websocket >= 10,000/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections.abc import Generator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SECRET = "bench-secret-0123456789"
_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
_STATUSES = ("connected", "voicemail", "no_answer", "busy", "do_not_call")


def _requests(n: int, port: int) -> list[bytes]:
    out = []
    for i in range(n):
        body = json.dumps(
            {
                "call_id": f"bench-{i}",
                "disposition": _STATUSES[i % len(_STATUSES)],
                "ended_at": "2025-03-14T10:02:20Z",
                "phone": f"+1512555{i % 10000:04d}",
                "lead": {"external_key": str(48213 + i)},
                "agent_id": "6666",
                "campaign": "SALES1",
                "talk_s": 37,
            },
            separators=(",", ":"),
        ).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        head = (
            f"POST /outcomes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nX-Signature: {sig}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


async def _client(port: int, n: int, clients: int) -> dict[str, Any]:
    requests = _requests(n, port)
    latencies: list[float] = []
    errors: list[int] = []

    async def worker(mine: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for req in mine:
                t0 = time.perf_counter()
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                match = _CONTENT_LENGTH.search(head)
                if match:
                    await reader.readexactly(int(match.group(1)))
                latencies.append(time.perf_counter() - t0)
                status = int(head[9:12])
                if status != 200:
                    errors.append(status)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # warm-up connection check is part of the first requests; the clock covers all
    shares = [requests[i::clients] for i in range(clients)]
    start = time.perf_counter()
    await asyncio.gather(*(worker(s) for s in shares))
    seconds = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "seconds": seconds,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 2),
        "errors": len(errors),
        "error_statuses": sorted(set(errors))[:5],
    }


def _client_process(n: int, clients: int, conn: Connection) -> None:
    from daemon.runner import event_loop_factory

    port = conn.recv()
    # the load generator takes the fastest loop there is (uvloop when installed)
    with asyncio.Runner(loop_factory=event_loop_factory("auto")[1]) as runner:
        conn.send(runner.run(_client(port, n, clients)))


async def run_webhook_bench(requests: int, clients: int, workdir: Path) -> dict[str, Any]:
    from adapters.webhook import build
    from spool import open_spool

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_client_process, args=(requests, clients, child), daemon=True)
    proc.start()
    try:
        async with open_spool(workdir / "bench-webhook.db", synchronous="FULL") as spool:
            adapter = build(
                {
                    "type": "webhook",
                    "preset": "json",
                    "name": "bench",
                    "listen": "127.0.0.1:0",
                    "secret": SECRET,
                },
                spool,
            )
            await adapter.start()
            loop = asyncio.get_running_loop()
            cpu0 = time.process_time()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(adapter.run())
                parent.send(adapter.bound_port)
                result: dict[str, Any] = await loop.run_in_executor(None, parent.recv)
                cpu = time.process_time() - cpu0
                await adapter.stop()
            health = adapter.health()
            stats = await spool.stats()
        if result["errors"] or health.accepted != requests or stats.pending != requests:
            raise RuntimeError(
                f"webhook bench lost outcomes: accepted={health.accepted} "
                f"pending={stats.pending} errors={result['errors']} expected={requests}"
            )
        return {
            "webhook_per_s": round(requests / result["seconds"]),
            "webhook_p50_ack_ms": result["p50_ms"],
            "webhook_p99_ack_ms": result["p99_ms"],
            "webhook_max_ack_ms": result["max_ms"],
            "webhook_requests": requests,
            "webhook_clients": clients,
            "webhook_seconds": round(result["seconds"], 3),
            "webhook_cpu_us_per_request": round(cpu / requests * 1e6, 1),
            "webhook_synchronous": "FULL",
        }
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = b'{"status":"inserted"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"21")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # Ctrl-C stays with the bench


async def run_baseline(requests: int, clients: int) -> dict[str, Any]:
    """The floor of this machine: the same clients against a bare ASGI app on uvicorn."""
    import socket

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_client_process, args=(requests, clients, child), daemon=True)
    proc.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    config = uvicorn.Config(_hello, log_config=None, access_log=False, lifespan="off")
    server = _QuietServer(config)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(server.serve(sockets=[sock]))
            parent.send(sock.getsockname()[1])
            loop = asyncio.get_running_loop()
            result: dict[str, Any] = await loop.run_in_executor(None, parent.recv)
            server.should_exit = True
    finally:
        sock.close()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return {
        "baseline_hello_per_s": round(requests / result["seconds"]),
        "baseline_hello_p99_ms": result["p99_ms"],
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = await run_webhook_bench(args.requests, args.clients, Path(tmp))
        if args.baseline:
            out.update(await run_baseline(args.requests, args.clients))
        if not args.skip_websocket:
            from bench._ws_feed import run_websocket_bench

            out.update(await run_websocket_bench(args.events, workdir=Path(tmp)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--skip-websocket", action="store_true")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also time a bare ASGI hello-world with the same clients (this machine's floor)",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop of the server side, chosen as the daemon's [daemon] event_loop "
        "(auto, its default: uvloop when installed)",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval() for the run (default: leave Python's 5 ms)",
    )
    args = parser.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    from daemon.logging import configure_logging
    from daemon.runner import event_loop_factory

    with open(os.devnull, "w") as devnull:
        configure_logging("json", args.log_level, stream=devnull)
        loop_name, loop_factory = event_loop_factory(args.loop)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(_main(args))
    result["log_level"] = args.log_level
    result["loop"] = loop_name
    result["switch_interval_s"] = sys.getswitchinterval()
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
