"""The rails' side: claim, leases, ack / retry / release / dead, newest outcome per Lead."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from spool_helpers import FakeClock, outcome

from spool import Spool


async def test_claim_takes_oldest_due_first_and_leases(spool: Spool, clock: FakeClock) -> None:
    """claim returns due pending records oldest first and moves them in flight for the rail."""
    ids = [(await spool.put(outcome(f"c{i}"))).record_id for i in range(5)]
    claims = await spool.claim("bulk", 3)
    assert [c.record_id for c in claims] == ids[:3]
    assert all(c.rail == "bulk" and c.attempt == 1 for c in claims)
    assert all(c.lease_until == clock.now + spool.lease_s for c in claims)
    stats = await spool.stats()
    assert (stats.pending, stats.inflight) == (2, 3)
    assert stats.by_rail["inflight"] == {"bulk": 3}
    rest = await spool.claim("live", 10)
    assert [c.record_id for c in rest] == ids[3:]
    assert await spool.claim("live", 10) == []


async def test_claims_come_in_due_order_not_id_order(spool: Spool, clock: FakeClock) -> None:
    """A record retried later comes after records that were due before it, on both claim
    paths (the Bulk rail's claim_stored too), although its id is the smallest."""
    for take in (spool.claim, spool.claim_stored):
        ids = [(await spool.put(outcome())).record_id for _ in range(4)]
        [first] = await spool.claim("bulk", 1)
        await spool.retry_later([first], delay_s=5, error_code="X", message="later")
        clock.advance(10)
        claims = await take("bulk", 10)
        assert [c.record_id for c in claims] == [*ids[1:], ids[0]]
        await spool.ack(claims)


async def test_resend_sends_done_and_in_flight_records_again(spool: Spool) -> None:
    """resend: a done record goes back to pending; an in-flight one stays with its rail,
    but the ack of that send puts it back to pending (its write may have landed before
    an older job's); pending and dead records are left as they are."""
    done, flying, waiting, dead = [(await spool.put(outcome())).record_id for _ in range(4)]
    claims = {c.record_id: c for c in await spool.claim("bulk", 10)}
    await spool.ack([claims[done]])
    await spool.dead([claims[dead]], error_code="X", message="refused")
    await spool.release([claims[waiting]])
    assert await spool.resend([done, flying, waiting, dead]) == 2
    stats = await spool.stats()
    assert (stats.pending, stats.inflight, stats.done, stats.dead) == (2, 1, 0, 1)
    ack = await spool.ack([claims[flying]])
    assert ack.requeued == [flying] and ack.done == []
    # The send that made ``done`` done, acked again late (a retry of its answer): the
    # record stays pending, to be sent again.
    assert (await spool.ack([claims[done]])).done == []
    again = {c.record_id for c in await spool.claim("live", 10)}
    assert again == {done, flying, waiting}


async def test_a_record_is_never_in_two_rails(spool: Spool) -> None:
    """Concurrent claims from several rails never hand out the same record twice."""
    await spool.put_many([outcome() for _ in range(60)])
    batches = await asyncio.gather(*(spool.claim(f"r{i % 3}", 7) for i in range(12)))
    ids = [c.record_id for batch in batches for c in batch]
    assert len(ids) == len(set(ids)) == 60


async def test_claim_urgent_filter(spool: Spool) -> None:
    """urgent=True takes live outcomes and urgent dispositions only; False takes the rest."""
    normal = await spool.put(outcome(disposition="busy"))
    dnc = await spool.put(outcome(disposition="do_not_call"))
    live = await spool.put(outcome(disposition="connected", live=True))
    urgent = await spool.claim("live", 10, urgent=True)
    assert {c.record_id for c in urgent} == {dnc.record_id, live.record_id}
    rest = await spool.claim("bulk", 10, urgent=False)
    assert [c.record_id for c in rest] == [normal.record_id]


async def test_expired_lease_returns_record_to_pending(spool: Spool, clock: FakeClock) -> None:
    """A rail that dies holding a lease does not strand the record: it is claimed again."""
    rec = await spool.put(outcome())
    [first] = await spool.claim("bulk", 1, lease_s=30)
    clock.advance(29)
    assert await spool.claim("live", 1) == []
    clock.advance(2)
    [second] = await spool.claim("live", 1)
    assert second.record_id == rec.record_id and second.attempt == 2
    # The stale holder cannot push the record around any more...
    assert await spool.retry_later([first], delay_s=60) == 0
    assert await spool.extend_lease([first], 60) == 0
    # ...but its success still counts: the same revision was delivered.
    assert (await spool.ack([first])).done == [rec.record_id]


async def test_maintenance_reaps_expired_leases(spool: Spool, clock: FakeClock) -> None:
    """The reaper returns expired leases to pending so stats show them waiting again."""
    await spool.put_many([outcome() for _ in range(3)])
    await spool.claim("bulk", 3, lease_s=10)
    clock.advance(11)
    reaped, _ = await spool.run_maintenance()
    assert reaped == 3
    stats = await spool.stats()
    assert (stats.pending, stats.inflight) == (3, 0)


async def test_background_reaper_returns_expired_leases(
    open_test_spool: Callable[..., Any], clock: FakeClock
) -> None:
    """Without any claim call, the spool's own task returns expired leases to pending."""
    async with open_test_spool(reap_interval_s=0.01) as sp:
        await sp.put_many([outcome() for _ in range(2)])
        await sp.claim("bulk", 2, lease_s=10)
        clock.advance(11)
        async with asyncio.timeout(10):  # poll the condition, with a deadline
            for _ in itertools.count():
                if (await sp.stats()).pending == 2:
                    break
                await asyncio.sleep(0.01)
        assert (await sp.stats()).inflight == 0


async def test_extend_lease_keeps_the_claim(spool: Spool, clock: FakeClock) -> None:
    """Extending a lease keeps a slow job's records from being claimed by another rail."""
    await spool.put(outcome())
    claims = await spool.claim("bulk", 1, lease_s=10)
    clock.advance(8)
    assert await spool.extend_lease(claims, 60) == 1
    clock.advance(30)
    assert await spool.claim("live", 1) == []


async def test_retry_later_backs_off(spool: Spool, clock: FakeClock) -> None:
    """A transient failure makes the record due again only after the delay."""
    rec = await spool.put(outcome())
    claims = await spool.claim("bulk", 1)
    assert await spool.retry_later(claims, delay_s=30, error_code="UNABLE_TO_LOCK_ROW") == 1
    assert await spool.claim("bulk", 1) == []
    clock.advance(30)
    [again] = await spool.claim("bulk", 1)
    assert again.record_id == rec.record_id and again.attempt == 2


async def test_release_does_not_count_an_attempt(spool: Spool) -> None:
    """Releasing (rail paused) puts the record back at once without counting the attempt."""
    await spool.put(outcome())
    claims = await spool.claim("bulk", 1)
    assert await spool.release(claims) == 1
    [again] = await spool.claim("bulk", 1)
    assert again.attempt == 1


async def test_dead_keeps_the_salesforce_error(spool: Spool) -> None:
    """A permanent failure becomes a dead letter with the error code, message and attempts."""
    rec = await spool.put(outcome("d1"))
    claims = await spool.claim("collections", 1)
    assert (
        await spool.dead(
            claims, error_code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", message="bad value: Foo"
        )
        == 1
    )
    [letter] = await spool.dead_letters()
    assert (letter.record_id, letter.call_id, letter.rail) == (rec.record_id, "d1", "collections")
    assert letter.error_code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert letter.error_message == "bad value: Foo" and letter.attempt == 1
    stats = await spool.stats()
    assert stats.dead == 1
    assert stats.dead_by_error == {"INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": 1}


async def test_dead_of_a_replaced_record_retries_the_new_version(spool: Spool) -> None:
    """If a newer version arrived while the old one failed, the new one is sent, not buried."""
    await spool.put(outcome("d1", ended=1))
    claims = await spool.claim("bulk", 1)
    await spool.put(outcome("d1", ended=2))
    assert await spool.dead(claims, error_code="X", message="y") == 0
    stats = await spool.stats()
    assert (stats.pending, stats.dead) == (1, 0)


async def test_ack_twice_and_unknown_ids_are_harmless(spool: Spool) -> None:
    """Repeating an ack, or acking an unknown record, changes nothing."""
    await spool.put(outcome())
    claims = await spool.claim("bulk", 1)
    first = await spool.ack(claims)
    second = await spool.ack([*claims, (999, 1)])
    assert len(first.done) == 1
    assert second.done == [] and sorted(second.skipped) == sorted([claims[0].record_id, 999])
    assert (await spool.stats()).done == 1


async def test_ack_of_a_whole_batch_and_of_a_mixed_one_count_exactly(spool: Spool) -> None:
    """A batch whose revisions are all current is acked in one set-based step; a batch
    with one replaced meanwhile is decided record by record. Either way each record ends
    where it should, keeps the rail that sent it, and the counters match."""
    ids = [(await spool.put(outcome(f"m{i}"))).record_id for i in range(6)]
    bulk = await spool.claim("bulk", 3)
    live = await spool.claim("live", 2)
    never_claimed = (ids[5], 1)  # acked all the same: it was delivered
    whole = await spool.ack([bulk[0], bulk[1], live[0], never_claimed])
    assert whole.done == [ids[0], ids[1], ids[3], ids[5]]
    assert whole.requeued == whole.skipped == []
    replaced = await spool.put(outcome("m2", ended=99))  # bulk[2] gets a newer version
    assert replaced.record_id == bulk[2].record_id
    mixed = await spool.ack([bulk[2], live[1], (bulk[0].record_id, bulk[0].rev)])
    assert mixed.done == [live[1].record_id]
    assert mixed.requeued == [bulk[2].record_id]
    assert mixed.skipped == [bulk[0].record_id]
    stats = await spool.stats()
    assert (stats.pending, stats.inflight, stats.done) == (1, 0, 5)
    assert stats.by_rail["done"] == {"bulk": 2, "live": 2, "": 1}


async def test_newest_outcome_per_lead(spool: Spool) -> None:
    """Per Lead, the outcome that ended last wins, whatever order they arrived in."""
    late = await spool.put(outcome(lead="L1", ended=50))
    early = await spool.put(outcome(lead="L1", ended=10))
    other = await spool.put(outcome(lead="L2", ended=5))
    newest = await spool.newest_per_lead(["ext:L1", "ext:L2", "ext:L3"])
    assert newest["ext:L1"][0] == late.record_id
    assert newest["ext:L2"][0] == other.record_id
    assert "ext:L3" not in newest
    assert await spool.has_newer_for_lead("ext:L1", early.record_id)
    assert not await spool.has_newer_for_lead("ext:L1", late.record_id)


async def test_dead_outcome_does_not_win_the_lead(spool: Spool) -> None:
    """A newer outcome that never reached Salesforce (dead) does not block an older one."""
    old = await spool.put(outcome(lead="L1", ended=10))
    new = await spool.put(outcome(lead="L1", ended=20))
    claims = await spool.claim("bulk", 10)
    await spool.dead(
        [c for c in claims if c.record_id == new.record_id], error_code="E", message="m"
    )
    assert not await spool.has_newer_for_lead("ext:L1", old.record_id)


async def test_claim_leaves_the_write_connection_at_its_synchronous_level(spool: Spool) -> None:
    """A claim commits at synchronous=NORMAL (a lost lease only leaves records pending);
    the puts after it are FULL again (every returned put is on disk)."""
    assert spool._wstore is not None
    conn = spool._wstore.conn

    def level() -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    assert await spool._write(level) == 2  # FULL
    await spool.put(outcome("c-sync"))
    assert [c.outcome.call_id for c in await spool.claim("live", 5)] == ["c-sync"]
    assert await spool._write(level) == 2


async def test_repeated_release_does_not_take_the_record_from_its_next_holder(
    spool: Spool,
) -> None:
    """Repeating a (maybe cancelled) release must be harmless: once another rail claimed
    the record, the first rail's stale claim must not move it back to pending."""
    rec = await spool.put(outcome())
    [first] = await spool.claim("bulk", 1)
    assert await spool.release([first]) == 1
    [second] = await spool.claim("live", 1)
    assert second.record_id == rec.record_id
    # The first rail repeats its release (it did not know whether it happened).
    assert await spool.release([first]) == 0
    stats = await spool.stats()
    assert (stats.pending, stats.inflight) == (0, 1)
    assert await spool.claim("collections", 1) == []


async def test_stale_holder_cannot_dead_letter_the_next_claim(spool: Spool) -> None:
    """A rail whose claim was released must not dead-letter the record another rail now
    holds under a new claim."""
    await spool.put(outcome())
    [first] = await spool.claim("bulk", 1)
    await spool.release([first])
    [second] = await spool.claim("live", 1)
    assert await spool.dead([first], error_code="X", message="stale") == 0
    assert (await spool.stats()).dead == 0
    assert (await spool.ack([second])).done == [second.record_id]


async def test_stale_ack_of_an_old_revision_does_not_break_the_current_lease(
    spool: Spool, clock: FakeClock
) -> None:
    """Rail A's lease expired and rail B now sends the newer version. A's late ack of the
    old revision must not pull the record out from under B (it would be claimed and sent
    a second time while B is still sending it)."""
    rec = await spool.put(outcome("s1", ended=1))
    [a] = await spool.claim("bulk", 1, lease_s=10)
    await spool.put(outcome("s1", ended=2))  # newer version while A holds it
    clock.advance(11)
    [b] = await spool.claim("live", 1, lease_s=60)
    assert b.record_id == rec.record_id and b.rev == a.rev + 1
    await spool.ack([a])  # A's late answer, for the old revision
    stats = await spool.stats()
    assert (stats.pending, stats.inflight) == (0, 1)
    assert await spool.claim("collections", 1) == []
    assert (await spool.ack([b])).done == [rec.record_id]


async def test_repeated_ack_does_not_requeue_the_next_version_in_flight(spool: Spool) -> None:
    """Repeating an ack is documented as harmless. Once the call's newer version is in
    flight with another rail, repeating the old ack must not put it back to pending
    (it would be claimed and sent a second time while the first send is running)."""
    rec = await spool.put(outcome("r1", ended=1))
    [a] = await spool.claim("bulk", 1)
    assert (await spool.ack([a])).done == [rec.record_id]
    assert (await spool.put(outcome("r1", ended=2))).rev == a.rev + 1  # requeued
    [b] = await spool.claim("live", 1)
    await spool.ack([a])  # the first ack again (its caller did not know it happened)
    stats = await spool.stats()
    assert (stats.pending, stats.inflight) == (0, 1)
    assert await spool.claim("collections", 1) == []
    assert (await spool.ack([b])).done == [rec.record_id]


async def test_claim_stored_order_matches_the_stored_order_column(spool: Spool) -> None:
    """StoredClaim.ord_ts is documented as the spool's order column (ended_at as unix
    seconds), and the Bulk rail compares (ord_ts, record_id) with the orders
    newest_per_lead returns and with the REST rail's ended_at.timestamp(). With
    microsecond end times they must be equal, not rounded."""
    o = outcome(lead="LP", ended=0.123457)
    rec = await spool.put(o)
    [c] = await spool.claim_stored("bulk", 1)
    newest = await spool.newest_per_lead(["ext:LP"])
    assert newest["ext:LP"] == (rec.record_id, (o.ended_at.timestamp(), rec.record_id))
    assert (c.ord_ts, c.record_id) == newest["ext:LP"][1]
    assert c.ord_ts == c.outcome.ended_at.timestamp()


async def test_a_newer_version_does_not_wait_out_the_older_ones_retry_delay(
    spool: Spool, clock: FakeClock
) -> None:
    """The older version failed and waits 10 minutes before its retry; a newer version of
    the call (a do-not-call, say) is due at once, in the urgent queue if it is urgent."""
    rec = await spool.put(outcome("c1", disposition="no_answer", ended=1))
    [first] = await spool.claim("collections", 10)
    assert await spool.retry_later([first], delay_s=600, error_code="X", message="lock") == 1
    assert await spool.claim("collections", 10) == []
    await spool.put(outcome("c1", disposition="do_not_call", ended=2))
    [again] = await spool.claim("live", 10, urgent=True)
    assert again.record_id == rec.record_id
    assert again.outcome.disposition.value == "do_not_call"
