"""Fault handling across the rails against sfsim: credentials that will not heal, whole-job
failure and recheck, token expiry during the upload, dropped connections, Lead policies and
create-only fields on the Bulk rail, assignment rules, routing events, polling backoff."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import structlog
from railkit import (
    lead,
    login_url,
    make_client,
    outcome,
    rails_for,
    seed_leads,
    task_by_key,
    task_of,
    wait_for,
)

from daemon.mapping import parse_mapping
from daemon.rails import Rails
from daemon.rails.bulk import DEFAULT_POLL
from daemon.salesforce import ConfigurationError, QuotaView, SalesforceClient
from spool import CallOutcome, Spool


async def test_credentials_that_will_not_heal_stop_the_rails_with_a_clear_line(
    sim: Any, spool: Spool
) -> None:
    """A refused client secret pauses every rail once, says what to fix, and does not spin."""
    [lead_id] = seed_leads(sim, 1)
    await spool.put(outcome({"id": lead_id}, live=True))
    async with SalesforceClient(
        login_url=login_url(sim),
        client_id=sim.info["client_id"],
        client_secret="not-the-secret",
        allow_http=True,
        quota=QuotaView(reserve=0.0, max_share=1.0),
    ) as sf:
        rails = rails_for(spool, sf)
        with (
            structlog.testing.capture_logs() as logs,
            pytest.raises(ConfigurationError, match="invalid_client"),
        ):
            await rails.drain(timeout_s=20)
        assert sf.token_requests == 1
    assert set(rails.paused) == {"all"} and not rails.ready
    [line] = [e for e in logs if e["event"] == "rail_paused"]
    assert line["rail"] == "all" and "invalid_client" in line["reason"]
    assert line["log_level"] == "error"
    stats = await spool.stats()
    assert stats.pending == 1 and stats.dead == 0


async def test_failed_job_pauses_bulk_until_a_recheck(sim: Any, spool: Spool) -> None:
    """A job Failed on the file pauses the Bulk rail (records kept, none dead; meanwhile
    collections carry them); after the recheck interval Bulk is tried again and works."""
    ids = seed_leads(sim, 30)
    outs = [outcome({"id": i}) for i in ids]
    await spool.put_many(outs)
    sim.org.faults.configure({"fail_next_jobs": 1})
    events: list[tuple[str, dict[str, Any]]] = []
    async with make_client(sim) as sf:
        rails = rails_for(
            spool,
            sf,
            bulk_min_records=1,
            bulk_interval_s=0.01,
            config_recheck_s=0.2,
            on_event=lambda name, fields: events.append((name, fields)),
        )
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(rails.run(stop))

            async def resumed_and_done() -> bool:
                names = [n for n, _ in events]
                return "resumed" in names and (await spool.stats()).done == len(outs)

            await wait_for(resumed_and_done)
            assert rails.bulk.stats.batches == 0  # the failed batch did not count
            later = [outcome({"id": i}) for i in ids]
            await spool.put_many(later)
            rails.wake()

            async def later_done() -> bool:
                return (await spool.stats()).done == len(outs) + len(later)

            await wait_for(later_done)
            stop.set()
    paused = next(f for n, f in events if n == "paused")
    assert paused["rail"] == "bulk" and "Failed" in paused["reason"]
    assert rails.bulk.stats.failed_jobs == 1 and rails.bulk.stats.batches >= 1
    assert all(task_by_key(sim, o.external_key) for o in [*outs, *later])
    assert await spool.dead_letters() == []


@pytest.mark.parametrize(
    "after", [("POST", "bulk"), ("PATCH", "bulk")], ids=["before-upload", "while-polled"]
)
async def test_token_expiry_mid_bulk_job_refreshes_once_and_keeps_the_jobs(
    sim: Any, spool: Spool, after: tuple[str, str]
) -> None:
    """Tokens revoked right after a job is created (its PUT gets 401: one refresh, the same
    job takes the upload, its one PUT was never used) or while jobs run (polls get 401):
    one refresh, the same jobs are reconciled, nothing is aborted or re-sent."""
    ids = seed_leads(sim, 20)
    outs = [outcome({"id": i}) for i in ids]
    await spool.put_many(outs)
    revoked = False

    def hook(rail: str, method: str, kind: str, status: int, seconds: float) -> None:
        nonlocal revoked
        if (method, kind) == after and not revoked:
            revoked = True
            sim.org.faults.configure({"revoke_tokens": True})

    async with make_client(sim, on_call=hook) as sf:
        rails = rails_for(spool, sf, bulk_min_records=1)
        await rails.drain(timeout_s=30)
        assert revoked and sf.token_requests == 2
    assert rails.bulk.stats.jobs == 2  # the Task job and the Lead job, no replacement
    assert {j.state for j in await spool.jobs()} == {"JobComplete"}
    assert all(task_by_key(sim, o.external_key) for o in outs)
    assert (await spool.stats()).done == 20


async def test_dropped_connections_are_retried(sim: Any, spool: Spool, make_rails: Any) -> None:
    """Connections cut before an answer (live and Bulk requests): retried, all lands once."""
    ids = seed_leads(sim, 10)
    live = [outcome({"id": i}, live=True) for i in ids[:5]]
    rest = [outcome({"id": i}) for i in ids[5:]]
    await spool.put_many([*live, *rest])
    sim.org.faults.configure({"drop_next": 3})
    await make_rails(bulk_min_records=1).drain(timeout_s=30)
    st = sim.org.store
    for o in [*live, *rest]:
        assert len(st.find("Task", "Call_Id__c", o.external_key)) == 1
    assert await spool.dead_letters() == []


async def test_bulk_unknown_lead_dead_letter_policy(
    sim: Any, spool: Spool, make_rails: Any
) -> None:
    """With lead.not_found = dead_letter, a Bulk outcome whose external key matches no Lead
    is dead-lettered with LEAD_NOT_FOUND; the others land."""
    seed_leads(sim, 5)
    outs = [outcome({"external_key": f"L{n}"}) for n in range(5)]
    ghost = outcome({"external_key": "ghost"})
    await spool.put_many([*outs, ghost])
    strict = parse_mapping({"lead": {"not_found": "dead_letter"}})
    await make_rails(strict, bulk_min_records=1).drain(timeout_s=30)
    [dead] = await spool.dead_letters()
    assert dead.call_id == ghost.call_id and dead.error_code == "LEAD_NOT_FOUND"
    assert task_by_key(sim, ghost.external_key) is None
    assert all(task_by_key(sim, o.external_key) for o in outs)


async def test_bulk_update_of_an_existing_task_never_fails_on_create_only_fields(
    sim: Any, spool: Spool, make_rails: Any
) -> None:
    """A newer version of sent calls goes by Bulk from a fresh process (which does not know
    the Tasks exist): TaskSubtype never makes the update fail, nothing is dead."""
    ids = seed_leads(sim, 5)
    first = [outcome({"id": i}, disposition="no_answer") for i in ids]
    await spool.put_many(first)
    await make_rails(bulk_min_records=1).drain(timeout_s=30)
    newer = [
        CallOutcome.model_validate({**o.model_dump(), "version": 1, "disposition": "connected"})
        for o in first
    ]
    await spool.put_many(newer)
    await make_rails(bulk_min_records=1).drain(timeout_s=30)
    assert await spool.dead_letters() == []
    for o in first:
        task = task_of(sim, o.external_key)
        assert task["CallDisposition"] == "connected" and task["TaskSubtype"] == "Call"
        assert len(sim.org.store.find("Task", "Call_Id__c", o.external_key)) == 1


@pytest.mark.parametrize("via", ["live", "collections", "bulk"])
async def test_lead_updates_do_not_run_assignment_rules(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any, via: str
) -> None:
    """With an active Lead assignment rule, our Lead updates keep their owners on every rail."""
    ids = seed_leads(sim, 3)
    owners = {i: lead(sim, i).get("OwnerId") for i in ids}
    sim.org.set_lead_assignment(True)
    outs = [outcome({"id": i}, disposition="connected", live=via == "live") for i in ids]
    await spool.put_many(outs)
    await make_rails(bulk_min_records=1 if via == "bulk" else 1000).drain(timeout_s=30)
    assert via in client.quota.calls_by_rail
    for i in ids:
        row = lead(sim, i)
        assert row["Last_Call_Outcome__c"] == "connected"
        assert row.get("OwnerId") == owners[i]


async def test_routing_decisions_are_logged_and_sent_as_events(
    sim: Any, spool: Spool, make_rails: Any
) -> None:
    """Every route change is one log line and one 'routed' event with its reason."""
    ids = seed_leads(sim, 3)
    await spool.put_many([outcome({"id": i}) for i in ids])
    events: list[tuple[str, dict[str, Any]]] = []
    rails: Rails = make_rails(
        bulk_min_records=2, on_event=lambda name, fields: events.append((name, fields))
    )
    with structlog.testing.capture_logs() as logs:
        await rails.drain(timeout_s=30)
    routed = [f for n, f in events if n == "routed"]
    assert routed and routed[0]["other"] == "bulk" and "backlog 3 >= 2" in routed[0]["reason"]
    lines = [e for e in logs if e["event"] == "route"]
    assert [(e["urgent"], e["other"], e["reason"]) for e in lines] == [
        (f["urgent"], f["other"], f["reason"]) for f in routed
    ]
    assert ("sent", {"rail": "bulk", "records": 3}) in events


def test_bulk_polling_backs_off_from_one_second_to_thirty() -> None:
    """Job status polling starts near 1 s and grows to at most 30 s."""
    delays = list(itertools.islice(iter(DEFAULT_POLL), 20))
    assert 0.5 <= delays[0] <= 1.5
    assert all(d <= 30.0 for d in delays)
    assert delays[-1] >= 20.0
    # a short job is noticed within seconds: 13.2 s nominal, at most +20 % jitter
    assert sum(delays[:5]) < 16.0


async def test_limit_exhausted_while_a_job_runs_keeps_polling_the_same_jobs(
    sim: Any, spool: Spool
) -> None:
    """The daily limit runs out while Bulk jobs are being polled: the rail waits it out and
    reconciles the same jobs when the quota is back (no job abandoned, nothing re-sent)."""
    ids = seed_leads(sim, 20)
    outs = [outcome({"id": i}) for i in ids]
    await spool.put_many(outs)
    refused = 0

    def hook(rail: str, method: str, kind: str, status: int, seconds: float) -> None:
        nonlocal refused
        if (method, kind) == ("GET", "bulk") and status == 200 and not refused:
            sim.org.faults.configure({"exhaust_daily_limit": True})
        elif status == 403:
            refused += 1
            if refused == 3:
                sim.org.usage.used = 0  # the rolling 24 h window freed capacity

    async with make_client(sim, on_call=hook) as sf:
        rails = rails_for(spool, sf, bulk_min_records=1, limits_interval_s=0.05)
        await rails.drain(timeout_s=30)
    assert refused >= 3
    assert rails.bulk.stats.jobs == 2 and rails.bulk.stats.batches == 1
    assert {j.state for j in await spool.jobs()} == {"JobComplete"}
    assert all(task_by_key(sim, o.external_key) for o in outs)
    assert (await spool.stats()).done == 20 and await spool.dead_letters() == []


async def test_an_untrusted_org_certificate_is_an_error_line_naming_the_fix(
    spool: Spool,
) -> None:
    """TLS verification failing at start is logged at error level with what to set, not as a
    quiet retry; nothing is sent and the outcome stays pending."""
    from sfsim import SimOrg

    await spool.put(outcome(live=True))
    async with SimOrg(port=0, tls=True) as org:
        info = org.info
        async with SalesforceClient(
            login_url=info["token_url"].removesuffix("/services/oauth2/token"),
            client_id=info["client_id"],
            client_secret=info["client_secret"],
            quota=QuotaView(reserve=0.0, max_share=1.0),
        ) as sf:
            rails = rails_for(spool, sf)
            stop = asyncio.Event()
            with structlog.testing.capture_logs() as logs:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(rails.run(stop))

                    async def logged() -> bool:
                        return any(e["event"] == "salesforce_tls_untrusted" for e in logs)

                    await wait_for(logged)
                    stop.set()
    [line, *_] = [e for e in logs if e["event"] == "salesforce_tls_untrusted"]
    assert line["log_level"] == "error" and "ca_file" in line["fix"]
    assert (await spool.stats()).pending == 1


async def test_a_spool_failing_while_a_paused_rail_gives_records_back_stops_nothing(
    sim: Any, spool: Spool, client: SalesforceClient, make_rails: Any
) -> None:
    """A configuration error pauses the live rail and its records are released; when the
    spool refuses that release (busy disk), the rails carry on (the records come back when
    their leases expire) instead of that error stopping every rail."""
    from spool import SpoolUnavailable

    [lead_id] = seed_leads(sim, 1)
    await spool.put(outcome({"id": lead_id}, live=True))
    rails = make_rails()

    async def refuse(*args: Any, **kw: Any) -> Any:
        raise ConfigurationError("no access to Task", error_code="INSUFFICIENT_ACCESS")

    async def fail_release(*args: Any, **kw: Any) -> Any:
        raise SpoolUnavailable("database is locked")

    rails.rest.send = refuse  # type: ignore[method-assign]
    spool.release = fail_release  # type: ignore[method-assign]
    stop = asyncio.Event()
    run = asyncio.create_task(rails.run(stop))

    async def paused() -> bool:
        return "live" in rails.paused

    await wait_for(paused)
    assert not run.done()  # still running: the batch loop and the limits loop go on
    stop.set()
    await asyncio.wait_for(run, 10)
