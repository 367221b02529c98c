"""Kill-Salesforce campaign (issue 7): sfsim stopped for a while under load, then restarted.

While the org is away the daemon must keep accepting outcomes into the spool (the
dialer is acknowledged), report itself degraded on ``/readyz``, and once the org is
back (same address, state kept: sfsim saves it on SIGTERM and loads it on start) drain
the backlog. Then the org is verified as in the crash campaign.

    .venv/bin/python -m bench.campaign_kill_sf                    # 20,000 outcomes, 60 s outage
    .venv/bin/python -m bench.campaign_kill_sf --short

Prints one JSON object; exit 0 when every check held.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from bench._campaign import (
    DaemonProcess,
    campaign_main,
    finish,
    load_average,
    plan_load,
    session,
    spool_stats,
)

__all__ = ["main", "run_kill_sf"]


async def _readyz(daemon: DaemonProcess) -> tuple[int, list[str]]:
    """(status, names of the failing checks) of ``/readyz``."""
    try:
        status, body = await daemon.readyz()
    except httpx.HTTPError as exc:
        return 0, [f"unreachable: {type(exc).__name__}"]
    failing = [str(c.get("name")) for c in body.get("checks", []) if not c.get("ok")]
    return status, failing


async def _wait_readyz(daemon: DaemonProcess, want_ok: bool, within_s: float) -> float | None:
    """Seconds until ``/readyz`` is (not) 200; None if it never was within ``within_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        status, _ = await _readyz(daemon)
        if (status == 200) == want_ok:
            return time.monotonic() - t0
        await asyncio.sleep(0.2)  # polling the probe with a deadline
    return None


async def run_kill_sf(
    *,
    outcomes: int,
    leads: int,
    rate: float,
    outage_s: float,
    workdir: Path,
    drain_timeout_s: float,
) -> dict[str, Any]:
    t0 = time.monotonic()
    plan = plan_load(outcomes, leads=leads, seed=23)
    async with session(workdir, plan, leads=leads, rate=rate, bulk_rate=5000.0) as s:
        gen, sim, daemon = s.gen, s.sim, s.daemon
        async with asyncio.TaskGroup() as tg:
            load = tg.create_task(gen.run(give_up_after_s=drain_timeout_s))
            ready_before = await _wait_readyz(daemon, True, 30.0)
            await gen.wait_acked(outcomes // 4, timeout_s=drain_timeout_s)
            # --- the outage
            await sim.stop()
            down_at = time.monotonic()
            acked_at_stop = gen.acked_count
            degraded_after = await _wait_readyz(daemon, False, outage_s)
            status_down, failing_down = await _readyz(daemon)
            pending_peak = 0
            while time.monotonic() - down_at < outage_s:
                stats = spool_stats(s.spool_path)
                if stats is not None:
                    pending_peak = max(pending_peak, stats.pending + stats.inflight)
                await asyncio.sleep(0.5)  # the outage lasts this long, by design
            acked_during = gen.acked_count - acked_at_stop
            status_late, failing_late = await _readyz(daemon)
            # --- the org is back
            await sim.start()
            up_at = time.monotonic()
            ready_after = await _wait_readyz(daemon, True, drain_timeout_s)
            await load
        load_s = time.monotonic() - t0
        result = await finish(s, drain_timeout_s=drain_timeout_s)
        drain_s = time.monotonic() - up_at
    v = result.verdict
    checks = {
        "accepted_during_outage": acked_during > 0,
        "degraded_during_outage": degraded_after is not None and status_late != 200,
        "ready_again_after": ready_after is not None,
        "verified": v.ok,
        "no_dead_letters": not result.dead,
        "all_acked": not gen.rejected,
        "clean_stop": result.stop_status == 0,
    }
    return {
        "campaign": "kill_salesforce",
        "ok": all(checks.values()),
        "checks": checks,
        "outage_s": outage_s,
        "acked_during_outage": acked_during,
        "pending_peak": pending_peak,
        "readyz_ready_s_at_start": None if ready_before is None else round(ready_before, 2),
        "readyz_degraded_s_after_stop": None
        if degraded_after is None
        else round(degraded_after, 2),
        "readyz_during_outage": {"status": status_down, "failing": failing_down},
        "readyz_end_of_outage": {"status": status_late, "failing": failing_late},
        "readyz_ready_s_after_restart": None if ready_after is None else round(ready_after, 2),
        "drained_s_after_restart": round(drain_s, 1),
        **v.counts(),
        "dead_letters": len(result.dead),
        "not_acked": len(gen.rejected),
        "attempts": {str(k): n for k, n in sorted(result.attempts.items())},
        "daemon_events": dict(daemon.event_counts),
        "sim_starts": sim.starts,
        "load_s": round(load_s, 1),
        "seconds": round(time.monotonic() - t0, 1),
        "load_average": load_average(),
        "examples": v.examples,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--outcomes", type=int, default=20_000)
    p.add_argument("--leads", type=int, default=3000)
    p.add_argument("--rate", type=float, default=200.0, help="deliveries per second")
    p.add_argument("--outage", type=float, default=60.0, help="seconds sfsim stays down")
    p.add_argument("--short", action="store_true", help="CI size: 600 outcomes, 4 s outage")
    p.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = p.parse_args(argv)
    if args.short:
        args.outcomes, args.leads, args.rate, args.outage = 600, 200, 100.0, 4.0

    async def go(workdir: Path) -> dict[str, Any]:
        return await run_kill_sf(
            outcomes=args.outcomes,
            leads=args.leads,
            rate=args.rate,
            outage_s=args.outage,
            workdir=workdir,
            drain_timeout_s=120.0 if args.short else 900.0,
        )

    return campaign_main(go, args.workdir, "campaign-kill-sf-")


if __name__ == "__main__":
    raise SystemExit(main())
