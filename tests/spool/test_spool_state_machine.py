"""Property test: random put/claim/ack/fail/expire sequences keep the spool's invariants.

Drives the synchronous core (``spool._store.Store``, the exact code the async spool runs on
its connection thread) against a small model of the rules, and after every step checks:
no record lost or duplicated, each record in exactly the state the rules say, and the O(1)
counters equal a full count of the rows.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)
from spool_helpers import outcome

from spool import Claim, PutStatus
from spool._schema import DEAD, DONE, INFLIGHT, PENDING, migrate
from spool._store import PutRequest, Store, row_for
from spool.errors import SpoolFull

CALLS = [f"c{i}" for i in range(4)]
RAILS = ["live", "collections", "bulk"]
LEASE = 30.0


@dataclass
class ModelRecord:
    record_id: int
    key: tuple[int, int, float]
    state: int = PENDING
    rev: int = 1
    attempt: int = 0
    rail: str = ""
    next_at: float = 0.0
    lease_until: float | None = None


class SpoolMachine(RuleBasedStateMachine):
    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-sm-"))
        self.conn = sqlite3.connect(self.dir / "s.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = OFF")  # durability is not under test here
        migrate(self.conn)
        self.store = Store(self.conn, str(self.dir / "s.db"))
        self.now = 1_000.0
        self.model: dict[str, ModelRecord] = {}

    def teardown(self) -> None:
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _by_id(self, record_id: int) -> ModelRecord | None:
        return next((m for m in self.model.values() if m.record_id == record_id), None)

    def _reap(self) -> None:
        for m in self.model.values():
            if m.state == INFLIGHT and m.lease_until is not None and m.lease_until <= self.now:
                m.state, m.rail, m.lease_until, m.next_at = PENDING, "", None, self.now

    @rule(
        call=st.sampled_from(CALLS),
        ended=st.integers(0, 3),
        version=st.integers(0, 1),
        urgent=st.booleans(),
    )
    def put_outcome(self, call: str, ended: int, version: int, urgent: bool) -> None:
        self.put(call, ended, version, urgent)

    def put(self, call: str, ended: int, version: int, urgent: bool) -> None:
        o = outcome(call, ended=ended, version=version, live=urgent)
        [results] = self.store.put_batch(
            [PutRequest([row_for(o, frozenset())])], self.now, max_pending=None, max_bytes=None
        )
        assert not isinstance(results, SpoolFull)  # no caps here
        [result] = results
        key = o.order_key
        m = self.model.get(call)
        if m is None:
            assert result.status is PutStatus.INSERTED
            self.model[call] = ModelRecord(result.record_id, key, next_at=self.now)
            return
        assert result.record_id == m.record_id
        if key == m.key:
            assert result.status is PutStatus.DUPLICATE
        elif key < m.key:
            assert result.status is PutStatus.STALE
        elif m.state in (PENDING, INFLIGHT):
            assert result.status is PutStatus.REPLACED
            m.key, m.rev = key, m.rev + 1
            if m.state == PENDING:  # a newer version does not wait out a retry delay
                m.next_at = min(m.next_at, self.now)
        else:
            expected = PutStatus.REQUEUED if m.state == DONE else PutStatus.REPLACED
            assert result.status is expected
            m.key, m.rev, m.state, m.rail, m.attempt = key, m.rev + 1, PENDING, "", 0
            m.next_at, m.lease_until = self.now, None
        assert result.rev == m.rev

    @rule(call=st.sampled_from(CALLS))
    def bump_version(self, call: str) -> None:
        """An explicit version bump: always newer than what is stored."""
        m = self.model.get(call)
        self.put(call, ended=0, version=(m.key[0] + 1) if m else 0, urgent=False)

    @rule(target=claims, rail=st.sampled_from(RAILS), limit=st.integers(1, 4))
    def claim(self, rail: str, limit: int) -> list[Claim]:
        got = self.store.claim(rail, limit, None, LEASE, self.now)
        self._reap()
        due = sorted(
            (m.next_at, m.record_id)
            for m in self.model.values()
            if m.state == PENDING and m.next_at <= self.now
        )
        assert [c.record_id for c in got] == [rid for _, rid in due[:limit]]
        for c in got:
            m = self._by_id(c.record_id)
            assert m is not None and c.rev == m.rev
            m.state, m.rail, m.attempt = INFLIGHT, rail, m.attempt + 1
            m.lease_until = self.now + LEASE
            assert c.attempt == m.attempt
        return got

    @rule(batch=consumes(claims))
    def ack(self, batch: list[Claim]) -> None:
        result = self.store.ack(batch, self.now)
        for c in batch:
            m = self._by_id(c.record_id)
            if m is not None and m.state in (PENDING, INFLIGHT) and m.rev == c.rev:
                assert c.record_id in result.done
                m.rail = m.rail or c.rail
                m.state, m.lease_until = DONE, None
            elif m is not None and m.state == INFLIGHT:
                assert c.record_id in result.requeued
                m.state, m.rail, m.lease_until, m.next_at = PENDING, "", None, self.now
            else:
                assert c.record_id in result.skipped

    @rule(batch=consumes(claims), delay=st.integers(0, 50))
    def retry_later(self, batch: list[Claim], delay: int) -> None:
        n = self.store.retry_later(batch, float(delay), "UNABLE_TO_LOCK_ROW", "busy", self.now)
        expected = 0
        for c in batch:
            m = self._by_id(c.record_id)
            if m is not None and m.state == INFLIGHT and m.attempt == c.attempt:
                expected += 1
                m.state, m.rail, m.lease_until = PENDING, "", None
                m.next_at = self.now + delay
        assert n == expected

    @rule(batch=consumes(claims))
    def release(self, batch: list[Claim]) -> None:
        n = self.store.release(batch, self.now)
        expected = 0
        for c in batch:
            m = self._by_id(c.record_id)
            if m is not None and m.state == INFLIGHT and m.attempt == c.attempt:
                expected += 1
                m.state, m.rail, m.lease_until = PENDING, "", None
                m.attempt, m.next_at = max(m.attempt - 1, 0), self.now
        assert n == expected

    @rule(batch=consumes(claims))
    def dead(self, batch: list[Claim]) -> None:
        n = self.store.dead(batch, "INVALID_FIELD", "no such field", self.now)
        expected = 0
        for c in batch:
            m = self._by_id(c.record_id)
            if m is None or m.state != INFLIGHT or m.attempt != c.attempt:
                continue
            if m.rev == c.rev:
                expected += 1
                m.state, m.lease_until = DEAD, None
            else:
                m.state, m.rail, m.lease_until, m.next_at = PENDING, "", None, self.now
        assert n == expected

    @rule(seconds=st.integers(1, 40))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds
        if seconds % 2:  # sometimes the reaper runs, sometimes the next claim reaps
            self.store.reap_expired(self.now)
            self._reap()

    @rule(call=st.sampled_from(CALLS), drop=st.booleans())
    def dead_letter_admin(self, call: str, drop: bool) -> None:
        m = self.model.get(call)
        if m is None:
            return
        if drop:
            n = self.store.drop_dead([m.record_id])
            if m.state == DEAD:
                del self.model[call]
        else:
            n = self.store.retry_dead([m.record_id], False, None, self.now)
            if m.state == DEAD:
                m.state, m.rail, m.attempt, m.next_at = PENDING, "", 0, self.now
        assert n in (0, 1)

    @invariant()
    def rows_match_model(self) -> None:
        rows = {
            r[0]: r[1:]
            for r in self.conn.execute(
                "SELECT call_id, id, state, rev, attempt, rail, lease_until FROM outcomes"
            )
        }
        # No record lost, none duplicated, each in exactly the state the rules say.
        assert set(rows) == set(self.model)
        for call, m in self.model.items():
            assert rows[call] == (m.record_id, m.state, m.rev, m.attempt, m.rail, m.lease_until)

    @invariant()
    def counters_add_up(self) -> None:
        real = {
            (s, r): n
            for s, r, n in self.conn.execute(
                "SELECT state, rail, count(*) FROM outcomes GROUP BY state, rail"
            )
        }
        counted = {
            (s, r): n
            for s, r, n in self.conn.execute("SELECT state, rail, n FROM counts WHERE state < 9")
            if n
        }
        assert counted == real
        stats = self.store.stats(self.now)
        assert stats.pending + stats.inflight + stats.done + stats.dead == len(self.model)


SpoolMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_spool_state_machine = SpoolMachine.TestCase
