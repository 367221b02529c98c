"""Memory follows stored records only: repeated requests that store nothing grow nothing."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from sfsim.app import SimApp
from sfsim.bulk import BulkPlugin
from sfsim.org import Org


async def _call(
    app: SimApp, token: str, method: str, path: str, body: bytes = b"", query: bytes = b""
) -> int:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "client": ("127.0.0.1", 9),
        "headers": [
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
        ],
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def test_repeated_requests_do_not_grow_memory() -> None:
    """Thousands of reads, updates, upserts of one key and queries leave memory flat."""
    org = Org()
    org.instance_url = "http://127.0.0.1:1"
    app = SimApp(org)
    token = org.tokens.issue(org.user_id, "test")
    lead = org.store.insert("Lead", {"LastName": "M", "Company": "C", "Phone": "555"})
    base = "/services/data/v62.0"
    upsert = json.dumps({"Subject": "Call", "WhoId": lead}).encode()
    q = b"q=SELECT+Id+FROM+Lead+WHERE+Phone+%3D+%27555%27"

    async def round_() -> None:
        assert await _call(app, token, "GET", f"{base}/sobjects/Lead/{lead}") == 200
        assert (
            await _call(app, token, "PATCH", f"{base}/sobjects/Lead/{lead}", b'{"Title": "x"}')
            == 204
        )
        assert await _call(app, token, "PATCH", f"{base}/sobjects/Task/Call_Id__c/k-1", upsert) in (
            200,
            201,
        )
        assert await _call(app, token, "GET", f"{base}/query", query=q) == 200
        assert await _call(app, token, "GET", f"{base}/nope/{lead}") == 404

    for _ in range(200):
        await round_()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(600):
            await round_()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert growth < 64 * 1024, f"grew {growth} bytes over 3,000 requests"
    assert org.store.counts()["Task"] == 1 and org.store.counts()["Lead"] == 1


async def test_bulk_jobs_keep_only_compact_outcomes() -> None:
    """Bulk jobs over the same records grow nothing once deleted; a kept job holds a few bytes
    per row (status and id reference) to serve its result files, never the rows themselves."""
    org = Org()
    plugin = next(p for p in org.plugins if p.name == "bulk")
    assert isinstance(plugin, BulkPlugin)
    engine = plugin.engine
    rows = 1000
    data = (
        "Dialer_Lead_Id__c,LastName,Company,Title\n"
        + "".join(f"M-{i},Last{i},Co,Title {i % 7}\n" for i in range(rows))
    ).encode()

    async def body() -> AsyncIterator[bytes]:
        yield data

    async def job(keep: bool) -> None:
        spec = {"object": "Lead", "operation": "upsert", "externalIdFieldName": "Dialer_Lead_Id__c"}
        j = engine.create_job(spec, api_version="62.0", user_id=org.user_id)
        await engine.upload(j.id, body())
        engine.close(j.id)
        await asyncio.wait_for(engine.wait(j.id), 60)
        assert j.records_processed == rows and not j.records_failed
        assert sum(c.count("\n") for c in engine.result_chunks(j.id, "successful")) == rows + 1
        if not keep:
            engine.delete(j.id)

    task = asyncio.create_task(engine.run())
    await engine.started()
    # Traced from the start: the records the jobs rewrite must be traced before and after.
    tracemalloc.start()
    try:
        try:
            for _ in range(2):  # creates the records, then warms every cache
                await job(keep=False)
            gc.collect()
            before = tracemalloc.take_snapshot()
            for _ in range(3):
                await job(keep=False)
            gc.collect()
            middle = tracemalloc.take_snapshot()
            await job(keep=True)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    deleted_growth = sum(s.size_diff for s in middle.compare_to(before, "filename"))
    kept_growth = sum(s.size_diff for s in after.compare_to(middle, "filename"))
    # One job kept by mistake would hold over 10 KB (below), so three deleted ones show.
    assert deleted_growth < 10 * 1024, f"grew {deleted_growth} bytes over 3 deleted jobs"
    assert kept_growth < rows * 16 + 8 * 1024, f"a kept job holds {kept_growth} bytes"
    assert org.store.counts()["Lead"] == rows
