"""Ingest: idempotency, versioning, group commit, put_many, cursors, back-pressure."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from spool_helpers import FakeClock, outcome

from spool import CallOutcome, PutStatus, Spool, SpoolClosed, SpoolFull


async def test_same_call_twice_is_one_record(spool: Spool) -> None:
    """A re-delivered outcome is stored once and reported as a duplicate."""
    o = outcome("a1")
    first = await spool.put(o)
    second = await spool.put(o)
    assert first.status is PutStatus.INSERTED
    assert second.status is PutStatus.DUPLICATE
    assert second.record_id == first.record_id
    assert (await spool.stats()).pending == 1


async def test_older_version_never_overwrites(spool: Spool) -> None:
    """A late re-delivery of an older version is ignored and the newer payload kept."""
    await spool.put(outcome("a1", ended=10, notes="new"))
    stale = await spool.put(outcome("a1", ended=5, notes="old"))
    assert stale.status is PutStatus.STALE
    [claim] = await spool.claim("bulk", 10)
    assert claim.outcome.notes == "new"


async def test_newer_version_of_pending_replaces_it(spool: Spool) -> None:
    """A newer version (later ended_at, higher seq or version bump) replaces a pending one."""
    base = await spool.put(outcome("a1", ended=1, notes="v0"))
    by_time = await spool.put(outcome("a1", ended=2, notes="t"))
    by_seq = await spool.put(outcome("a1", ended=2, seq=5, notes="s"))
    by_version = await spool.put(outcome("a1", ended=0, version=1, notes="v1"))
    assert [r.status for r in (by_time, by_seq, by_version)] == [PutStatus.REPLACED] * 3
    assert [r.rev for r in (base, by_time, by_seq, by_version)] == [1, 2, 3, 4]
    assert {r.record_id for r in (base, by_time, by_seq, by_version)} == {base.record_id}
    [claim] = await spool.claim("bulk", 10)
    assert (claim.outcome.notes, claim.rev) == ("v1", 4)
    assert (await spool.stats()).pending == 0


async def test_newer_version_of_sent_record_is_requeued(spool: Spool) -> None:
    """After a record was sent, a newer version is queued again as an update."""
    await spool.put(outcome("a1", ended=1))
    [claim] = await spool.claim("bulk", 10)
    await spool.ack([claim])
    again = await spool.put(outcome("a1", ended=1))
    newer = await spool.put(outcome("a1", ended=9, notes="callback moved"))
    assert again.status is PutStatus.DUPLICATE
    assert newer.status is PutStatus.REQUEUED
    stats = await spool.stats()
    assert (stats.pending, stats.done) == (1, 0)
    [claim2] = await spool.claim("live", 10)
    assert claim2.outcome.notes == "callback moved"
    assert claim2.attempt == 1


async def test_newer_version_while_in_flight_is_sent_after_ack(spool: Spool) -> None:
    """A version arriving while the old one is in flight is not lost when the old one acks."""
    await spool.put(outcome("a1", ended=1, notes="old"))
    [claim] = await spool.claim("bulk", 10)
    replaced = await spool.put(outcome("a1", ended=2, notes="new"))
    assert replaced.status is PutStatus.REPLACED
    assert (await spool.stats()).inflight == 1  # the rail keeps its lease
    result = await spool.ack([claim])
    assert result.requeued == [claim.record_id] and not result.done
    [claim2] = await spool.claim("bulk", 10)
    assert (claim2.outcome.notes, claim2.rev) == ("new", 2)
    assert (await spool.ack([claim2])).done == [claim2.record_id]


async def test_newer_version_of_dead_letter_goes_back_to_pending(spool: Spool) -> None:
    """A corrected version of a call that failed permanently is queued again."""
    await spool.put(outcome("a1", ended=1))
    [claim] = await spool.claim("bulk", 10)
    await spool.dead([claim], error_code="INVALID_FIELD", message="bad picklist")
    fixed = await spool.put(outcome("a1", ended=2))
    assert fixed.status is PutStatus.REPLACED
    stats = await spool.stats()
    assert (stats.pending, stats.dead) == (1, 0)


async def test_put_many_reports_each_and_stores_cursor(spool: Spool) -> None:
    """put_many returns one result per outcome in order and commits the resume cursor."""
    o1, o2 = outcome("m1"), outcome("m2")
    results = await spool.put_many([o1, o2, o1], cursor=("file:/var/cdr.csv", "4096"))
    assert [r.status for r in results] == [
        PutStatus.INSERTED,
        PutStatus.INSERTED,
        PutStatus.DUPLICATE,
    ]
    assert results[2].record_id == results[0].record_id
    assert await spool.get_cursor("file:/var/cdr.csv") == "4096"
    assert await spool.get_cursor("other") is None


async def test_put_returns_only_after_commit(spool: Spool, spool_path: Path) -> None:
    """When put returns, another connection already sees the row (it was committed)."""
    outcomes = [outcome() for _ in range(50)]
    results = await asyncio.gather(*(spool.put(o) for o in outcomes))
    with sqlite3.connect(spool_path) as other:
        ids = {r[0] for r in other.execute("SELECT id FROM outcomes")}
    assert {r.record_id for r in results} <= ids


async def test_concurrent_writers_all_stored(spool: Spool) -> None:
    """Eight producers putting concurrently each get a distinct, stored record."""

    async def producer(n: int) -> list[int]:
        out = []
        for i in range(40):
            out.append((await spool.put(outcome(f"p{n}-{i}"))).record_id)
        return out

    ids = await asyncio.gather(*(producer(n) for n in range(8)))
    flat = [i for chunk in ids for i in chunk]
    assert len(set(flat)) == 320
    assert (await spool.stats()).pending == 320


async def test_group_commit_batches_concurrent_puts(
    open_test_spool: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Puts that wait at the same time are committed together, in one transaction."""
    from spool._store import Store

    batches: list[int] = []
    original = Store.put_batch

    def counting(self: Store, requests: Any, *args: Any, **kw: Any) -> Any:
        batches.append(len(requests))
        return original(self, requests, *args, **kw)

    monkeypatch.setattr(Store, "put_batch", counting)
    async with open_test_spool() as sp:
        await asyncio.gather(*(sp.put(outcome()) for _ in range(200)))
    assert sum(batches) == 200
    assert len(batches) < 20


async def test_over_max_pending_put_raises_retryable_full(
    open_test_spool: Callable[..., Any],
) -> None:
    """Over the pending cap, put raises SpoolFull (retryable) and stores nothing."""
    async with open_test_spool(max_pending=3) as sp:
        await sp.put_many([outcome(), outcome()])
        await sp.put(outcome())
        with pytest.raises(SpoolFull) as info:
            await sp.put(outcome("one-too-many"))
        assert info.value.retryable and info.value.retry_after_s
        assert info.value.reason == "max_pending"
        with pytest.raises(SpoolFull):
            await sp.put_many([outcome(), outcome()], cursor=("feed", "9"))
        assert await sp.get_cursor("feed") is None
        assert (await sp.stats()).pending == 3
        # Sending one frees room again.
        [claim] = await sp.claim("bulk", 1)
        await sp.ack([claim])
        assert (await sp.put(outcome("fits-now"))).status is PutStatus.INSERTED


async def test_full_refuses_only_the_requests_that_do_not_fit(
    open_test_spool: Callable[..., Any],
) -> None:
    """In one group commit, requests over the cap fail and the others still commit."""
    async with open_test_spool(max_pending=5) as sp:
        results = await asyncio.gather(
            *(sp.put(outcome(f"g{i}")) for i in range(8)), return_exceptions=True
        )
        stored = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, SpoolFull)]
        assert (len(stored), len(refused)) == (5, 3)
        assert (await sp.stats()).pending == 5


async def test_over_max_bytes_put_raises_full(open_test_spool: Callable[..., Any]) -> None:
    """Over the file-size cap, put raises SpoolFull with reason max_bytes."""
    async with open_test_spool(max_bytes=200_000) as sp:
        big = "x" * 20_000
        with pytest.raises(SpoolFull) as info:
            for i in range(100):
                await sp.put(outcome(f"big{i}", notes=big))
        assert info.value.reason == "max_bytes"


async def test_put_after_close_raises_closed(open_test_spool: Callable[..., Any]) -> None:
    """Using a closed spool raises SpoolClosed (a RuntimeError), and aclose is idempotent."""
    async with open_test_spool() as sp:
        await sp.put(outcome())
        await sp.aclose()
        await sp.aclose()
        with pytest.raises(SpoolClosed):
            await sp.put(outcome())
        with pytest.raises(RuntimeError):
            await sp.claim("bulk", 1)


async def test_queued_puts_are_committed_on_close(
    open_test_spool: Callable[..., Any], spool_path: Path, clock: FakeClock
) -> None:
    """Closing the spool commits puts already queued instead of dropping them."""
    async with open_test_spool() as sp:
        tasks = [asyncio.create_task(sp.put(outcome(f"q{i}"))) for i in range(100)]
        await asyncio.sleep(0)
        await sp.aclose()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results)
    with sqlite3.connect(spool_path) as other:
        assert other.execute("SELECT count(*) FROM outcomes").fetchone()[0] == 100


async def test_state_kv_roundtrip(spool: Spool) -> None:
    """set_state / get_state keep a small durable value (e.g. the last quota reading)."""
    assert await spool.get_state("quota") is None
    await spool.set_state("quota", '{"used": 5}')
    await spool.set_state("quota", '{"used": 6}')
    assert await spool.get_state("quota") == '{"used": 6}'


async def test_quarantine_keeps_bad_input(spool: Spool) -> None:
    """Undecodable input is kept with its reason, newest first, and counted in stats."""
    first = await spool.quarantine("vici", b"\xff\xfe not json", "invalid JSON")
    second = await spool.quarantine("genesys", "{}", "call_id: field required")
    rows = await spool.list_quarantine()
    assert [r.id for r in rows] == [second, first]
    assert rows[1].raw == b"\xff\xfe not json" and rows[1].reason == "invalid JSON"
    assert (await spool.stats()).quarantined == 2


@pytest.mark.parametrize("field", ["version", "source_seq"])
def test_an_ordering_number_beyond_64_bits_is_refused_by_name(field: str) -> None:
    """version and source_seq go into SQLite integer columns: a larger number (a CDR
    'sequence' column parsed with int()) is refused as invalid input, naming the field,
    instead of failing the spool's group commit (it took the writer down, and with it the
    daemon, again at every redelivery)."""
    good = outcome().model_dump()
    CallOutcome.model_validate({**good, field: 2**63 - 1})
    with pytest.raises(ValidationError, match=field):
        CallOutcome.model_validate({**good, field: 2**63})


async def test_a_failed_group_commit_fails_its_callers_and_the_writer_goes_on(
    open_test_spool: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that is not SQLite's while a batch is written (the sqlite3 module refusing
    a value, say) fails that batch's callers with it; the spool keeps taking outcomes."""
    async with open_test_spool() as sp:
        store = sp._wstore
        put_batch = store.put_batch
        calls = 0

        def failing_once(*args: Any, **kw: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OverflowError("Python int too large to convert to SQLite INTEGER")
            return put_batch(*args, **kw)

        monkeypatch.setattr(store, "put_batch", failing_once)
        with pytest.raises(OverflowError):
            await sp.put(outcome("refused"))
        assert (await sp.put(outcome("after"))).status is PutStatus.INSERTED
        assert (await sp.stats()).pending == 1
