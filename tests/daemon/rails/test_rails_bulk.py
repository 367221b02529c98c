"""The Bulk API 2.0 rail against sfsim: jobs, reconciliation, failures, newest-wins, restart."""

from __future__ import annotations

import asyncio
import gc
import tomllib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from typing import Any

import pytest
import structlog
from railkit import (
    FAST_POLL,
    FAST_RETRY,
    lead,
    make_client,
    outcome,
    rails_for,
    seed_leads,
    task_by_key,
    task_of,
)

from daemon.mapping import Mapping, load_mapping, parse_mapping
from daemon.rails import Rails
from daemon.salesforce import ConfigurationError, SalesforceClient
from spool import Spool


async def test_bulk_flush_reconciles_every_record(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """1,500 outcomes over 500 Leads: every Task lands, each Lead shows its newest outcome."""
    ids = seed_leads(sim, 500)
    outs = []
    for disp in ["no_answer", "voicemail", "connected"]:
        outs += [outcome({"id": i}, disposition=disp) for i in ids]
    await spool.put_many(outs)
    rails = make_rails(bulk_min_records=1000)
    await rails.drain(timeout_s=60)
    st = sim.org.store
    assert len(st.records("Task")) == 1500
    assert all(lead(sim, i)["Last_Call_Outcome__c"] == "connected" for i in ids)
    calls = client.quota.calls_by_rail
    assert "live" not in calls and "collections" not in calls
    assert calls["bulk"] <= 20
    jobs = await spool.jobs()
    assert {(j.object, j.finished) for j in jobs} == {("Task", True), ("Lead", True)}
    stats = await spool.stats()
    assert stats.done == 1500 and stats.dead == 0
    # The batch's objects were set aside from the collector while it ran (gc.freeze);
    # once it is over nothing stays frozen, so cyclic garbage is collected again.
    assert gc.get_freeze_count() == 0


async def test_a_newer_outcome_claimed_later_in_the_same_batch_wins_the_lead(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A batch built over several claim pages: an outcome put while the batch is being
    built, newer than the one already claimed for its Lead, lands in a later page of
    the same batch. The Lead must end with the newer outcome (a batch that kept its
    first answer to "which outcome is this Lead's newest?" sent the older one)."""
    [lead_id, other] = seed_leads(sim, 2)
    old = outcome({"id": lead_id}, disposition="busy")
    await spool.put_many([old, outcome({"id": other})])
    newer = outcome({"id": lead_id}, disposition="connected")
    assert newer.ended_at > old.ended_at
    rails = make_rails(bulk_min_records=1)
    rails.bulk.claim_page = 1
    ask = spool.newest_per_lead
    put_done = False

    async def ask_then_put(*args: Any, **kw: Any) -> Any:
        nonlocal put_done
        answer = await ask(*args, **kw)
        if not put_done:
            put_done = True
            await spool.put(newer)  # arrives right after the batch asked about its Lead
        return answer

    spool.newest_per_lead = ask_then_put  # type: ignore[method-assign]
    await rails.drain(timeout_s=30)
    assert put_done and rails.bulk.stats.batches == 1
    assert lead(sim, lead_id)["Last_Call_Outcome__c"] == "connected"
    assert task_by_key(sim, newer.external_key) is not None


async def test_do_not_call_survives_coalescing_to_a_newer_outcome(
    sim: Any, client: SalesforceClient, tmp_path: Any
) -> None:
    """An older do-not-call and a newer no-answer in one Bulk batch: DoNotCall stays set."""
    from spool import open_spool

    ids = seed_leads(sim, 3)
    dnc = outcome({"id": ids[0]}, disposition="do_not_call")
    outs = [dnc] + [outcome({"id": i}) for i in ids]
    # Nothing urgent: the do-not-call goes through Bulk with the newer outcome.
    async with open_spool(tmp_path / "b.db", synchronous="NORMAL", urgent_dispositions=()) as sp:
        await sp.put_many(outs)
        rails = rails_for(sp, client, bulk_min_records=1)
        await rails.drain(timeout_s=60)
    assert client.quota.calls_by_rail.get("live") is None
    row = lead(sim, ids[0])
    assert row["DoNotCall"] is True
    assert row["Last_Call_Outcome__c"] == "no_answer"


async def test_do_not_call_stays_when_a_newer_outcome_takes_another_rail(
    sim: Any, spool: Spool, make_rails: Any
) -> None:
    """A live do-not-call followed by a newer Bulk outcome: DoNotCall is never cleared."""
    ids = seed_leads(sim, 3)
    dnc = outcome({"id": ids[0]}, disposition="do_not_call")
    await spool.put_many([dnc] + [outcome({"id": i}) for i in ids])
    await make_rails(bulk_min_records=1).drain(timeout_s=60)
    row = lead(sim, ids[0])
    assert row["DoNotCall"] is True
    assert row["Last_Call_Outcome__c"] == "no_answer"


async def test_external_keys_use_relationship_columns(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """External-key Leads link through Lead:Who.<key> without lookups; unknown keys log the Task."""
    ids = seed_leads(sim, 30)
    outs = [outcome({"external_key": f"L{n}"}, disposition="connected") for n in range(30)]
    ghost = outcome({"external_key": "ghost"})
    await spool.put_many([*outs, ghost])
    rails = make_rails(bulk_min_records=1)
    await rails.drain(timeout_s=60)
    assert rails.resolver.lookups == 0
    assert task_of(sim, outs[3].external_key)["WhoId"][:15] == ids[3][:15]
    assert lead(sim, ids[3])["Status"] == "Working - Contacted"
    t = task_by_key(sim, ghost.external_key)
    assert t is not None and t.get("WhoId") is None
    assert await spool.dead_letters() == []


async def test_whole_job_failure_pauses_bulk_and_keeps_records(
    sim: Any, spool: Spool, make_rails: Any
) -> None:
    """A job Failed on the file pauses the Bulk rail; its records stay pending, none dead
    (collections may carry some meanwhile: the router goes around a paused rail)."""
    ids = seed_leads(sim, 10)
    await spool.put_many([outcome({"id": i}) for i in ids])
    sim.org.faults.configure({"fail_next_jobs": 5})
    rails = make_rails(bulk_min_records=1)
    with pytest.raises(ConfigurationError, match="Failed"):
        await rails.drain(timeout_s=30)
    assert "bulk" in rails.paused
    stats = await spool.stats()
    assert stats.pending + stats.done == 10 and stats.pending > 0 and stats.dead == 0


def _read_only_lead_field() -> Mapping:
    """The default mapping plus a Lead field no user can update (mapped by mistake): every
    write of a Lead is refused INVALID_FIELD_FOR_INSERT_UPDATE, a configuration error."""
    doc = tomllib.loads(resources.files("daemon.mapping").joinpath("default.toml").read_text())
    doc["lead"]["fields"]["ConvertedDate"] = "{ended_date}"
    return parse_mapping(doc)


async def test_a_lead_field_refused_on_every_row_pauses_bulk_and_keeps_records(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """Every Lead row of a job refused for a configuration error: the Bulk rail pauses
    (as the REST rails do) and the records stay pending, none dead. Before, the records
    were released and sent again at once, job after job (280 jobs in 5 s)."""
    ids = seed_leads(sim, 5)
    await spool.put_many([outcome({"id": i}) for i in ids])
    rails = make_rails(_read_only_lead_field(), bulk_min_records=1)
    # Collections meets the same error once the router goes around Bulk, and pauses too.
    with pytest.raises(ConfigurationError, match="INVALID_FIELD_FOR_INSERT_UPDATE"):
        await rails.drain(timeout_s=10)
    jobs = rails.bulk.stats.jobs
    # One batch (a Task job and a Lead job) is enough to learn the setup is wrong.
    assert jobs <= 4, f"{jobs} Bulk jobs for 5 records, calls {client.quota.calls_by_rail}"
    assert rails.paused["bulk"].startswith("INVALID_FIELD_FOR_INSERT_UPDATE: ")
    stats = await spool.stats()
    assert (stats.pending, stats.inflight, stats.dead) == (5, 0, 0)


async def test_a_configuration_error_on_a_record_bulk_hands_to_rest_pauses_bulk(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A record Bulk cannot express (a literal '#N/A' note) goes by REST from the Bulk
    rail; refused there for a configuration error, it pauses the Bulk rail too, instead
    of being claimed and sent again at once."""
    [lead_id] = seed_leads(sim, 1)
    await spool.put(outcome({"id": lead_id}, notes="#N/A"))
    rails = make_rails(_read_only_lead_field(), bulk_min_records=1)
    with pytest.raises(ConfigurationError, match="INVALID_FIELD_FOR_INSERT_UPDATE"):
        await rails.drain(timeout_s=10)
    assert rails.paused["bulk"].startswith("INVALID_FIELD_FOR_INSERT_UPDATE: ")
    calls = client.quota.calls_by_rail
    assert calls.get("collections", 0) <= 4, calls
    stats = await spool.stats()
    assert (stats.pending, stats.inflight, stats.dead) == (1, 0, 0)


async def test_a_lead_row_the_user_may_not_edit_dead_letters_that_record_only(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """One Lead row of a job refused for sharing (INSUFFICIENT_ACCESS_OR_READONLY: the
    user may not edit that Lead) is that record's own error: dead-lettered with
    Salesforce's message; the Bulk rail does not pause and the other records are sent."""
    ids = seed_leads(sim, 5)
    sim.org.store.read_only_ids = {ids[0]}
    outs = [outcome({"id": i}) for i in ids]
    await spool.put_many(outs)
    rails = make_rails(bulk_min_records=1)
    await rails.drain(timeout_s=30)
    assert not rails.paused and "bulk" in client.quota.calls_by_rail
    [dead] = await spool.dead_letters()
    assert dead.call_id == outs[0].call_id
    assert dead.error_code == "INSUFFICIENT_ACCESS_OR_READONLY"
    assert "insufficient access rights" in (dead.error_message or "")
    assert all(lead(sim, i)["Last_Call_Outcome__c"] == "no_answer" for i in ids[1:])
    stats = await spool.stats()
    assert (stats.done, stats.pending, stats.dead) == (4, 0, 1)


async def test_lock_failures_go_into_a_later_job(sim: Any, spool: Spool, make_rails: Any) -> None:
    """Rows failing UNABLE_TO_LOCK_ROW are retried in a later job; nothing is lost."""
    ids = seed_leads(sim, 100)
    outs = [outcome({"id": i}) for i in ids]
    await spool.put_many(outs)
    sim.org.faults.configure({"lock_next": 15})
    rails = make_rails(bulk_min_records=1)
    await rails.drain(timeout_s=60)
    assert all(task_by_key(sim, o.external_key) for o in outs)
    assert rails.bulk.stats.batches >= 2
    assert await spool.dead_letters() == []


async def test_stale_bulk_outcome_does_not_overwrite_newer_live_state(
    sim: Any, spool: Spool, make_rails: Any
) -> None:
    """An older outcome going by Bulk after a newer one went live leaves the newer Lead state."""
    [lead_id] = seed_leads(sim, 1)
    older = outcome({"id": lead_id}, disposition="wrong_number")
    newer = outcome({"id": lead_id}, disposition="connected", live=True)
    await spool.put(newer)
    rails = make_rails(bulk_min_records=1)
    await rails.drain(timeout_s=30)  # the newer, live outcome goes first
    await spool.put(older)
    await rails.drain(timeout_s=30)
    row = lead(sim, lead_id)
    assert row["Status"] == "Working - Contacted"
    assert row["Last_Call_Outcome__c"] == "connected"
    assert task_by_key(sim, older.external_key) is not None


async def _live_during_slow_bulk(
    tmp_path: Any,
    *,
    bulk_rate: float,
    others: int,
    patch: Callable[[Rails, SalesforceClient, Any, str], None] | None = None,
    while_sent: Callable[[], Awaitable[None]] | None = None,
    on_call: Any = None,
) -> tuple[Rails, dict[str, Any]]:
    """An older outcome of one Lead goes by a slow Bulk job (after ``others`` outcomes of
    other Leads); once the job is recorded, a newer live outcome of that Lead is put.
    Runs the rails until nothing is left; returns them and the Lead as the org has it.
    ``patch(rails, client, sim, lead_id)`` runs before the rails start; ``while_sent`` is
    awaited right after the newer outcome is put."""
    from sfsim import SimOrg
    from spool import open_spool

    async with (
        SimOrg(port=0, bulk_rate=bulk_rate) as slow_sim,
        open_spool(tmp_path / "s.db", synchronous="NORMAL") as sp,
    ):
        [lead_id] = seed_leads(slow_sim, 1)
        other_ids = seed_leads(slow_sim, others, prefix="O")
        older = outcome({"id": lead_id}, disposition="wrong_number")
        await sp.put_many([*(outcome({"id": i}) for i in other_ids), older])
        newer = outcome({"id": lead_id}, disposition="connected", live=True)
        async with make_client(slow_sim, on_call=on_call) as sf:
            rails = Rails(
                spool=sp,
                client=sf,
                mapping=load_mapping(None),
                bulk_min_records=1,
                bulk_interval_s=0.01,
                retry_backoff=FAST_RETRY,
                bulk_poll=FAST_POLL,
                idle_poll_s=0.005,
            )
            if patch is not None:
                patch(rails, sf, slow_sim, lead_id)
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(rails.run(stop))
                for _ in range(2000):  # wait for the Bulk job to be under way
                    if await sp.jobs():
                        break
                    await asyncio.sleep(0.005)
                await sp.put(newer)
                rails.wake()
                if while_sent is not None:
                    await while_sent()
                for _ in range(4000):
                    stats = await sp.stats()
                    if stats.pending == 0 and stats.inflight == 0:
                        break
                    await asyncio.sleep(0.005)
                stop.set()
        return rails, lead(slow_sim, lead_id)


async def test_newer_live_state_is_resent_after_a_slow_bulk_job(tmp_path: Any) -> None:
    """A live outcome sent while a Bulk job with an older one runs is re-applied after the job."""
    sent_live = False

    def hook(rail: str, method: str, kind: str, status: int, seconds: float) -> None:
        nonlocal sent_live
        if rail == "live":
            sent_live = True

    rails, row = await _live_during_slow_bulk(tmp_path, bulk_rate=20.0, others=20, on_call=hook)
    assert sent_live
    assert rails.bulk.stats.resent_newer == 1
    assert row["Last_Call_Outcome__c"] == "connected"
    assert row["Status"] == "Working - Contacted"


async def test_a_failed_resend_of_the_newer_state_is_queued_not_given_up(
    tmp_path: Any,
) -> None:
    """As above, but the direct re-send of the newer state after the job is lost (its
    connection cut before Salesforce saw it): the Lead's newest outcome is queued in the
    spool again, and goes out by the rails, instead of the Lead keeping the older state."""

    def patch(rails: Rails, sf: SalesforceClient, sim: Any, lead_id: str) -> None:
        # The only collections request in this run is that re-send (live goes composite).
        sim.org.faults.configure({"drop_next": 3, "kinds": ["collections"]})

    rails, row = await _live_during_slow_bulk(tmp_path, bulk_rate=20.0, others=20, patch=patch)
    assert rails.bulk.stats.resent_newer == 1
    assert row["Last_Call_Outcome__c"] == "connected"
    assert row["Status"] == "Working - Contacted"


async def test_a_refused_resend_of_the_newer_state_is_queued_and_logged_once(
    tmp_path: Any,
) -> None:
    """The re-send of the newer state reaches Salesforce, which refuses the row (locked):
    the Lead's newest outcome is queued again and goes out, and the refusal is one log line
    per call carrying the count and codes, not a line per Lead."""

    def patch(rails: Rails, sf: SalesforceClient, sim: Any, lead_id: str) -> None:
        resend = rails.bulk._resend

        async def locked_resend(items: Any) -> None:
            sim.org.faults.configure({"lock_next": 1})  # the re-send's row, nothing else
            await resend(items)

        rails.bulk._resend = locked_resend  # type: ignore[method-assign]

    with structlog.testing.capture_logs() as logs:
        rails, row = await _live_during_slow_bulk(tmp_path, bulk_rate=20.0, others=20, patch=patch)
    assert rails.bulk.stats.resent_newer == 1
    [line] = [e for e in logs if e["event"] == "bulk_newer_resend_failed"]
    assert line["leads"] == 1 and line["codes"] == {"UNABLE_TO_LOCK_ROW": 1}
    assert row["Last_Call_Outcome__c"] == "connected"
    assert row["Status"] == "Working - Contacted"


async def test_a_live_write_landed_but_unanswered_when_the_bulk_job_ends_is_resent(
    tmp_path: Any,
) -> None:
    """The newer live outcome reaches the org before a slow Bulk job writes the older
    state, but its answer (which records it as sent) only comes once the job is being
    reconciled. The reconciliation waits for that answer, so it still sees the newer
    state went out and puts it back (without waiting, the Lead kept the older state)."""
    reconciling = asyncio.Event()
    landed = asyncio.Event()

    def patch(rails: Rails, sf: SalesforceClient, sim: Any, lead_id: str) -> None:
        reconcile = rails.bulk._reconcile
        composite = sf.composite

        async def reconcile_marked(*args: Any, **kw: Any) -> None:
            reconciling.set()
            await reconcile(*args, **kw)

        async def answer_late(*args: Any, **kw: Any) -> Any:
            # The slow job has not written the Lead yet when the live write goes out.
            assert lead(sim, lead_id)["Last_Call_Outcome__c"] is None
            results = await composite(*args, **kw)  # the write is in the org now
            landed.set()
            await reconciling.wait()  # ... its answer arrives during reconciliation
            return results

        rails.bulk._reconcile = reconcile_marked  # type: ignore[method-assign]
        sf.composite = answer_late  # type: ignore[method-assign]

    async def until_landed() -> None:
        await asyncio.wait_for(landed.wait(), 10)

    # sfsim saves 200 rows at a time, then waits out the rate: with 400 other Leads first,
    # the older outcome's Lead row is written about 1 s after the job starts.
    rails, row = await _live_during_slow_bulk(
        tmp_path, bulk_rate=400.0, others=400, patch=patch, while_sent=until_landed
    )
    assert rails.bulk.stats.resent_newer == 1
    assert row["Last_Call_Outcome__c"] == "connected"
    assert row["Status"] == "Working - Contacted"


async def test_uploads_are_split_below_the_size_cap(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """No upload exceeds the byte cap: a large backlog is cut into several jobs, all land."""
    ids = seed_leads(sim, 60)
    outs = [outcome({"id": i}, notes="n" * 200) for i in ids]
    await spool.put_many(outs)
    rails = make_rails(bulk_min_records=1)
    rails.bulk.max_upload_bytes = 4_000
    sizes: list[int] = []
    real_upload = client.upload_job_data

    async def spy(job_id: str, data: Any, *, size: int | None = None, rail: str = "bulk") -> None:
        assert size is not None
        sizes.append(size)
        await real_upload(job_id, data, size=size, rail=rail)

    client.upload_job_data = spy  # type: ignore[method-assign]
    await rails.drain(timeout_s=60)
    assert all(task_by_key(sim, o.external_key) for o in outs)
    task_uploads = [s for s in sizes if s > 0]
    assert len(task_uploads) >= 4
    # The cap is checked before adding a row, so one row may overshoot it, never more.
    assert max(task_uploads) <= 4_000 + 1_000


async def test_literal_na_value_goes_by_rest_not_cleared(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A note that is literally '#N/A' is stored as text (sent by REST), never read as 'clear'."""
    ids = seed_leads(sim, 3)
    odd = outcome({"id": ids[0]}, notes="#N/A")
    await spool.put_many([odd, outcome({"id": ids[1]}), outcome({"id": ids[2]})])
    await make_rails(bulk_min_records=1).drain(timeout_s=60)
    task = task_by_key(sim, odd.external_key)
    assert task is not None and task["Description"] == "#N/A"
    assert client.quota.calls_by_rail.get("collections") == 1


async def test_task_rows_are_grouped_by_parent_lead(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """Task rows of one Lead sit together in the upload (less lock contention, §7.7); the
    CSV is UTF-8 without BOM, LF line ends."""
    ids = seed_leads(sim, 10)
    await spool.put_many([outcome({"id": ids[n % 10]}) for n in range(60)])
    bodies: list[bytes] = []
    real_upload = client.upload_job_data

    async def spy(job_id: str, data: Any, *, size: int | None = None, rail: str = "bulk") -> None:
        bodies.append(b"".join([chunk async for chunk in data()]))
        await real_upload(job_id, data, size=size, rail=rail)

    client.upload_job_data = spy  # type: ignore[method-assign]
    await make_rails(bulk_min_records=1).drain(timeout_s=60)
    task_csv = next(b for b in bodies if b.startswith(b"Call_Id__c,"))
    assert not task_csv.startswith(b"\xef\xbb\xbf") and b"\r" not in task_csv
    lines = task_csv.decode().splitlines()
    who = lines[0].split(",").index("WhoId")
    leads_in_order = [line.split(",")[who] for line in lines[1:]]
    assert len(leads_in_order) == 60
    runs = [k for n, k in enumerate(leads_in_order) if n == 0 or leads_in_order[n - 1] != k]
    assert len(runs) == 10  # each Lead's rows are contiguous


async def test_phone_named_leads_are_looked_up_once_for_bulk(
    sim: Any, spool: Spool, make_rails: Any
) -> None:
    """Leads named by phone are resolved by lookup (batched, cached) and linked by WhoId."""
    ids = seed_leads(sim, 5)
    outs = [outcome({"phone": f"+1555{n:07d}"}, disposition="connected") for n in range(5)]
    again = [outcome({"phone": f"+1555{n:07d}"}) for n in range(5)]
    await spool.put_many(outs)
    rails = make_rails(bulk_min_records=1)
    await rails.drain(timeout_s=30)
    assert rails.resolver.lookups == 1
    await spool.put_many(again)
    await rails.drain(timeout_s=30)
    assert rails.resolver.lookups == 1  # cached
    for o, lead_id in zip(outs, ids, strict=True):
        assert task_of(sim, o.external_key)["WhoId"][:15] == lead_id[:15]
    assert lead(sim, ids[2])["Last_Call_Outcome__c"] == "no_answer"


async def test_a_transient_phone_lookup_failure_does_not_hold_records_for_the_bulk_lease(
    sim: Any, spool: Spool, make_rails: Any
) -> None:
    """Bulk outcomes whose Lead is named by phone: the batch claims them, then looks the
    phones up. One 503 on that query gives the records back at once (no job names them,
    so nothing else would before their 15-minute lease ran out): they go out as soon as
    Salesforce answers again."""
    ids = seed_leads(sim, 5)
    outs = [outcome({"phone": f"+1555{n:07d}"}, disposition="connected") for n in range(5)]
    await spool.put_many(outs)
    sim.org.faults.configure({"error_next": 1, "kinds": ["query"]})
    rails = make_rails(bulk_min_records=1)
    try:
        await rails.drain(timeout_s=15)
    except TimeoutError:
        pytest.fail(f"records held after one transient 503: {await spool.stats()}")
    for o, lead_id in zip(outs, ids, strict=True):
        assert task_of(sim, o.external_key)["WhoId"][:15] == lead_id[:15]
        assert lead(sim, lead_id)["Last_Call_Outcome__c"] == "connected"


@pytest.mark.parametrize("stage", ["building", "rest_records"])
async def test_a_batch_cancelled_before_any_job_gives_its_records_back(
    sim: Any, spool: Spool, make_rails: Any, stage: str
) -> None:
    """A cancel (e.g. shutdown) landing before any job names a batch's records, while it
    is built or while its records Bulk cannot express (a literal '#N/A') go by REST: all
    its records are pending again when the cancel returns, not in flight for the lease."""
    ids = seed_leads(sim, 3)
    if stage == "rest_records":
        await spool.put_many([outcome({"id": ids[0]}, notes="#N/A")])
        ids = ids[1:]
    await spool.put_many([outcome({"id": i}) for i in ids])
    rails = make_rails(bulk_min_records=1)
    reached = asyncio.Event()

    async def wait_until_cancelled(*args: Any, **kw: Any) -> Any:
        reached.set()
        await asyncio.Event().wait()

    if stage == "building":
        spool.newest_per_lead = wait_until_cancelled  # type: ignore[method-assign]
    else:
        rails.rest.send = wait_until_cancelled  # type: ignore[method-assign]
    flush = asyncio.create_task(rails.bulk.flush_batch(asyncio.Event()))
    await reached.wait()
    assert (await spool.stats()).inflight == 3
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    stats = await spool.stats()
    assert (stats.pending, stats.inflight) == (3, 0)


async def test_bulk_writes_the_same_fields_as_rest(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """The Bulk rail reads stored payloads lazily and writes CSV; the live rail decodes
    them in full and writes JSON. The same outcomes (notes, recording, dialer detail, a
    mapped agent, inbound, a local date that is not the UTC date, no duration) end as the
    same Task and Lead fields either way."""
    [user] = sim.org.store.records("User")
    doc = tomllib.loads(resources.files("daemon.mapping").joinpath("default.toml").read_text())
    mapping = parse_mapping({**doc, "agents": {"agent1": user["Id"]}})
    east = timezone(timedelta(hours=-5))
    variants: list[dict[str, Any]] = [
        {
            "disposition": "connected",
            "notes": 'said "call back", maybe',
            "recording_url": "https://rec.example/r?id=1&x=2",
            "raw_disposition": "SALE",
            "detail": "agent wrap-up",
            "agent_id": "agent1",
            "direction": "inbound",
            "started_at": datetime(2026, 3, 1, 23, 0, tzinfo=east),
            "ended_at": datetime(2026, 3, 1, 23, 30, 0, 123456, tzinfo=east),
        },
        {
            "disposition": "voicemail",
            "duration_s": None,
            "agent_id": "agent9",
            "ended_at": datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        },
        {
            "disposition": "wrong_number",
            "talk_s": 12,
            "extra": {"queue": "q1"},
            "ended_at": datetime(2026, 3, 2, 9, 15, 30, tzinfo=timezone(timedelta(hours=2))),
        },
    ]
    bulk_leads = seed_leads(sim, len(variants), prefix="B")
    rest_leads = seed_leads(sim, len(variants), prefix="R")
    pairs = []
    for kw, b, r in zip(variants, bulk_leads, rest_leads, strict=True):
        pairs.append((outcome({"id": b}, **kw), outcome({"id": r}, live=True, **kw)))
    await spool.put_many([o for pair in pairs for o in pair])
    rails = make_rails(mapping, bulk_min_records=1)
    await rails.drain(timeout_s=30)
    calls = client.quota.calls_by_rail
    assert calls.get("bulk") and calls.get("live")
    own = {"Id", "Call_Id__c", "CallObject", "WhoId"}
    for (by_bulk, by_rest), b, r in zip(pairs, bulk_leads, rest_leads, strict=True):
        task_b = task_of(sim, by_bulk.external_key)
        task_r = task_of(sim, by_rest.external_key)
        fields = set(mapping.task_columns()) - own
        assert {f: task_b[f] for f in fields} == {f: task_r[f] for f in fields}
        assert task_b["WhoId"] == b and task_r["WhoId"] == r
        lead_fields = set(mapping.lead_update(by_rest))
        assert {"Last_Call_Outcome__c", "Last_Call_At__c"} <= lead_fields
        assert {f: lead(sim, b)[f] for f in lead_fields} == {
            f: lead(sim, r)[f] for f in lead_fields
        }
    first = task_of(sim, pairs[0][0].external_key)
    assert first["ActivityDate"] == "2026-03-01" and first["OwnerId"] == user["Id"]
    assert first["Description"].startswith('said "call back", maybe\nRecording: https://')
    assert first["CallType"] == "Inbound" and first["TaskSubtype"] == "Call"
    assert first["CallDurationInSeconds"] == 30


async def test_unbounded_text_is_cut_to_its_field_by_bulk_and_rest(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """Subject = "{notes}" (Task.Subject holds 255) and a Lead Title (128) from the notes:
    a longer note is cut to fit when sent, by the Bulk rail and the live rail alike,
    instead of Salesforce refusing it (STRING_TOO_LONG) and the outcome, its Lead update
    with it, being dead-lettered."""
    mapping = parse_mapping(
        {
            "task": {"fields": {"Subject": "{notes}"}},
            "lead": {"dispositions": {"connected": {"Title": "Re: {notes}"}}},
        }
    )
    notes = "n" * 250 + "x" * 100
    by_bulk_lead, by_rest_lead = seed_leads(sim, 2)
    by_bulk = outcome({"id": by_bulk_lead}, disposition="connected", notes=notes)
    by_rest = outcome({"id": by_rest_lead}, disposition="connected", notes=notes, live=True)
    await spool.put_many([by_bulk, by_rest])
    rails = make_rails(mapping, bulk_min_records=1)
    await rails.drain(timeout_s=30)
    assert rails.status().mapping_problems == ()
    calls = client.quota.calls_by_rail
    assert calls.get("bulk") and calls.get("live")
    stats = await spool.stats()
    assert (stats.done, stats.dead) == (2, 0)
    for o, lead_id in ((by_bulk, by_bulk_lead), (by_rest, by_rest_lead)):
        assert task_of(sim, o.external_key)["Subject"] == notes[:255]
        assert lead(sim, lead_id)["Title"] == ("Re: " + notes)[:128]


async def test_call_ids_differing_only_in_case_go_in_separate_bulk_jobs(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """sfsim's Call_Id__c is not case-sensitive (Salesforce's default for Unique text), so
    'vici:ABC-1' and 'vici:abc-1' are one key, and a Bulk job naming it twice fails both
    rows with DUPLICATE_VALUE "Duplicate external id specified". Claimed together in
    every batch, they failed together until their attempts ran out: two calls dead-lettered.
    The second now waits for the next batch: one Task, as the README says of such call
    ids, both records done, nothing dead, the other records of the batch sent at once."""
    [lead_id, other] = seed_leads(sim, 2)
    older = outcome({"id": lead_id}, call_id="ABC-1", disposition="no_answer")
    newer = outcome({"id": lead_id}, call_id="abc-1", disposition="connected")
    rest = [outcome({"id": other}, call_id=f"x-{n}") for n in range(5)]
    await spool.put_many([older, newer, *rest])
    rails = make_rails(bulk_min_records=1)
    await rails.drain(timeout_s=20)
    assert await spool.dead_letters() == []
    assert (await spool.stats()).done == 7
    assert len(sim.org.store.find("Task", "Call_Id__c", newer.external_key)) == 1
    assert task_of(sim, newer.external_key)["CallDisposition"] == "connected"  # sent second
    assert all(task_by_key(sim, o.external_key) is not None for o in rest)
    # Three batches: the second record waits for the next one, where its Task write, with
    # TaskSubtype, finds the Task and is sent once more without it.
    assert "collections" not in client.quota.calls_by_rail and rails.bulk.stats.batches == 3


async def test_a_batch_keeps_its_leases_while_salesforce_is_down_during_polling(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """Salesforce answers 503 to every Bulk call from just after both jobs started, for
    longer than the batch's lease. The jobs run on in Salesforce meanwhile, so the records
    must stay with this batch: its leases were extended only between successful polls, so
    they ran out during the outage and the records went out a second time (here by the
    collections rail, while the jobs that held them were still running)."""
    ids = seed_leads(sim, 5)
    outs = [outcome({"id": i}) for i in ids]
    await spool.put_many(outs)
    rails = make_rails(bulk_min_records=1, bulk_lease_s=0.6)
    record_job = spool.update_job
    down = asyncio.Event()
    started = 0

    async def then_down(job_id: str, state: str | None = None, **counters: Any) -> bool:
        nonlocal started
        changed = await record_job(job_id, state, **counters)
        started += state == "UploadComplete"
        if started == 2 and not down.is_set():  # the Task job and the Lead job
            sim.org.faults.configure({"error_rate": 1.0, "error_status": 503, "kinds": ["bulk"]})
            down.set()
        return changed

    spool.update_job = then_down  # type: ignore[method-assign]
    async with asyncio.TaskGroup() as tg:
        drain = tg.create_task(rails.drain(timeout_s=30))
        await asyncio.wait_for(down.wait(), 10)
        # Three leases' worth of outage, the records in flight all along.
        loop = asyncio.get_running_loop()
        until = loop.time() + 3 * 0.6
        while loop.time() < until:
            assert (await spool.stats()).inflight == len(outs)
            await asyncio.sleep(0.05)
        sim.org.faults.configure({"clear": True})
        await drain
    assert (await spool.stats()).done == len(outs) and await spool.dead_letters() == []
    assert "collections" not in client.quota.calls_by_rail
    assert rails.bulk.stats.batches == 1
