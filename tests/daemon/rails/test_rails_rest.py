"""Live and collections rails against sfsim: composite per outcome, batches, errors."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
import structlog
from railkit import (
    FAST_POLL,
    FAST_RETRY,
    lead,
    make_client,
    outcome,
    seed_leads,
    task_by_key,
    task_of,
    wait_for,
)

from daemon.mapping import LeadNotFound, load_mapping, parse_mapping
from daemon.salesforce import ConfigurationError, SalesforceClient
from spool import CallOutcome, Spool


async def test_live_outcome_goes_as_one_composite_call(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A live do-not-call outcome becomes a Task and a DoNotCall Lead in one API call."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome({"id": lead_id}, disposition="do_not_call", live=True, notes="stop calling")
    await spool.put(o)
    rails = make_rails()
    await rails.drain(timeout_s=20)
    assert rails.status().mapping_problems == ()  # the built-in mapping fits sfsim's org
    task = task_by_key(sim, o.external_key)
    assert task is not None
    assert task["WhoId"][:15] == lead_id[:15]
    assert task["Status"] == "Completed" and task["TaskSubtype"] == "Call"
    assert task["CallType"] == "Outbound" and task["CallDurationInSeconds"] == 30
    assert "stop calling" in task["Description"]
    row = lead(sim, lead_id)
    assert row["DoNotCall"] is True and row["Last_Call_Outcome__c"] == "do_not_call"
    assert client.quota.calls_by_rail.get("live") == 1
    stats = await spool.stats()
    assert stats.done == 1 and stats.pending == 0


async def test_many_urgent_outcomes_share_one_call(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """150 urgent outcomes pending at once go as collections inside one composite call."""
    ids = seed_leads(sim, 150)
    outs = [outcome({"id": i}, disposition="callback_requested", live=True) for i in ids]
    await spool.put_many(outs)
    await make_rails().drain(timeout_s=20)
    assert all(task_by_key(sim, o.external_key) for o in outs)
    assert client.quota.calls_by_rail.get("live") == 1
    assert lead(sim, ids[7])["Status"] == "Working - Contacted"


@pytest.mark.parametrize("linger_ms", [0, 1000])
async def test_live_linger_lets_a_burst_share_one_call(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any, linger_ms: int
) -> None:
    """With ``live_linger_ms``, urgent outcomes arriving while the first one waits go
    out with it in one call; without it the first goes at once, alone."""
    ids = seed_leads(sim, 3)
    first, *burst = [outcome({"id": i}, disposition="do_not_call", live=True) for i in ids]
    rails = make_rails(live_linger_s=linger_ms / 1000)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(rails.run(stop))
        await spool.put(first)
        await wait_for(lambda: _inflight_or_done(spool))
        await spool.put_many(burst)
        await wait_for(lambda: _all_done(spool, 3), timeout_s=20)
        stop.set()
    assert all(task_by_key(sim, o.external_key) for o in (first, *burst))
    assert all(lead(sim, i)["DoNotCall"] is True for i in ids)
    calls = client.quota.calls_by_rail.get("live")
    assert calls == 1 if linger_ms else calls >= 2


async def _all_done(spool: Spool, n: int) -> bool:
    return (await spool.stats()).done == n


async def _inflight_or_done(spool: Spool) -> bool:
    stats = await spool.stats()
    return stats.inflight + stats.done > 0


async def test_small_backlog_goes_by_collections(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """450 non-urgent outcomes (under bulk_min_records) cost 3 collections calls."""
    ids = seed_leads(sim, 450)
    outs = [outcome({"id": i}, disposition="connected") for i in ids]
    await spool.put_many(outs)
    await make_rails(bulk_min_records=2000).drain(timeout_s=30)
    assert all(task_by_key(sim, o.external_key) for o in outs)
    assert client.quota.calls_by_rail.get("collections") == 3
    assert lead(sim, ids[0])["Status"] == "Working - Contacted"


async def test_external_key_and_phone_leads_are_looked_up_and_cached(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """Leads named by external key or phone are looked up; a second outcome hits the cache."""
    ids = seed_leads(sim, 2)
    a = outcome({"external_key": "L0"}, live=True, disposition="connected")
    b = outcome({"phone": "+15550000001"}, live=True, disposition="connected")
    await spool.put_many([a, b])
    rails = make_rails()
    await rails.drain(timeout_s=20)
    assert task_of(sim, a.external_key)["WhoId"][:15] == ids[0][:15]
    assert task_of(sim, b.external_key)["WhoId"][:15] == ids[1][:15]
    lookups = rails.resolver.lookups
    c = outcome({"external_key": "L0"}, live=True)
    await spool.put(c)
    await rails.drain(timeout_s=20)
    assert rails.resolver.lookups == lookups
    assert task_of(sim, c.external_key)["WhoId"][:15] == ids[0][:15]


async def test_long_lead_keys_are_looked_up_in_queries_that_fit_a_url(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """150 Leads named by 255-character external keys (non-ASCII, so each takes several
    bytes once URL-encoded): a lookup of 100 such keys would be a URI past 16,384 bytes,
    which Salesforce refuses (414); the lookups are split by length and every Task links."""
    st = sim.org.store
    keys = [f"{i:03d}-" + "é" * 251 for i in range(150)]
    ids = [
        st.insert("Lead", {"LastName": "X", "Company": "Acme", "Dialer_Lead_Id__c": k})
        for k in keys
    ]
    outs = [outcome({"external_key": k}, disposition="connected") for k in keys]
    await spool.put_many(outs)
    rails = make_rails(bulk_min_records=1_000)
    await rails.drain(timeout_s=30)
    for o, lead_id in zip(outs, ids, strict=True):
        assert task_of(sim, o.external_key)["WhoId"][:15] == lead_id[:15]
    assert rails.resolver.lookups >= 3 and await spool.dead_letters() == []


async def test_external_key_lookup_ignores_case_like_bulk(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A dialer key 'l1' finds the Lead 'L1' on the REST rails, as a Bulk relationship
    column does (external ids are case-insensitive in Salesforce): both rails link alike."""
    ids = seed_leads(sim, 2)
    o = outcome({"external_key": "l1"}, live=True, disposition="connected")
    await spool.put(o)
    await make_rails().drain(timeout_s=20)
    assert task_of(sim, o.external_key)["WhoId"][:15] == ids[1][:15]


async def test_unknown_lead_follows_policy(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """task_without_who logs the Task with no WhoId; dead_letter dead-letters with a reason."""
    a = outcome({"external_key": "nobody"}, live=True)
    await spool.put(a)
    await make_rails().drain(timeout_s=20)
    task = task_by_key(sim, a.external_key)
    assert task is not None and task.get("WhoId") is None
    b = outcome({"external_key": "nobody-2"}, live=True)
    await spool.put(b)
    strict = parse_mapping({"lead": {"not_found": "dead_letter"}})
    await make_rails(strict).drain(timeout_s=20)
    assert task_by_key(sim, b.external_key) is None
    [dead] = await spool.dead_letters()
    assert dead.error_code == "LEAD_NOT_FOUND" and "nobody-2" in (dead.error_message or "")


@pytest.mark.parametrize(
    ("gone", "policy"),
    [
        ("deleted", "task_without_who"),
        ("no such Id", "task_without_who"),
        ("deleted", "dead_letter"),
    ],
)
async def test_a_gone_lead_follows_the_policy_when_its_task_meets_a_lock(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any, gone: str, policy: str
) -> None:
    """The outcome's Lead is gone (deleted: ENTITY_IS_DELETED; an Id of no record: 404
    NOT_FOUND) and its Task meets a transient lock in the same call, so only the Lead update
    says the Lead is gone. The lead-not-found policy applies as when the WhoId is refused:
    task_without_who retries the record for the lock and writes its Task without WhoId;
    dead_letter dead-letters it as LEAD_NOT_FOUND. Never a pause of the rail."""
    [lead_id] = seed_leads(sim, 1)
    if gone == "deleted":
        sim.org.store.delete("Lead", lead_id)
    else:
        lead_id = lead_id[:5] + "0000000009"  # same key prefix, no such record
    o = outcome({"id": lead_id}, live=True, disposition="connected")
    await spool.put(o)
    sim.org.faults.configure({"lock_next": 1})  # the Task, written first
    # The built-in mapping (its Lead fields make the Lead update), with this policy.
    rails = make_rails(replace(load_mapping(None), lead_not_found=LeadNotFound(policy)))
    await rails.drain(timeout_s=20)
    assert not rails.paused
    task = task_by_key(sim, o.external_key)
    if policy == "dead_letter":
        [dead] = await spool.dead_letters()
        assert dead.call_id == o.call_id and dead.error_code == "LEAD_NOT_FOUND"
        assert task is None
    else:
        assert await spool.dead_letters() == []
        assert task is not None and task["WhoId"] is None
        assert (await spool.stats()).done == 1


@pytest.mark.parametrize("merged", [True, False])
async def test_a_cached_lead_gone_since_is_looked_up_again(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any, merged: bool
) -> None:
    """Two duplicate Leads share a phone; lookups find the oldest (A), which is cached. A is
    merged into B (A deleted): a do_not_call outcome by that phone is refused for A, the
    phone is looked up again once, and the Task and DoNotCall go to B in the same cycle.
    With no Lead left by that phone, the lead-not-found policy applies (no WhoId)."""
    st = sim.org.store
    a = st.insert("Lead", {"LastName": "A", "Company": "Acme", "Phone": "+15551112222"})
    b = st.insert("Lead", {"LastName": "B", "Company": "Acme", "Phone": "+15551112222"})
    rails = make_rails()
    first = outcome({"phone": "+15551112222"}, live=True, disposition="no_answer")
    await spool.put(first)
    await rails.drain(timeout_s=20)
    assert task_of(sim, first.external_key)["WhoId"] == a
    st.delete("Lead", a)
    if not merged:
        st.delete("Lead", b)
    lookups, calls = rails.resolver.lookups, client.quota.calls_by_rail["live"]
    dnc = outcome({"phone": "+15551112222"}, live=True, disposition="do_not_call")
    await spool.put(dnc)
    with structlog.testing.capture_logs() as logs:
        await rails.drain(timeout_s=20)
    assert await spool.dead_letters() == []
    assert (await spool.stats()).done == 2
    # Refused for A, one lookup, sent again: one cycle.
    assert rails.resolver.lookups == lookups + 1
    assert client.quota.calls_by_rail["live"] == calls + 3
    moved = [e for e in logs if e["event"] == "lead_moved"]
    if merged:
        assert task_of(sim, dnc.external_key)["WhoId"] == b
        assert lead(sim, b)["DoNotCall"] is True
        assert [(e["was"], e["now"]) for e in moved] == [(a, b)]
    else:
        assert task_of(sim, dnc.external_key)["WhoId"] is None
        assert moved == []


async def test_update_of_an_existing_task_drops_create_only_fields(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A newer version of a sent call updates its Task; TaskSubtype never fails the update."""
    [lead_id] = seed_leads(sim, 1)
    first = outcome({"id": lead_id}, live=True, disposition="no_answer")
    await spool.put(first)
    await make_rails().drain(timeout_s=20)
    newer = CallOutcome.model_validate(
        {**first.model_dump(), "version": 1, "disposition": "connected"}
    )
    await spool.put(newer)
    fresh = make_rails()  # a fresh process does not know the Task exists
    await fresh.drain(timeout_s=20)
    task = task_by_key(sim, first.external_key)
    assert task is not None and task["CallDisposition"] == "connected"
    assert await spool.dead_letters() == []
    assert len(sim.org.store.find("Task", "Call_Id__c", first.external_key)) == 1
    # The org refused TaskSubtype on the update once; the Task was re-sent without it.
    assert client.quota.calls_by_rail["live"] == 3


@pytest.mark.parametrize("call_id", ["abc.inc", "x.json"])
async def test_a_live_outcome_whose_call_id_ends_like_a_file_extension_lands_as_one_task(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any, call_id: str
) -> None:
    """Salesforce answers 404 to an upsert whose external id in the URL ends in '.' and
    letters (example@email.inc, resources_sobject_upsert_patch; sfsim too), which paused
    the live rail with the record pending. Its Task goes as a one-record collection upsert
    inside the same composite (still one API call): one Task, the Lead updated; a newer
    version from a fresh process (TaskSubtype refused on the update, re-sent without it)
    updates that Task."""
    [lead_id] = seed_leads(sim, 1)
    first = outcome({"id": lead_id}, call_id=call_id, live=True, disposition="do_not_call")
    await spool.put(first)
    await make_rails().drain(timeout_s=20)
    [task_id] = sim.org.store.find("Task", "Call_Id__c", first.external_key)
    task = task_of(sim, first.external_key)
    assert task["WhoId"][:15] == lead_id[:15] and task["TaskSubtype"] == "Call"
    assert lead(sim, lead_id)["DoNotCall"] is True
    assert client.quota.calls_by_rail.get("live") == 1
    newer = CallOutcome.model_validate(
        {**first.model_dump(), "version": 1, "disposition": "connected"}
    )
    await spool.put(newer)
    await make_rails().drain(timeout_s=20)
    assert sim.org.store.find("Task", "Call_Id__c", first.external_key) == [task_id]
    assert task_of(sim, first.external_key)["CallDisposition"] == "connected"
    assert (await spool.stats()).done == 1 and await spool.dead_letters() == []


async def test_call_ids_differing_only_in_case_share_one_task_by_collections(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """sfsim's Call_Id__c is not case-sensitive (Salesforce's default for Unique text), so
    'vici:ABC-1' and 'vici:abc-1' are one key, and one collections upsert naming both fails
    both with DUPLICATE_VALUE (retried until claimed apart). They go in two requests one
    after the other instead: one Task, as the README says, both records done, and the
    Lead they share holds the newer outcome's state."""
    [lead_id] = seed_leads(sim, 1)
    older = outcome({"id": lead_id}, call_id="ABC-1", disposition="no_answer")
    newer = outcome({"id": lead_id}, call_id="abc-1", disposition="connected")
    await spool.put_many([older, newer])
    await make_rails(bulk_min_records=2000).drain(timeout_s=10)
    assert task_of(sim, newer.external_key)["CallDisposition"] == "connected"  # sent second
    assert len(sim.org.store.find("Task", "Call_Id__c", newer.external_key)) == 1
    assert (await spool.stats()).done == 2 and await spool.dead_letters() == []
    assert lead(sim, lead_id)["Last_Call_Outcome__c"] == "connected"
    # Two requests, then the second Task write again without TaskSubtype: it was an update.
    assert client.quota.calls_by_rail.get("collections") == 3


async def test_record_error_dead_letters_with_code(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A value Salesforce refuses (too long) dead-letters that record with the error code.
    (A picklist: text into a free-text field is cut to fit instead.)"""
    [lead_id] = seed_leads(sim, 1)
    mapping = parse_mapping({"task": {"fields": {"Type": "{notes}"}}})
    bad = outcome({"id": lead_id}, live=True, notes="x" * 300)
    good = outcome({"id": lead_id}, live=True, notes="fine")
    await spool.put_many([bad, good])
    await make_rails(mapping).drain(timeout_s=20)
    [dead] = await spool.dead_letters()
    assert dead.call_id == bad.call_id and dead.error_code == "STRING_TOO_LONG"
    assert task_by_key(sim, good.external_key) is not None


@pytest.mark.parametrize("live", [True, False])
async def test_a_lead_the_user_may_not_edit_dead_letters_that_record_only(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any, live: bool
) -> None:
    """Salesforce refuses the Lead update of one record for sharing (the integration user
    may not edit that Lead: INSUFFICIENT_ACCESS_OR_READONLY): that record is dead-lettered
    with Salesforce's message; the rail does not pause, and the other record is sent."""
    locked, free = seed_leads(sim, 2)
    sim.org.store.read_only_ids = {locked}
    refused = outcome({"id": locked}, disposition="do_not_call", live=live)
    sent = outcome({"id": free}, disposition="do_not_call", live=live)
    await spool.put_many([refused, sent])
    rails = make_rails()
    await rails.drain(timeout_s=20)
    assert not rails.paused
    [dead] = await spool.dead_letters()
    assert dead.call_id == refused.call_id
    assert dead.error_code == "INSUFFICIENT_ACCESS_OR_READONLY"
    assert "insufficient access rights" in (dead.error_message or "")
    assert lead(sim, free)["DoNotCall"] is True and lead(sim, locked)["DoNotCall"] is not True
    stats = await spool.stats()
    assert stats.done == 1 and stats.pending == 0


async def test_unknown_field_pauses_the_rail_and_keeps_records(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A mapped field the org lacks pauses the rail; the record stays pending, not dead."""
    [lead_id] = seed_leads(sim, 1)
    mapping = parse_mapping({"lead": {"fields": {"No_Such__c": "{disposition}"}}})
    await spool.put(outcome({"id": lead_id}, live=True))
    rails = make_rails(mapping)
    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises(ConfigurationError, match=r"No_Such__c|INVALID_FIELD"),
    ):
        await rails.drain(timeout_s=20)
    assert "live" in rails.paused
    # Found at start by the describe check too, in one line.
    assert any("No_Such__c" in p for p in rails.status().mapping_problems)
    [line] = [e for e in logs if e["event"] == "mapping_problems"]
    assert "No_Such__c" in line["problems"] and line["log_level"] == "error"
    # sfsim's Call_Id__c is Unique but case-insensitive (Salesforce's default): a warning.
    [note] = [e for e in logs if e["event"] == "mapping_note"]
    assert "Call_Id__c is not case-sensitive" in note["note"] and note["log_level"] == "warning"
    stats = await spool.stats()
    assert stats.pending == 1 and stats.dead == 0


async def test_lock_errors_are_retried_until_done(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """UNABLE_TO_LOCK_ROW on some rows: retried with backoff, nothing lost or dead."""
    ids = seed_leads(sim, 50)
    outs = [outcome({"id": i}, live=True) for i in ids]
    sim.org.faults.configure({"lock_next": 10})
    await spool.put_many(outs)
    await make_rails().drain(timeout_s=30)
    assert all(task_by_key(sim, o.external_key) for o in outs)
    assert await spool.dead_letters() == []


async def test_server_errors_are_retried(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """503s from the org are retried with backoff until the outcome lands."""
    [lead_id] = seed_leads(sim, 1)
    o = outcome({"id": lead_id}, live=True)
    sim.org.faults.configure({"error_next": 3, "error_status": 503})
    await spool.put(o)
    await make_rails().drain(timeout_s=20)
    assert task_by_key(sim, o.external_key) is not None


async def test_token_expiry_mid_run_refreshes_once(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """Tokens revoked between sends: one refresh, the send is replayed, nothing fails."""
    ids = seed_leads(sim, 2)
    rails = make_rails()
    await spool.put(outcome({"id": ids[0]}, live=True))
    await rails.drain(timeout_s=20)
    sim.org.faults.configure({"revoke_tokens": True})
    o = outcome({"id": ids[1]}, live=True)
    await spool.put(o)
    await rails.drain(timeout_s=20)
    assert task_by_key(sim, o.external_key) is not None
    assert client.token_requests == 2


async def test_exhausted_limit_waits_and_recovers(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """REQUEST_LIMIT_EXCEEDED stops sending (records kept); fresh quota resumes."""
    [lead_id] = seed_leads(sim, 1)
    rails = make_rails(limits_interval_s=0.05)
    await spool.put(outcome({"id": lead_id}, live=True))
    await rails.drain(timeout_s=20)
    sim.org.faults.configure({"exhaust_daily_limit": True})
    o = outcome({"id": lead_id}, live=True)
    await spool.put(o)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(rails.run(stop))
        for _ in range(400):
            if rails.quota.state().value == "exhausted":
                break
            await asyncio.sleep(0.005)
        assert rails.quota.state().value == "exhausted"
        assert (await spool.stats()).pending + (await spool.stats()).inflight == 1
        sim.org.usage.used = 0  # the rolling 24 h window freed capacity
        for _ in range(2000):
            if task_by_key(sim, o.external_key) is not None:
                break
            await asyncio.sleep(0.005)
        stop.set()
    assert task_by_key(sim, o.external_key) is not None


async def test_low_quota_degrades_live_to_collections_and_holds_the_rest(
    sim: Any, spool: Spool
) -> None:
    """Under the quota reserve, urgent outcomes go batched by collections; the rest waits."""
    from daemon.mapping import load_mapping
    from daemon.rails import Rails
    from daemon.salesforce import QuotaView

    ids = seed_leads(sim, 3)
    urgent = [outcome({"id": i}, live=True) for i in ids]
    other = outcome({"id": ids[0]}, disposition="busy")
    await spool.put_many([*urgent, other])
    sim.org.usage.used = sim.org.usage.limit - 100  # 100 calls left: under a 10 % reserve
    async with make_client(sim, quota=QuotaView(reserve=0.1, max_share=1.0)) as sf:
        rails = Rails(
            spool=spool,
            client=sf,
            mapping=load_mapping(None),
            retry_backoff=FAST_RETRY,
            bulk_poll=FAST_POLL,
            idle_poll_s=0.005,
        )
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(rails.run(stop))
            for _ in range(2000):
                if all(task_by_key(sim, o.external_key) for o in urgent):
                    break
                await asyncio.sleep(0.005)
            stop.set()
        assert sf.quota.calls_by_rail.get("live") is None
        assert sf.quota.calls_by_rail.get("collections") == 1
        assert "reserve" in rails.status().route
    assert task_by_key(sim, other.external_key) is None
    assert (await spool.stats()).pending == 1


async def test_set_mapping_applies_to_the_next_send(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A reloaded mapping is used for outcomes sent after it is set."""
    [lead_id] = seed_leads(sim, 1)
    rails = make_rails()
    rails.set_mapping(parse_mapping({"task": {"fields": {"Subject": "Dialer: {disposition}"}}}))
    o = outcome({"id": lead_id}, live=True, disposition="busy")
    await spool.put(o)
    await rails.drain(timeout_s=20)
    assert task_of(sim, o.external_key)["Subject"] == "Dialer: busy"
