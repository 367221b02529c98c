"""The websocket adapter against a real event stream on loopback and a real spool file."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from adapters._base import AdapterState
from adapters.websocket import WebsocketAdapter, WebsocketConfig, validate
from spool import Spool, open_spool
from tests.adapters.lifecycle import running
from tests.adapters.ws_feed import call_event, feed_server

FIELDS = {
    "call_id": "data.call_id",
    "disposition": "data.status",
    "ended_at": "data.ended_at",
    "phone": "data.to",
}


def fast() -> Iterator[float]:
    """Millisecond-scale reconnect delays for tests (STYLE habit 4)."""
    while True:
        yield 0.001


def table(url: str, **over: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "type": "websocket",
        "name": "feed1",
        "url": url,
        "fields": FIELDS,
        "event_types": ["call.ended"],
        "ack": "each",
        "ack_message": {"type": "ack", "id": "{id}"},
        "resume": "query",
        "reconnect_max_s": 0.01,
        "ping_interval_s": 5.0,
    }
    t.update(over)
    return t


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    async with open_spool(tmp_path / "spool.db") as s:
        yield s


def adapter_for(cfg_table: dict[str, Any], spool: Spool) -> WebsocketAdapter:
    return WebsocketAdapter(WebsocketConfig.from_table(cfg_table), spool, reconnect_delays=fast)


async def stored_call_ids(spool: Spool) -> list[str]:
    claims = await spool.claim("test", 100_000)
    return sorted(c.outcome.call_id for c in claims)


async def test_cut_mid_stream_resumes_without_loss_or_double(spool: Spool) -> None:
    """Two mid-stream cuts: every event is stored once; resume starts after the last commit."""
    events: list[dict[str, Any] | str] = [call_event(n) for n in range(1, 201)]
    async with feed_server(events, cut_after=[70, 55]) as feed:
        adapter = adapter_for(table(feed.url), spool)
        async with running(adapter):
            await feed.wait_for(lambda: "e200" in feed.acks)
            health = adapter.health()
            assert health.state is AdapterState.CONNECTED
        assert feed.connections == 3
        # Each reconnect resumed after an id the spool had committed, so the client
        # saw every event exactly once.
        assert feed.resume_ids[0] is None and all(feed.resume_ids[1:])
        assert health.received == 200 and health.accepted == 200
        assert health.duplicates == 0 and health.reconnects == 2
    assert await stored_call_ids(spool) == sorted(f"call-{n}" for n in range(1, 201))
    assert await spool.get_cursor("ws:feed1") == "e200"


async def test_acks_follow_commit_and_restart_resumes_from_spool(spool: Spool) -> None:
    """Acks name committed events; a new adapter resumes from the cursor stored in the spool."""
    first: list[dict[str, Any] | str] = [call_event(n) for n in range(1, 11)]
    async with feed_server(first) as feed:
        async with running(adapter_for(table(feed.url), spool)):
            await feed.wait_for(lambda: len(feed.acks) == 10)
        assert feed.acks == [f"e{n}" for n in range(1, 11)]
    more: list[dict[str, Any] | str] = [call_event(n) for n in range(1, 16)]
    async with feed_server(more) as feed:
        async with running(adapter_for(table(feed.url), spool)) as adapter:
            await feed.wait_for(lambda: len(feed.acks) == 5)
        assert feed.resume_ids == ["e10"]
        assert adapter.health().received == 5
    assert len(await stored_call_ids(spool)) == 15


async def test_bad_input_is_quarantined_acked_and_the_stream_goes_on(spool: Spool) -> None:
    """Non-JSON and call-id-less events are quarantined with reasons; later events are stored."""
    bad = call_event(2)
    del bad["data"]["call_id"]
    events: list[dict[str, Any] | str] = [call_event(1), "{oops", bad, call_event(3)]
    async with feed_server(events) as feed:
        async with running(adapter_for(table(feed.url), spool)) as adapter:
            await feed.wait_for(lambda: "e3" in feed.acks)
        assert feed.acks == ["e1", "e2", "e3"]  # the bad event is acked once kept
        health = adapter.health()
        assert health.rejected == 2 and health.accepted == 2
    rows = await spool.list_quarantine()
    reasons = sorted(r.reason for r in rows)
    assert reasons[0].startswith("missing call_id (at data.call_id)")
    assert reasons[1].startswith("not JSON")
    assert {r.raw for r in rows} >= {b"{oops"}
    assert await stored_call_ids(spool) == ["call-1", "call-3"]


@pytest.mark.parametrize("ended_at", [10**400, -(10**400)], ids=["huge", "huge-negative"])
async def test_out_of_range_timestamp_is_quarantined_and_the_stream_goes_on(
    spool: Spool, ended_at: int
) -> None:
    """An ended_at too big for a float (a JSON integer has no size limit) is bad input,
    quarantined naming the field; it used to stop the adapter, and with it the daemon."""
    bad = json.dumps(call_event(2, ended_at=ended_at))
    assert '"ended_at": 1000' in bad or '"ended_at": -1000' in bad  # a JSON number
    events: list[dict[str, Any] | str] = [call_event(1), bad, call_event(3)]
    async with feed_server(events) as feed:
        async with running(adapter_for(table(feed.url), spool)) as adapter:
            await feed.wait_for(lambda: "e3" in feed.acks)
        assert adapter.health().rejected == 1
    [row] = await spool.list_quarantine()
    assert row.reason.startswith("ended_at: not a timestamp (out of range)")
    assert await stored_call_ids(spool) == ["call-1", "call-3"]


async def test_filter_and_cumulative_ack(spool: Spool) -> None:
    """Other event types are skipped but acked and advance the cursor; one ack per commit."""
    events: list[dict[str, Any] | str] = [
        {"id": "a1", "type": "agent.login", "agent": "7"},
        call_event(1),
        {"id": "a2", "type": "agent.logout", "agent": "7"},
    ]
    cfg = table("ws://x", ack="batch", ack_message={"type": "ack", "ids": "{ids}"})
    async with feed_server(events) as feed:
        cfg["url"] = feed.url
        async with running(adapter_for(cfg, spool)) as adapter:
            await feed.wait_for(lambda: any("a2" in ids for ids in feed.acks))
        assert [i for ids in feed.acks for i in ids] == ["a1", "e1", "a2"]
        assert adapter.health().extra["filtered"] == 2
    assert await spool.get_cursor("ws:feed1") == "a2"
    assert await stored_call_ids(spool) == ["call-1"]


async def test_spool_full_refuses_without_ack_then_recovers(tmp_path: Path) -> None:
    """Spool full: nothing acked, stream closed with 1013, resumed once there is room."""
    events: list[dict[str, Any] | str] = [call_event(n) for n in range(1, 9)]
    async with open_spool(tmp_path / "s.db", max_pending=10) as spool:
        # Fill the spool so that the stream's batch does not fit.
        await spool.put_many([_outcome(f"other-{i}") for i in range(5)])
        cfg = table("ws://x", nack_message={"type": "nack", "id": "{id}"})
        async with feed_server(events) as feed:
            cfg["url"] = feed.url
            async with running(adapter_for(cfg, spool)) as adapter:
                await feed.wait_for(lambda: 1013 in feed.close_codes)
                assert feed.acks == []
                assert {"type": "nack", "id": "e8"} in feed.messages
                assert adapter.health().refused > 0
                # The rails deliver the backlog: room again.
                claims = await spool.claim("test", 100)
                await spool.ack(claims)
                await feed.wait_for(lambda: "e8" in feed.acks)
            assert sorted(feed.acks) == sorted(f"e{n}" for n in range(1, 9))
        assert len(await stored_call_ids(spool)) == 8


async def test_bearer_token_and_refused_handshake(spool: Spool) -> None:
    """The token is sent as a bearer header; a refused handshake is reported without the secret."""
    events: list[dict[str, Any] | str] = [call_event(1)]
    async with feed_server(events, token="s3cret") as feed:
        bad = adapter_for(table(feed.url, secret="wrong-token"), spool)
        await bad.start()
        health = bad.health()
        assert health.state is AdapterState.RECONNECTING
        assert health.last_error is not None and "401" in health.last_error
        assert "wrong-token" not in health.last_error
        await bad.stop()
        good = adapter_for(table(feed.url, secret="s3cret"), spool)
        async with running(good):
            await feed.wait_for(lambda: feed.acks == ["e1"])


async def test_resume_message_and_subscribe(spool: Spool) -> None:
    """With resume = "message" the last committed id is sent as the first message after connect."""
    await spool.put_many([], cursor=("ws:feed1", "e41"))
    cfg = table(
        "ws://x",
        resume="message",
        resume_message={"type": "resume", "after": "{id}"},
        subscribe_message={"type": "subscribe", "topics": ["calls"]},
    )
    async with feed_server([call_event(42)]) as feed:
        cfg["url"] = feed.url
        async with running(adapter_for(cfg, spool)):
            await feed.wait_for(lambda: "e42" in feed.acks)
    assert feed.messages[:2] == [
        {"type": "resume", "after": "e41"},
        {"type": "subscribe", "topics": ["calls"]},
    ]


async def test_dialer_down_at_start_then_up(spool: Spool) -> None:
    """start() returns while the dialer is down; run() connects once it is up."""
    async with feed_server([call_event(1)]) as feed:
        url = feed.url
    adapter = adapter_for(table(url), spool)
    await adapter.start()
    assert adapter.health().state is AdapterState.RECONNECTING
    await adapter.stop()
    async with running(adapter):
        pass
    assert adapter.health().state is AdapterState.STOPPED


def test_config_problems_are_all_named() -> None:
    """A bad table reports every problem with its key."""
    problems = validate(
        {
            "type": "websocket",
            "url": "http://dialer",
            "ack": "each",
            "batch_max": 0,
            "fields": {"call_id": "a..b", "colour": "x"},
            "dispositions": {"SALE": "sold"},
            "tz": "Mars/Olympus",
            "bogus": 1,
        },
        3,
    )
    text = "\n".join(problems)
    for expected in (
        "adapter[3].bogus: unknown key",
        "adapter[3].url: must be a ws:// or wss:// URL",
        "adapter[3].ack_message: a table is required",
        "adapter[3].batch_max: must be between 1 and 100000",
        "adapter[3].dispositions.SALE: 'sold' is not one of",
        "adapter[3].tz: unknown time zone 'Mars/Olympus'",
    ):
        assert expected in text
    assert validate(table("wss://dialer.example.com/events"), 0) == []


def _outcome(call_id: str) -> Any:
    from spool import CallOutcome, Disposition

    return CallOutcome(
        source="other",
        call_id=call_id,
        disposition=Disposition.BUSY,
        ended_at="2025-03-14T10:00:00Z",  # type: ignore[arg-type]
    )


async def test_stored_outcome_carries_mapping_and_site_table(spool: Spool) -> None:
    """Mapped fields reach the spool; a site's raw code maps through its table, raw kept."""
    events: list[dict[str, Any] | str] = [call_event(1, status="SALE", agent="a7")]
    cfg = table("ws://x", dispositions={"SALE": {"disposition": "connected", "detail": "sale"}})
    cfg["fields"] = {**FIELDS, "agent_id": "data.agent"}
    async with feed_server(events) as feed:
        cfg["url"] = feed.url
        async with running(adapter_for(cfg, spool)):
            await feed.wait_for(lambda: feed.acks == ["e1"])
    [claim] = await spool.claim("test", 10)
    out = claim.outcome
    assert (out.source, out.call_id, out.disposition, out.raw_disposition) == (
        "feed1",
        "call-1",
        "connected",
        "SALE",
    )
    assert out.phone == "+15125550001" and out.agent_id == "a7" and out.live
    assert out.detail == "sale"


async def test_wss_with_private_ca(spool: Spool, tmp_path: Path) -> None:
    """A wss:// feed signed by a private CA is trusted through ca_file."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with feed_server([call_event(1)], ssl=server_ctx) as feed:
        assert feed.url.startswith("wss://")
        untrusted = adapter_for(table(feed.url), spool)
        await untrusted.start()
        assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.health().last_error or "")
        await untrusted.stop()
        async with running(adapter_for(table(feed.url, ca_file=str(ca_file)), spool)):
            await feed.wait_for(lambda: feed.acks == ["e1"])


async def test_application_keepalive(spool: Spool) -> None:
    """A configured keepalive message is sent periodically while connected."""
    cfg = table("ws://x", keepalive_message={"message": "ping"}, keepalive_interval_s=0.01)
    async with feed_server([]) as feed:
        cfg["url"] = feed.url
        async with running(adapter_for(cfg, spool)):
            await feed.wait_for(lambda: feed.messages.count({"message": "ping"}) >= 3)


async def test_registry_builds_and_checks_websocket_tables(spool: Spool) -> None:
    """The daemon's registry builds a websocket adapter and reports its table problems."""
    from adapters import build_adapters, validate_adapter_configs

    [adapter] = build_adapters([table("ws://127.0.0.1:9/events")], spool, default_tz="UTC")
    assert isinstance(adapter, WebsocketAdapter) and adapter.name == "feed1"
    assert validate_adapter_configs([{"type": "websocket"}]) == [
        "adapter[0].url: required (ws:// or wss://)"
    ]
