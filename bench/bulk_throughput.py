"""Bulk rail throughput: N pending outcomes flushed by the Bulk rail to sfsim, CPU and memory.

sfsim runs in its own process (``python -m sfsim``, no rate limit: its fastest),
so the CPU measured here is the daemon side only: spool reads (SQLite thread
included), mapping, CSV encoding, upload, polling and per-record reconciliation.
The spool is filled by a child process before measuring, so the peak RSS is the
flush's own. Prints JSON:

    records, seconds, client_cpu_s (loop_thread_cpu_s + spool_threads_cpu_s),
    records_per_client_cpu_s, peak_rss_mb, peak_rss_mb_at_100k,
    rss_growth_100k_to_end_mb, api_calls, bulk_jobs, sim_stats, load_average

Targets: >= 100,000 records per client CPU second, peak RSS <= 250 MB, and at
most 50 MB more at 1M than at 100k.

    .venv/bin/python bench/bulk_throughput.py [--records N] [--leads N] [--job-records N]
        [--profile FILE]   # cProfile of the flush (the event loop thread)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _simproc import client_kwargs, seed_leads, sim_process, sim_stats

from daemon.logging import configure_logging
from daemon.mapping import load_mapping
from daemon.rails import Rails
from daemon.salesforce import QuotaView, SalesforceClient
from spool import CallOutcome, open_spool

DISPOSITIONS = ["no_answer", "voicemail", "busy", "connected", "abandoned", "invalid_number"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def fill(db: Path, records: int, lead_ids: list[str]) -> None:
    """Child process: put ``records`` non-urgent outcomes into the spool."""
    t0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
    async with open_spool(db, synchronous="NORMAL", max_pending=records + 10) as spool:
        chunk: list[CallOutcome] = []
        for i in range(records):
            ended = t0 + timedelta(seconds=i * 0.05)
            chunk.append(
                CallOutcome.model_validate(
                    {
                        "source": "bench",
                        "call_id": f"b{i:08d}",
                        "disposition": DISPOSITIONS[i % len(DISPOSITIONS)],
                        "ended_at": ended,
                        "started_at": ended - timedelta(seconds=35),
                        "duration_s": 35,
                        "lead": {"id": lead_ids[(i * 7919) % len(lead_ids)]},
                        "agent_id": f"agent{i % 40}",
                    }
                )
            )
            if len(chunk) >= 5000:
                await spool.put_many(chunk)
                chunk = []
        if chunk:
            await spool.put_many(chunk)


async def measure(info: dict[str, Any], db: Path, records: int, job_records: int) -> dict[str, Any]:
    rss_at_100k: list[float] = []
    async with (
        open_spool(db, synchronous="NORMAL", max_pending=records + 10) as spool,
        SalesforceClient(**client_kwargs(info), quota=QuotaView(reserve=0.0, max_share=1.0)) as sf,
    ):
        rails: Rails

        def on_event(name: str, fields: dict[str, Any]) -> None:
            if name == "sent" and not rss_at_100k and rails.bulk.stats.records >= 100_000:
                rss_at_100k.append(_rss_mb())

        rails = Rails(
            spool=spool,
            client=sf,
            mapping=load_mapping(None),
            bulk_min_records=1,
            bulk_max_records=1,
            bulk_job_max_records=job_records,
            on_event=on_event,
        )
        cpu0 = time.process_time()
        loop_cpu0 = time.thread_time()
        t0 = time.perf_counter()
        await rails.drain(timeout_s=3600)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        loop_cpu = time.thread_time() - loop_cpu0
        stats = await spool.stats()
        calls = dict(sf.quota.calls_by_rail)
    return {
        "records": records,
        "done": stats.done,
        "dead": stats.dead,
        "seconds": round(seconds, 1),
        "client_cpu_s": round(cpu, 2),
        # The event loop thread (rails, mapping, CSV, HTTP); the rest of client_cpu_s is
        # the spool's SQLite connection threads.
        "loop_thread_cpu_s": round(loop_cpu, 2),
        "spool_threads_cpu_s": round(cpu - loop_cpu, 2),
        "records_per_client_cpu_s": round(records / cpu) if cpu else None,
        "peak_rss_mb": round(_rss_mb(), 1),
        "peak_rss_mb_at_100k": round(rss_at_100k[0], 1) if rss_at_100k else None,
        "api_calls": calls,
        "bulk_jobs": rails.bulk.stats.jobs,
        "job_records": job_records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=20_000)
    # The Rails default (bulk_job_max_records): memory per batch is proportional to it.
    parser.add_argument("--job-records", type=int, default=50_000)
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the flush here")
    parser.add_argument("--fill", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lead-ids", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    configure_logging("logfmt", "warning", stream=sys.stderr)
    if args.fill is not None:
        lead_ids = json.loads(args.lead_ids.read_text())
        asyncio.run(fill(args.fill, args.records, lead_ids))
        return 0
    with sim_process() as info:
        lead_ids = seed_leads(info, args.leads)
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "spool.db"
            ids_file = Path(tmp) / "leads.json"
            ids_file.write_text(json.dumps(lead_ids))
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--fill",
                    str(db),
                    "--lead-ids",
                    str(ids_file),
                    "--records",
                    str(args.records),
                ],
                check=True,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            )
            if args.profile is not None:
                import cProfile

                with cProfile.Profile() as prof:
                    result = asyncio.run(measure(info, db, args.records, args.job_records))
                prof.dump_stats(str(args.profile))
            else:
                result = asyncio.run(measure(info, db, args.records, args.job_records))
        stats = sim_stats(info)
        result["sim_stats"] = {k: v for k, v in stats.items() if k in ("records", "api_calls")}
    result["load_average"] = os.getloadavg()
    rate = result["records_per_client_cpu_s"] or 0
    growth = (
        result["peak_rss_mb"] - result["peak_rss_mb_at_100k"]
        if result["peak_rss_mb_at_100k"] is not None
        else None
    )
    result["rss_growth_100k_to_end_mb"] = None if growth is None else round(growth, 1)
    result["meets_target"] = bool(
        rate >= 100_000 and result["peak_rss_mb"] <= 250 and (growth is None or growth <= 50)
    )
    print(json.dumps(result))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
