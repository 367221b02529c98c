"""Live-rail latency: time the daemon adds between the spool commit and the request leaving.

Feeds live outcomes at a steady rate (default 50/s) into a real spool while the
real rails run against sfsim over loopback (sfsim in its own process, so its request
handling does not share the daemon's event loop; ``--inproc`` to compare). For each
outcome, latency is the time from ``spool.put()`` returning (the commit) to the moment
the REST request carrying it is handed to the socket (the client's ``on_send`` hook,
matched to outcomes through ``daemon.rails._rest.SENDING``). Network and Salesforce
time are not included: this is what the daemon itself adds. After each put the feeder
calls ``rails.wake()``, as the daemon does for urgent outcomes.

Prints JSON: outcomes, rate_per_s, p50_ms, p90_ms, p99_ms, max_ms, api_calls,
load_average.
Targets: p50 <= 2 ms, p99 <= 10 ms.

    .venv/bin/python bench/live_latency.py [--outcomes N] [--rate R] [--inproc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _simproc import client_kwargs, seed_leads, sim_process

from daemon.logging import configure_logging
from daemon.mapping import load_mapping
from daemon.rails import Rails
from daemon.rails._rest import SENDING
from daemon.salesforce import QuotaView, SalesforceClient
from spool import CallOutcome, open_spool


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run(
    n: int, rate: float, synchronous: str = "FULL", sim_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Feed ``n`` live outcomes at ``rate``/s; sfsim in-process unless ``sim_info`` names one."""
    async with contextlib.AsyncExitStack() as stack:
        if sim_info is None:
            from sfsim import SimOrg

            sim = await stack.enter_async_context(SimOrg(port=0))
            store = sim.org.store
            leads = [
                store.insert("Lead", {"LastName": f"L{i}", "Company": "Acme"}) for i in range(200)
            ]
            info = sim.info
        else:
            info = sim_info
            leads = seed_leads(info, 200)
        return await _measure(n, rate, synchronous, info, leads)
    raise AssertionError("unreachable")  # pragma: no cover


async def _measure(
    n: int, rate: float, synchronous: str, info: dict[str, Any], leads: list[str]
) -> dict[str, Any]:
    committed: dict[str, float] = {}
    latency: dict[str, float] = {}
    all_sent = asyncio.Event()

    def on_send(rail: str, method: str, kind: str) -> None:
        if rail != "live":
            return
        now = time.perf_counter()
        for key in SENDING.get():
            if key in committed and key not in latency:
                latency[key] = now - committed[key]
        if len(latency) >= n:
            all_sent.set()

    with tempfile.TemporaryDirectory() as tmp:
        async with (
            open_spool(Path(tmp) / "spool.db", synchronous=synchronous) as spool,
            SalesforceClient(
                **client_kwargs(info),
                quota=QuotaView(reserve=0.0, max_share=1.0),
                on_send=on_send,
            ) as sf,
        ):
            rails = Rails(spool=spool, client=sf, mapping=load_mapping(None))
            stop = asyncio.Event()
            t0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(rails.run(stop))
                # Token and /limits first (the first send would include the login).
                async with asyncio.timeout(30):
                    while not sf.quota.calls_by_rail:  # noqa: ASYNC110 - polled, deadline
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)
                start = time.perf_counter()
                for i in range(n):
                    due = start + i / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    o = CallOutcome.model_validate(
                        {
                            "source": "bench",
                            "call_id": f"live{i}",
                            "disposition": "connected",
                            "ended_at": t0 + timedelta(seconds=i),
                            "duration_s": 60,
                            "lead": {"id": leads[i % len(leads)]},
                            "live": True,
                        }
                    )
                    await spool.put(o)
                    committed[o.external_key] = time.perf_counter()
                    rails.wake()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_sent.wait(), 30)
                stop.set()
            calls = sf.quota.calls_by_rail.get("live", 0)
    ms = [v * 1000 for v in latency.values()]
    return {
        "outcomes": n,
        "measured": len(ms),
        "rate_per_s": rate,
        "spool_synchronous": synchronous,
        "p50_ms": round(_pct(ms, 0.50), 3),
        "p90_ms": round(_pct(ms, 0.90), 3),
        "p99_ms": round(_pct(ms, 0.99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "api_calls": calls,
        "meets_target": _pct(ms, 0.5) <= 2.0 and _pct(ms, 0.99) <= 10.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="spool durability (FULL: every claim/ack commit is fsynced, the daemon default)",
    )
    parser.add_argument(
        "--inproc",
        action="store_true",
        help="run sfsim in this process (its request handling then shares the daemon's loop "
        "and shows up as daemon latency); default: its own process",
    )
    args = parser.parse_args(argv)
    configure_logging("logfmt", "warning", stream=sys.stderr)
    if args.inproc:
        result = asyncio.run(run(args.outcomes, args.rate, args.synchronous))
    else:
        with sim_process() as info:
            result = asyncio.run(run(args.outcomes, args.rate, args.synchronous, info))
    result["sfsim"] = "in-process" if args.inproc else "own process"
    result["load_average"] = os.getloadavg()
    print(json.dumps(result))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
