"""Bulk job bookkeeping, dead letters, retention and stats (also from another process)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from spool_helpers import FakeClock, outcome

from spool import Spool, SpoolCorrupt, read_stats


async def test_job_is_recorded_with_its_records_before_upload(spool: Spool) -> None:
    """A recorded job lists the record revisions it carries, and a restart finds it."""
    await spool.put_many([outcome() for _ in range(5)])
    claims = await spool.claim("bulk", 5)
    await spool.record_job("750000000000001", "Task", "upsert", claims)
    await spool.record_job("750000000000001", "Task", "upsert", claims[:2])  # idempotent
    [job] = await spool.jobs()
    assert (job.sf_job_id, job.object, job.operation, job.state) == (
        "750000000000001",
        "Task",
        "upsert",
        "Open",
    )
    assert job.record_count == 5 and not job.finished
    pages = [page async for page in spool.iter_job_records(job.sf_job_id, batch=2)]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [c.pair for p in pages for c in p] == [c.pair for c in claims]
    assert (await spool.stats()).jobs_in_flight == 1


async def test_job_state_counters_and_finish(spool: Spool) -> None:
    """Job state and counters are updated, and finished jobs leave the in-flight count."""
    await spool.put(outcome())
    claims = await spool.claim("bulk", 1)
    await spool.record_job("750A", "Task", "upsert", claims)
    assert await spool.update_job("750A", state="UploadComplete", numberRecordsProcessed=0)
    assert await spool.update_job("750A", numberRecordsFailed=1)
    assert not await spool.update_job("750-unknown", state="Aborted")
    [job] = await spool.jobs({"UploadComplete"})
    assert job.counters == {"numberRecordsProcessed": 0, "numberRecordsFailed": 1}
    assert (await spool.stats()).jobs_by_state == {"UploadComplete": 1}
    assert await spool.finish_job("750A", "JobComplete")
    assert (await spool.stats()).jobs_in_flight == 0
    [job] = await spool.jobs()
    assert job.finished and job.state == "JobComplete"


async def test_job_records_ack_with_the_uploaded_revision(spool: Spool) -> None:
    """Acking a job's records uses the uploaded revision: a record replaced since is resent."""
    await spool.put(outcome("j1", ended=1))
    await spool.put(outcome("j2", ended=1))
    claims = await spool.claim("bulk", 2)
    await spool.record_job("750B", "Task", "upsert", claims)
    await spool.put(outcome("j2", ended=5))
    [page] = [p async for p in spool.iter_job_records("750B")]
    result = await spool.ack(page)
    assert len(result.done) == 1 and len(result.requeued) == 1
    assert (await spool.stats()).pending == 1


async def test_dead_letters_list_retry_and_drop(spool: Spool, clock: FakeClock) -> None:
    """Dead letters can be listed (newest first, by code), retried to pending, and dropped."""
    await spool.put_many([outcome(f"x{i}") for i in range(4)])
    claims = await spool.claim("bulk", 4)
    for i, claim in enumerate(claims):
        clock.advance(1)
        code = "FIELD_CUSTOM_VALIDATION_EXCEPTION" if i % 2 else "STRING_TOO_LONG"
        await spool.dead([claim], error_code=code, message=f"m{i}")
    letters = await spool.dead_letters()
    assert [d.call_id for d in letters] == ["x3", "x2", "x1", "x0"]
    assert [d.call_id for d in await spool.dead_letters(limit=1, offset=1)] == ["x2"]
    too_long = await spool.dead_letters(error_code="STRING_TOO_LONG")
    assert [d.call_id for d in too_long] == ["x2", "x0"]
    assert (await spool.dead_letter(letters[0].record_id)) == letters[0]

    assert await spool.retry_dead(error_code="STRING_TOO_LONG") == 2
    assert await spool.retry_dead([letters[0].record_id]) == 1
    assert await spool.retry_dead([letters[0].record_id]) == 0  # no longer dead
    assert await spool.drop_dead([letters[2].record_id, letters[0].record_id]) == 1
    stats = await spool.stats()
    assert (stats.pending, stats.dead) == (3, 0)
    retried = await spool.claim("bulk", 10)
    assert all(c.attempt == 1 for c in retried)
    with pytest.raises(ValueError, match="retry_dead needs"):
        await spool.retry_dead()


async def test_retry_all_dead(spool: Spool) -> None:
    """retry_dead(all=True) sends every dead letter back to pending."""
    await spool.put_many([outcome() for _ in range(3)])
    await spool.dead(await spool.claim("bulk", 3), error_code=None, message="x")
    assert await spool.retry_dead(all=True) == 3
    assert (await spool.stats()).pending == 3


async def test_retention_purges_old_done_records_in_batches(
    open_test_spool: Callable[..., Any], clock: FakeClock
) -> None:
    """Done records older than the retention period are purged; recent and unsent stay."""
    async with open_test_spool(retention_s=3600, purge_batch=7) as sp:
        await sp.put_many([outcome() for _ in range(30)])
        await sp.ack(await sp.claim("bulk", 20))
        clock.advance(1800)
        await sp.ack(await sp.claim("bulk", 5))
        clock.advance(1801)
        _, purged = await sp.run_maintenance()
        assert purged == 20
        stats = await sp.stats()
        assert (stats.pending, stats.done) == (5, 5)


async def test_stats_oldest_pending_age(spool: Spool, clock: FakeClock) -> None:
    """oldest_pending_age_s is the wait of the oldest pending record, None when idle."""
    assert (await spool.stats()).oldest_pending_age_s is None
    await spool.put(outcome())
    clock.advance(42)
    await spool.put(outcome())
    assert (await spool.stats()).oldest_pending_age_s == pytest.approx(42)


async def test_read_stats_from_another_process_while_writing(
    open_test_spool: Callable[..., Any], spool_path: Path
) -> None:
    """The admin CLI can read stats from another process while the daemon writes."""
    code = (
        "import json, sys; from spool import read_stats; "
        "print(json.dumps(read_stats(sys.argv[1]).to_dict()))"
    )
    async with open_test_spool() as sp:
        await sp.put_many([outcome() for _ in range(10)])
        await sp.claim("bulk", 3)
        writing = asyncio.gather(*(sp.put(outcome()) for _ in range(200)))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, str(spool_path), stdout=subprocess.PIPE
        )
        out, _ = await proc.communicate()
        await writing
        assert proc.returncode == 0
        seen = json.loads(out)
        assert seen["inflight"] == 3 and 7 <= seen["pending"] <= 207
        assert read_stats(spool_path).pending == 207


def test_read_stats_refuses_non_spool_file(tmp_path: Path) -> None:
    """read_stats on a SQLite file that is not a spool says so; on a missing file too."""
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(SpoolCorrupt, match="not a dispo-sync spool"):
        read_stats(other)
    with pytest.raises(FileNotFoundError):
        read_stats(tmp_path / "missing.db")


async def test_stats_counts_match_the_rows(spool: Spool, spool_path: Path) -> None:
    """The O(1) counters agree with a full count of the rows after mixed operations."""
    await spool.put_many([outcome() for _ in range(20)])
    claims = await spool.claim("bulk", 12)
    await spool.ack(claims[:4])
    await spool.retry_later(claims[4:6], delay_s=5)
    await spool.dead(claims[6:8], error_code="E", message="m")
    await spool.drop_dead([claims[6].record_id])
    stats = await spool.stats()
    with sqlite3.connect(spool_path) as other:
        real = dict(other.execute("SELECT state, count(*) FROM outcomes GROUP BY state"))
    assert (stats.pending, stats.inflight, stats.done, stats.dead) == (
        real.get(0, 0),
        real.get(1, 0),
        real.get(2, 0),
        real.get(3, 0),
    )
    assert (stats.pending, stats.inflight, stats.done, stats.dead) == (10, 4, 4, 1)


async def test_record_job_marks_exactly_the_recorded_records(spool: Spool) -> None:
    """record_job ties the records it names (and only those) to the job: the others in
    flight are orphans a restart releases, the job's are left to its recovery."""
    await spool.put_many([outcome(f"r{i}") for i in range(4)])
    claims = await spool.claim("bulk", 4)
    await spool.record_job("750C", "Task", "upsert", claims[:2])
    await spool.record_job("750C", "Task", "upsert", [claims[1].pair])  # pairs too, repeated
    [job] = await spool.jobs()
    assert job.record_count == 2
    assert await spool.release_orphans() == 2
    stats = await spool.stats()
    assert (stats.pending, stats.inflight) == (2, 2)
    pages = [c.pair for p in [p async for p in spool.iter_job_records("750C")] for c in p]
    assert pages == [c.pair for c in claims[:2]]


async def test_purge_still_works_once_a_finished_bulk_job_is_past_retention(
    open_test_spool: Callable[..., Any], clock: FakeClock
) -> None:
    """Retention must purge old done records (and the old finished job) even when a
    finished Bulk job is older than the retention period."""
    async with open_test_spool(retention_s=3600) as sp:
        await sp.put_many([outcome() for _ in range(3)])
        claims = await sp.claim("bulk", 3)
        await sp.record_job("750PURGE", "Task", "upsert", claims)
        await sp.ack(claims)
        assert await sp.finish_job("750PURGE", "JobComplete")
        clock.advance(3601)
        _, purged = await sp.run_maintenance()
        assert purged >= 3
        stats = await sp.stats()
        assert stats.done == 0
        assert await sp.jobs() == []
