"""Benchmark: one Bulk API 2.0 upsert job of 200,000 Task rows through sfsim at full speed.

Prints one JSON line: ``{"records", "records_per_s", "peak_rss_mb", ...}``. ``records_per_s`` is
records divided by the job's own processing time (UploadComplete to JobComplete, what
``totalProcessingTime`` reports); ``upload_s`` and ``results_s`` time the PUT and the
successfulResults download. ``peak_rss_mb`` is the process's peak resident set size, which
includes the 200,000 stored records.

The sim runs in this process; while the job is processed the client only polls the job every
0.2 s, so the process's CPU time over that span is the server's: ``server_cpu_s``, and
``records_per_server_cpu_s`` (what one uncontended core does; on a shared machine the wall-clock
figure varies with the load, reported as ``load_avg``).

Usage: ``.venv/bin/python bench/sfsim_bulk.py [--records N] [--rate R]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import AsyncIterator

import httpx

from sfsim.server import SimOrg


def _csv(records: int, leads: int) -> bytes:
    lines = [
        "Call_Id__c,Subject,Status,CallType,CallDurationInSeconds,CallDisposition,"
        "ActivityDate,Lead:Who.Dialer_Lead_Id__c"
    ]
    for i in range(records):
        lines.append(
            f"bench:{i},Call,Completed,Outbound,{i % 900},Answered,2026-01-{1 + i % 28:02d},"
            f"L-{i % leads}"
        )
    return ("\n".join(lines) + "\n").encode()


async def _body(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def main(records: int, rate: float | None) -> dict[str, float | int]:
    async with SimOrg(port=0, bulk_rate=rate) as org:
        info = org.info
        async with httpx.AsyncClient(base_url=info["instance_url"], timeout=300) as client:
            token = (
                await client.post(
                    info["token_url"],
                    data={
                        "grant_type": "client_credentials",
                        "client_id": info["client_id"],
                        "client_secret": info["client_secret"],
                    },
                )
            ).json()["access_token"]
            client.headers["Authorization"] = f"Bearer {token}"
            leads = 1000
            for start in range(0, leads, 200):
                batch = [
                    {
                        "attributes": {"type": "Lead"},
                        "LastName": f"L{i}",
                        "Company": "Bench",
                        "Dialer_Lead_Id__c": f"L-{i}",
                    }
                    for i in range(start, min(start + 200, leads))
                ]
                r = await client.post(
                    "/services/data/v62.0/composite/sobjects",
                    json={"allOrNone": True, "records": batch},
                )
                r.raise_for_status()
            data = _csv(records, leads)
            base = "/services/data/v62.0/jobs/ingest"
            job = (
                await client.post(
                    base,
                    json={
                        "object": "Task",
                        "operation": "upsert",
                        "externalIdFieldName": "Call_Id__c",
                    },
                )
            ).json()
            began = time.perf_counter()
            r = await client.put(
                f"{base}/{job['id']}/batches",
                content=_body(data),
                headers={"Content-Type": "text/csv"},
            )
            r.raise_for_status()
            upload_s = time.perf_counter() - began
            del data
            cpu_began = time.process_time()
            (
                await client.patch(f"{base}/{job['id']}", json={"state": "UploadComplete"})
            ).raise_for_status()
            async with asyncio.timeout(600):
                while True:
                    state = (await client.get(f"{base}/{job['id']}")).json()
                    if state["state"] in ("JobComplete", "Failed", "Aborted"):
                        break
                    await asyncio.sleep(0.2)
            cpu_s = time.process_time() - cpu_began
            if state["state"] != "JobComplete" or state["numberRecordsFailed"]:
                raise SystemExit(f"bench job did not complete cleanly: {state}")
            began = time.perf_counter()
            lines = 0
            async with client.stream("GET", f"{base}/{job['id']}/successfulResults/") as resp:
                async for chunk in resp.aiter_bytes():
                    lines += chunk.count(b"\n")
            results_s = time.perf_counter() - began
    processing_s = state["totalProcessingTime"] / 1000
    return {
        "records": records,
        "records_per_s": round(records / processing_s),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "processing_s": round(processing_s, 2),
        # The same records over this process's CPU time: what the box would do uncontended
        # (the machine is shared, so wall-clock figures vary run to run).
        "server_cpu_s": round(cpu_s, 2),
        "records_per_server_cpu_s": round(records / cpu_s),
        "upload_s": round(upload_s, 2),
        "results_s": round(results_s, 2),
        "result_rows": lines - 1,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=None, help="--bulk-rate (default: max)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.records, args.rate))))
    sys.exit(0)
