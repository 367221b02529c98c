"""Restart with Bulk jobs left in every state: Open, UploadComplete/InProgress, JobComplete,
Failed, Aborted. A first process dies at a chosen wire step; a second one, on the same
spool, recovers: every outcome lands exactly once, nothing is lost or dead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from railkit import lead, make_client, outcome, rails_for, seed_leads, wait_for

from daemon.mapping import parse_mapping
from daemon.salesforce import SalesforceClient
from spool import JobRow, Spool, open_spool

TERMINAL = {"JobComplete", "Failed", "Aborted"}


class Crash(Exception):
    """Simulated process death at a chosen wire step."""


@pytest.fixture
async def slow_sim() -> AsyncIterator[Any]:
    """An org that processes Bulk rows slowly (jobs stay InProgress for a while)."""
    from sfsim import SimOrg

    async with SimOrg(port=0, bulk_rate=40.0) as org:
        yield org


async def _crash_first_run(sim: Any, spool: Spool, at: tuple[str, str], **kw: Any) -> list[JobRow]:
    """Run the rails until the first request matching (method, kind) returns, then die."""
    armed = True

    def hook(rail: str, method: str, kind: str, status: int, seconds: float) -> None:
        nonlocal armed
        if armed and (method, kind) == at:
            armed = False
            raise Crash(method)

    async with make_client(sim, on_call=hook) as sf:
        with pytest.raises(BaseExceptionGroup) as info:
            await rails_for(spool, sf, bulk_min_records=1, **kw).drain(timeout_s=30)
        assert info.group_contains(Crash)
    jobs = await spool.jobs()
    assert jobs and not any(j.finished for j in jobs)
    return jobs


async def _states(sf: SalesforceClient, jobs: list[JobRow]) -> set[str]:
    return {str((await sf.job_info(j.sf_job_id))["state"]) for j in jobs}


async def _restart(sim: Any, spool: Spool, **kw: Any) -> tuple[int, dict[str, int]]:
    """A second process on the same spool: Bulk jobs it created, and its calls per rail."""
    async with make_client(sim) as sf:
        rails = rails_for(spool, sf, bulk_min_records=1, **kw)
        await rails.drain(timeout_s=60)
        return rails.bulk.stats.jobs, dict(sf.quota.calls_by_rail)


async def _check_all_landed_once(sim: Any, spool: Spool, outs: list[Any], ids: list[str]) -> None:
    st = sim.org.store
    for o in outs:
        assert len(st.find("Task", "Call_Id__c", o.external_key)) == 1
    for o, lead_id in zip(outs, ids, strict=True):
        assert lead(sim, lead_id)["Last_Call_Outcome__c"] == o.disposition.value
    stats = await spool.stats()
    assert stats.done == len(outs) and stats.dead == 0 and stats.inflight == 0
    assert all(j.finished for j in await spool.jobs())


async def _fill(sim: Any, spool: Spool, n: int) -> tuple[list[Any], list[str]]:
    ids = seed_leads(sim, n)
    outs = [outcome({"id": i}, disposition="connected") for i in ids]
    await spool.put_many(outs)
    return outs, ids


async def test_open_job_is_aborted_and_its_records_requeued(sim: Any, spool: Spool) -> None:
    """Died before the upload: the Open job is aborted, its records go out in a new job."""
    outs, ids = await _fill(sim, spool, 20)
    jobs = await _crash_first_run(sim, spool, ("PUT", "bulk"))
    async with make_client(sim) as sf:
        assert await _states(sf, jobs) == {"Open"}
    new_jobs, _ = await _restart(sim, spool)
    assert new_jobs >= 1
    assert {j.state for j in await spool.jobs() if j.sf_job_id == jobs[0].sf_job_id} == {"Aborted"}
    await _check_all_landed_once(sim, spool, outs, ids)


async def test_running_jobs_are_polled_and_reconciled(slow_sim: Any, tmp_path: Path) -> None:
    """Died while the jobs ran: the restart polls them to the end and acknowledges their
    records from the result files, without sending anything again."""
    async with open_spool(tmp_path / "r.db", synchronous="NORMAL") as spool:
        outs, ids = await _fill(slow_sim, spool, 10)
        jobs = await _crash_first_run(slow_sim, spool, ("GET", "bulk"))
        async with make_client(slow_sim) as sf:
            assert await _states(sf, jobs) <= {"UploadComplete", "InProgress"}
        new_jobs, calls = await _restart(slow_sim, spool)
        assert new_jobs == 0 and "collections" not in calls and "live" not in calls
        assert {j.state for j in await spool.jobs()} == {"JobComplete"}
        await _check_all_landed_once(slow_sim, spool, outs, ids)


async def test_completed_jobs_are_reconciled_not_resent(sim: Any, spool: Spool) -> None:
    """Died after the jobs finished, before reading results: reconciled from the results."""
    outs, ids = await _fill(sim, spool, 20)
    jobs = await _crash_first_run(sim, spool, ("GET", "bulk"))
    async with make_client(sim) as sf:

        async def finished() -> bool:
            return await _states(sf, jobs) <= TERMINAL

        await wait_for(finished)
        assert await _states(sf, jobs) == {"JobComplete"}
    new_jobs, calls = await _restart(sim, spool)
    assert new_jobs == 0 and "collections" not in calls
    await _check_all_landed_once(sim, spool, outs, ids)


async def test_completed_job_with_failed_rows_dead_letters_only_those(
    sim: Any, spool: Spool
) -> None:
    """A recovered JobComplete job: a row refused for good is dead-lettered with its code,
    a row that failed on a lock is sent again, the rest is done."""
    # A picklist: text into a free-text field (Subject) would be cut to fit instead.
    mapping = parse_mapping({"task": {"fields": {"Type": "{notes}"}}})
    ids = seed_leads(sim, 6)
    locked = outcome({"id": ids[0]})
    good = [outcome({"id": i}) for i in ids[1:5]]
    bad = outcome({"id": ids[5]}, notes="x" * 300)  # STRING_TOO_LONG for Type
    await spool.put_many([locked, *good, bad])
    sim.org.faults.configure({"lock_next": 1})
    jobs = await _crash_first_run(sim, spool, ("GET", "bulk"), mapping=mapping)
    async with make_client(sim) as sf:

        async def finished() -> bool:
            return await _states(sf, jobs) <= TERMINAL

        await wait_for(finished)
    new_jobs, _ = await _restart(sim, spool, mapping=mapping)
    assert new_jobs >= 1  # the locked row went out again
    [dead] = await spool.dead_letters()
    assert dead.call_id == bad.call_id and dead.error_code == "STRING_TOO_LONG"
    st = sim.org.store
    for o in [*good, locked]:
        assert len(st.find("Task", "Call_Id__c", o.external_key)) == 1
    assert (await spool.stats()).done == 5


async def test_failed_jobs_requeue_their_records(sim: Any, spool: Spool) -> None:
    """Jobs that Failed as a whole while we were down: their records are sent again."""
    outs, ids = await _fill(sim, spool, 20)
    sim.org.faults.configure({"fail_next_jobs": 2})
    jobs = await _crash_first_run(sim, spool, ("GET", "bulk"))
    async with make_client(sim) as sf:

        async def finished() -> bool:
            return await _states(sf, jobs) <= TERMINAL

        await wait_for(finished)
        assert "Failed" in await _states(sf, jobs)
    new_jobs, _ = await _restart(sim, spool)
    assert new_jobs >= 1
    old = {j.sf_job_id: j.state for j in await spool.jobs()}
    assert "Failed" in {old[j.sf_job_id] for j in jobs}
    await _check_all_landed_once(sim, spool, outs, ids)


async def test_jobs_aborted_by_an_admin_requeue_their_records(
    slow_sim: Any, tmp_path: Path
) -> None:
    """Jobs aborted (by an admin) while we were down: their records are sent again."""
    async with open_spool(tmp_path / "a.db", synchronous="NORMAL") as spool:
        outs, ids = await _fill(slow_sim, spool, 20)
        jobs = await _crash_first_run(slow_sim, spool, ("GET", "bulk"))
        async with make_client(slow_sim) as sf:
            for j in jobs:
                await sf.set_job_state(j.sf_job_id, "Aborted")
            assert await _states(sf, jobs) == {"Aborted"}
        new_jobs, _ = await _restart(slow_sim, spool)
        assert new_jobs >= 1
        old = {j.sf_job_id: j.state for j in await spool.jobs()}
        assert {old[j.sf_job_id] for j in jobs} == {"Aborted"}
        await _check_all_landed_once(slow_sim, spool, outs, ids)


async def test_a_lead_job_aborted_after_some_rows_landed_puts_newer_states_back(
    tmp_path: Path,
) -> None:
    """A Lead job of ours wrote an older outcome's state over the newer one a REST write
    had put there, and was aborted (by an admin) before it finished, while we were down.
    Recovery puts the Lead's newest state back, as after a job that completed."""
    from sfsim import SimOrg

    async with (
        SimOrg(port=0, bulk_rate=100.0) as org,  # 200 rows, then 2 s before the next 200
        open_spool(tmp_path / "a.db", synchronous="NORMAL", urgent_dispositions=()) as spool,
    ):
        [lead_id, *others] = seed_leads(org, 201)
        older = outcome({"id": lead_id}, disposition="wrong_number")
        newer = outcome({"id": lead_id}, disposition="connected")
        await spool.put_many([older, newer])
        claims = {c.record_id: c for c in await spool.claim("live", 10)}
        [older_claim] = [c for c in claims.values() if c.outcome.call_id == older.call_id]
        [newer_claim] = [c for c in claims.values() if c.outcome.call_id == newer.call_id]
        # The newer outcome went by REST: done, its state on the Lead.
        org.org.store.update("Lead", lead_id, {"Last_Call_Outcome__c": "connected"})
        await spool.ack([newer_claim])
        # The older one's Lead row, in a job (first of 201 rows) recorded before its upload.
        async with make_client(org) as sf:
            job = await sf.create_ingest_job("Lead", "update")
            job_id = str(job["id"])
            await spool.record_job(job_id, "Lead", "update", [older_claim], state="Open")
            csv = "Id,Last_Call_Outcome__c\n" + "".join(
                f"{i},wrong_number\n" for i in (lead_id, *others)
            )
            await sf.upload_job_data(job_id, csv.encode())
            await sf.set_job_state(job_id, "UploadComplete")

            async def first_rows_landed() -> bool:
                return lead(org, lead_id)["Last_Call_Outcome__c"] == "wrong_number"

            await wait_for(first_rows_landed)
            await sf.set_job_state(job_id, "Aborted")  # the admin, before row 201
            assert (await sf.job_info(job_id))["state"] == "Aborted"
        await _restart(org, spool)
        assert lead(org, lead_id)["Last_Call_Outcome__c"] == "connected"
        assert (await spool.stats()).done == 2
