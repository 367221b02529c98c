"""Orgs without a Task external ID field (``task.external_id_field = ""``), against an sfsim
org whose Task has no ``Call_Id__c``: Tasks are inserted, their Ids kept in the spool and
updated by Id after; a record that may have been sent before (its answer lost) is found
by ``CallObject`` first, so no call ever gets two Tasks. No Bulk job is ever created."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import railkit
import structlog
from railkit import lead, seed_leads

from bench.api_efficiency import no_task_key_mapping
from daemon.mapping import load_mapping
from daemon.salesforce import ConfigurationError, SalesforceClient
from sfsim.schema import default_schema
from sfsim.testing import sim_fixture
from spool import CallOutcome, Spool

# This module's org: the built-in schema, minus the Task external ID field.
sim = sim_fixture(schema=default_schema(without=["Task.Call_Id__c"]))


def outcome(lead: dict[str, str] | None = None, **kw: Any) -> CallOutcome:
    """A call that ended just now (one that ended longer ago than the spool's retention
    may have been stored, sent and purged before: it would be looked up first)."""
    kw.setdefault("ended_at", datetime.now(UTC))
    return railkit.outcome(lead, **kw)


def tasks_of(sim: Any, o: CallOutcome) -> list[dict[str, Any]]:
    st = sim.org.store
    return [st.get("Task", i) for i in st.find("Task", "CallObject", o.external_key)]


def task_of(sim: Any, o: CallOutcome) -> dict[str, Any]:
    [task] = tasks_of(sim, o)
    return task


def newer(o: CallOutcome, **changes: Any) -> CallOutcome:
    """Version 2 of the same call."""
    return CallOutcome.model_validate({**o.model_dump(), "version": 2, **changes})


def calls(sim: Any) -> dict[str, int]:
    by_kind: dict[str, int] = sim.org.stats()["api_calls"]["by_kind"]
    return by_kind


async def test_live_outcome_inserts_its_task_and_a_newer_version_updates_it(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """The first send inserts the Task (create-only TaskSubtype included) and the Lead update
    in one composite call; a newer version of the call updates that same Task by its Id,
    with no lookup query and no second Task. The mapping check passes on this org."""
    [lead_id] = seed_leads(sim, 1)
    first = outcome({"id": lead_id}, disposition="callback_requested", live=True)
    await spool.put(first)
    rails = make_rails(no_task_key_mapping())
    await rails.drain(timeout_s=20)
    assert rails.status().mapping_problems == ()
    assert spool.durable_claims is True  # a claim survives a power cut, see Spool
    task = task_of(sim, first)
    assert task["TaskSubtype"] == "Call" and task["CallDisposition"] == "callback_requested"
    assert task["WhoId"][:15] == lead_id[:15]
    assert calls(sim).get("composite") == 1

    await spool.put(newer(first, disposition="do_not_call"))
    await rails.drain(timeout_s=20)
    again = task_of(sim, first)
    assert again["Id"] == task["Id"] and again["CallDisposition"] == "do_not_call"
    assert lead(sim, lead_id)["DoNotCall"] is True
    assert calls(sim).get("composite") == 2 and "query" not in calls(sim)
    assert (await spool.stats()).done == 1


async def test_a_lost_answer_is_found_by_call_object_instead_of_inserted_twice(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """The insert lands but its answer is lost (connection cut after processing): the record
    is retried, looked up by CallObject (one query), and the found Task updated."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome({"id": lead_id}, disposition="connected", live=True)
    await spool.put(o)
    sim.org.faults.configure(
        {"drop_next": 1, "drop_after_processing": True, "kinds": ["composite"]}
    )
    with structlog.testing.capture_logs() as logs:
        await make_rails(no_task_key_mapping()).drain(timeout_s=20)
    [task] = tasks_of(sim, o)
    assert task["CallDisposition"] == "connected"
    assert calls(sim).get("query") == 1 and calls(sim).get("composite") == 2
    [looked] = [e for e in logs if e["event"] == "task_lookup"]
    assert looked["keys"] == 1 and looked["found"] == 1
    assert lead(sim, lead_id)["Status"] == "Working - Contacted"
    assert (await spool.stats()).done == 1 and await spool.dead_letters() == []


@pytest.mark.parametrize("nested", [True, False])
async def test_a_collections_batch_inserts_new_tasks_and_updates_known_ones(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any, nested: bool
) -> None:
    """30 outcomes go by collections and are inserted; then newer versions of 10 of them and
    20 new outcomes go in one batch: 10 updates by Id and 20 inserts, 50 Tasks in all, one
    per call. Nested, that batch is one composite call; not nested, one call per collection
    (inserts, updates, Leads)."""
    ids = seed_leads(sim, 50)
    first = [outcome({"id": i}, disposition="no_answer") for i in ids[:30]]
    await spool.put_many(first)
    rails = make_rails(no_task_key_mapping(), nested_collections=nested, bulk_min_records=1)
    await rails.drain(timeout_s=30)
    assert all(len(tasks_of(sim, o)) == 1 for o in first)
    before = {o.call_id: task_of(sim, o)["Id"] for o in first}
    sent = client.quota.calls_by_rail.get("collections", 0)

    updated = [newer(o, disposition="connected") for o in first[:10]]
    fresh = [outcome({"id": i}, disposition="busy") for i in ids[30:]]
    await spool.put_many([*updated, *fresh])
    await rails.drain(timeout_s=30)
    assert client.quota.calls_by_rail.get("collections", 0) - sent == (1 if nested else 3)
    assert sim.org.store.counts()["Task"] == 50
    for o in updated:
        task = task_of(sim, o)
        assert task["Id"] == before[o.call_id] and task["CallDisposition"] == "connected"
    assert all(task_of(sim, o)["TaskSubtype"] == "Call" for o in fresh)
    assert "query" not in calls(sim)
    assert lead(sim, ids[0])["Status"] == "Working - Contacted"


async def test_lost_answers_of_a_collections_batch_leave_one_task_per_call(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A batch of 120 inserted with its answer lost, twice: one lookup per batch retry finds
    what landed; every call ends with exactly one Task."""
    ids = seed_leads(sim, 120)
    outs = [outcome({"id": i}, disposition="no_answer") for i in ids]
    await spool.put_many(outs)
    sim.org.faults.configure(
        {"drop_next": 2, "drop_after_processing": True, "kinds": ["composite"]}
    )
    await make_rails(no_task_key_mapping(), bulk_min_records=1).drain(timeout_s=30)
    assert all(len(tasks_of(sim, o)) == 1 for o in outs)
    assert sim.org.store.counts()["Task"] == 120
    assert calls(sim).get("query") == 2  # 120 keys: two IN lists of up to 100


async def test_a_failed_lookup_waits_instead_of_inserting_blind(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A record claimed before whose Task landed (its answer lost): while the lookup fails
    (503), the record waits and is retried; it is never inserted blind, so the Task that
    landed is the one updated."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome({"id": lead_id}, live=True, disposition="connected")
    landed = sim.org.store.insert("Task", {"Subject": "x", "CallObject": o.external_key})
    await spool.put(o)
    await spool.release(await spool.claim("live", 10, urgent=True))
    sim.org.faults.configure({"error_next": 2, "error_status": 503, "kinds": ["query"]})
    with structlog.testing.capture_logs() as logs:
        await make_rails(no_task_key_mapping()).drain(timeout_s=20)
    assert [t["Id"] for t in tasks_of(sim, o)] == [landed]
    assert task_of(sim, o)["CallDisposition"] == "connected"
    assert len([e for e in logs if e["event"] == "task_lookup_failed"]) == 2
    assert await spool.dead_letters() == [] and (await spool.stats()).done == 1


async def test_a_record_marked_by_an_upserting_run_is_still_looked_up(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A record an upserting run marked as maybe inserted (``task_id == ""``) counts as one
    without a Task Id when Tasks are inserted again: looked up, not inserted blind."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome({"id": lead_id}, live=True, disposition="connected")
    landed = sim.org.store.insert("Task", {"Subject": "x", "CallObject": o.external_key})
    await spool.put(o)
    await spool.release(await spool.claim("live", 10, urgent=True))
    assert await spool.suspect_unkeyed_tasks() == 1
    await make_rails(no_task_key_mapping()).drain(timeout_s=20)
    assert [t["Id"] for t in tasks_of(sim, o)] == [landed]
    assert task_of(sim, o)["CallDisposition"] == "connected"


async def test_a_remembered_task_deleted_since_is_inserted_again(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """Someone deleted the Task: the update by Id says ENTITY_IS_DELETED; one lookup by key
    finds no Task, and the same send inserts it again in full instead of pausing the rail
    or dead-lettering the call."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome({"id": lead_id}, live=True)
    await spool.put(o)
    rails = make_rails(no_task_key_mapping())
    await rails.drain(timeout_s=20)
    old = task_of(sim, o)["Id"]
    sim.org.store.delete("Task", old)
    with structlog.testing.capture_logs() as logs:
        await spool.put(newer(o, disposition="voicemail"))
        await rails.drain(timeout_s=20)
    task = task_of(sim, o)
    assert task["Id"] != old and task["CallDisposition"] == "voicemail"
    assert task["TaskSubtype"] == "Call"
    assert any(e["event"] == "task_deleted_reinserting" for e in logs)
    assert not rails.paused and await spool.dead_letters() == []
    assert calls(sim).get("query") == 1


async def test_a_deleted_lead_is_not_mistaken_for_a_deleted_task(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """The Lead goes to the recycle bin after its Task was written: updating the Task with
    that WhoId also says ENTITY_IS_DELETED with no field. The lookup finds the Task under its
    Id, so nothing is inserted: the same Task is updated without WhoId (the default policy)."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome({"id": lead_id}, live=True, disposition="connected")
    await spool.put(o)
    rails = make_rails(no_task_key_mapping())
    await rails.drain(timeout_s=20)
    first = task_of(sim, o)
    sim.org.store.delete("Lead", lead_id)
    with structlog.testing.capture_logs() as logs:
        await spool.put(newer(o, disposition="voicemail"))
        await rails.drain(timeout_s=20)
    task = task_of(sim, o)
    assert task["Id"] == first["Id"] and task["CallDisposition"] == "voicemail"
    assert task["WhoId"] == first["WhoId"]  # an update without WhoId leaves it as it was
    assert not any(e["event"] == "task_deleted_reinserting" for e in logs)
    assert not rails.paused and await spool.dead_letters() == []


@pytest.mark.parametrize("after", ["lost_answer", "deleted_task"])
async def test_a_refused_lookup_pauses_the_rail_and_inserts_nothing(
    after: str,
    sim: Any,
    spool: Spool,
    client: SalesforceClient,
    make_rails: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The integration user loses read access to Task.CallObject (queries naming it get
    INVALID_FIELD, as real orgs answer). Whether the lookup comes before inserting a record
    whose answer was lost, or after an update by Id found its Task deleted, no Task can be
    inserted safely: the rail pauses naming the field, and the record stays pending
    (retrying would only repeat the refusal)."""
    [lead_id] = seed_leads(sim, 1)
    rails = make_rails(no_task_key_mapping())
    first = outcome({"id": lead_id}, live=True)
    await spool.put(first)
    await rails.drain(timeout_s=20)  # the start-up mapping check passes on this org
    if after == "lost_answer":
        o = outcome({"id": lead_id}, live=True)
        await spool.put(o)
        await spool.release(await spool.claim("live", 10, urgent=True))
    else:
        o = newer(first, disposition="voicemail")
        sim.org.store.delete("Task", task_of(sim, first)["Id"])
        await spool.put(o)
    monkeypatch.delitem(sim.org.schema.get("Task")._by_lower, "callobject")
    with pytest.raises(ConfigurationError, match="CallObject"):
        await rails.drain(timeout_s=10)
    assert "'CallObject' on entity 'Task'" in rails.paused["live"]
    monkeypatch.undo()  # the field back, to look in the org
    assert tasks_of(sim, o) == []
    stats = await spool.stats()
    assert stats.pending == 1 and await spool.dead_letters() == []


async def test_several_tasks_with_one_key_update_the_first_and_say_so(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """Two Tasks already carry the call's key (made by hand): a re-sent record updates the
    first by Id, inserts nothing, and logs task_lookup_ambiguous."""
    o = outcome(disposition="connected")
    st = sim.org.store
    made = [st.insert("Task", {"Subject": s, "CallObject": o.external_key}) for s in "ab"]
    await spool.put(o)
    claimed = await spool.claim("collections", 10, urgent=False)
    await spool.release(claimed)  # claimed once before: its Task may exist
    with structlog.testing.capture_logs() as logs:
        await make_rails(no_task_key_mapping(), bulk_min_records=1).drain(timeout_s=20)
    assert len(tasks_of(sim, o)) == 2
    first = st.get("Task", min(made))
    assert first["CallDisposition"] == "connected" and first["Subject"] == "Call: Connected"
    [line] = [e for e in logs if e["event"] == "task_lookup_ambiguous"]
    assert line["call_id"] == o.call_id and line["others"] == 1


async def test_a_big_backlog_never_makes_a_bulk_job(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """3,000 pending outcomes over bulk_min_records go by collections (200 per call), not by
    Bulk jobs, which could not match a Task without an external key."""
    ids = seed_leads(sim, 300)
    outs = [outcome({"id": ids[n % 300]}, disposition="no_answer") for n in range(3000)]
    await spool.put_many(outs)
    await make_rails(no_task_key_mapping(), bulk_min_records=1000).drain(timeout_s=60)
    assert sim.org.store.counts()["Task"] == 3000
    assert "bulk" not in calls(sim) and sim.org.stats()["bulk_jobs"] == {}
    assert client.quota.calls_by_rail.get("collections") == 15


async def test_claims_are_durable_only_while_tasks_are_inserted(
    spool: Spool, make_rails: Any
) -> None:
    """Upserting Tasks, a claim lost to a power cut is harmless (the record is sent again,
    upserted): claims skip the fsync. Inserting them, it is not: claims are fsynced, from
    the mapping reload on."""
    rails = make_rails(load_mapping(None))
    assert spool.durable_claims is False
    rails.set_mapping(no_task_key_mapping())
    assert spool.durable_claims is True
    rails.set_mapping(load_mapping(None))
    assert spool.durable_claims is False
