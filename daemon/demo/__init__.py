"""``dispo-sync demo``: the whole chain on this machine, nothing to configure.

All on loopback in one process, with the embedded defaults:

- a simulated Salesforce org (sfsim) seeded with Leads carrying ``Dialer_Lead_Id__c``;
- a synthetic dialer (:mod:`daemon.demo._dialer`) reporting realistic outcomes
  (no-answer, voicemail and busy dominate; agent calls marked live; some
  do-not-call and callback requests; repeated Leads, re-sent duplicates and
  newer versions of the same call), half over a websocket the daemon's
  ``websocket`` adapter connects to, half as VICIdial webhook GETs;
- the real daemon (:class:`daemon.runner.Daemon`, what ``dispo-sync run`` runs)
  from a generated config: spool in a temporary directory, short bulk interval.

It shows a live status line, waits until the spool drained, then checks the org
through sfsim's control API (:mod:`daemon.demo._verify`) and prints a summary.
The exit code is 0 only when every acknowledged call verified.
"""

from __future__ import annotations

import asyncio
from typing import TextIO

__all__ = ["run_demo"]


def run_demo(*, seconds: float = 20.0, rate: float = 20.0, out: TextIO) -> int:
    """Run the demo; 0 when every acknowledged report is in the org exactly once, newest wins."""
    if seconds <= 0 or rate <= 0:
        print("--seconds and --rate must be positive", file=out)
        return 2
    from daemon.demo._run import demo  # lazy: imports sfsim
    from daemon.runner import event_loop_factory

    # The same event loop as `dispo-sync run` (uvloop when installed).
    with asyncio.Runner(loop_factory=event_loop_factory("auto")[1]) as runner:
        return runner.run(demo(seconds, rate, out))
