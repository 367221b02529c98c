"""Websocket part of ``bench/ingest_throughput.py``: a local JSON event feed into the
``websocket`` adapter, with durable commits (``synchronous=FULL``) and cumulative acks.

The feed runs in a child process (its own core, as a real dialer would be), sends
``n`` pre-encoded ``call.ended`` events as fast as the connection takes them, and
stops the clock when the adapter's ack for the last event arrives: every event
counted is committed to the spool file before it is acked.

    .venv/bin/python -m bench._ws_feed --events 50000        # prints one JSON object

``run_websocket_bench()`` is what ``bench/ingest_throughput.py`` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

__all__ = ["run_websocket_bench"]

_STATUSES = ("connected", "voicemail", "no_answer", "busy", "do_not_call")


def _frames(n: int) -> list[str]:
    t0 = datetime(2025, 3, 14, 10, 0, tzinfo=UTC)
    out = []
    for i in range(1, n + 1):
        out.append(
            json.dumps(
                {
                    "id": str(i),
                    "type": "call.ended",
                    "data": {
                        "call_id": f"bench-{i}",
                        "status": _STATUSES[i % len(_STATUSES)],
                        "ended_at": (t0 + timedelta(milliseconds=i)).isoformat(),
                        "to": f"+1512555{i % 10000:04d}",
                        "agent": f"a{i % 50}",
                        "campaign": "bench",
                    },
                }
            )
        )
    return out


def _feed_process(n: int, conn: Connection) -> None:
    """Child: serve the feed, report the port, then (first, last-ack) times."""
    from websockets.asyncio.server import ServerConnection, serve

    frames = _frames(n)
    last_id = str(n)

    async def main() -> None:
        done = asyncio.Event()
        result: dict[str, float] = {}

        async def handler(ws: ServerConnection) -> None:
            async def read_acks() -> None:
                async for message in ws:
                    body = json.loads(message)
                    if body.get("id") == last_id:
                        result["last_ack"] = time.perf_counter()
                        done.set()
                        return

            async with asyncio.TaskGroup() as tg:
                tg.create_task(read_acks())
                result["first"] = time.perf_counter()
                for frame in frames:
                    await ws.send(frame)
                await done.wait()

        async with serve(handler, "127.0.0.1", 0, max_queue=4096, compression=None) as server:
            conn.send(server.sockets[0].getsockname()[1])
            await done.wait()
            conn.send(result)

    asyncio.run(main())


def _fast() -> Iterator[float]:
    while True:
        yield 0.01


async def run_websocket_bench(
    events: int = 50_000, *, workdir: Path | None = None, batch_max: int = 5000
) -> dict[str, Any]:
    """Feed ``events`` through the websocket adapter into a FULL-synchronous spool."""
    from adapters.websocket import WebsocketAdapter, WebsocketConfig
    from spool import open_spool

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_feed_process, args=(events, child), daemon=True)
    proc.start()
    try:
        loop = asyncio.get_running_loop()
        port = await loop.run_in_executor(None, parent.recv)
        with contextlib.ExitStack() as stack:
            if workdir is None:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            cfg = WebsocketConfig.from_table(
                {
                    "type": "websocket",
                    "name": "bench",
                    "url": f"ws://127.0.0.1:{port}/events",
                    "fields": {
                        "call_id": "data.call_id",
                        "disposition": "data.status",
                        "ended_at": "data.ended_at",
                        "phone": "data.to",
                        "agent_id": "data.agent",
                        "campaign": "data.campaign",
                    },
                    "event_types": ["call.ended"],
                    "ack": "batch",
                    "ack_message": {"type": "ack", "id": "{id}"},
                    "resume": "query",
                    "batch_max": batch_max,
                    "queue_max": batch_max * 4,
                }
            )
            async with open_spool(workdir / "bench-ws.db", synchronous="FULL") as spool:
                cpu0 = time.process_time()
                adapter = WebsocketAdapter(cfg, spool, reconnect_delays=_fast)
                await adapter.start()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(adapter.run())
                    timing: dict[str, float] = await loop.run_in_executor(None, parent.recv)
                    cpu = time.process_time() - cpu0
                    await adapter.stop()
                health = adapter.health()
                stats = await spool.stats()
        seconds = timing["last_ack"] - timing["first"]
        if health.accepted != events or stats.pending != events:
            raise RuntimeError(
                f"websocket bench lost events: accepted={health.accepted} "
                f"pending={stats.pending} expected={events}"
            )
        return {
            "websocket_per_s": round(events / seconds),
            "websocket_events": events,
            "websocket_seconds": round(seconds, 3),
            "websocket_batches": health.extra.get("batches", 0),
            # CPU of this process (adapter + spool threads, not the feed) per event:
            # the figure that does not depend on what else the machine is running.
            "websocket_cpu_us_per_event": round(cpu / events * 1e6, 1),
            "websocket_synchronous": "FULL",
        }
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch-max", type=int, default=5000)
    args = parser.parse_args(argv)
    result = asyncio.run(run_websocket_bench(args.events, batch_max=args.batch_max))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
