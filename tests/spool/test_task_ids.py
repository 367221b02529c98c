"""Schema 4, for orgs whose Tasks are inserted (no Task external ID field): a claim says
whether an earlier claim may have sent its record (``maybe_sent``) and carries the
Salesforce Id of the record's Task once ``set_task_ids`` stored it (``task_id``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from spool_helpers import BASE, FakeClock, outcome

from spool import Claim, PutStatus, Spool, open_spool
from spool._schema import DONE, INFLIGHT, MIGRATIONS, PENDING, SCHEMA_VERSION

TASK = "00T5g00000AbCdEAAA"
OTHER_TASK = "00T5g00000XyZwVAAA"


async def _claim_one(spool: Spool, record_id: int, rail: str = "live") -> Claim:
    """Claim everything due and return the claim of ``record_id`` (the only one due)."""
    [claim] = await spool.claim(rail, 10)
    assert claim.record_id == record_id
    return claim


# ---------------------------------------------------------------------- maybe_sent


async def test_first_claim_of_a_new_record_was_never_sent(spool: Spool) -> None:
    """The first claim of a record put now: nothing can have sent it, no Task Id known."""
    rec = await spool.put(outcome())
    claim = await _claim_one(spool, rec.record_id)
    assert (claim.maybe_sent, claim.task_id, claim.attempt) == (False, None, 1)


async def test_records_inserted_row_by_row_start_unsent_too(spool: Spool) -> None:
    """put_many with a cursor, or with a call twice in the batch, does not take the
    one-INSERT fast path but the row-by-row one; its new records start at zero claims too,
    and a newer version replacing a never-claimed record does not count as a send."""
    [by_cursor] = await spool.put_many([outcome("cursor")], cursor=("feed", "1"))
    first, replaced = await spool.put_many(
        [outcome("twice", notes="first"), outcome("twice", version=1, notes="second")]
    )
    assert (by_cursor.status, first.status, replaced.status) == (
        PutStatus.INSERTED,
        PutStatus.INSERTED,
        PutStatus.REPLACED,
    )
    claims = {c.record_id: c for c in await spool.claim("live", 10)}
    assert set(claims) == {by_cursor.record_id, first.record_id}
    assert not any(c.maybe_sent for c in claims.values())
    assert claims[first.record_id].outcome.notes == "second"


async def test_duplicate_and_newer_put_before_any_claim_keep_it_unsent(spool: Spool) -> None:
    """A duplicate delivery and a newer version of a call that no rail claimed yet leave
    the record never sent."""
    rec = await spool.put(outcome("call", notes="first"))
    assert (await spool.put(outcome("call", notes="first"))).status is PutStatus.DUPLICATE
    newer = await spool.put(outcome("call", version=1, notes="second"))
    assert newer.status is PutStatus.REPLACED
    claim = await _claim_one(spool, rec.record_id)
    assert claim.maybe_sent is False and claim.outcome.notes == "second"


async def _back_by_release(spool: Spool, claim: Claim, clock: FakeClock) -> None:
    assert await spool.release([claim]) == 1


async def _back_by_retry_later(spool: Spool, claim: Claim, clock: FakeClock) -> None:
    assert await spool.retry_later([claim], delay_s=30, error_code="TIMEOUT", message="x") == 1
    clock.advance(31)


async def _back_by_lease_expiry(spool: Spool, claim: Claim, clock: FakeClock) -> None:
    clock.advance(spool.lease_s + 1)
    reaped, _ = await spool.run_maintenance()
    assert reaped == 1


async def _back_by_release_orphans(spool: Spool, claim: Claim, clock: FakeClock) -> None:
    assert await spool.release_orphans() == 1


async def _back_by_resend(spool: Spool, claim: Claim, clock: FakeClock) -> None:
    assert (await spool.ack([claim])).done == [claim.record_id]
    assert await spool.resend([claim.record_id]) == 1


BackToPending = Callable[[Spool, Claim, FakeClock], Awaitable[None]]


@pytest.mark.parametrize(
    "back",
    [
        _back_by_release,
        _back_by_retry_later,
        _back_by_lease_expiry,
        _back_by_release_orphans,
        _back_by_resend,
    ],
    ids=["release", "retry_later", "lease_expiry", "release_orphans", "resend"],
)
async def test_a_record_claimed_before_may_have_been_sent(
    spool: Spool, clock: FakeClock, back: BackToPending
) -> None:
    """Every way a claimed record comes back to pending makes its next claim say it may
    have been sent, release included (which does not count the attempt)."""
    rec = await spool.put(outcome())
    first = await _claim_one(spool, rec.record_id)
    assert first.maybe_sent is False
    await back(spool, first, clock)
    again = await _claim_one(spool, rec.record_id, rail="bulk")
    assert again.maybe_sent is True and again.task_id is None


async def test_release_resets_the_attempt_but_not_maybe_sent(spool: Spool) -> None:
    """``attempt`` goes back after a release; ``maybe_sent`` does not."""
    rec = await spool.put(outcome())
    first = await _claim_one(spool, rec.record_id)
    await spool.release([first])
    again = await _claim_one(spool, rec.record_id)
    assert (again.attempt, again.maybe_sent) == (1, True)


async def test_maybe_sent_survives_dead_letter_and_retry_dead(spool: Spool) -> None:
    """A record claimed once, dead-lettered and sent back by retry_dead (which resets the
    attempt) still says it may have been sent."""
    rec = await spool.put(outcome())
    first = await _claim_one(spool, rec.record_id)
    assert first.maybe_sent is False
    assert await spool.dead([first], error_code="FIELD_INTEGRITY", message="no") == 1
    assert await spool.retry_dead([rec.record_id]) == 1
    again = await _claim_one(spool, rec.record_id)
    assert (again.attempt, again.maybe_sent) == (1, True)


@pytest.mark.parametrize("left_as", ["inflight", "done", "dead"])
async def test_maybe_sent_survives_a_newer_version_of_the_call(spool: Spool, left_as: str) -> None:
    """A newer version of the call (same source and call id, higher version) replaces the
    payload of a record claimed once, whether it was still in flight, done or dead; the
    next claim carries the new payload and still says it may have been sent."""
    rec = await spool.put(outcome("call", notes="first"))
    first = await _claim_one(spool, rec.record_id)
    assert first.maybe_sent is False
    if left_as == "done":
        assert (await spool.ack([first])).done == [rec.record_id]
    elif left_as == "dead":
        assert await spool.dead([first], error_code="X", message="refused") == 1
    newer = await spool.put(outcome("call", version=1, notes="second"))
    expected = PutStatus.REQUEUED if left_as == "done" else PutStatus.REPLACED
    assert (newer.record_id, newer.status) == (rec.record_id, expected)
    if left_as == "inflight":
        # the ack of the older revision sends the record back to pending
        assert (await spool.ack([first])).requeued == [rec.record_id]
    again = await _claim_one(spool, rec.record_id)
    assert again.outcome.notes == "second" and again.rev == newer.rev
    assert again.maybe_sent is True


# ---------------------------------------------------------------------- claim_stored


async def test_claim_stored_reports_maybe_sent_and_task_id(spool: Spool) -> None:
    """The Bulk rail's claim_stored says the same as claim, and StoredClaim.claim() and
    Spool.decode carry both fields over to the Claim."""
    seen = await spool.put(outcome("seen"))
    fresh = await spool.put(outcome("fresh"))
    [first] = await spool.claim_stored("bulk", 1)
    assert first.record_id == seen.record_id
    assert (first.maybe_sent, first.task_id) == (False, None)
    assert (first.claim().maybe_sent, first.claim().task_id) == (False, None)
    await spool.release([first])
    assert await spool.set_task_ids([(seen.record_id, TASK)]) == 1
    stored = {c.record_id: c for c in await spool.claim_stored("bulk", 10)}
    assert set(stored) == {seen.record_id, fresh.record_id}
    assert (stored[seen.record_id].maybe_sent, stored[seen.record_id].task_id) == (True, TASK)
    assert (stored[fresh.record_id].maybe_sent, stored[fresh.record_id].task_id) == (False, None)
    for s in stored.values():
        full = s.claim()
        assert (full.maybe_sent, full.task_id) == (s.maybe_sent, s.task_id)
    decoded = {c.record_id: c for c in await spool.decode(stored.values())}
    assert (decoded[seen.record_id].maybe_sent, decoded[seen.record_id].task_id) == (True, TASK)
    assert (decoded[fresh.record_id].maybe_sent, decoded[fresh.record_id].task_id) == (
        False,
        None,
    )


# ---------------------------------------------------------------------- set_task_ids


async def test_set_task_ids_is_carried_by_the_next_claim(spool: Spool) -> None:
    """The Id stored for a record (typically while the claim that inserted the Task is
    still in flight) comes with that record's next claim, and only with that record's."""
    rec = await spool.put(outcome())
    other = await spool.put(outcome())
    claims = {c.record_id: c for c in await spool.claim("live", 10)}
    assert await spool.set_task_ids([(rec.record_id, TASK)]) == 1
    # the claim in hand is a snapshot; the stored Id comes with the next claim
    assert claims[rec.record_id].task_id is None
    await spool.retry_later(claims.values(), delay_s=0)
    again = {c.record_id: c for c in await spool.claim("live", 10)}
    assert again[rec.record_id].task_id == TASK
    assert again[other.record_id].task_id is None


async def test_set_task_ids_counts_rows_changed(spool: Spool) -> None:
    """set_task_ids returns how many records it changed: 0 for nothing to do (an empty
    list or generator) and for a record id the spool does not hold; any iterable will do."""
    a = await spool.put(outcome())
    b = await spool.put(outcome())
    assert await spool.set_task_ids([]) == 0
    nothing: list[tuple[int, str]] = []
    assert await spool.set_task_ids(p for p in nothing) == 0
    assert await spool.set_task_ids([(a.record_id + b.record_id + 100, TASK)]) == 0
    pairs = ((r.record_id, t) for r, t in ((a, TASK), (b, OTHER_TASK)))
    assert await spool.set_task_ids(pairs) == 2
    claims = {c.record_id: c.task_id for c in await spool.claim("live", 10)}
    assert claims == {a.record_id: TASK, b.record_id: OTHER_TASK}


async def test_forget_task_ids_clears_only_the_records_named(spool: Spool) -> None:
    """forget_task_ids clears the stored Id of the records named (the next claim carries
    none), leaves the others' alone, and counts only records that had an Id: unknown
    records, records without one and repeats change nothing."""
    a = await spool.put(outcome())
    b = await spool.put(outcome())
    bare = await spool.put(outcome())
    await spool.set_task_ids([(a.record_id, TASK), (b.record_id, OTHER_TASK)])
    assert await spool.forget_task_ids([]) == 0
    unknown = a.record_id + b.record_id + bare.record_id + 100
    assert await spool.forget_task_ids([a.record_id, a.record_id, bare.record_id, unknown]) == 1
    claims = {c.record_id: c.task_id for c in await spool.claim("live", 10)}
    assert claims == {a.record_id: None, b.record_id: OTHER_TASK, bare.record_id: None}
    assert await spool.forget_task_ids([a.record_id]) == 0


async def test_set_task_ids_again_replaces_the_id(spool: Spool) -> None:
    """Storing a record's Id again keeps the last one."""
    rec = await spool.put(outcome())
    assert await spool.set_task_ids([(rec.record_id, TASK)]) == 1
    assert await spool.set_task_ids([(rec.record_id, OTHER_TASK)]) == 1
    assert (await _claim_one(spool, rec.record_id)).task_id == OTHER_TASK


async def test_task_id_survives_newer_versions_and_requeues(spool: Spool) -> None:
    """Once stored, a record's Task Id stays through everything that sends the record
    again: a newer version while pending or in flight, a newer version after it was done
    (requeued), a dead letter brought back by retry_dead, and resend."""
    rec = await spool.put(outcome("call", notes="v0"))
    first = await _claim_one(spool, rec.record_id)
    assert await spool.set_task_ids([(rec.record_id, TASK)]) == 1
    assert (await spool.ack([first])).done == [rec.record_id]

    # done, then a newer version: requeued with the new payload and the same Task
    requeued = await spool.put(outcome("call", version=1, notes="v1"))
    assert requeued.status is PutStatus.REQUEUED
    claim = await _claim_one(spool, rec.record_id)
    assert (claim.outcome.notes, claim.task_id, claim.maybe_sent) == ("v1", TASK, True)

    # in flight, then a newer version: the ack of v1 requeues, the next claim sends v2
    assert (await spool.put(outcome("call", version=2, notes="v2"))).status is (PutStatus.REPLACED)
    assert (await spool.ack([claim])).requeued == [rec.record_id]
    claim = await _claim_one(spool, rec.record_id)
    assert (claim.outcome.notes, claim.task_id) == ("v2", TASK)

    # pending (released), then a newer version
    await spool.release([claim])
    assert (await spool.put(outcome("call", version=3, notes="v3"))).status is (PutStatus.REPLACED)
    claim = await _claim_one(spool, rec.record_id)
    assert (claim.outcome.notes, claim.task_id) == ("v3", TASK)

    # dead letter brought back
    await spool.dead([claim], error_code="X", message="refused")
    assert await spool.retry_dead([rec.record_id]) == 1
    claim = await _claim_one(spool, rec.record_id)
    assert claim.task_id == TASK

    # done, then resent
    await spool.ack([claim])
    assert await spool.resend([rec.record_id]) == 1
    claim = await _claim_one(spool, rec.record_id)
    assert (claim.task_id, claim.maybe_sent) == (TASK, True)


async def test_task_id_survives_reopening_the_spool(
    open_test_spool: Callable[..., Any],
) -> None:
    """The Id and the claim count are in the file, not in memory."""
    async with open_test_spool() as sp:
        rec = await sp.put(outcome())
        await _claim_one(sp, rec.record_id)
        assert await sp.set_task_ids([(rec.record_id, TASK)]) == 1
    async with open_test_spool() as sp:
        assert await sp.release_orphans() == 1
        claim = await _claim_one(sp, rec.record_id)
        assert (claim.maybe_sent, claim.task_id) == (True, TASK)


# ---------------------------------------------------------------------- schema 3 -> 4


def _v3_file(path: Path, calls: dict[str, int]) -> None:
    """A spool file as schema 3 wrote it: ``calls`` maps call id -> state (pending,
    in flight in 'bulk' with a live lease, or done)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for step in MIGRATIONS[:3]:
        step(conn)
    conn.execute("PRAGMA user_version = 3")
    for call_id, state in calls.items():
        # schema 3's insert (Store._put_one of that version): pending, counted by
        # batch_rows; then moved as its claim / ack would (the count trigger follows).
        conn.execute(
            "INSERT INTO outcomes (source, call_id, state, rail, urgent, lead_key, ord_version,"
            " ord_seq, ord_ts, rev, attempt, next_attempt_at, queued_at, created_at,"
            " updated_at, payload, batch_rows) VALUES ('vici', ?, 0, '', 0, NULL, 0, -1,"
            " 1.7e9, 1, 0, 1.7e9, 1.7e9, 1.7e9, 1.7e9, ?, 1)",
            (call_id, outcome(call_id).to_stored_json()),
        )
        if state == INFLIGHT:
            conn.execute(
                "UPDATE outcomes SET state = 1, rail = 'bulk', attempt = 1, lease_until = 9e9"
                " WHERE call_id = ?",
                (call_id,),
            )
        elif state == DONE:
            conn.execute(
                "UPDATE outcomes SET state = 2, rail = 'bulk', attempt = 1 WHERE call_id = ?",
                (call_id,),
            )
    conn.close()


async def test_version_3_file_upgrades_and_its_records_may_have_been_sent(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A spool written by schema 3 opens under schema 4 with every record kept. Its
    records never claimed under schema 4 say they may have been sent (schema 3 kept no
    count: conservative), and have no Task Id; records put after the upgrade start
    unsent, and Ids can be stored for old records."""
    path = tmp_path / "v3.db"
    _v3_file(path, {"waiting": PENDING, "orphan": INFLIGHT, "sent": DONE})
    async with open_spool(path, clock=clock, reap_interval_s=3600.0) as sp:
        stats = await sp.stats()
        assert stats.schema_version == SCHEMA_VERSION == 4
        assert (stats.pending, stats.inflight, stats.done, stats.dead) == (1, 1, 1, 0)

        assert await sp.release_orphans() == 1  # schema 3's process left it in flight
        [waiting] = await sp.claim("live", 1)
        assert waiting.outcome.call_id == "waiting" and waiting.attempt == 1
        assert (waiting.maybe_sent, waiting.task_id) == (True, None)

        [orphan] = await sp.claim_stored("bulk", 10)
        assert orphan.outcome.call_id == "orphan"
        assert (orphan.maybe_sent, orphan.task_id) == (True, None)

        fresh = await sp.put(outcome("fresh"))
        [new] = await sp.claim("live", 10)
        assert new.record_id == fresh.record_id and new.maybe_sent is False

        assert await sp.set_task_ids([(waiting.record_id, TASK)]) == 1
        await sp.release([waiting])
        assert (await _claim_one(sp, waiting.record_id)).task_id == TASK
    with sqlite3.connect(path) as check:
        columns = {row[1] for row in check.execute("PRAGMA table_info(outcomes)")}
        assert {"task_id", "claims"} <= columns
        assert check.execute("SELECT count(*) FROM outcomes").fetchone()[0] == 4


# ------------------------------------------------------------- purged, then stored again


async def test_a_call_stored_again_after_its_record_was_purged_may_have_been_sent(
    spool: Spool, clock: FakeClock
) -> None:
    """Retention deletes a done record with its Task Id and claim count; a later version of
    that call is a new record, yet its Task exists: its first claim says maybe_sent (the
    call ended longer ago than the retention, less a day for clock skew). A call that
    ended recently and was never stored still starts unsent."""
    clock.now = BASE.timestamp() + 60
    rec = await spool.put(outcome("call"))
    claim = await _claim_one(spool, rec.record_id)
    assert claim.maybe_sent is False
    await spool.set_task_ids([(rec.record_id, TASK)])
    await spool.ack([claim])
    clock.advance(spool.retention_s + 1)
    assert (await spool.run_maintenance())[1] == 1  # purged
    again = await spool.put(outcome("call", version=1))
    assert again.status is PutStatus.INSERTED and again.record_id != rec.record_id
    fresh = await spool.put(outcome("fresh", ended=spool.retention_s))
    claims = {c.record_id: c for c in await spool.claim("live", 10)}
    assert claims[again.record_id].maybe_sent is True
    assert claims[again.record_id].task_id is None
    assert claims[fresh.record_id].maybe_sent is False


async def test_set_task_ids_takes_the_last_id_of_a_record_and_refuses_non_ids(
    spool: Spool,
) -> None:
    """A record given twice in one call counts once and keeps the last Id; an empty or
    missing Id is refused with the record named, and nothing is stored."""
    rec = await spool.put(outcome())
    assert await spool.set_task_ids([(rec.record_id, TASK), (rec.record_id, OTHER_TASK)]) == 1
    with pytest.raises(ValueError, match=f"record {rec.record_id}: not a Task Id"):
        await spool.set_task_ids([(rec.record_id, "")])
    with pytest.raises(ValueError, match="not a Task Id: None"):
        await spool.set_task_ids([(rec.record_id, None)])  # type: ignore[list-item]
    assert (await _claim_one(spool, rec.record_id)).task_id == OTHER_TASK


@pytest.mark.parametrize("only_if_inserted", [False, True])
async def test_suspect_unkeyed_tasks_marks_records_an_insert_may_have_sent(
    spool: Spool, only_if_inserted: bool
) -> None:
    """Going from inserted to upserted Tasks: records claimed before, not done, with no
    Task Id, read ``task_id == ""`` afterwards (pending, in flight and dead alike); never
    claimed, done and Id-carrying records are left alone. ``only_if_inserted`` marks
    nothing in a spool where no record has a Task Id."""
    claimed, in_flight, dead, done, with_id, never = [
        await spool.put(outcome(name))
        for name in ("claimed", "in_flight", "dead", "done", "with_id", "never")
    ]
    first = {c.record_id: c for c in await spool.claim("live", 5)}
    assert never.record_id not in first
    await spool.release([first[claimed.record_id], first[with_id.record_id]])
    await spool.dead([first[dead.record_id]], error_code="X", message="refused")
    await spool.ack([first[done.record_id]])
    if only_if_inserted:
        assert await spool.suspect_unkeyed_tasks(only_if_inserted=True) == 0
    await spool.set_task_ids([(with_id.record_id, TASK)])
    assert await spool.suspect_unkeyed_tasks(only_if_inserted=only_if_inserted) == 3
    await spool.release([first[in_flight.record_id]])
    await spool.retry_dead([dead.record_id])
    claims = {c.record_id: c.task_id for c in await spool.claim("live", 10)}
    assert claims == {
        claimed.record_id: "",
        in_flight.record_id: "",
        dead.record_id: "",
        with_id.record_id: TASK,
        never.record_id: None,
    }
    # Cleared by forget_task_ids, once a send succeeded.
    assert await spool.forget_task_ids([claimed.record_id]) == 1
