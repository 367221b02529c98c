"""The ari adapter against an ARI-like events websocket on loopback and a real spool file."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from adapters._base import AdapterState
from adapters.ari import AriAdapter, AriConfig, validate
from spool import CallOutcome, Disposition, Spool, open_spool
from tests.adapters.ari_frames import channel, ev, originate_call
from tests.adapters.lifecycle import running


def fast() -> Iterator[float]:
    """Millisecond-scale reconnect delays for tests (STYLE habit 4)."""
    while True:
        yield 0.001


async def until(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Poll a condition with a deadline (the adapter has no ack to wait on)."""
    async with asyncio.timeout(limit_s):
        # ARI has no ack a test could wait on: poll the condition, with a deadline.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


class FakeAsterisk:
    """Serves /ari/events: one script of frames per connection; `cut` aborts mid-stream."""

    def __init__(
        self,
        scripts: list[list[Any]],
        *,
        cut: set[int] | None = None,
        alive: Sequence[str] = (),
        channels_body: str | None = None,
    ) -> None:
        self.scripts = scripts
        self.cut = cut or set()
        self.alive = list(alive)
        self.channels_body = channels_body  # GET /ari/channels answers this instead
        self.connections = 0
        self.paths: list[str] = []
        self.done = asyncio.Event()

    def check(self, conn: ServerConnection, request: Request) -> Response | None:
        self.paths.append(request.path)
        if request.path == "/ari/channels":
            # The REST side: GET /ari/channels with HTTP Basic auth.
            if request.headers.get("Authorization") != "Basic ZGlzcG86YXJpLXBhc3M=":
                return conn.respond(401, "Authentication required\n")
            body = self.channels_body or json.dumps([channel(cid, "Up") for cid in self.alive])
            return conn.respond(200, body)
        query = parse_qs(urlsplit(request.path).query)
        if urlsplit(request.path).path != "/ari/events" or "app" not in query:
            return conn.respond(400, "bad request\n")
        if query.get("api_key") != ["dispo:ari-pass"]:
            return conn.respond(401, "Authentication required\n")
        return None

    async def handler(self, conn: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        script = self.scripts[index] if index < len(self.scripts) else []
        for frame in script:
            await conn.send(frame if isinstance(frame, str) else json.dumps(frame))
        if index in self.cut:
            assert conn.transport is not None
            conn.transport.abort()
        if index == len(self.scripts) - 1:
            self.done.set()
        await conn.wait_closed()


@contextlib.asynccontextmanager
async def asterisk(scripts: list[list[Any]], **kw: Any) -> AsyncIterator[tuple[FakeAsterisk, str]]:
    fake = FakeAsterisk(scripts, **kw)
    async with serve(fake.handler, "127.0.0.1", 0, process_request=fake.check) as server:
        host, port = server.sockets[0].getsockname()[:2]
        yield fake, f"http://{host}:{port}"


def table(url: str, **over: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "type": "ari",
        "name": "pbx1",
        "url": url,
        "app": "dialer",
        "username": "dispo",
        "secret": "ari-pass",
        "reconnect_max_s": 0.01,
    }
    t.update(over)
    return t


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    async with open_spool(tmp_path / "spool.db") as s:
        yield s


def make(cfg: dict[str, Any], spool: Spool, **kw: Any) -> AriAdapter:
    return AriAdapter(AriConfig.from_table(cfg), spool, reconnect_delays=fast, **kw)


async def stored(spool: Spool) -> dict[str, CallOutcome]:
    return {c.outcome.call_id: c.outcome for c in await spool.claim("test", 1000)}


def dial_busy(caller_id: str, peer_id: str, t0: float) -> list[dict[str, Any]]:
    """A dialplan Dial() from an app channel to the customer that comes back BUSY."""
    caller = channel(caller_id, "Up", name="Local/s@dialer-00000001;2")
    peer = channel(peer_id, "Down")
    return [
        ev("StasisStart", t0, args=[], channel=caller),
        ev("ChannelVarset", t0 + 0.1, variable="LEAD_ID", value="L-77", channel=caller),
        ev("Dial", t0 + 0.2, caller=caller, peer=peer, dialstatus="", dialstring="c/5125550142"),
        ev("Dial", t0 + 3.0, caller=caller, peer={**peer, "state": "Busy"}, dialstatus="BUSY"),
        ev("ChannelDestroyed", t0 + 3.1, cause=17, cause_txt="User busy", tech_cause=486,
           channel={**peer, "state": "Busy"}),
        ev("ChannelDestroyed", t0 + 3.5, cause=16, cause_txt="Normal Clearing", channel=caller),
    ]  # fmt: skip


async def test_calls_become_one_outcome_each(spool: Spool) -> None:
    """Realistic ARI streams become one outcome per call with the section 7.3 disposition."""
    script = [
        *originate_call("att-1", amd="MACHINE"),
        *originate_call("att-2", amd="HUMAN", disposition="SALE", agent="agent7", t0=60.0),
        *originate_call("att-3", amd=None, answered=False, t0=70.0),
        *originate_call("att-4", amd=None, answered=False, cause=1,
                        cause_txt="Unallocated (unassigned) number", t0=80.0),
        *dial_busy("loc-5", "cust-5", 90.0),
    ]  # fmt: skip
    async with asyncio.timeout(20):
        async with asterisk([script]) as (fake, url):
            cfg = table(url, dispositions={"SALE": "connected"})
            async with running(make(cfg, spool)) as adapter:
                await until(lambda: adapter.health().accepted == 5)
            health = adapter.health()
    assert (health.received, health.rejected, health.duplicates) == (len(script), 0, 0)
    assert fake.paths[0].startswith("/ari/events?app=dialer&subscribeAll=false&api_key=")
    got = await stored(spool)
    by = {k: (o.disposition, o.raw_disposition, o.ambiguous) for k, o in got.items()}
    assert by == {
        "att-1": (Disposition.VOICEMAIL, "AMDSTATUS=MACHINE", False),
        "att-2": (Disposition.CONNECTED, "SALE", False),
        "att-3": (Disposition.NO_ANSWER, "CAUSE=16", True),
        "att-4": (Disposition.INVALID_NUMBER, "CAUSE=1", False),
        "loc-5": (Disposition.BUSY, "DIALSTATUS=BUSY;CAUSE=17", False),
    }
    sale = got["att-2"]
    assert sale.live and sale.agent_id == "agent7"
    assert sale.lead is not None and sale.lead.external_key == "48213"
    # created 10:01:52.301 (channel snapshot), answered 10:02:08, ended 10:02:28
    assert sale.talk_s == 20 and sale.duration_s == 36
    assert sale.phone == "+15125550199"
    assert not got["att-1"].live and got["att-1"].detail == "initialsilence"
    assert got["loc-5"].phone == "5125550142" and got["loc-5"].extra["sip_code"] == 486
    assert got["att-1"].source_seq == int(got["att-1"].ended_at.timestamp() * 1_000_000)


async def test_cut_mid_call_then_reconnect_emits_once(spool: Spool) -> None:
    """A call that spans a reconnect is still emitted exactly once, with facts from both sides."""
    call = originate_call("att-9", amd="MACHINE")
    first, second = call[:4], call[4:]  # cut after StasisStart (AMD already known)
    async with (
        asyncio.timeout(20),
        asterisk([[*originate_call("att-8"), *first], second], cut={0}, alive=["att-9"]) as (
            fake,
            url,
        ),
    ):
        async with running(make(table(url), spool)) as adapter:
            await until(lambda: adapter.health().accepted == 2)
            await fake.done.wait()
        health = adapter.health()
    assert fake.connections == 2 and health.reconnects == 1
    assert health.accepted == 2 and health.duplicates == 0
    got = await stored(spool)
    assert got["att-9"].disposition is Disposition.VOICEMAIL


async def test_late_redelivery_never_overwrites_newer(spool: Spool) -> None:
    """An older copy of a call's end (earlier ARI timestamp) is recognised as stale."""
    newer = originate_call("att-7", amd="HUMAN", t0=52.0)
    older = originate_call("att-7", amd=None, answered=False, t0=40.0)
    async with asterisk([newer]) as (_, url), running(make(table(url), spool)) as adapter:
        await until(lambda: adapter.health().accepted == 1)
    async with asterisk([older]) as (_, url), running(make(table(url), spool)) as adapter:
        await until(lambda: adapter.health().duplicates == 1)
    assert (await stored(spool))["att-7"].disposition is Disposition.CONNECTED


async def test_bad_frames_are_quarantined_and_stream_goes_on(spool: Spool) -> None:
    """Non-JSON frames and a ChannelDestroyed without cause are quarantined; calls still flow."""
    broken = ev("ChannelDestroyed", 5.0, cause_txt="?", channel=channel("att-x"))
    script = ["not json", broken, *originate_call("att-1")]
    async with asterisk([script]) as (_, url), running(make(table(url), spool)) as adapter:
        await until(lambda: adapter.health().accepted == 1)
        await until(lambda: adapter.health().rejected == 2)
    reasons = sorted(r.reason for r in await spool.list_quarantine())
    assert reasons[0].startswith("ChannelDestroyed: cause is missing")
    assert reasons[1].startswith("not JSON")


async def test_deeply_nested_frame_is_quarantined_and_stream_goes_on(spool: Spool) -> None:
    """A 6 kB frame of nested arrays is malformed input like any other: quarantined, and the
    calls after it are stored (json.loads raised RecursionError, which stopped the adapter
    and with it the daemon)."""
    nested = "[" * 3000 + "]" * 3000
    script: list[Any] = [nested, *originate_call("att-1")]
    async with asterisk([script]) as (_, url), running(make(table(url), spool)) as adapter:
        await until(lambda: adapter.health().accepted == 1)
    [row] = await spool.list_quarantine()
    assert row.reason.startswith("not JSON")
    assert list(await stored(spool)) == ["att-1"]


async def test_deeply_nested_channel_list_is_not_a_crash(spool: Spool) -> None:
    """After a reconnect, a GET /ari/channels answer nested too deep is a failed listing
    (the open calls wait for their TTL), not an error that stops the adapter."""
    plain = originate_call("att-p", amd=None)[:2]  # only ringing when the link dropped
    nested = "[" * 3000 + "]" * 3000
    after = originate_call("att-2", t0=60.0)  # read once the listing is dealt with
    async with asterisk([plain, after], cut={0}, channels_body=nested) as (fake, url):
        async with running(make(table(url), spool)) as adapter:
            await until(lambda: adapter.health().accepted == 1)
        assert "/ari/channels" in fake.paths
        assert adapter.tracker.open_calls == 1  # att-p: not closed, the listing said nothing
    assert list(await stored(spool)) == ["att-2"]


async def test_wrong_password_is_reported_without_secret(spool: Spool) -> None:
    """A refused login shows HTTP 401 in health; the password is never in it."""
    async with asterisk([[]]) as (_, url):
        adapter = make(table(url, secret="nope-secret"), spool)
        await adapter.start()
        health = adapter.health()
        await adapter.stop()
    assert health.state in (AdapterState.RECONNECTING, AdapterState.STOPPING)
    assert health.last_error is not None and "401" in health.last_error
    assert "nope-secret" not in health.last_error


async def test_channels_that_never_end_expire(spool: Spool) -> None:
    """A channel that never ends is dropped after channel_ttl_s with a log line."""
    now = [1000.0]
    script = [ev("ChannelCreated", 1.0, channel=channel("zombie"))]
    async with asterisk([script]) as (_, url):
        adapter = make(table(url, channel_ttl_s=1.0), spool, clock=lambda: now[0])
        async with running(adapter):
            await until(lambda: adapter.health().extra.get("open_channels") == 1)
            now[0] += 5.0
            await until(lambda: adapter.health().extra.get("expired_ttl") == 1)
            assert adapter.tracker.open_calls == 0


def test_events_uri_and_config_problems() -> None:
    """The events URI carries app, subscribeAll and api_key; bad tables list every problem."""
    cfg = AriConfig.from_table(table("https://pbx:8089", app=["a", "b"], subscribe_all=True))
    assert cfg.events_uri() == (
        "wss://pbx:8089/ari/events?app=a,b&subscribeAll=true&api_key=dispo:ari-pass"
    )
    basic = AriConfig.from_table(table("ws://pbx:8088/ari", auth="basic"))
    assert basic.events_uri() == "ws://pbx:8088/ari/events?app=dialer&subscribeAll=false"
    problems = "\n".join(
        validate(
            {"type": "ari", "url": "ftp://x", "username": "u", "ignore_channels": "(",
             "dispositions": {"SALE": "sold"}, "max_channels": 1},
            2,
        )
    )  # fmt: skip
    for expected in (
        "adapter[2].url: must be an http(s):// or ws(s):// URL",
        "adapter[2].app: required",
        "adapter[2].secret: username and secret go together",
        "adapter[2].ignore_channels: not a regular expression",
        "adapter[2].dispositions.SALE: 'sold' is not one of",
        "adapter[2].max_channels: must be between",
    ):
        assert expected in problems


async def test_application_replaced_backs_off(spool: Spool) -> None:
    """When another client takes the app over, the adapter closes and waits before retrying."""
    replaced = ev("ApplicationReplaced", 1.0)
    async with asterisk([[replaced], []]) as (fake, url):
        adapter = make(table(url, reconnect_max_s=0.05), spool)
        async with running(adapter):
            await until(lambda: fake.connections == 2)
        assert adapter.health().extra["replaced"] == 1
        assert adapter.health().reconnects >= 1


async def test_reconnect_closes_calls_that_ended_meanwhile(spool: Spool) -> None:
    """After a reconnect, calls gone from GET /ari/channels are closed: decisive ones stored."""
    machine = originate_call("att-m", amd="MACHINE")[:5]  # AMD known, destroy never seen
    plain = originate_call("att-p", amd=None)[:2]  # only ringing when the link dropped
    still = originate_call("att-s", amd=None)[:2]  # still alive after the reconnect
    async with asterisk([[*machine, *plain, *still], []], cut={0}, alive=["att-s"]) as (
        fake,
        url,
    ):
        async with running(make(table(url), spool)) as adapter:
            await until(lambda: adapter.health().accepted == 1)
            await fake.done.wait()
        health = adapter.health()
    assert "/ari/channels" in fake.paths
    assert health.extra["lost_on_disconnect"] == 1
    assert health.extra["partial_on_disconnect"] == 1
    assert adapter.tracker.open_calls == 1  # att-s is still followed
    got = (await stored(spool))["att-m"]
    assert got.disposition is Disposition.VOICEMAIL and got.ambiguous
    assert got.detail == "ended while disconnected"


async def test_registry_builds_ari_tables(spool: Spool) -> None:
    """The daemon's registry builds an ari adapter from its [[adapter]] table."""
    from adapters import build_adapters, validate_adapter_configs

    [adapter] = build_adapters([table("http://127.0.0.1:8088")], spool)
    assert isinstance(adapter, AriAdapter) and adapter.health().type == "ari"
    assert any(p.startswith("adapter[0].app:") for p in validate_adapter_configs([{"type": "ari"}]))
