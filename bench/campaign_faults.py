"""Faults campaign (issue 7): the crash campaign's load while sfsim misbehaves.

Each fault class runs on a fresh org, spool and daemon, then all of them at once:

- ``5xx_bursts``: every ``period`` the next 15 API requests answer 500/502/503;
- ``dropped_connections``: 5% of requests have their connection cut, alternating every
  ``period`` between before and after the org processed them (the write lands, the
  answer is lost: the case that makes retries dangerous);
- ``latency_spikes``: 2 s added to every request for a few seconds, every ``period``;
- ``row_locks``: 5% of written rows fail with ``UNABLE_TO_LOCK_ROW``;
- ``token_revocation``: every access token revoked every 10 s (``--short``: 4 s), so that
  a class of 5,000 outcomes (about 30 s) meets it too;
- ``daily_limit``: the daily API allocation exhausted for a minute (``--short``: 8 s),
  then restored (sfsim has no undo for it: it is restarted with its saved usage zeroed,
  which also drops every connection once);
- ``bulk_job_failure``: the next Bulk job fails whole (``Failed``), every ``period``;
- ``validation_errors``: no fault but the one every class has: 1% of calls break an org
  validation rule (``bench._campaign.INVALID_RULE``).

Every class converges when: every valid acknowledged call is in the org exactly once
with its newest version (``missing``, ``duplicates``, ``stale_*`` 0), only the invalid
calls are dead letters, each with ``FIELD_CUSTOM_VALIDATION_EXCEPTION`` and its message,
and no record was sent more often than a backoff allows (``attempts_max`` <=
``attempts_bound``: 2 s doubling, over the run's length, plus slack for faults that
legitimately cost an attempt each, like a lease expiring or a rail pausing).

    .venv/bin/python -m bench.campaign_faults                 # every class, 20,000 outcomes each
    .venv/bin/python -m bench.campaign_faults --short --classes row_locks,all

Prints one JSON object: ``{"classes": {name: {...}}, "ok": ...}``. Exit 0 when all converged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._campaign import (
    INVALID_RULE,
    SimProcess,
    campaign_main,
    check_dead_letters,
    finish,
    load_average,
    plan_load,
    session,
    wait_drained,
)

__all__ = ["CLASSES", "FaultDriver", "main", "run_class"]

_VALIDATION_CODE = "FIELD_CUSTOM_VALIDATION_EXCEPTION"


@dataclass
class FaultDriver:
    """Applies fault settings to sfsim on a schedule; keeps the standing ones across restarts."""

    sim: SimProcess
    short: bool
    standing: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)

    def _count(self, name: str) -> None:
        self.actions[name] = self.actions.get(name, 0) + 1

    async def apply(self, **settings: Any) -> None:
        """POST the settings, waiting out a restart of sfsim (another driver's)."""
        for _ in range(200):
            if self.sim.running:
                try:
                    result = await self.sim.faults(**settings)
                except httpx.HTTPError:
                    pass
                else:
                    self._remember(result)
                    return
            await asyncio.sleep(0.1)  # sfsim restarting: poll until it is back
        raise RuntimeError("sfsim did not come back to take fault settings")

    def _remember(self, result: dict[str, Any]) -> None:
        for name, n in (result.get("counters") or {}).items():
            self.fired[name] = max(self.fired.get(name, 0), int(n))

    async def stand(self, **settings: Any) -> None:
        """Settings that hold for the whole run (re-applied after a restart of sfsim)."""
        self.standing.update(settings)
        await self.apply(**settings)

    def period(self, full: float, short: float) -> float:
        return short if self.short else full

    async def read_counters(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self._remember(await self.sim.faults())


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless ``stop`` is set first; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def bursts_5xx(f: FaultDriver, stop: asyncio.Event) -> None:
    await f.stand(error_status=[500, 502, 503])
    while not await _sleep(stop, f.period(6.0, 1.5)):
        await f.apply(error_next=15)
        f._count("5xx_burst")


async def dropped_connections(f: FaultDriver, stop: asyncio.Event) -> None:
    after = False
    await f.stand(drop_rate=0.05, drop_after_processing=after)
    while not await _sleep(stop, f.period(10.0, 2.0)):
        after = not after
        await f.stand(drop_after_processing=after)
        f._count("drop_mode_switch")


async def latency_spikes(f: FaultDriver, stop: asyncio.Event) -> None:
    while not await _sleep(stop, f.period(8.0, 2.0)):
        await f.apply(latency_ms=2000)
        f._count("latency_spike")
        await _sleep(stop, f.period(4.0, 2.5))
        await f.apply(latency_ms=0)


async def row_locks(f: FaultDriver, stop: asyncio.Event) -> None:
    await f.stand(lock_rate=0.05)
    await stop.wait()


async def token_revocation(f: FaultDriver, stop: asyncio.Event) -> None:
    while not await _sleep(stop, f.period(10.0, 4.0)):
        await f.apply(revoke_tokens=True)
        f._count("tokens_revoked")


async def daily_limit(f: FaultDriver, stop: asyncio.Event) -> None:
    if await _sleep(stop, f.period(10.0, 1.5)):
        return
    await f.apply(exhaust_daily_limit=True)
    f._count("limit_exhausted")
    await asyncio.sleep(f.period(60.0, 8.0))  # "exhausted for a minute", even at stop
    await f.read_counters()
    await f.sim.restart_with_fresh_allocation()
    f._count("limit_restored")
    if f.standing:
        await f.apply(**f.standing)
    await stop.wait()


async def bulk_job_failure(f: FaultDriver, stop: asyncio.Event) -> None:
    while True:
        await f.apply(fail_next_jobs=1)
        f._count("job_failure_armed")
        if await _sleep(stop, f.period(20.0, 4.0)):
            return


async def validation_errors(f: FaultDriver, stop: asyncio.Event) -> None:
    """Nothing beyond the invalid calls every class carries."""
    await stop.wait()


Driver = Callable[[FaultDriver, asyncio.Event], Coroutine[Any, Any, None]]
#: Evidence that a driver's fault happened (an sfsim counter, else the driver's own action).
_EVIDENCE: dict[str, str] = {
    "bursts_5xx": "errors",
    "dropped_connections": "drops",
    "latency_spikes": "latency_spike",
    "row_locks": "locks",
    "token_revocation": "tokens_revoked",
    "daily_limit": "limit_exhausted",
    "bulk_job_failure": "job_failures",
}
CLASSES: dict[str, tuple[Driver, ...]] = {
    "5xx_bursts": (bursts_5xx,),
    "dropped_connections": (dropped_connections,),
    "latency_spikes": (latency_spikes,),
    "row_locks": (row_locks,),
    "token_revocation": (token_revocation,),
    "daily_limit": (daily_limit,),
    "bulk_job_failure": (bulk_job_failure,),
    "validation_errors": (validation_errors,),
}
CLASSES["all"] = tuple(d for drivers in list(CLASSES.values()) for d in drivers)


def attempts_bound(seconds: float) -> int:
    """Most sends one record may take in ``seconds`` with 2 s doubling backoff, plus slack
    for attempts that cost no backoff by design (a lease expiring, a paused rail, a job
    recovered, the re-send without create-only fields)."""
    return 1 + max(1, math.ceil(math.log2(max(2.0, seconds) / 2.0))) + 4


async def run_class(
    name: str,
    workdir: Path,
    *,
    outcomes: int,
    leads: int,
    rate: float,
    short: bool,
    seed: int = 11,
    drain_timeout_s: float = 600.0,
    drivers: tuple[Driver, ...] | None = None,
) -> dict[str, Any]:
    """One fault class (or ``drivers`` together, under ``name``) on a fresh org and daemon."""
    if drivers is None:
        drivers = CLASSES[name]
    t0 = time.monotonic()
    plan = plan_load(outcomes, leads=leads, seed=seed, invalid_rate=0.01)
    async with session(
        workdir,
        plan,
        leads=leads,
        rate=rate,
        bulk_rate=5000.0,
        rules=[INVALID_RULE],
        bulk_min_records=50 if short else 100,  # Bulk in every class
        bulk_interval_s=1.0 if short else 2.0,
    ) as s:
        faults = FaultDriver(s.sim, short)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            for driver in drivers:
                tg.create_task(driver(faults, stop))
            await s.gen.run(give_up_after_s=drain_timeout_s)
            load_s = time.monotonic() - t0
            # Faults keep firing until the backlog is in (or at most as long again).
            with contextlib.suppress(TimeoutError):
                await wait_drained(s.spool_path, timeout_s=max(5.0, load_s))
            await faults.read_counters()
            stop.set()
        await faults.apply(clear=True)
        result = await finish(s, drain_timeout_s=drain_timeout_s)
        seconds = time.monotonic() - t0
    v = result.verdict
    acked = s.gen.acked_deliveries()
    dl = check_dead_letters(acked, result.dead, error_code=_VALIDATION_CODE)
    bound = attempts_bound(seconds)
    most = max(result.attempts, default=0)
    api_calls = int(result.sim_stats["api_calls"]["total"])
    seen = {**faults.actions, **faults.fired}
    not_fired = [
        _EVIDENCE[d.__name__]
        for d in drivers
        if d.__name__ in _EVIDENCE and not seen.get(_EVIDENCE[d.__name__])
    ]
    ok = (
        v.ok
        and not not_fired
        and dl["invalid_acked"] > 0
        and not s.gen.rejected
        and dl["dead_valid"] == 0
        and dl["invalid_not_dead"] == 0
        and dl["dead_wrong_error"] == 0
        and most <= bound
        and result.stop_status == 0
    )
    return {
        "ok": ok,
        **v.counts(),
        **dl,
        "not_acked": len(s.gen.rejected),
        "attempts_max": most,
        "attempts_bound": bound,
        "attempts": {str(k): n for k, n in sorted(result.attempts.items())},
        "api_calls": api_calls,
        "api_calls_per_outcome": round(api_calls / max(1, v.acked), 3),
        "faults_fired": faults.fired,
        "faults_not_fired": not_fired,
        "actions": faults.actions,
        "daemon_events": dict(s.daemon.event_counts),
        "bulk_jobs": result.sim_stats.get("bulk_jobs"),
        "sim_starts": s.sim.starts,
        "stop_status": result.stop_status,
        "load_s": round(load_s, 1),
        "seconds": round(seconds, 1),
        "examples": v.examples,
    }


async def run_faults(
    names: list[str], workdir: Path, *, outcomes: int, leads: int, rate: float, short: bool
) -> dict[str, Any]:
    t0 = time.monotonic()
    results: dict[str, Any] = {}
    for name in names:
        try:
            results[name] = await run_class(
                name,
                workdir / name,
                outcomes=outcomes,
                leads=leads,
                rate=rate,
                short=short,
                drain_timeout_s=180.0 if short else 900.0,
            )
        except (TimeoutError, RuntimeError) as exc:  # did not converge: say so, go on
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(f"campaign_faults: {name}: {json.dumps(results[name])}", file=sys.stderr)
    return {
        "campaign": "faults",
        "ok": all(r["ok"] for r in results.values()),
        "outcomes_per_class": outcomes,
        "classes": results,
        "seconds": round(time.monotonic() - t0, 1),
        "load_average": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--outcomes", type=int, default=20_000, help="per fault class")
    p.add_argument("--leads", type=int, default=3000)
    p.add_argument("--rate", type=float, default=200.0, help="deliveries per second")
    p.add_argument("--classes", default=",".join(CLASSES), help="comma-separated")
    p.add_argument("--short", action="store_true", help="CI size: 600 outcomes, short periods")
    p.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.classes.split(",") if n.strip()]
    unknown = [n for n in names if n not in CLASSES]
    if unknown:
        p.error(f"unknown fault class(es): {', '.join(unknown)}; known: {', '.join(CLASSES)}")
    if args.short:
        args.outcomes, args.leads, args.rate = 600, 200, 150.0

    async def go(workdir: Path) -> dict[str, Any]:
        return await run_faults(
            names,
            workdir,
            outcomes=args.outcomes,
            leads=args.leads,
            rate=args.rate,
            short=args.short,
        )

    return campaign_main(go, args.workdir, "campaign-faults-")


if __name__ == "__main__":
    raise SystemExit(main())
