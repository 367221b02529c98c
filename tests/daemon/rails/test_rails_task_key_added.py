"""The org gains a Task external ID field after running without one, and the mapping goes
back to upserts (``task.external_id_field = "Call_Id__c"``), as the README suggests. Tasks
inserted before carry no key: a later version of such a call must update that Task (by
the Id the spool remembers, filling the key in), not upsert a second one by key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import railkit
import structlog
from railkit import seed_leads

from bench.api_efficiency import no_task_key_mapping
from daemon.mapping import load_mapping
from daemon.salesforce import SalesforceClient
from spool import CallOutcome, Spool

KEY_FIELD = "Call_Id__c"


def outcome(lead_id: str, **kw: Any) -> CallOutcome:
    return railkit.outcome({"id": lead_id}, ended_at=datetime.now(UTC), **kw)


def newer(o: CallOutcome, **changes: Any) -> CallOutcome:
    return CallOutcome.model_validate({**o.model_dump(), "version": 2, **changes})


def tasks(sim: Any) -> list[dict[str, Any]]:
    return list(sim.org.store.records("Task"))


# route of version 2: (live?, Rails keywords)
ROUTES = {
    "live": (True, {}),
    "collections": (False, {}),
    "bulk": (False, {"bulk_min_records": 1}),
}


@pytest.mark.parametrize("route", list(ROUTES))
async def test_a_task_inserted_before_the_key_field_is_updated_not_duplicated(
    route: str, sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    live, kw = ROUTES[route]
    ids = seed_leads(sim, 2)
    first = [outcome(lead_id, live=live, disposition="callback_requested") for lead_id in ids]
    await spool.put_many(first)
    await make_rails(no_task_key_mapping(), **kw).drain(timeout_s=20)
    before = {t["CallObject"]: t for t in tasks(sim)}
    assert len(before) == 2 and all(t.get(KEY_FIELD) is None for t in before.values())

    await spool.put_many([newer(o, disposition="voicemail") for o in first])
    await make_rails(load_mapping(None), **kw).drain(timeout_s=20)
    after = tasks(sim)
    assert len(after) == 2  # no second Task for either call
    for o in first:
        task = sim.org.store.get("Task", before[o.external_key]["Id"])
        assert task[KEY_FIELD] == o.external_key  # filled in: later upserts find it
        assert task["CallDisposition"] == "voicemail"
    assert sim.org.stats()["bulk_jobs"] == {}
    assert await spool.dead_letters() == []


async def test_a_task_inserted_before_and_deleted_since_is_upserted_by_key(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """The remembered Task was deleted: the update by Id says ENTITY_IS_DELETED, a lookup by
    CallObject finds nothing, and the call's Task is upserted by its key (one Task again)."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome(lead_id, live=True)
    await spool.put(o)
    await make_rails(no_task_key_mapping()).drain(timeout_s=20)
    [old] = tasks(sim)
    sim.org.store.delete("Task", old["Id"])
    await spool.put(newer(o, disposition="voicemail"))
    await make_rails(load_mapping(None)).drain(timeout_s=20)
    [task] = tasks(sim)
    assert task["Id"] != old["Id"] and task[KEY_FIELD] == o.external_key
    assert task["CallDisposition"] == "voicemail" and task["TaskSubtype"] == "Call"
    assert await spool.dead_letters() == []


async def test_a_key_another_task_already_carries_updates_that_task(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """Another Task already carries the call's key (an older release upserted a second
    Task after the switch): filling the key into the remembered Task is refused
    DUPLICATE_VALUE. The keyed Task is then updated by key in the same send, instead of the
    record being retried for ever, and the Task inserted before is left as it was."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome(lead_id, live=True, disposition="connected")
    await spool.put(o)
    await make_rails(no_task_key_mapping()).drain(timeout_s=20)
    [old] = tasks(sim)
    keyed = sim.org.store.insert("Task", {"Subject": "x", KEY_FIELD: o.external_key})
    await spool.put(newer(o, disposition="voicemail"))
    with structlog.testing.capture_logs() as logs:
        await make_rails(load_mapping(None)).drain(timeout_s=10)
    assert len(tasks(sim)) == 2
    assert sim.org.store.get("Task", keyed)["CallDisposition"] == "voicemail"
    assert sim.org.store.get("Task", old["Id"])["CallDisposition"] == "connected"
    [line] = [e for e in logs if e["event"] == "task_key_taken"]
    assert line["task_id"] == old["Id"] and line["call_id"] == o.call_id
    assert await spool.dead_letters() == [] and (await spool.stats()).done == 1


async def test_once_its_key_is_filled_in_a_task_is_upserted_like_any_other(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """The update by Id that filled the key in is the last one: the spool forgets the Id,
    and a third version goes by upsert. So when the Lead has been deleted meanwhile, the
    Task is still found by its key and updated without WhoId (the default policy), as for
    any upserted Task, instead of being taken for a deleted Task and dead-lettered."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome(lead_id, live=True, disposition="connected")
    await spool.put(o)
    await make_rails(no_task_key_mapping()).drain(timeout_s=20)
    upserting = make_rails(load_mapping(None))
    await spool.put(newer(o, disposition="voicemail"))
    await upserting.drain(timeout_s=20)
    [task] = tasks(sim)
    assert task[KEY_FIELD] == o.external_key

    sim.org.store.delete("Lead", lead_id)
    await spool.put(newer(o, version=3, disposition="callback_requested"))
    await upserting.drain(timeout_s=20)
    [again] = tasks(sim)
    assert again["Id"] == task["Id"] and again["CallDisposition"] == "callback_requested"
    assert await spool.dead_letters() == []


async def test_a_deleted_task_whose_key_another_task_carries_updates_that_task(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """Both at once: the remembered Task was deleted, and another Task carries the key.
    The lookup finds nothing by CallObject, so the Task is upserted by key with its
    create-only fields; the upsert finds the keyed Task and refuses TaskSubtype on that
    update. That refusal is mended like any other (the fields dropped, sent again), instead
    of pausing the rail on it."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome(lead_id, live=True, disposition="connected")
    await spool.put(o)
    await make_rails(no_task_key_mapping()).drain(timeout_s=20)
    [old] = tasks(sim)
    sim.org.store.delete("Task", old["Id"])
    keyed = sim.org.store.insert("Task", {"Subject": "x", KEY_FIELD: o.external_key})
    await spool.put(newer(o, disposition="voicemail"))
    rails = make_rails(load_mapping(None))
    await rails.drain(timeout_s=10)
    [task] = tasks(sim)
    assert task["Id"] == keyed and task["CallDisposition"] == "voicemail"
    assert not rails.paused
    assert await spool.dead_letters() == [] and (await spool.stats()).done == 1


@pytest.mark.parametrize("route", list(ROUTES))
async def test_a_task_inserted_unanswered_before_the_switch_is_found_not_duplicated(
    route: str, sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """The last insert before the switch landed but its answer was lost: the spool has no
    Id for it. The first send after the switch looks it up by CallObject (the rails mark
    such records when they see the spool's Tasks were inserted before), updates the Task
    that landed and fills its key in, instead of upserting a second Task."""
    live, kw = ROUTES[route]
    ids = seed_leads(sim, 2)
    earlier = outcome(ids[0], live=live)
    await spool.put(earlier)
    await make_rails(no_task_key_mapping(), **kw).drain(timeout_s=20)  # Tasks inserted
    o = outcome(ids[1], live=live, disposition="connected")
    await spool.put(o)
    # The insert run's claim of ``o``: its Task landed, the answer was lost.
    await spool.release(await spool.claim("live", 10, urgent=live))
    landed = sim.org.store.insert("Task", {"Subject": "x", "CallObject": o.external_key})
    with structlog.testing.capture_logs() as logs:
        await make_rails(load_mapping(None), **kw).drain(timeout_s=20)
    [task] = [t for t in tasks(sim) if t.get(KEY_FIELD) == o.external_key]
    assert task["Id"] == landed
    assert task["CallDisposition"] == "connected"
    assert len(tasks(sim)) == 2
    [switch] = [e for e in logs if e["event"] == "task_key_switch_lookups"]
    assert switch["records"] == 1
    assert await spool.dead_letters() == [] and (await spool.stats()).done == 2

    # Looked up once: a later version goes by upsert, without a lookup.
    queries = sim.org.stats()["api_calls"]["by_kind"].get("query", 0)
    await spool.put(newer(o, disposition="voicemail"))
    await make_rails(load_mapping(None), **kw).drain(timeout_s=20)
    assert sim.org.store.get("Task", landed)["CallDisposition"] == "voicemail"
    assert sim.org.stats()["api_calls"]["by_kind"].get("query", 0) == queries


async def test_a_mapping_reload_to_the_key_field_marks_too(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """The same switch by a mapping reload (SIGHUP) of running rails, not a restart."""
    ids = seed_leads(sim, 2)
    await spool.put(outcome(ids[0], live=True))
    rails = make_rails(no_task_key_mapping())
    await rails.drain(timeout_s=20)
    o = outcome(ids[1], live=True, disposition="connected")
    await spool.put(o)
    await spool.release(await spool.claim("live", 10, urgent=True))
    landed = sim.org.store.insert("Task", {"Subject": "x", "CallObject": o.external_key})
    rails.set_mapping(load_mapping(None))
    await rails.drain(timeout_s=20)
    [task] = [t for t in tasks(sim) if t.get(KEY_FIELD) == o.external_key]
    assert task["Id"] == landed and len(tasks(sim)) == 2
