"""Newest wins per Lead when dialers name one Lead in different ways.

A Lead can be named by its Salesforce Id, by its external key (``Dialer_Lead_Id__c``)
or by its phone. Two outcomes of one Lead named two ways are still outcomes of one
Lead: whatever rails they take and in whatever order their writes finish, the Lead
must end with the newer outcome's state, and a do-not-call is never cleared.
All against sfsim over real loopback sockets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from railkit import lead, make_client, outcome, rails_for, seed_leads

from daemon.rails import Rails
from daemon.salesforce import SalesforceClient
from spool import Spool, open_spool

PHONE = "+19995550100"
EXT = "TARGET-1"
NAMINGS = ("id", "phone", "ext")
# Every ordered pair of two different namings: (older outcome's, newer outcome's).
PAIRS = [(a, b) for a in NAMINGS for b in NAMINGS if a != b]


def _target(sim: Any) -> str:
    """The Lead under test (its phone and key shared with no other Lead)."""
    lead_id: str = sim.org.store.insert(
        "Lead",
        {"LastName": "Target", "Company": "Acme", "Dialer_Lead_Id__c": EXT, "Phone": PHONE},
    )
    return lead_id


def _named(how: str, lead_id: str) -> dict[str, str]:
    return {"id": {"id": lead_id}, "phone": {"phone": PHONE}, "ext": {"external_key": EXT}}[how]


async def _until(check: Any, *, timeout_s: float = 30.0) -> None:
    """Poll ``check`` (sync or async) until it is true, with a deadline."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.005)


async def _job_started(sp: Spool) -> bool:
    return bool(await sp.jobs())


async def _all_sent(sp: Spool) -> bool:
    """Nothing pending or in flight: every outcome answered."""
    stats = await sp.stats()
    return stats.pending == 0 and stats.inflight == 0


async def _live_during_slow_bulk(
    tmp_path: Path, *, older_named: str, newer_named: str, older_disposition: str = "wrong_number"
) -> tuple[Rails, dict[str, Any]]:
    """The older outcome goes by a slow Bulk job (after 400 outcomes of other Leads, so its
    Lead row is written about a second after the job starts); once the job is under way,
    the newer outcome (live) is put and goes out by REST before the job writes the older
    state. Runs until nothing is left; returns the rails and the Lead as the org has it."""
    from sfsim import SimOrg

    async with (
        SimOrg(port=0, bulk_rate=400.0) as slow_sim,
        # Nothing urgent but live outcomes: a do-not-call can go by Bulk too.
        open_spool(tmp_path / "s.db", synchronous="NORMAL", urgent_dispositions=()) as sp,
    ):
        lead_id = _target(slow_sim)
        other_ids = seed_leads(slow_sim, 400, prefix="O")
        older = outcome(_named(older_named, lead_id), disposition=older_disposition)
        await sp.put_many([*(outcome({"id": i}) for i in other_ids), older])
        newer = outcome(_named(newer_named, lead_id), disposition="connected", live=True)
        assert newer.ended_at > older.ended_at
        sent_live = asyncio.Event()
        job_row_after_live = False

        def on_call(rail: str, method: str, kind: str, status: int, seconds: float) -> None:
            # (called once each answer is read)
            nonlocal job_row_after_live
            if rail == "live":
                sent_live.set()
            elif sent_live.is_set():
                now = lead(slow_sim, lead_id)["Last_Call_Outcome__c"]
                job_row_after_live |= now == older_disposition

        async with make_client(slow_sim, on_call=on_call) as sf:
            rails = rails_for(sp, sf, bulk_min_records=1, bulk_interval_s=0.01)
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(rails.run(stop))

                await _until(lambda: _job_started(sp))
                await sp.put(newer)
                rails.wake()
                await asyncio.wait_for(sent_live.wait(), 30)

                await _until(lambda: _all_sent(sp), timeout_s=60)
                stop.set()
        # The race under test happened: the job wrote the older state after the live write
        # (seen by the calls reading the job's results, before any re-send).
        assert job_row_after_live
        assert await sp.dead_letters() == []
        return rails, lead(slow_sim, lead_id)


@pytest.mark.parametrize(("older_named", "newer_named"), PAIRS)
async def test_a_slow_bulk_job_does_not_leave_an_older_state_named_another_way(
    tmp_path: Path, older_named: str, newer_named: str
) -> None:
    """(a)/(b) An older outcome in a slow Bulk job, a newer one sent live while it runs,
    the two naming the Lead in different ways: the Lead ends with the newer state (the
    job's late row is followed by the newer state again)."""
    _, row = await _live_during_slow_bulk(
        tmp_path, older_named=older_named, newer_named=newer_named
    )
    assert row["Last_Call_Outcome__c"] == "connected"
    assert row["Status"] == "Working - Contacted"


@pytest.mark.parametrize("older_named", ["phone", "ext"])
async def test_a_slow_bulk_do_not_call_named_another_way_stays_and_the_newer_state_wins(
    tmp_path: Path, older_named: str
) -> None:
    """As above, the older outcome a do-not-call: the newer state wins the Lead's status,
    and DoNotCall stays set."""
    _, row = await _live_during_slow_bulk(
        tmp_path, older_named=older_named, newer_named="id", older_disposition="do_not_call"
    )
    assert row["Last_Call_Outcome__c"] == "connected"
    assert row["Status"] == "Working - Contacted"
    assert row["DoNotCall"] is True


@pytest.mark.parametrize(("newer_named", "older_named"), PAIRS)
async def test_an_older_live_write_landing_after_a_newer_bulk_row_named_another_way_is_undone(
    tmp_path: Path, newer_named: str, older_named: str
) -> None:
    """The newer outcome goes by a slow Bulk job; once the job has written its Lead row,
    an older outcome of the Lead, named another way (its dialer late), is sent live and
    lands after that row. The job's newer state is put back when the job is reconciled
    (the live write could not know a newer state of its Lead was under way)."""
    from sfsim import SimOrg

    async with (
        SimOrg(port=0, bulk_rate=400.0) as slow_sim,
        open_spool(tmp_path / "s.db", synchronous="NORMAL") as sp,
    ):
        lead_id = _target(slow_sim)
        other_ids = seed_leads(slow_sim, 400, prefix="O")
        older = outcome(_named(older_named, lead_id), disposition="wrong_number", live=True)
        newer = outcome(_named(newer_named, lead_id), disposition="connected")
        # The target first: its Lead row is among the first the job writes, ~1 s before
        # the job ends.
        await sp.put_many([newer, *(outcome({"id": i}) for i in other_ids)])
        async with make_client(slow_sim) as sf:
            rails = rails_for(sp, sf, bulk_min_records=1, bulk_interval_s=0.01)
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(rails.run(stop))
                await _until(lambda: lead(slow_sim, lead_id)["Last_Call_Outcome__c"] == "connected")
                await sp.put(older)
                rails.wake()
                # The older state landed over the job's row before the job ended.
                await _until(
                    lambda: lead(slow_sim, lead_id)["Last_Call_Outcome__c"] == "wrong_number"
                )
                assert rails.bulk.stats.batches == 0

                await _until(lambda: _all_sent(sp), timeout_s=60)
                stop.set()
        assert await sp.dead_letters() == []
        row = lead(slow_sim, lead_id)
    assert row["Last_Call_Outcome__c"] == "connected"
    assert row["Status"] == "Working - Contacted"


async def test_a_given_up_batch_puts_back_a_newer_state_sent_under_another_naming(
    tmp_path: Path,
) -> None:
    """A batch given up after its Lead jobs ran (one of them Failed as a whole: the rail
    pauses): its Id job wrote an older outcome's state, named by phone, after a newer one
    named by Id went live. That newer state is put back before the rail pauses, and the
    older outcome, sent again by collections meanwhile, does not overwrite it."""
    from sfsim import SimOrg

    async with (
        SimOrg(port=0, bulk_rate=400.0) as slow_sim,
        open_spool(tmp_path / "s.db", synchronous="NORMAL") as sp,
    ):
        lead_id = _target(slow_sim)
        other_ids = seed_leads(slow_sim, 400, prefix="O")
        older = outcome({"phone": PHONE}, disposition="wrong_number")
        # (named by key: the batch gets a second Lead job, the upsert by key, which fails)
        by_key = outcome({"external_key": "O7"})
        await sp.put_many([*(outcome({"id": i}) for i in other_ids), by_key, older])
        newer = outcome({"id": lead_id}, disposition="connected", live=True)
        sent_live = asyncio.Event()
        job_row_after_live = False

        def on_call(rail: str, method: str, kind: str, status: int, seconds: float) -> None:
            nonlocal job_row_after_live
            if rail == "live":
                sent_live.set()
            elif sent_live.is_set():
                now = lead(slow_sim, lead_id)["Last_Call_Outcome__c"]
                job_row_after_live |= now == "wrong_number"

        async with make_client(slow_sim, on_call=on_call) as sf:
            create = sf.create_ingest_job

            async def create_failing(sobject: str, operation: str, **kw: Any) -> Any:
                if sobject == "Lead" and operation == "upsert":
                    slow_sim.org.faults.configure({"fail_next_jobs": 1})
                return await create(sobject, operation, **kw)

            sf.create_ingest_job = create_failing  # type: ignore[method-assign]
            rails = rails_for(sp, sf, bulk_min_records=1, bulk_interval_s=0.01)
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(rails.run(stop))

                await _until(lambda: _job_started(sp))
                await sp.put(newer)
                rails.wake()
                await _until(lambda: "bulk" in rails.paused)
                assert job_row_after_live
                assert lead(slow_sim, lead_id)["Last_Call_Outcome__c"] == "connected"

                await _until(lambda: _all_sent(sp), timeout_s=60)
                stop.set()
        row = lead(slow_sim, lead_id)
    assert row["Last_Call_Outcome__c"] == "connected"
    assert row["Status"] == "Working - Contacted"


@pytest.mark.parametrize("rail", ["bulk", "collections"])
@pytest.mark.parametrize(("older_named", "newer_named"), PAIRS)
async def test_an_older_outcome_named_another_way_after_a_live_one_does_not_overwrite_it(
    sim: Any, spool: Spool, make_rails: Any, rail: str, older_named: str, newer_named: str
) -> None:
    """A newer outcome went live; an older one of the same Lead, named another way (a
    second dialer, delivering late), goes afterwards by Bulk or collections: the Lead keeps
    the newer state, and the older outcome's Task is written."""
    lead_id = _target(sim)
    older = outcome(_named(older_named, lead_id), disposition="wrong_number")
    newer = outcome(_named(newer_named, lead_id), disposition="connected", live=True)
    assert older.ended_at < newer.ended_at
    await spool.put(newer)
    rails = make_rails(bulk_min_records=1 if rail == "bulk" else 1000)
    await rails.drain(timeout_s=30)
    await spool.put(older)
    await rails.drain(timeout_s=30)
    row = lead(sim, lead_id)
    assert row["Last_Call_Outcome__c"] == "connected"
    assert row["Status"] == "Working - Contacted"
    assert (await spool.stats()).done == 2


@pytest.mark.parametrize("newer_first", [False, True], ids=["older_put_first", "newer_put_first"])
@pytest.mark.parametrize("rail", ["bulk", "collections", "live"])
@pytest.mark.parametrize(("older_named", "newer_named"), PAIRS)
async def test_one_batch_with_a_lead_named_two_ways_sends_the_newer_state(
    sim: Any,
    client: SalesforceClient,
    tmp_path: Path,
    rail: str,
    older_named: str,
    newer_named: str,
    newer_first: bool,
) -> None:
    """(c) Two outcomes of one Lead under two namings claimed together (one Bulk batch, one
    collections batch, or the live rail's micro-batch), put in either order: the Lead ends
    with the newer outcome's state, and the older one's do-not-call stays set."""
    lead_id = _target(sim)
    live = rail == "live"
    older = outcome(_named(older_named, lead_id), disposition="do_not_call", live=live)
    newer = outcome(_named(newer_named, lead_id), disposition="connected", live=live)
    async with open_spool(tmp_path / "c.db", synchronous="NORMAL", urgent_dispositions=()) as sp:
        await sp.put_many([newer, older] if newer_first else [older, newer])
        rails = rails_for(sp, client, bulk_min_records=1 if rail == "bulk" else 1000)
        await rails.drain(timeout_s=30)
        stats = await sp.stats()
        assert stats.done == 2 and stats.dead == 0
    row = lead(sim, lead_id)
    assert row["Last_Call_Outcome__c"] == "connected"
    assert row["Status"] == "Working - Contacted"
    assert row["DoNotCall"] is True
