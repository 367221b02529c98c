"""Generic JSON webhook over real HTTP: HMAC/bearer auth, batches, limits, refusals, shutdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters._json_hook import sign_body
from adapters.webhook import build
from spool import Disposition, PutStatus, Spool, open_spool
from tests.adapters.hooks import hook_table, serving
from tests.keepalive import assert_connections_nodelay

SECRET = "s3cr3t-token"


def item(call_id: str = "c-1", **over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "call_id": call_id,
        "disposition": "voicemail",
        "ended_at": "2025-03-14T10:02:20Z",
        "phone": "+15125550199",
        "lead": {"external_key": "48213"},
    }
    out.update(over)
    return out


def signed(body: bytes) -> dict[str, str]:
    return {"X-Signature": sign_body(body, SECRET), "Content-Type": "application/json"}


async def test_signed_outcome_is_stored_then_duplicate_is_harmless(spool: Spool) -> None:
    """HMAC-signed outcome: 200 after commit; the retry answers 200 duplicate."""
    body = json.dumps(item()).encode()
    async with serving(spool, hook_table("json")) as (hook, client):
        r1 = await client.post("/outcomes", content=body, headers=signed(body))
        r2 = await client.post("/outcomes", content=body, headers=signed(body))
        assert (r1.status_code, r2.status_code) == (200, 200)
        assert (r1.json()["status"], r2.json()["status"]) == ("inserted", "duplicate")
        assert (hook.health().accepted, hook.health().duplicates) == (1, 1)
    o = (await spool.claim("t", 5))[0].outcome
    assert (o.source, o.disposition, o.lead.external_key if o.lead else None) == (
        "json",
        Disposition.VOICEMAIL,
        "48213",
    )


async def test_bearer_token_and_wrong_signature(spool: Spool) -> None:
    """A bearer token authenticates; a wrong signature is 401 and nothing is stored."""
    body = json.dumps(item()).encode()
    async with serving(spool, hook_table("json")) as (_, client):
        bad = await client.post("/outcomes", content=body, headers={"X-Signature": "sha256=00"})
        assert bad.status_code == 401
        assert (await spool.stats()).pending == 0
        ok = await client.post(
            "/outcomes", content=body, headers={"Authorization": f"Bearer {SECRET}"}
        )
        assert ok.status_code == 200


async def test_batch_with_a_bad_item_stores_the_rest_and_names_the_problem(spool: Spool) -> None:
    """A batch: good items are committed, the bad one is 422 by index and quarantined."""
    batch = [item("a"), item("b", ended_at="2025-03-14 10:02:20"), item("c", disposition="SALE")]
    body = json.dumps(batch).encode()
    table = hook_table("json", dispositions={"SALE": "connected"})
    async with serving(spool, table) as (_, client):
        r = await client.post("/outcomes", content=body, headers=signed(body))
        assert r.status_code == 422
        assert r.json()["accepted"] == 2 and r.json()["rejected"] == [1]
        assert r.json()["error"].startswith("[1].ended_at:")
    claims = await spool.claim("t", 10)
    got = {c.outcome.call_id: c.outcome for c in claims}
    assert set(got) == {"a", "c"}
    assert got["c"].disposition is Disposition.CONNECTED and got["c"].raw_disposition == "SALE"
    [row] = await spool.list_quarantine()
    assert json.loads(row.raw)["call_id"] == "b"


async def test_all_good_batch(spool: Spool) -> None:
    """A batch of valid outcomes answers 200 with one status per item."""
    body = json.dumps([item("a"), item("b")]).encode()
    async with serving(spool, hook_table("json")) as (_, client):
        r = await client.post("/outcomes", content=body, headers=signed(body))
        assert r.status_code == 200 and r.json() == {"results": ["inserted", "inserted"]}


async def test_malformed_json_is_400_and_quarantined(spool: Spool) -> None:
    """Not JSON: 400 naming the body; the raw bytes are kept for inspection."""
    body = b'{"call_id": "x",'
    async with serving(spool, hook_table("json")) as (_, client):
        r = await client.post("/outcomes", content=body, headers=signed(body))
        assert r.status_code == 400 and r.json()["error"].startswith("body: not valid JSON")
    [row] = await spool.list_quarantine()
    assert row.raw == body


async def test_other_source_is_refused(spool: Spool) -> None:
    """A sender cannot write records under another adapter's source."""
    body = json.dumps(item(source="vicidial")).encode()
    async with serving(spool, hook_table("json")) as (_, client):
        r = await client.post("/outcomes", content=body, headers=signed(body))
        assert r.status_code == 400 and "source" in r.json()["error"]


async def test_oversized_body_is_413(spool: Spool) -> None:
    """A body past max_body_bytes is refused before it is read whole; nothing kept."""
    body = json.dumps([item(f"c{i}", notes="x" * 500) for i in range(10)]).encode()
    assert len(body) > 4096
    async with serving(spool, hook_table("json", max_body_bytes=4096)) as (_, client):
        r = await client.post("/outcomes", content=body, headers=signed(body))
        assert r.status_code == 413

        async def chunks():  # type: ignore[no-untyped-def]
            yield body[:3000]
            yield body[3000:]

        r2 = await client.post("/outcomes", content=chunks(), headers=signed(body))
        assert r2.status_code == 413  # chunked, no Content-Length: counted while streaming
    assert (await spool.stats()).pending == 0


async def test_full_spool_answers_503_with_retry_after(tmp_path: Path) -> None:
    """When the spool refuses, the sender gets 503 + Retry-After and nothing is acked."""
    async with open_spool(tmp_path / "s.db", max_pending=1) as spool:
        async with serving(spool, hook_table("json")) as (hook, client):
            b1, b2 = (json.dumps(item(c)).encode() for c in ("a", "b"))
            assert (
                await client.post("/outcomes", content=b1, headers=signed(b1))
            ).status_code == 200
            r = await client.post("/outcomes", content=b2, headers=signed(b2))
            assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
            assert hook.health().refused == 1
        assert (await spool.stats()).pending == 1


async def test_stopping_answers_503(spool: Spool) -> None:
    """After stop() the intake answers 503 with Retry-After until the server is down."""
    adapter = build(hook_table("json"), spool)
    await adapter.start()
    await adapter.stop()
    body = json.dumps(item()).encode()
    transport = httpx.ASGITransport(app=adapter.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hook") as client:
        r = await client.post("/outcomes", content=body, headers=signed(body))
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    await adapter.run()  # returns at once: the server was told to exit
    assert adapter.health().state.value == "stopped"


async def test_refuses_to_start_without_auth(spool: Spool) -> None:
    """No secret and not trusted: start() refuses; trusted = true starts without one."""
    adapter = build({"type": "webhook", "preset": "json", "listen": "127.0.0.1:0"}, spool)
    with pytest.raises(ValueError, match="no secret configured"):
        await adapter.start()
    body = json.dumps(item()).encode()
    async with serving(spool, hook_table("json", secret=None, trusted=True)) as (_, client):
        assert (await client.post("/outcomes", content=body)).status_code == 200


async def test_result_statuses_cover_requeue(spool: Spool) -> None:
    """A newer version of an already-sent call is accepted again (requeued)."""
    async with serving(spool, hook_table("json")) as (_, client):
        b1 = json.dumps(item(source_seq=1)).encode()
        await client.post("/outcomes", content=b1, headers=signed(b1))
        claims = await spool.claim("t", 1)
        await spool.ack(claims)
        b2 = json.dumps(item(source_seq=2, disposition="connected")).encode()
        r = await client.post("/outcomes", content=b2, headers=signed(b2))
        assert r.json()["status"] == PutStatus.REQUEUED.value


async def test_trickling_body_is_refused_with_408(spool: Spool) -> None:
    """A body that does not arrive within read_timeout_s is refused; the server goes on."""
    import asyncio

    async with serving(spool, hook_table("json", read_timeout_s=0.2)) as (hook, client):
        reader, writer = await asyncio.open_connection("127.0.0.1", hook.bound_port)
        writer.write(
            b"POST /outcomes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"call_id":'
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408")
        writer.close()
        body = json.dumps(item()).encode()
        assert (
            await client.post("/outcomes", content=body, headers=signed(body))
        ).status_code == 200


async def test_many_bad_items_are_quarantined_as_one_body(spool: Spool) -> None:
    """A batch with many bad items is kept once (whole body), not one row per item."""
    body = json.dumps([item(f"c{i}", disposition=7) for i in range(50)]).encode()
    async with serving(spool, hook_table("json")) as (_, client):
        r = await client.post("/outcomes", content=body, headers=signed(body))
        assert r.status_code == 400 and len(r.json()["rejected"]) == 50
    [row] = await spool.list_quarantine()
    assert row.raw == body and row.reason.startswith("[0].disposition")


async def test_accepted_connections_have_nodelay(spool: Spool) -> None:
    """Every accepted socket has TCP_NODELAY: uvicorn writes a response's head and body
    separately and, under Nagle, the body waited for the client's delayed ACK (~40 ms
    per keep-alive request; the webhook bench was capped near 700 requests/s)."""
    body = json.dumps(item()).encode()
    async with serving(spool, hook_table("json")) as (hook, client):
        r = await client.post("/outcomes", content=body, headers=signed(body))
        assert r.status_code == 200
        assert_connections_nodelay(hook._server)
