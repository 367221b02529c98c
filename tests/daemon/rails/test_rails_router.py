"""The router: rail choice from quota state, backlog and pauses."""

from __future__ import annotations

import pytest

from daemon.rails.router import Via, route
from daemon.salesforce import QuotaState


def test_urgent_goes_live_and_rest_accumulates_until_due() -> None:
    """With quota, urgent work is live; the rest waits for the bulk interval."""
    r = route(quota=QuotaState.OK, backlog=500, bulk_due=False, bulk_min_records=2000)
    assert (r.urgent, r.other) == (Via.LIVE, Via.WAIT)


def test_small_backlog_uses_collections_large_uses_bulk() -> None:
    """When due, a small backlog goes by collections and a large one by Bulk."""
    small = route(quota=QuotaState.OK, backlog=1999, bulk_due=True, bulk_min_records=2000)
    large = route(quota=QuotaState.OK, backlog=2000, bulk_due=True, bulk_min_records=2000)
    assert small.other is Via.COLLECTIONS and large.other is Via.BULK
    assert "2000" in large.reason


def test_low_quota_degrades_live_and_holds_the_rest() -> None:
    """Under the reserve, urgent work is batched by collections and the rest waits."""
    r = route(quota=QuotaState.LOW, backlog=50_000, bulk_due=True, bulk_min_records=2000)
    assert (r.urgent, r.other) == (Via.COLLECTIONS, Via.WAIT)
    assert "reserve" in r.reason


def test_exhausted_quota_sends_nothing() -> None:
    """At the quota limit nothing is sent at all."""
    r = route(quota=QuotaState.EXHAUSTED, backlog=10, bulk_due=True, bulk_min_records=2000)
    assert (r.urgent, r.other) == (Via.WAIT, Via.WAIT)


def test_paused_rails_are_routed_around() -> None:
    """A paused live rail sends urgent work by collections; a paused bulk rail by collections."""
    r = route(
        quota=QuotaState.OK,
        backlog=9000,
        bulk_due=True,
        bulk_min_records=2000,
        paused=frozenset({"live", "bulk"}),
    )
    assert (r.urgent, r.other) == (Via.COLLECTIONS, Via.COLLECTIONS)
    r2 = route(
        quota=QuotaState.OK,
        backlog=9000,
        bulk_due=True,
        bulk_min_records=2000,
        paused=frozenset({"live", "bulk", "collections"}),
    )
    assert (r2.urgent, r2.other) == (Via.WAIT, Via.WAIT)


async def test_key_locks_serialize_writes_per_lead() -> None:
    """Two sends for one Lead never overlap; different Leads run together; locks are freed."""
    import asyncio

    from daemon.rails._leads import KeyLocks

    locks = KeyLocks()
    order: list[str] = []
    gate = asyncio.Event()

    async def first() -> None:
        async with locks.hold(["lead:a", "lead:b"]):
            order.append("first-in")
            await gate.wait()
            order.append("first-out")

    async def second() -> None:
        async with locks.hold(["lead:b"]):
            order.append("second")

    async def other() -> None:
        async with locks.hold(["lead:c"]):
            order.append("other")

    async with asyncio.TaskGroup() as tg:
        tg.create_task(first())
        await asyncio.sleep(0)
        tg.create_task(second())
        tg.create_task(other())
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == ["first-in", "other"]
        gate.set()
    assert order == ["first-in", "other", "first-out", "second"]
    assert len(locks) == 0


@pytest.mark.parametrize(
    ("paused", "other"), [(frozenset(), Via.COLLECTIONS), (frozenset({"collections"}), Via.WAIT)]
)
def test_without_a_task_key_the_rest_never_goes_by_bulk(paused: frozenset[str], other: Via) -> None:
    """Tasks that cannot be upserted by key cannot go in a Bulk job: whatever the backlog,
    the rest goes by collections (or waits while they are paused), and the reason says why."""
    r = route(
        quota=QuotaState.OK,
        backlog=50_000,
        bulk_due=True,
        bulk_min_records=2000,
        paused=paused,
        bulk_allowed=False,
    )
    assert r.other is other and "no Task external ID field" in r.reason
