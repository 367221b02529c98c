"""CI size of the faults campaign (bench/campaign_faults.py): the real daemon against sfsim
injecting 5xx bursts, dropped connections (before and after processing), 2 s latency
spikes, 5% row locks, token revocations, whole Bulk jobs failing and per-record validation
errors, all at once. The daily-limit class needs minutes (the daemon rechecks an exhausted
quota every minute) and runs in the full campaign only."""

from __future__ import annotations

from pathlib import Path

from bench.campaign_faults import CLASSES, run_class


async def test_every_fault_class_at_once_converges(tmp_path: Path) -> None:
    drivers = tuple(
        d for name, ds in CLASSES.items() if name not in ("all", "daily_limit") for d in ds
    )
    r = await run_class(
        "all_but_daily_limit",
        tmp_path,
        outcomes=600,
        leads=200,
        rate=150.0,
        short=True,
        drain_timeout_s=90.0,
        drivers=drivers,
    )
    assert r["acked"] == 600 and r["not_acked"] == 0, r
    assert (r["missing"], r["duplicates"], r["stale_leads"], r["stale_tasks"]) == (0, 0, 0, 0), r
    assert r["invalid_acked"] > 0 and r["invalid_in_org"] == 0, r
    # Only the invalid calls are dead letters, every one of them, each with the org's error.
    assert (r["dead_valid"], r["invalid_not_dead"], r["dead_wrong_error"]) == (0, 0, 0), r
    assert r["attempts_max"] <= r["attempts_bound"], r
    fired = r["faults_fired"]
    for counter in ("errors", "drops", "locks", "tokens_revoked", "job_failures"):
        assert fired.get(counter, 0) > 0, (counter, r)
    assert r["ok"], r
