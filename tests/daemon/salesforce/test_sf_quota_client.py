"""The quota view as the client feeds it, against sfsim over loopback.

Our own call count has to match what Salesforce charges, also for requests that got no
answer; and an answer that left the org before the allocation ran out must not lift
REQUEST_LIMIT_EXCEEDED when it arrives late.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
from sfkit import client_for

from daemon.salesforce import (
    QuotaState,
    QuotaView,
    RequestLimitError,
    TransportError,
)


async def _until(check: Any, what: str, timeout_s: float = 10.0) -> None:
    """Poll ``check()`` until true, failing with ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("after_processing", [False, True], ids=["before", "after_processing"])
async def test_a_call_whose_connection_dropped_is_counted(sim: Any, after_processing: bool) -> None:
    """A request whose connection is cut before the answer was charged by the org: it is
    one of our calls too (calls_by_rail, calls_total, own_calls_24h)."""
    async with client_for(sim) as sf:
        await sf.limits()
        sim.org.faults.configure({"drop_next": 1, "drop_after_processing": after_processing})
        with pytest.raises(TransportError):
            await sf.limits()
        assert sim.org.usage.used == 2  # what Salesforce charged
        assert sf.quota.calls_by_rail == {"admin": 2}
        assert sf.quota.calls_total == sf.quota.own_calls_24h == 2


async def test_a_call_that_timed_out_is_counted(sim: Any) -> None:
    """A request that timed out waiting for its answer was charged by the org: counted."""
    async with client_for(sim, read_timeout_s=0.05) as sf:
        await sf.limits()
        sim.org.faults.configure({"latency_ms": 400, "kinds": ["limits"]})
        with pytest.raises(TransportError, match="timeout"):
            await sf.limits()
        sim.org.faults.configure({"clear": True})
        assert sim.org.usage.used == 2
        assert sf.quota.calls_by_rail == {"admin": 2}
        assert sf.quota.own_calls_24h == 2


async def test_calls_without_an_answer_spend_our_share() -> None:
    """The configured share of the daily allocation is never exceeded, also when the
    network eats the answers: calls that got none count toward it."""
    from sfsim import SimOrg

    async with contextlib.AsyncExitStack() as stack:
        org = await stack.enter_async_context(SimOrg(port=0, api_limit=4))
        quota = QuotaView(reserve=0.0, max_share=0.5)
        sf = await stack.enter_async_context(client_for(org, quota=quota))
        await sf.limits()  # 1 of our 2
        assert quota.state() is QuotaState.OK
        org.org.faults.configure({"drop_next": 1})
        with pytest.raises(TransportError):
            await sf.limits()  # 2 of 2: the org charged it
        assert org.org.usage.used == 2
        assert quota.state() is QuotaState.EXHAUSTED


async def test_a_call_that_never_connected_is_not_counted() -> None:
    """Connection refused: the request never left, Salesforce charged nothing, and our
    count stays as it was."""
    from sfsim import SimOrg

    async with contextlib.AsyncExitStack() as stack:
        org = await stack.enter_async_context(SimOrg(port=0))
        sf = await stack.enter_async_context(client_for(org, connect_timeout_s=2.0))
        await sf.limits()
        await org.aclose()  # nothing listens on the org's port any more
        with pytest.raises(TransportError) as info:
            await sf.limits()
        assert isinstance(info.value.__cause__, httpx.ConnectError)
        assert sf.quota.calls_by_rail == {"admin": 1}
        assert sf.quota.calls_total == sf.quota.own_calls_24h == 1


async def test_a_late_answer_sent_before_the_limit_hit_does_not_clear_it(sim: Any) -> None:
    """A request goes out; REQUEST_LIMIT_EXCEEDED comes back for a later one; then the
    first one's answer arrives, its Sforce-Limit-Info showing room. It was sent before the
    limit was hit, so the quota stays exhausted; a /limits read sent after the hit may
    lift it."""
    async with client_for(sim) as sf:
        await sf.limits()
        sim.org.faults.configure({"latency_ms": 500, "kinds": ["query"]})
        slow = asyncio.create_task(sf.query("SELECT Id FROM Lead"))
        await _until(lambda: sim.org.usage.by_kind["query"] == 1, "the query to be charged")
        sim.org.faults.configure({"exhaust_daily_limit": True})
        with pytest.raises(RequestLimitError):
            await sf.limits()
        assert sf.quota.state() is QuotaState.EXHAUSTED
        assert not slow.done(), "the slow answer must arrive after the limit was hit"
        # The query's answer will say the allocation has room (as it had when Salesforce
        # answered it, or after a window roll we cannot tell from that).
        sim.org.usage.used = 0
        await slow
        assert sf.quota.state() is QuotaState.EXHAUSTED
        sim.org.faults.configure({"clear": True})
        await sf.limits()  # sent after the hit: a reading that counts
        assert sf.quota.state() is QuotaState.OK
