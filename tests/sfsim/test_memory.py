"""Memory follows stored records only: repeated requests that store nothing grow nothing."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import MutableMapping
from typing import Any

from sfsim.app import SimApp
from sfsim.org import Org


async def _call(app: SimApp, token: str, method: str, path: str, body: bytes = b"",
                query: bytes = b"") -> int:
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": query, "client": ("127.0.0.1", 9),
             "headers": [(b"authorization", f"Bearer {token}".encode()),
                         (b"content-type", b"application/json")]}
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
        assert await _call(app, token, "PATCH", f"{base}/sobjects/Lead/{lead}",
                           b'{"Title": "x"}') == 204
        assert await _call(app, token, "PATCH", f"{base}/sobjects/Task/Call_Id__c/k-1",
                           upsert) in (200, 201)
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
