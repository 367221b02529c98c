"""CI size of the crash campaign (bench/campaign_crash.py): the real daemon as a child
process, SIGKILLed at aimed moments under webhook + websocket load, restarted each time;
the org must hold every acknowledged call exactly once, newest version, newest per Lead."""

from __future__ import annotations

from pathlib import Path

from bench.campaign_crash import run_crash


async def test_sigkill_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    r = await run_crash(
        outcomes=1000,
        kills=5,  # one per phase: ingest, bulk upload, polling, reconciling, random
        leads=300,
        seed=7,
        rate=250.0,
        workdir=tmp_path,
        aim_wait_s=4.0,
        drain_timeout_s=120.0,
    )
    summary = {k: v for k, v in r.items() if k not in ("kill_at_acked",)}
    assert r["kills"] == 5, summary
    assert r["acked"] == 1000 and r["not_acked"] == 0, summary
    assert (r["missing"], r["duplicates"], r["stale_leads"]) == (0, 0, 0), summary
    assert (r["stale_tasks"], r["dnc_wrong"], r["unexpected_tasks"]) == (0, 0, 0), summary
    assert r["dead_letters"] == 0 and r["final_stop_status"] == 0, summary
    assert r["tasks"] == r["acked_calls"], summary
    assert r["ok"], summary
