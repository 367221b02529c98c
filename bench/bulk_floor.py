"""Bulk rail CPU floor: what the irreducible steps of any Bulk flush cost per record here.

``bulk_throughput.py`` measures the Bulk rail as built. This measures what no Bulk
pipeline in this stack (Python, the sqlite3 module, httpx) can avoid, each step alone
on N outcomes stored as the spool stores them, with nothing else around it:

- the two state changes a record goes through in the spool's real schema (claimed,
  then done), as one UPDATE per 50,000 consecutive ids, with and without the per-row
  counts trigger, and as the spool does them now (ids as a JSON list, 5,000 per claim);
- one Task CSV line per record from its stored JSON, in Python (``json.loads`` and
  one f-string) and in SQL (``json_extract``), and in SQL from the same fields kept in
  columns of their own (a layout the spool does not have);
- parsing Salesforce's result file (``sf__Id``, ``sf__Created`` and the columns) for
  each record's key;
- uploading the CSV and downloading the results with httpx over loopback.

``floor_us`` adds the cheapest form of each for the spool's layout, without the counts
trigger (``floor_us_with_count_trigger``: with it; ``floor_us_columns``: fields in
columns); ``ceiling_records_per_client_cpu_s`` is what a pipeline doing nothing else
would reach. Lead rows, reconciliation, newest-wins and the rest of the daemon's work
come on top.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from spool import CallOutcome
from spool._schema import migrate

DISPOSITIONS = ["no_answer", "busy", "voicemail", "connected", "wrong_number"]
RANGE = 50_000  # ids per range UPDATE (a Bulk job's size)
PAGE = 5_000  # ids per JSON-list UPDATE (the Bulk rail's claim page)

# The outcome fields a Task line needs, by their path in the stored JSON.
FIELDS = {
    "source": "$.source",
    "call_id": "$.call_id",
    "disposition": "$.disposition",
    "ended_at": "$.ended_at",
    "lead_id": "$.lead.id",
    "direction": "$.direction",
    "duration_s": "$.duration_s",
    "notes": "$.notes",
}


def sql_line(table: str, field: Callable[[str], str]) -> str:
    """One Task line as the built-in mapping writes it (key, Subject, Status, ActivityDate,
    WhoId, CallType, CallDisposition, CallDurationInSeconds, CallObject, Description,
    TaskSubtype), each field read by ``field(name)``."""
    return (
        f"SELECT '\"' || {field('source')} || ':' || {field('call_id')} || '\",\"' ||"
        f" replace('Call: ' || {field('disposition')}, '\"', '\"\"') || '\",Completed,' ||"
        f" substr({field('ended_at')}, 1, 10) || ',' || {field('lead_id')} || ',' ||"
        f" CASE {field('direction')} WHEN 'inbound' THEN 'Inbound' ELSE 'Outbound' END || ','"
        f" || {field('disposition')} || ',' || ifnull({field('duration_s')}, '') || ',\"' ||"
        f" {field('call_id')} || '\",\"' || replace(ifnull({field('notes')}, ''), '\"',"
        f" '\"\"') || '\",Call' FROM {table} WHERE id BETWEEN ? AND ?"
    )


# Answers every PUT with 201 and every GET with a result file of ``lines`` lines.
_SERVER = r"""
import asyncio, sys
LINE = b'"00T000000000001AAA","true","bench:b00000001","Call: busy",Completed,' + b'x' * 80 + b'\n'
BODY = LINE * int(sys.argv[2])
async def handle(reader, writer):
    while request := await reader.readline():
        length = 0
        while (header := await reader.readline()) not in (b'\r\n', b''):
            name, _, value = header.decode().partition(':')
            if name.strip().lower() == 'content-length':
                length = int(value)
        while length:
            length -= len(await reader.read(min(length, 1 << 20)))
        body = BODY if request.startswith(b'GET') else b''
        status = b'200 OK' if body else b'201 Created'
        writer.write(b'HTTP/1.1 %s\r\ncontent-length: %d\r\n\r\n' % (status, len(body)) + body)
        await writer.drain()
async def main():
    server = await asyncio.start_server(handle, '127.0.0.1', int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def cpu_us(records: int, fn: Callable[[], object]) -> float:
    """Process CPU per record of ``fn()``, in microseconds."""
    start = time.process_time()
    fn()
    return round((time.process_time() - start) / records * 1e6, 2)


def payloads(records: int) -> list[str]:
    """Stored payloads shaped as bulk_throughput.py's outcomes."""
    t0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
    base = CallOutcome.model_validate(
        {
            "source": "bench",
            "call_id": "b0",
            "disposition": "busy",
            "ended_at": t0,
            "started_at": t0 - timedelta(seconds=35),
            "duration_s": 35,
            "lead": {"id": "00Q000000000001AAA"},
            "agent_id": "agent1",
        }
    )
    shape = json.loads(base.to_stored_json())
    out = []
    for i in range(records):
        ended = t0 + timedelta(seconds=i * 0.05)
        out.append(
            json.dumps(
                {
                    **shape,
                    "call_id": f"b{i:08d}",
                    "disposition": DISPOSITIONS[i % len(DISPOSITIONS)],
                    "ended_at": ended.isoformat().replace("+00:00", "Z"),
                    "started_at": (ended - timedelta(seconds=35))
                    .isoformat()
                    .replace("+00:00", "Z"),
                    "lead": {"id": f"00Q{(i * 7919) % 20000:012d}AAA"},
                    "agent_id": f"agent{i % 40}",
                },
                separators=(",", ":"),
            )
        )
    return out


def spool_db(path: Path, stored: list[str]) -> sqlite3.Connection:
    """A spool file in the current schema holding these payloads, all pending."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    migrate(con)
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO outcomes (source, call_id, state, rail, urgent, lead_key, ord_version,"
        " ord_seq, ord_ts, rev, next_attempt_at, queued_at, created_at, updated_at, payload)"
        " VALUES ('bench', ?, 0, '', 0, ?, 1, 0, ?, 1, 0, 0, 0, 0, ?)",
        (
            (f"b{i:08d}", f"id:00Q{(i * 7919) % 20000:012d}", 1.7e9 + i * 0.05, p)
            for i, p in enumerate(stored)
        ),
    )
    con.execute("DELETE FROM counts WHERE state <> 9")
    con.execute(
        "INSERT INTO counts (state, rail, n) SELECT state, rail, count(*) FROM outcomes"
        " GROUP BY state, rail"
    )
    con.execute("COMMIT")
    return con


def state_changes(con: sqlite3.Connection, records: int, *, by_range: bool) -> dict[str, float]:
    """CPU per record of claiming every record, then marking every one done."""
    claim = (
        "UPDATE outcomes SET state = 1, rail = 'bulk', lease_until = 1e10,"
        " attempt = attempt + 1, claims = claims + 1, updated_at = 1"
    )
    done = "UPDATE outcomes SET state = 2, lease_until = NULL, updated_at = 2"
    step = RANGE if by_range else PAGE
    out = {}
    for name, sql, was in (("claim_us", claim, 0), ("ack_us", done, 1)):
        changed = 0

        def run(sql: str = sql, was: int = was) -> None:
            nonlocal changed
            for lo in range(1, records + 1, step):
                con.execute("BEGIN")
                if by_range:
                    where, args = "id BETWEEN ? AND ?", (lo, lo + step - 1)
                else:
                    ids = json.dumps(list(range(lo, min(lo + step, records + 1))))
                    where, args = "id IN (SELECT value FROM json_each(?))", (ids,)
                changed += con.execute(f"{sql} WHERE {where} AND state = {was}", args).rowcount
                con.execute("COMMIT")

        out[name] = cpu_us(records, run)
        if changed != records:
            raise RuntimeError(f"{name}: {changed} of {records} records changed state")
    return out


def csv_lines(con: sqlite3.Connection, records: int) -> tuple[dict[str, float], list[str]]:
    lines: list[str] = []

    def python() -> None:
        for (payload,) in con.execute("SELECT payload FROM outcomes ORDER BY id"):
            d = json.loads(payload)
            key = f"{d['source']}:{d['call_id']}"
            lines.append(
                f'"{key}","Call: {d["disposition"]}",Completed,{d["ended_at"][:10]},'
                f"{d['lead']['id']},Outbound,{d['disposition']},{d.get('duration_s', '')},"
                f'"{d["call_id"]}","",Call'
            )

    def sql(query: str) -> Callable[[], None]:
        def run() -> None:
            for lo in range(1, records + 1, RANGE):
                for _ in con.execute(query, (lo, lo + RANGE - 1)):
                    pass

        return run

    from_json = sql_line("outcomes", lambda name: f"json_extract(payload, '{FIELDS[name]}')")
    # The same fields kept in columns of their own (not the spool's layout): no JSON to read.
    con.execute(
        "CREATE TEMP TABLE columns AS SELECT id, "
        + ", ".join(f"json_extract(payload, '{path}') AS {name}" for name, path in FIELDS.items())
        + " FROM outcomes"
    )
    from_columns = sql_line("columns", lambda name: name)
    return {
        "csv_python_us": cpu_us(records, python),
        "csv_sql_us": cpu_us(records, sql(from_json)),
        "csv_sql_columns_us": cpu_us(records, sql(from_columns)),
    }, lines


def result_parse_us(lines: list[str]) -> float:
    """A successfulResults file for these lines, parsed for each record's key."""
    text = "\n".join(f'"00T{i:015d}","true",{line}' for i, line in enumerate(lines)) + "\n"
    keys: set[str] = set()

    def run() -> None:
        for row in csv.reader(io.StringIO(text)):
            keys.add(row[2])

    return cpu_us(len(lines), run)


async def http_us(lines: list[str]) -> float:
    """Upload the CSV in job-sized pieces and download a result file of each piece's size."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVER, str(port), str(RANGE)
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    await client.get("/ping")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            start = time.process_time()
            for lo in range(0, len(lines), RANGE):
                piece = ("\n".join(lines[lo : lo + RANGE]) + "\n").encode()

                async def chunks(piece: bytes = piece) -> AsyncIterator[bytes]:
                    for at in range(0, len(piece), 1 << 16):
                        yield piece[at : at + (1 << 16)]

                headers = {"content-type": "text/csv", "content-length": str(len(piece))}
                (await client.put("/upload", content=chunks(), headers=headers)).raise_for_status()
                (await client.get("/results")).raise_for_status()
            return round((time.process_time() - start) / len(lines) * 1e6, 2)
    finally:
        server.kill()
        await server.wait()


def measure(records: int) -> dict[str, Any]:
    stored = payloads(records)
    result: dict[str, Any] = {"records": records}
    with tempfile.TemporaryDirectory() as tmp:
        con = spool_db(Path(tmp) / "ranges.db", stored)
        result["state_by_range"] = state_changes(con, records, by_range=True)
        con.close()
        con = spool_db(Path(tmp) / "ranges_no_trigger.db", stored)
        con.execute("DROP TRIGGER outcomes_count_update")
        result["state_by_range_no_count_trigger"] = state_changes(con, records, by_range=True)
        con.close()
        con = spool_db(Path(tmp) / "id_lists.db", stored)
        result["state_by_id_list"] = state_changes(con, records, by_range=False)
        csv_cost, lines = csv_lines(con, records)
        con.close()
    del stored
    result.update(csv_cost)
    result["result_parse_us"] = result_parse_us(lines)
    result["http_us"] = asyncio.run(http_us(lines))
    moving = result["result_parse_us"] + result["http_us"]
    json_csv = min(result["csv_python_us"], result["csv_sql_us"])
    no_trigger = sum(result["state_by_range_no_count_trigger"].values())
    result["floor_us"] = round(no_trigger + json_csv + moving, 2)
    result["floor_us_with_count_trigger"] = round(
        sum(result["state_by_range"].values()) + json_csv + moving, 2
    )
    result["floor_us_columns"] = round(no_trigger + result["csv_sql_columns_us"] + moving, 2)
    result["ceiling_records_per_client_cpu_s"] = round(1e6 / result["floor_us"])
    result["ceiling_columns_records_per_client_cpu_s"] = round(1e6 / result["floor_us_columns"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
