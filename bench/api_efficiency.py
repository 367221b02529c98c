"""API efficiency: 100,000 outcomes over 20,000 Leads, 5% live, through the real rails.

Runs sfsim in-process over loopback, a real spool file, the real Salesforce client
and rails. Live outcomes are fed interleaved with the rest while the rails run
(each live put is followed by ``rails.wake()``, as the daemon does); the
remainder is flushed with ``drain()``. Prints one JSON object:

    outcomes, live, api_calls_total (counted by sfsim), api_calls_by_rail (counted
    by the client), naive_rest_calls (2 per outcome), ratio_vs_naive,
    all_tasks_present, leads_correct, seconds

Target: api_calls_total <= live + 60, every Task present and every Lead correct.
Leads are named by Salesforce Id (a screen-pop dialer knows it). "Correct" means:
Last_Call_Outcome__c / Last_Call_At__c from the newest outcome, Status from the
newest outcome when its disposition sets one, DoNotCall set iff any outcome was
do-not-call.

``--no-task-key``: the same against an org without a Task external ID field (the
mapping's ``task.external_id_field = ""``: Tasks inserted, updated by Id, looked up by
CallObject; no Bulk rail). Its cost is reported as is; the target is for the normal mode.

    .venv/bin/python bench/api_efficiency.py [--outcomes N] [--leads N] [--live-share F]
        [--no-task-key]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import daemon.mapping as mapping_pkg
from daemon.logging import configure_logging
from daemon.mapping import Mapping, load_mapping, parse_mapping
from daemon.rails import Rails
from daemon.salesforce import QuotaView, SalesforceClient
from spool import CallOutcome, open_spool

# Agent wrap-up dispositions come from a live call (the agent is on the record);
# the dialer's own outcomes (no answer, machine, busy, ...) do not.
AGENT_DISPOSITIONS = [
    ("connected", 60),
    ("callback_requested", 20),
    ("do_not_call", 10),
    ("wrong_number", 10),
]
DIALER_DISPOSITIONS = [
    ("no_answer", 35),
    ("voicemail", 25),
    ("busy", 10),
    ("connected", 20),
    ("invalid_number", 5),
    ("abandoned", 5),
]


def make_outcomes(
    n: int, lead_ids: list[str], live_share: float, rng: random.Random
) -> list[CallOutcome]:
    # Calls of the last hours: one that ended longer ago than the spool's retention may
    # have been sent and purged before, which costs a lookup without a Task key.
    t0 = datetime.now(UTC) - timedelta(seconds=n * 0.5)
    out = []
    for i in range(n):
        live = rng.random() < live_share
        table = AGENT_DISPOSITIONS if live else DIALER_DISPOSITIONS
        disp = rng.choices([d for d, _ in table], [w for _, w in table])[0]
        ended = t0 + timedelta(seconds=i * 0.5)
        notes = 'Spoke about renewal, "premium" plan, call back\nTuesday' if i % 7 == 0 else None
        out.append(
            CallOutcome.model_validate(
                {
                    "source": "bench",
                    "call_id": f"c{i:07d}",
                    "disposition": disp,
                    "ended_at": ended,
                    "started_at": ended - timedelta(seconds=40),
                    "duration_s": 40,
                    "lead": {"id": rng.choice(lead_ids)},
                    "agent_id": f"agent{i % 50}",
                    "live": live,
                    "callback_at": ended + timedelta(days=1)
                    if disp == "callback_requested"
                    else None,
                    "notes": notes,
                }
            )
        )
    return out


def no_task_key_mapping() -> Mapping:
    """The built-in mapping for an org without a Task external ID field, as the README
    tells an admin to change it (the tests of that mode use this one too)."""
    text = (Path(mapping_pkg.__file__).parent / "default.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    data["task"]["external_id_field"] = ""
    data["task"]["fields"]["CallObject"] = "{external_key}"
    return parse_mapping(data, source="no task key")


async def run(
    n_outcomes: int, n_leads: int, live_share: float, seed: int, *, task_key: bool = True
) -> dict[str, Any]:
    from sfsim import SimOrg, default_schema

    rng = random.Random(seed)
    mapping = load_mapping(None) if task_key else no_task_key_mapping()
    schema = default_schema(without=() if task_key else ["Task.Call_Id__c"])
    key_field = "Call_Id__c" if task_key else "CallObject"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            SimOrg(port=0, schema=schema) as sim,
            open_spool(Path(tmp) / "spool.db", synchronous="NORMAL") as spool,
        ):
            store = sim.org.store
            lead_ids = [
                store.insert(
                    "Lead", {"LastName": f"L{i}", "Company": "Acme", "Dialer_Lead_Id__c": f"D{i}"}
                )
                for i in range(n_leads)
            ]
            outcomes = make_outcomes(n_outcomes, lead_ids, live_share, rng)
            used_before = sim.org.usage.used
            info = sim.info
            async with SalesforceClient(
                login_url=info["token_url"].removesuffix("/services/oauth2/token"),
                client_id=info["client_id"],
                client_secret=info["client_secret"],
                allow_http=True,
                quota=QuotaView(reserve=0.0, max_share=1.0),
            ) as sf:
                rails = Rails(
                    spool=spool,
                    client=sf,
                    mapping=mapping,
                    bulk_interval_s=600.0,
                    bulk_max_records=50_000,
                    bulk_job_max_records=50_000,
                )
                stop = asyncio.Event()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(rails.run(stop))
                    batch: list[CallOutcome] = []
                    for o in outcomes:
                        if o.live:
                            if batch:
                                await spool.put_many(batch)
                                batch = []
                            await spool.put(o)
                            rails.wake()
                            await asyncio.sleep(0.002)  # agents finish calls over time
                        else:
                            batch.append(o)
                            if len(batch) >= 500:
                                await spool.put_many(batch)
                                batch = []
                    if batch:
                        await spool.put_many(batch)
                    stop.set()
                await rails.drain(timeout_s=600)
                by_rail = dict(sf.quota.calls_by_rail)
            api_calls = sim.org.usage.used - used_before
            # --- verify every Task and Lead in the org
            all_tasks = True
            newest: dict[str, CallOutcome] = {}
            dnc: set[str] = set()
            for o in outcomes:
                assert o.lead is not None and o.lead.id is not None
                ids = store.find("Task", key_field, o.external_key)
                task = store.get("Task", ids[0]) if len(ids) == 1 else None
                if (
                    task is None
                    or task["CallDisposition"] != o.disposition.value
                    or task["WhoId"][:15] != o.lead.id[:15]
                ):
                    all_tasks = False
                key = o.lead.id
                if key not in newest or o.order_key > newest[key].order_key:
                    newest[key] = o
                if o.disposition.value == "do_not_call":
                    dnc.add(key)
            leads_ok = True
            wrong = 0
            for key, o in newest.items():
                row = store.get("Lead", key)
                want = mapping.lead_update(o)
                ok = (
                    row is not None
                    and row["Last_Call_Outcome__c"] == o.disposition.value
                    and row["Last_Call_At__c"] is not None
                    and bool(row["DoNotCall"]) == (key in dnc)
                    and ("Status" not in want or row["Status"] == want["Status"])
                )
                if not ok:
                    wrong += 1
                    leads_ok = False
                    if row is None:
                        print(f"lead {key}: missing in the org", file=sys.stderr)
                    elif wrong <= 5:
                        print(
                            f"lead {key}: newest {o.call_id} {o.disposition.value} live={o.live} "
                            f"-> Last_Call_Outcome__c={row['Last_Call_Outcome__c']} "
                            f"Status={row['Status']} DoNotCall={row['DoNotCall']} "
                            f"(want Status={want.get('Status')}, dnc={key in dnc})",
                            file=sys.stderr,
                        )
            stats = await spool.stats()
    live = sum(1 for o in outcomes if o.live)
    naive = 2 * n_outcomes
    return {
        "task_key": key_field if task_key else "none (CallObject lookups)",
        "outcomes": n_outcomes,
        "leads": n_leads,
        "live": live,
        "api_calls_total": api_calls,
        "api_calls_by_rail": by_rail,
        "naive_rest_calls": naive,
        "ratio_vs_naive": round(api_calls / naive, 5),
        "target_max_calls": live + 60,
        "meets_target": api_calls <= live + 60 if task_key else None,
        "all_tasks_present": all_tasks,
        "leads_correct": leads_ok,
        "leads_wrong": wrong,
        "dead_letters": stats.dead,
        "bulk_jobs": rails.bulk.stats.jobs,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=100_000)
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--live-share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-task-key",
        action="store_true",
        help="an org without a Task external ID field (Tasks inserted, found by CallObject)",
    )
    args = parser.parse_args(argv)
    configure_logging("logfmt", "warning", stream=sys.stderr)
    result = asyncio.run(
        run(args.outcomes, args.leads, args.live_share, args.seed, task_key=not args.no_task_key)
    )
    result["load_average"] = os.getloadavg()
    print(json.dumps(result))
    target = result["meets_target"] is not False
    return 0 if target and result["all_tasks_present"] and result["leads_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
