"""Regressions found by the bad-input campaign (issue 7): real sfsim, real spool file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters._twilio import compute_signature
from adapters._ws_decode import parse_timestamp
from adapters.websocket import WebsocketAdapter, WebsocketConfig
from daemon.mapping import load_mapping
from daemon.rails import Rails
from daemon.salesforce import Backoff, SalesforceClient
from daemon.salesforce.wire import CarriageReturnError, LiteralNullError, csv_value
from sfsim.testing import sim_fixture
from spool import CallOutcome, Disposition, Spool, open_spool
from tests.adapters.hooks import hook_table, serving
from tests.adapters.ws_feed import call_event, feed_server

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


sim = sim_fixture()  # a running SimOrg on a free loopback port, per test


def test_a_value_with_a_cr_is_not_bulk_csv() -> None:
    with pytest.raises(CarriageReturnError):
        csv_value("line one\rline two")
    assert issubclass(CarriageReturnError, LiteralNullError)  # the record goes by REST
    assert csv_value("line one\nline two") == "line one\nline two"


async def test_notes_with_a_cr_do_not_fail_the_bulk_job(sim: Any, tmp_path: Path) -> None:
    """One outcome whose notes hold a CR among many: every Task lands with its exact text.

    Before: the CR went into the Bulk CSV (quoted); an LF job with a CR anywhere fails
    whole (``ClientInputError : LineEnding is invalid on user data``), which paused the
    Bulk rail with every record of the batch pending.
    """
    notes = {n: f"note {n}" for n in range(40)}
    notes[7] = "=1+2\r\nsecond line"
    notes[21] = 'a "quoted"\rvalue'
    outs = [
        CallOutcome(
            source="fuzz",
            call_id=f"c{n}",
            disposition=Disposition.VOICEMAIL,
            ended_at=T0 + timedelta(seconds=n),
            notes=text,
        )
        for n, text in notes.items()
    ]
    async with open_spool(tmp_path / "spool.db", synchronous="NORMAL") as spool:
        await spool.put_many(outs)
        info = sim.info
        async with SalesforceClient(
            login_url=info["instance_url"],
            client_id=info["client_id"],
            client_secret=info["client_secret"],
            allow_http=True,
        ) as client:
            rails = Rails(
                spool=spool,
                client=client,
                mapping=load_mapping(None),
                bulk_min_records=1,
                retry_backoff=Backoff(initial=0.001, factor=2.0, cap=0.02, jitter=0.0),
                bulk_poll=Backoff(initial=0.005, factor=1.5, cap=0.05, jitter=0.0),
                idle_poll_s=0.005,
            )
            await rails.drain(timeout_s=30)
            assert not rails.paused
        stats = await spool.stats()
        assert stats.done == 40 and stats.dead == 0
        jobs = await spool.jobs()
        assert jobs and all(j.state == "JobComplete" for j in jobs)
    tasks = {t["CallObject"]: t for t in sim.org.store.records("Task")}
    for n, text in notes.items():
        assert tasks[f"c{n}"]["Description"] == text


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    async with open_spool(tmp_path / "spool.db", synchronous="NORMAL") as s:
        yield s


def test_epoch_timestamps_past_year_9999_are_bad_values_not_crashes() -> None:
    for value in (10**17, 1e20, float("inf"), "100000000000000000000"):
        with pytest.raises(ValueError, match="not a timestamp"):
            parse_timestamp(value)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("ended_at", 10**17, "not a timestamp"),
        ("duration", "1e309", "duration_s: not a number"),
    ],
)
async def test_a_websocket_frame_with_an_absurd_number_is_quarantined(
    spool: Spool, field: str, value: Any, reason: str
) -> None:
    """``ended_at: 1e17`` or ``duration: "1e309"`` is rejected with its reason; the stream
    and the daemon go on.

    Before: datetime.fromtimestamp raised OSError (EOVERFLOW) and round(inf) raised
    OverflowError, which no decoder caught: the adapter's task group failed, and with it
    the whole daemon ("dispo-sync stopped on an error"); on restart the resumed stream
    re-sent the frame.
    """
    bad = call_event(2, **{field: value})
    events: list[dict[str, Any] | str] = [call_event(1), bad, call_event(3)]
    table = {
        "type": "websocket",
        "name": "feed1",
        "event_types": ["call.ended"],
        "ack": "each",
        "ack_message": {"type": "ack", "id": "{id}"},
        "fields": {
            "call_id": "data.call_id",
            "disposition": "data.status",
            "ended_at": "data.ended_at",
            "duration_s": "data.duration",
        },
    }
    async with feed_server(events) as feed:
        adapter = WebsocketAdapter(
            WebsocketConfig.from_table({**table, "url": feed.url}),
            spool,
            reconnect_delays=lambda: iter([0.001] * 100),
        )
        await adapter.start()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(adapter.run())
            await feed.wait_for(lambda: "e3" in feed.acks)
            assert not task.done()
            await adapter.stop()
        assert feed.acks == ["e1", "e2", "e3"] and feed.connections == 1
    [row] = await spool.list_quarantine()
    assert reason in row.reason and str(value).encode() in row.raw
    claims = await spool.claim("test", 10)
    assert sorted(c.outcome.call_id for c in claims) == ["call-1", "call-3"]


async def test_twilio_call_duration_reaching_before_year_1_is_400_not_500(spool: Spool) -> None:
    """``CallDuration=10**12`` made ``ended_at - timedelta(...)`` overflow: 500 before."""
    form = {"CallSid": "CA9", "CallStatus": "completed", "CallDuration": str(10**12)}
    async with serving(spool, hook_table("twilio", path="/twilio")) as (hook, c):
        url = f"http://127.0.0.1:{hook.bound_port}/twilio"
        signature = compute_signature(url, {k: [v] for k, v in form.items()}, "s3cr3t-token")
        r = await c.post("/twilio", data=form, headers={"X-Twilio-Signature": signature})
        assert r.status_code == 400, r.text
        assert "CallDuration" in r.json()["error"]
    [row] = await spool.list_quarantine()
    assert "CallDuration: out of range" in row.reason
