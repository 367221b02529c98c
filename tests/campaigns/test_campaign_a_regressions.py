"""Regression tests for defects the crash / faults / kill-Salesforce campaigns found
(bench/campaign_crash.py, campaign_faults.py, campaign_kill_sf.py). Real sfsim over
loopback, real spool file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.mapping import load_mapping
from daemon.rails import Rails
from daemon.salesforce import Backoff, QuotaState, QuotaView, SalesforceClient
from sfsim.testing import sim_fixture
from spool import CallOutcome, Spool, open_spool

_FAST = Backoff(initial=0.001, factor=2.0, cap=0.02, jitter=0.0)
_T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


sim = sim_fixture()  # a running SimOrg on a free loopback port, per test


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    async with open_spool(tmp_path / "spool.db", synchronous="NORMAL") as sp:
        yield sp


def _client(sim: Any, **kw: Any) -> SalesforceClient:
    info = sim.info
    return SalesforceClient(
        login_url=info["token_url"].removesuffix("/services/oauth2/token"),
        auth="client_credentials",
        client_id=info["client_id"],
        client_secret=info["client_secret"],
        allow_http=True,
        quota=QuotaView(reserve=0.0, max_share=1.0),
        **kw,
    )


def _rails(spool: Spool, sf: SalesforceClient, **kw: Any) -> Rails:
    """Rails with millisecond-scale timing (no patched sleeps)."""
    return Rails(
        spool=spool,
        client=sf,
        mapping=load_mapping(None),
        retry_backoff=_FAST,
        bulk_poll=_FAST,
        idle_poll_s=0.005,
        **kw,
    )


def _older_and_newer(sim: Any, key: str) -> tuple[str, CallOutcome, CallOutcome]:
    """A Lead (its Id) and two outcomes naming it by external key: A (busy, not urgent) and
    B (connected, live, five minutes later)."""
    lead_id = sim.org.store.insert(
        "Lead", {"LastName": "L", "Company": "Acme", "Dialer_Lead_Id__c": key}
    )
    a, b = (
        CallOutcome.model_validate(
            {
                "source": "camp",
                "call_id": f"{key}-{call_id}",
                "disposition": disposition,
                "ended_at": _T0 + timedelta(minutes=minute),
                "lead": {"external_key": key},
                "live": live,
            }
        )
        for call_id, disposition, minute, live in (
            ("a", "busy", 0, False),
            ("b", "connected", 5, True),
        )
    )
    return lead_id, a, b


def _outcomes(sim: Any, n: int) -> list[CallOutcome]:
    store = sim.org.store
    out = []
    for i in range(n):
        lead_id = store.insert(
            "Lead", {"LastName": f"L{i}", "Company": "Acme", "Dialer_Lead_Id__c": f"K{i}"}
        )
        out.append(
            CallOutcome.model_validate(
                {
                    "source": "camp",
                    "call_id": f"c{i}",
                    "disposition": "no_answer",
                    "ended_at": _T0 + timedelta(seconds=i),
                    "lead": {"id": lead_id},
                }
            )
        )
    return out


async def test_a_given_up_bulk_batch_closes_its_jobs_even_when_the_abort_fails(
    sim: Any, spool: Spool
) -> None:
    """Found by the faults campaign (5xx bursts): a poll failing mid-batch gives the batch up
    and aborts its jobs; when the abort itself got a 5xx the jobs stayed "in flight" in the
    spool for ever (``status`` and the drain never saw the end of them)."""
    outs = _outcomes(sim, 30)
    await spool.put_many(outs)
    armed = False

    def hook(rail: str, method: str, kind: str, status: int, seconds: float) -> None:
        nonlocal armed
        if (method, kind, status) == ("GET", "bulk", 200) and not armed:
            # After the first poll: the next poll and every abort of this batch fail.
            armed = True
            sim.org.faults.configure({"error_next": 4, "kinds": ["bulk"]})

    async with _client(sim, on_call=hook) as sf:
        rails = _rails(spool, sf, bulk_min_records=1)
        await rails.drain(timeout_s=30)
    assert armed and sim.org.faults.settings.counters.get("errors") == 4
    stats = await spool.stats()
    assert stats.jobs_in_flight == 0, stats.jobs_by_state
    assert stats.done == 30 and stats.dead == 0
    assert all(j.finished for j in await spool.jobs())  # whatever became of them in the org
    store = sim.org.store
    for o in outs:
        assert len(store.find("Task", "Call_Id__c", o.external_key)) == 1


@pytest.mark.parametrize(
    "fault",
    [
        {"drop_next": 1},  # the connection cut: no answer at all
        {"error_next": 1, "error_status": 500},  # UNKNOWN_EXCEPTION
    ],
    ids=["dropped", "500"],
)
async def test_a_request_without_an_answer_is_retried_not_dead_lettered(
    sim: Any, spool: Spool, fault: dict[str, Any]
) -> None:
    """Found by the kill-Salesforce campaign: with the org unreachable, urgent outcomes on the
    live rail became dead letters ("TransportError", a 500's UNKNOWN_EXCEPTION): the
    request's error was classified as if it were the record's own."""
    outs = [o.model_copy(update={"live": True}) for o in _outcomes(sim, 3)]
    for o in outs:
        await spool.put(o)
    sim.org.faults.configure({**fault, "kinds": ["composite", "collections"]})
    async with _client(sim) as sf:
        rails = _rails(spool, sf)
        await rails.drain(timeout_s=30)
    counters = sim.org.faults.settings.counters
    assert counters.get("drops", 0) + counters.get("errors", 0) == 1
    assert await spool.dead_letters() == []
    assert (await spool.stats()).done == 3
    store = sim.org.store
    for o in outs:
        assert len(store.find("Task", "Call_Id__c", o.external_key)) == 1


async def test_readiness_reports_salesforce_unreachable_until_it_answers_again(
    sim: Any, spool: Spool, tmp_path: Path
) -> None:
    """Found by the kill-Salesforce campaign: with the org stopped, /readyz kept answering
    200 ("authenticated") for the whole outage; the daemon never said it was degraded."""
    from daemon.metrics import Metrics
    from daemon.salesforce import RetryableError
    from daemon.settings import load_settings
    from daemon.wiring import DaemonRails

    info = sim.info
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[salesforce]\nlogin_url = "{info["instance_url"]}"\n'
        f'client_id = "{info["client_id"]}"\nclient_secret = "{info["client_secret"]}"\n'
        f'[spool]\npath = "{tmp_path / "spool.db"}"\n'
    )
    rails = DaemonRails(load_settings(cfg, environ={}), spool, Metrics())

    def salesforce() -> Any:
        return next(c for c in rails.readiness() if c.name == "salesforce")

    async with rails.client:
        await rails.client.limits()
        assert salesforce().ok
        sim.org.faults.configure({"drop_next": 1, "error_next": 1, "kinds": ["limits"]})
        with pytest.raises(RetryableError):
            await rails.client.limits()  # the 5xx
        with pytest.raises(RetryableError):
            await rails.client.limits()  # no answer at all
        check = salesforce()
        assert not check.ok
        assert "the last 2 request(s) failed (no answer)" in check.detail
        await rails.client.limits()
        assert salesforce().ok


async def test_exhausted_quota_is_rechecked_soon_even_mid_wait(sim: Any, spool: Spool) -> None:
    """Found by the faults campaign (daily limit exhausted for a minute): the /limits loop
    chose its wait before the quota ran out (the full 5 minutes, not the fifth meant for an
    exhausted quota), and nothing else is sent while exhausted: the daemon sat idle for
    minutes after the org's allocation came back."""
    async with _client(sim) as sf:
        rails = _rails(spool, sf, limits_interval_s=10.0)  # exhausted: recheck after 2 s
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(rails.run(stop))
            outs = _outcomes(sim, 2)
            await spool.put(outs[0].model_copy(update={"live": True}))
            await _until(lambda: (spool.stats(), "done", 1))
            sim.org.faults.configure({"exhaust_daily_limit": True})
            await spool.put(outs[1].model_copy(update={"live": True}))
            async with asyncio.timeout(5):
                while rails.quota.state() is not QuotaState.EXHAUSTED:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)  # another task's state: poll with a deadline
            sim.org.usage.used = 0  # the allocation is back
            t0 = time.monotonic()
            await _until(lambda: (spool.stats(), "done", 2), timeout_s=8.0)
            stop.set()
    assert time.monotonic() - t0 < 8.0  # not the 10 s wait chosen before exhaustion
    assert rails.quota.state() is QuotaState.OK


async def _until(probe: Any, timeout_s: float = 5.0) -> None:
    """Poll an awaitable stats field until it reaches a value (deadline, no fixed sleep)."""
    async with asyncio.timeout(timeout_s):
        while True:
            coro, name, want = probe()
            if getattr(await coro, name) >= want:
                return
            await asyncio.sleep(0.01)


class _LeadJobsAfter:
    """The real client, except that a Lead Bulk job is created only once ``go`` is set: the
    tests order "the batch's Lead job reaches the org after a newer REST update" with it."""

    def __init__(self, client: SalesforceClient, go: asyncio.Event) -> None:
        self._client = client
        self._go = go
        self.built = asyncio.Event()  # the batch's rows are fixed: its first job is created

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def create_ingest_job(self, sobject: str, *args: Any, **kw: Any) -> Any:
        self.built.set()
        if sobject == "Lead":
            await self._go.wait()
        return await self._client.create_ingest_job(sobject, *args, **kw)


async def _lead_job_after_newer(
    sim: Any, spool: Spool, sf: SalesforceClient, key: str, stop: asyncio.Event
) -> tuple[str, asyncio.Task[int]]:
    """A (older) claimed into a Bulk batch, B (newer, live) sent by REST, and only then the
    batch's Lead job (A's state) created. Returns the Lead's Id and the batch's task."""
    from daemon.rails._rest import apply_verdicts

    lead_id, a, b = _older_and_newer(sim, key)
    first = _rails(spool, sf, bulk_min_records=1)
    go = asyncio.Event()
    gate = _LeadJobsAfter(sf, go)
    first.bulk._client = gate  # type: ignore[assignment]
    await spool.put(a)
    flush = asyncio.create_task(first.bulk.flush_batch(stop))
    # Not just "A claimed": the batch decides which Lead rows it carries after the claim
    # (a B put in between makes A's Lead row stale and rightly left out). Its first job
    # being created means the rows are fixed, A's Lead row among them.
    async with asyncio.timeout(10):
        await gate.built.wait()
    await spool.put(b)
    claims = await spool.claim("live", 10, urgent=True)
    verdicts = await first.rest.send(claims, rail="live")
    await apply_verdicts(spool, verdicts, backoff=_FAST, rail="live")
    assert sim.org.store.get("Lead", lead_id)["Last_Call_Outcome__c"] == "connected"
    go.set()
    return lead_id, flush


async def test_a_recovered_lead_job_that_landed_late_does_not_leave_an_older_outcome(
    sim: Any, spool: Spool
) -> None:
    """Found by the crash campaign (stale_leads > 0): a Bulk Lead job built with outcome A's
    state, the Lead's newer outcome B sent live before that job was uploaded, then the daemon
    killed before the job was reconciled: the job landed after B and put A's state back. In
    one process the ledger re-sends B; after a restart nothing did, and the Lead kept the
    older outcome for good."""
    stop = asyncio.Event()
    stop.set()  # the process "dies" once its jobs are uploaded, before reconciling
    async with _client(sim) as sf:
        lead_id, flush = await _lead_job_after_newer(sim, spool, sf, "K1", stop)
        assert await flush == 1
        store = sim.org.store
        async with asyncio.timeout(10):  # A's Lead job lands, after B
            while store.get("Lead", lead_id)["Last_Call_Outcome__c"] != "busy":  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the org's job runner: poll with a deadline
        # The restart: recovery, then the rails.
        await _rails(spool, sf, bulk_min_records=1).drain(timeout_s=30)
    assert store.get("Lead", lead_id)["Last_Call_Outcome__c"] == "connected"
    assert (await spool.stats()).done == 2


async def test_claims_of_a_crashed_process_are_sent_at_the_next_start(
    sim: Any, spool: Spool
) -> None:
    """Found by the crash campaign (the drain after the last restart stalled): outcomes a
    killed daemon had claimed for a Bulk batch whose job was not recorded yet stayed in
    flight for the whole Bulk lease (15 minutes), live/collections claims for theirs."""
    outs = _outcomes(sim, 6)
    await spool.put_many(outs[:4])
    for o in outs[4:]:
        await spool.put(o.model_copy(update={"live": True}))
    # What the dead process held: a Bulk batch being built, a live send.
    assert len(await spool.claim("bulk", 10, urgent=False, lease_s=900.0)) == 4
    assert len(await spool.claim("live", 10, urgent=True)) == 2
    async with _client(sim) as sf:
        rails = _rails(spool, sf, bulk_min_records=1)
        await rails.drain(timeout_s=20)  # not the 900 s lease
    assert (await spool.stats()).done == 6
    store = sim.org.store
    for o in outs:
        assert len(store.find("Task", "Call_Id__c", o.external_key)) == 1


async def test_a_failed_batch_whose_lead_job_landed_late_leaves_no_older_outcome(
    sim: Any, spool: Spool
) -> None:
    """Found by the faults campaign (bulk job failing whole: stale_leads > 0, no crash): the
    batch's Task job Failed, its Lead job (A's state) landed after the Lead's newer outcome B
    went out live; the batch was given up without the ledger check, and A, re-sent, is not
    the newest: nothing ever put B's state back."""
    from daemon.salesforce import ConfigurationError

    sim.org.faults.configure({"fail_next_jobs": 1})  # the batch's first (Task) job
    async with _client(sim) as sf:
        lead_id, flush = await _lead_job_after_newer(sim, spool, sf, "K2", asyncio.Event())
        with pytest.raises(ConfigurationError, match="Failed"):
            await flush  # after every job of the batch ended: the Lead job landed
        store = sim.org.store
        assert store.get("Lead", lead_id)["Last_Call_Outcome__c"] == "busy"
        await _rails(spool, sf, bulk_min_records=1).drain(timeout_s=30)
    assert store.get("Lead", lead_id)["Last_Call_Outcome__c"] == "connected"
    assert (await spool.stats()).done == 2
