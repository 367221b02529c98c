"""Robustness: unreadable payloads, cancellation, disk errors, purge vs writer, big files."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from spool_helpers import FakeClock, outcome

import spool
from spool import UNREADABLE_PAYLOAD, PutStatus, Spool, SpoolUnavailable, open_spool
from spool._schema import migrate
from spool._store import Store


def _corrupt_payload(path: Path, call_id: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            'UPDATE outcomes SET payload = \'{"source": "vici"}\' WHERE call_id = ?', (call_id,)
        )


async def test_unreadable_payload_is_dead_lettered_not_blocking(
    spool: Spool, spool_path: Path
) -> None:
    """A stored payload this version cannot read becomes a dead letter; the rest flows."""
    await spool.put(outcome("bad"))
    good = await spool.put(outcome("good"))
    _corrupt_payload(spool_path, "bad")
    claims = await spool.claim("bulk", 10)
    assert [c.record_id for c in claims] == [good.record_id]
    [letter] = await spool.dead_letters()
    assert letter.call_id == "bad" and letter.error_code == UNREADABLE_PAYLOAD
    assert letter.outcome is None and '"vici"' in letter.payload
    assert "call_id: field required" in (letter.error_message or "")


async def test_claim_stored_reads_lazily_and_still_dead_letters_unreadable(
    spool: Spool, spool_path: Path
) -> None:
    """claim_stored (the Bulk rail's claim) gives the stored outcomes read lazily; a
    payload the lazy reader cannot vouch for but that validates in full is read in full;
    one that does not validate is dead-lettered as by claim, and the rest flows."""
    put = {c: await spool.put(outcome(c)) for c in ("bad", "odd", "good")}
    _corrupt_payload(spool_path, "bad")
    with sqlite3.connect(spool_path) as conn:
        # a whole number written as 35.0: the model reads 35, the lazy reader refuses it
        conn.execute(
            "UPDATE outcomes SET payload = json_set(payload, '$.duration_s', 35.0)"
            " WHERE call_id = 'odd'"
        )
    claims = await spool.claim_stored("bulk", 10)
    assert [c.record_id for c in claims] == [put["odd"].record_id, put["good"].record_id]
    for claim in claims:
        expected = outcome(claim.outcome.call_id)
        if claim.outcome.call_id == "odd":
            expected = expected.model_copy(update={"duration_s": 35})
        assert claim.claim().outcome == expected
        assert repr(claim.outcome.duration_s) == repr(expected.duration_s)  # 35, not 35.0
        assert claim.outcome.disposition.value == "connected"
        assert claim.ord_ts == claim.outcome.ended_at.timestamp()
        assert (claim.rail, claim.attempt, claim.rev) == ("bulk", 1, 1)
    [letter] = await spool.dead_letters()
    assert letter.call_id == "bad" and letter.error_code == UNREADABLE_PAYLOAD
    assert (await spool.ack(claims)).done == sorted(c.record_id for c in claims)


async def test_decode_dead_letters_a_stored_claim_that_does_not_validate(
    spool: Spool, spool_path: Path
) -> None:
    """A payload the lazy reader accepts (JSON types right) can still break a rule of the
    model (a negative duration): decoding the claim in full for a REST rail then
    dead-letters it, as claim does, and hands on the others."""
    put = {c: await spool.put(outcome(c)) for c in ("neg", "fine")}
    with sqlite3.connect(spool_path) as conn:
        conn.execute(
            "UPDATE outcomes SET payload = json_set(payload, '$.duration_s', -5)"
            " WHERE call_id = 'neg'"
        )
    stored = await spool.claim_stored("bulk", 10)
    assert len(stored) == 2
    [full] = await spool.decode(stored)
    assert full.record_id == put["fine"].record_id and full.outcome == outcome("fine")
    [letter] = await spool.dead_letters()
    assert letter.call_id == "neg" and letter.error_code == UNREADABLE_PAYLOAD
    assert "duration_s" in (letter.error_message or "")


async def test_cancelled_put_leaves_spool_usable(spool: Spool) -> None:
    """Cancelling a waiting put neither breaks the writer nor other callers' puts."""
    others = [asyncio.create_task(spool.put(outcome(f"o{i}"))) for i in range(20)]
    victim = asyncio.create_task(spool.put(outcome("victim")))
    await asyncio.sleep(0)
    victim.cancel()
    results = await asyncio.gather(*others)
    assert all(r.status is PutStatus.INSERTED for r in results)
    # The cancelled put may or may not have been stored; putting it again is safe.
    again = await spool.put(outcome("victim"))
    assert again.status in (PutStatus.INSERTED, PutStatus.DUPLICATE)
    assert (await spool.stats()).pending == 21


async def test_disk_error_is_retryable_and_spool_recovers(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite I/O error fails that batch with SpoolUnavailable; the next put works."""
    original = Store.put_batch
    failures = [1]

    def flaky(self: Store, *args: Any, **kw: Any) -> Any:
        if failures:
            failures.pop()
            exc = sqlite3.OperationalError("disk I/O error")
            exc.sqlite_errorname = "SQLITE_IOERR_WRITE"
            raise exc
        return original(self, *args, **kw)

    monkeypatch.setattr(Store, "put_batch", flaky)
    with pytest.raises(SpoolUnavailable) as info:
        await spool.put(outcome("first"))
    assert info.value.retryable and info.value.sqlite_error == "SQLITE_IOERR_WRITE"
    assert (await spool.put(outcome("first"))).status is PutStatus.INSERTED


async def test_purge_does_not_stall_puts(
    open_test_spool: Callable[..., Any], clock: FakeClock
) -> None:
    """While a large retention purge runs in small batches, puts still get through."""
    async with open_test_spool(retention_s=60, purge_batch=50) as sp:
        for _ in range(4):
            await sp.put_many([outcome() for _ in range(500)])
            await sp.ack(await sp.claim("bulk", 500))
        clock.advance(61)
        purge = asyncio.create_task(sp.run_maintenance())
        await asyncio.sleep(0)
        put = await sp.put(outcome("during-purge"))
        assert put.status is PutStatus.INSERTED
        assert not purge.done()  # the put did not wait for the whole purge
        _, purged = await purge
        assert purged == 2000
        assert (await sp.stats()).done == 0


def _build_big_spool(path: Path, rows: int) -> None:
    """A spool file with ``rows`` pending records, written directly (fast)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    migrate(conn)
    one = outcome("template").model_dump_json()
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)"
        " INSERT INTO outcomes (source, call_id, state, rail, urgent, lead_key, ord_version,"
        " ord_seq, ord_ts, rev, attempt, next_attempt_at, queued_at, created_at, updated_at,"
        " payload) SELECT 'vici', 'big-' || i, 0, '', i % 7 = 0, 'ext:L' || (i % 1000), 0, -1,"
        " 1.7e9, 1, 0, 1.7e9 + i, 1.7e9 + i, 1.7e9, 1.7e9,"
        " replace(?, '\"template\"', '\"big-' || i || '\"') FROM seq",
        (rows, one),
    )
    conn.execute("INSERT INTO counts (state, rail, n) VALUES (0, '', ?)", (rows,))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def _open_and_use(path: Path, rows: int) -> float:
    """Seconds from open_spool to the first stats (then check claim and put work)."""
    started = time.perf_counter()
    async with open_spool(path, max_pending=2 * rows) as sp:
        stats = await sp.stats()
        opened = time.perf_counter() - started
        claims = await sp.claim("bulk", 100)
        assert stats.pending == rows
        assert stats.oldest_pending_age_s is not None
        assert len(claims) == 100 and claims[0].outcome.call_id == "big-1"
        assert (await sp.put(outcome("new"))).status is PutStatus.INSERTED
    return opened


async def test_open_is_independent_of_backlog(tmp_path: Path) -> None:
    """Opening a spool with 100,000 pending records and reading stats is instant."""
    path = tmp_path / "big.db"
    await asyncio.to_thread(_build_big_spool, path, 100_000)
    assert await _open_and_use(path, 100_000) < 1.0


@pytest.mark.slow
async def test_open_one_million_pending_under_a_second(tmp_path: Path) -> None:
    """Opening a spool holding 1,000,000 pending records takes at most 1 s (issue 2)."""
    path = tmp_path / "big.db"
    await asyncio.to_thread(_build_big_spool, path, 1_000_000)
    assert await _open_and_use(path, 1_000_000) < 1.0


def test_public_api_is_pinned() -> None:
    """The names other packages import from spool stay exported."""
    assert set(spool.__all__) == {
        "DEFAULT_URGENT", "AckResult", "CallOutcome", "Claim", "DeadLetter", "Direction",
        "Disposition", "JobRow", "LeadRef", "OutcomeFields", "PutResult", "PutStatus",
        "QuarantineRow", "RecordRef", "Spool", "SpoolClosed", "SpoolCorrupt", "SpoolError",
        "SpoolFull", "SpoolStats", "SpoolUnavailable", "StoredClaim", "StoredOutcome",
        "UNREADABLE_PAYLOAD",
        "format_validation_error", "open_spool", "read_stats",
    }  # fmt: skip
    for name in spool.__all__:
        assert getattr(spool, name) is not None
    assert issubclass(spool.SpoolClosed, RuntimeError)
    assert spool.SpoolFull.retryable and spool.SpoolUnavailable.retryable


def test_migrations_run_forward_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new schema step runs once on an old file, in order, and bumps the version."""
    from spool import _schema

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    current = _schema.SCHEMA_VERSION
    assert migrate(conn) == 0
    ran: list[int] = []

    def next_step(c: sqlite3.Connection) -> None:
        ran.append(current + 1)
        c.execute("ALTER TABLE outcomes ADD COLUMN extra_col TEXT")

    monkeypatch.setattr(_schema, "MIGRATIONS", [*_schema.MIGRATIONS, next_step])
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", current + 1)
    assert migrate(conn) == current
    assert migrate(conn) == current + 1
    assert ran == [current + 1]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == current + 1
    conn.close()


async def test_version_1_file_is_upgraded_with_exact_counts(tmp_path: Path) -> None:
    """A spool written by schema 1 opens under the current schema with exact counters."""
    from spool import _schema

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    _schema.MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO outcomes (source, call_id, state, rail, urgent, ord_version, ord_seq,"
        " ord_ts, rev, next_attempt_at, queued_at, created_at, updated_at, payload)"
        " VALUES ('vici', 'old', 0, '', 0, 0, -1, 1.7e9, 1, 1.7e9, 1.7e9, 1.7e9, 1.7e9, ?)",
        (outcome("old").model_dump_json(),),
    )
    conn.execute("DELETE FROM counts")  # schema 1 counted inserts in code, not here
    conn.close()
    async with open_spool(path) as sp:
        assert (await sp.stats()).pending == 1
        await sp.put(outcome("new"))
        assert (await sp.stats()).pending == 2
        [first, _] = await sp.claim("bulk", 2)
        assert first.outcome.call_id == "old"


async def test_version_2_file_keeps_its_bulk_jobs_across_the_upgrade(tmp_path: Path) -> None:
    """Schema 3 stops writing ``outcomes.job_id`` (job_records alone says which unfinished
    job holds a record) and drops the state condition from ``outcomes_lead``. A spool
    written by schema 2 with a record in an open Bulk job and one orphaned in flight
    upgrades so that the restart releases the orphan only."""
    from spool import _schema

    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for step in _schema.MIGRATIONS[:2]:
        step(conn)
    conn.execute("PRAGMA user_version = 2")
    for call_id, job in (("held", "750J1"), ("orphan", None)):
        conn.execute(
            "INSERT INTO outcomes (source, call_id, state, rail, urgent, lead_key, ord_version,"
            " ord_seq, ord_ts, rev, attempt, next_attempt_at, lease_until, queued_at,"
            " created_at, updated_at, job_id, payload, batch_rows) VALUES ('vici', ?, 1,"
            " 'bulk', 0, 'id:00Q000000000001', 0, -1, 1.7e9, 1, 1, 1.7e9, 9e9, 1.7e9, 1.7e9,"
            " 1.7e9, ?, ?, 1)",
            (call_id, job, outcome(call_id).model_dump_json()),
        )
    conn.execute("UPDATE counts SET state = 1, rail = 'bulk' WHERE state = 0")
    conn.execute(
        "INSERT INTO jobs (sf_job_id, object, operation, state, record_count, created_at,"
        " updated_at) VALUES ('750J1', 'Task', 'upsert', 'InProgress', 1, 1.7e9, 1.7e9)"
    )
    conn.execute("INSERT INTO job_records VALUES ('750J1', 1, 1)")
    conn.close()
    async with open_spool(path) as sp:
        assert (await sp.stats()).schema_version == _schema.SCHEMA_VERSION
        assert await sp.release_orphans() == 1
        stats = await sp.stats()
        assert (stats.pending, stats.inflight) == (1, 1)
        [page] = [p async for p in sp.iter_job_records("750J1")]
        assert [c.outcome.call_id for c in page] == ["held"]
        assert await sp.finish_job("750J1", "JobComplete")
        assert await sp.release_orphans() == 1
    with sqlite3.connect(path) as check:
        (sql,) = check.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'outcomes_lead'"
        ).fetchone()
        assert "state" not in sql
        assert (
            check.execute("SELECT count(*) FROM outcomes WHERE job_id IS NOT NULL").fetchone()[0]
            == 0
        )
