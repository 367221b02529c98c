"""Benchmark: simple REST requests per second against sfsim (the emulated org).

Starts ``python -m sfsim --print-json`` in its own process (uvicorn + httptools + uvloop), unless
``--instance-url`` points at a running one, then drives it from ``--procs`` load processes for
``--seconds``: a mix of record reads, upserts by external id and creates. Prints one JSON line:
{"requests", "requests_per_s", "errors", "seconds", "concurrency", "mix", "load_avg"}, plus
"server_cpu_s", "server_busy" (the fraction of one core the sim used) and
"requests_per_server_cpu_s" when the bench started the sim itself.

The load generator shares the machine's cores with the server (and with whatever else runs), so
``requests_per_s`` is a floor for the server alone. The default client (``--client raw``) is a
minimal keep-alive HTTP/1.1 client on asyncio streams, cheap enough that two load processes keep
the sim busy (``server_busy`` near 1): the figure is then the sim's own. ``--client httpx`` drives
the same mix with httpx, which costs several times more CPU per request than the sim does, so
on a 2-core machine it measures httpx more than the sim. ``requests_per_server_cpu_s`` (requests
over the CPU seconds the sim's process spent while the load ran, read from /proc) is what one
core serves: the honest figure on a shared machine.

    .venv/bin/python bench/sfsim_rest.py [--seconds 5] [--concurrency 48] [--procs 2]
                                         [--client raw|httpx] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

VERSION = "62.0"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process ``pid`` has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is fields[0]; utime and stime are stat fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def _spawn_sim() -> AsyncIterator[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sfsim",
        "--print-json",
        "--api-limit",
        "100000000",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        if not line:
            raise RuntimeError("sfsim did not start")
        info = json.loads(line)
        info["_pid"] = proc.pid
        yield info
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _run(
    info: dict[str, Any], seconds: float, clients: int, concurrency: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(30.0)
    async with httpx.AsyncClient(timeout=timeout) as bare:
        r = await bare.post(
            info["token_url"],
            data={
                "grant_type": "client_credentials",
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
            },
        )
        r.raise_for_status()
        token = r.json()["access_token"]
    base = f"{info['instance_url']}/services/data/v{VERSION}/"
    headers = {"Authorization": f"Bearer {token}"}
    pool = [
        httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=timeout)
        for _ in range(clients)
    ]
    counter = itertools.count()
    stats = {"requests": 0, "errors": 0}
    try:
        seed = await pool[0].post("sobjects/Lead/", json={"LastName": "Bench", "Company": "B"})
        lead_id = seed.json()["id"]
        deadline = time.monotonic() + seconds

        async def worker(client: httpx.AsyncClient) -> None:
            while time.monotonic() < deadline:
                n = next(counter)
                kind = n % 4
                if kind in (0, 1):
                    r = await client.get(f"sobjects/Lead/{lead_id}")
                    ok = r.status_code == 200
                elif kind == 2:
                    r = await client.patch(
                        f"sobjects/Task/Call_Id__c/bench-{n % 5000}",
                        json={"Subject": "Call", "WhoId": lead_id, "CallDisposition": "Busy"},
                    )
                    ok = r.status_code in (200, 201)
                else:
                    r = await client.patch(
                        f"sobjects/Lead/{lead_id}", json={"Last_Call_Outcome__c": "busy"}
                    )
                    ok = r.status_code == 204
                stats["requests"] += 1
                if not ok:
                    stats["errors"] += 1

        start = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for i in range(concurrency):
                tg.create_task(worker(pool[i % clients]))
        elapsed = time.monotonic() - start
    finally:
        for client in pool:
            await client.aclose()
    return {
        "requests": stats["requests"],
        "requests_per_s": round(stats["requests"] / elapsed, 1),
        "errors": stats["errors"],
        "seconds": round(elapsed, 2),
        "concurrency": concurrency,
        "mix": "50% GET record, 25% PATCH upsert Task by Call_Id__c, 25% PATCH Lead",
    }


_CONTENT_LENGTH = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)


async def _run_raw(info: dict[str, Any], seconds: float, concurrency: int) -> dict[str, Any]:
    """The same mix over plain keep-alive HTTP/1.1 connections (no client library)."""
    host, port = info["instance_url"].split("//", 1)[1].rsplit(":", 1)

    async def roundtrip(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        m = _CONTENT_LENGTH.search(head)
        body = await reader.readexactly(int(m.group(1))) if m else b""
        return int(head[9:12]), body

    def req(
        method: str,
        path: str,
        token: str | None,
        body: bytes = b"",
        ctype: bytes = b"application/json",
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + host.encode()]
        if token:
            lines.append(f"Authorization: Bearer {token}".encode())
        if body:
            lines += [b"Content-Type: " + ctype, f"Content-Length: {len(body)}".encode()]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    reader, writer = await asyncio.open_connection(host, int(port))
    form = (
        f"grant_type=client_credentials&client_id={info['client_id']}"
        f"&client_secret={info['client_secret']}"
    ).encode()
    _, body = await roundtrip(
        reader,
        writer,
        req("POST", "/services/oauth2/token", None, form, b"application/x-www-form-urlencoded"),
    )
    token = json.loads(body)["access_token"]
    base = f"/services/data/v{VERSION}"
    _, body = await roundtrip(
        reader,
        writer,
        req("POST", f"{base}/sobjects/Lead/", token, b'{"LastName":"Bench","Company":"B"}'),
    )
    lead_id = json.loads(body)["id"]
    writer.close()
    counter = itertools.count()
    stats = {"requests": 0, "errors": 0}
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        r, w = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < deadline:
                n = next(counter)
                kind = n % 4
                if kind in (0, 1):
                    status, _ = await roundtrip(
                        r, w, req("GET", f"{base}/sobjects/Lead/{lead_id}", token)
                    )
                    ok = status == 200
                elif kind == 2:
                    payload = json.dumps(
                        {"Subject": "Call", "WhoId": lead_id, "CallDisposition": "Busy"}
                    ).encode()
                    status, _ = await roundtrip(
                        r,
                        w,
                        req(
                            "PATCH",
                            f"{base}/sobjects/Task/Call_Id__c/bench-{n % 5000}",
                            token,
                            payload,
                        ),
                    )
                    ok = status in (200, 201)
                else:
                    status, _ = await roundtrip(
                        r,
                        w,
                        req(
                            "PATCH",
                            f"{base}/sobjects/Lead/{lead_id}",
                            token,
                            b'{"Last_Call_Outcome__c":"busy"}',
                        ),
                    )
                    ok = status == 204
                stats["requests"] += 1
                if not ok:
                    stats["errors"] += 1
        finally:
            w.close()

    start = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    elapsed = time.monotonic() - start
    return {
        "requests": stats["requests"],
        "requests_per_s": round(stats["requests"] / elapsed, 1),
        "errors": stats["errors"],
        "seconds": round(elapsed, 2),
        "concurrency": concurrency,
        "client": "raw",
        "mix": "50% GET record, 25% PATCH upsert Task by Call_Id__c, 25% PATCH Lead",
    }


async def _drive(info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if args.client == "raw":
        return await _run_raw(info, args.seconds, args.concurrency)
    result = await _run(info, args.seconds, args.clients, args.concurrency)
    result["client"] = "httpx"
    return result


async def _fan_out(info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Run the load from ``--procs`` processes (one event loop each) and add their results."""
    per_proc = max(args.concurrency // args.procs, 1)
    cmd = [
        sys.executable,
        __file__,
        "--procs",
        "1",
        "--seconds",
        str(args.seconds),
        "--clients",
        str(max(args.clients // args.procs, 1)),
        "--concurrency",
        str(per_proc),
        "--client",
        args.client,
        "--instance-url",
        info["instance_url"],
        "--client-id",
        info["client_id"],
        "--client-secret",
        info["client_secret"],
    ]
    procs = [
        await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
        for _ in range(args.procs)
    ]
    outs = await asyncio.gather(*(p.communicate() for p in procs))
    results = [json.loads(out) for out, _ in outs]
    merged = dict(results[0])
    merged["requests"] = sum(r["requests"] for r in results)
    merged["errors"] = sum(r["errors"] for r in results)
    merged["requests_per_s"] = round(sum(r["requests_per_s"] for r in results), 1)
    merged["concurrency"] = per_proc * args.procs
    merged["procs"] = args.procs
    return merged


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    if args.instance_url:
        info = {
            "instance_url": args.instance_url,
            "token_url": f"{args.instance_url}/services/oauth2/token",
            "client_id": args.client_id,
            "client_secret": args.client_secret,
        }
        return await (_fan_out(info, args) if args.procs > 1 else _drive(info, args))
    async with _spawn_sim() as info:
        pid = info["_pid"]
        cpu_before = _cpu_seconds(pid)
        result = await (_fan_out(info, args) if args.procs > 1 else _drive(info, args))
        # Includes each load process's token request and seed record: a slight overcount.
        server_cpu = _cpu_seconds(pid) - cpu_before
    result["server_cpu_s"] = round(server_cpu, 2)
    result["server_busy"] = round(server_cpu / result["seconds"], 2)
    per_cpu = round(result["requests"] / server_cpu) if server_cpu else None
    result["requests_per_server_cpu_s"] = per_cpu
    return result


def main() -> int:
    p = argparse.ArgumentParser(description="Simple REST requests per second against sfsim.")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to drive load")
    p.add_argument("--clients", type=int, default=4, help="httpx clients (connection pools)")
    p.add_argument("--concurrency", type=int, default=48, help="requests in flight")
    p.add_argument(
        "--procs",
        type=int,
        default=2,
        help="load-generator processes (spread client CPU over more cores)",
    )
    p.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator: a minimal HTTP/1.1 client, or httpx clients",
    )
    p.add_argument("--instance-url", help="use a running sim instead of starting one")
    p.add_argument("--client-id", help="with --instance-url: the sim's client_id")
    p.add_argument("--client-secret", help="with --instance-url: the sim's client_secret")
    args = p.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(_main(args))
    result["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
