"""CI size of the kill-Salesforce campaign (bench/campaign_kill_sf.py): sfsim stopped under
load and started again (state kept); the daemon keeps acknowledging into the spool, says it
is degraded on /readyz, and drains the backlog once the org is back."""

from __future__ import annotations

from pathlib import Path

from bench.campaign_kill_sf import run_kill_sf


async def test_an_org_outage_is_ridden_out(tmp_path: Path) -> None:
    r = await run_kill_sf(
        outcomes=600, leads=200, rate=100.0, outage_s=4.0, workdir=tmp_path, drain_timeout_s=90.0
    )
    assert r["acked_during_outage"] > 0, r
    assert r["readyz_end_of_outage"]["status"] == 503, r
    assert "salesforce" in r["readyz_end_of_outage"]["failing"], r
    assert r["readyz_ready_s_after_restart"] is not None, r
    assert (r["missing"], r["duplicates"], r["stale_leads"], r["stale_tasks"]) == (0, 0, 0, 0), r
    assert r["dead_letters"] == 0 and r["not_acked"] == 0, r
    assert r["ok"], r
