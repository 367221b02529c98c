"""The synchronous core of the spool: every public method is one SQLite transaction.

``Store`` wraps one ``sqlite3.Connection`` in autocommit mode (``isolation_level=None``)
and runs each operation as ``BEGIN IMMEDIATE ... COMMIT`` inside a single call. The async
shell (``spool/spool.py``) runs these calls on aiosqlite's connection thread, one at a
time in FIFO order. Because a whole transaction is one call on that thread, a cancelled
``await`` can never leave a transaction half-open: the call runs to COMMIT or ROLLBACK on
its own, and the caller treats a cancelled call as "may have happened" (STYLE.md habit 9).

Every transition is guarded by the record's current state (and revision / claim where
it matters), so repeating any call is harmless.

Nothing here keeps per-record state in memory: ids come from SQLite, counts from the
``counts`` table kept by triggers, so several processes (the daemon and the admin CLI)
may use one file safely.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic_core
from pydantic import ValidationError

from spool._schema import (
    DONE,
    INFLIGHT,
    PENDING,
    QUARANTINE_STATE,
    STATE_NAMES,
)
from spool.errors import SpoolCorrupt, SpoolError, SpoolFull, SpoolUnavailable
from spool.record import CallOutcome, StoredOutcome, format_validation_error
from spool.results import (
    UNREADABLE_PAYLOAD,
    AckResult,
    Claim,
    DeadLetter,
    JobRow,
    PutResult,
    PutStatus,
    QuarantineRow,
    RecordRef,
    SpoolStats,
    StoredClaim,
)

__all__ = [
    "PutRequest",
    "Row",
    "Store",
    "query_stats",
    "row_for",
    "translate_sqlite_error",
]

T = TypeVar("T")
X = TypeVar("X")

#: source, call_id, ord_version, ord_seq, ord_ts, urgent, lead_key, payload
Row = tuple[str, str, int, int, float, int, str | None, str]

# Quarantined input is kept for inspection, not for replay of arbitrarily large bodies.
QUARANTINE_MAX_BYTES = 1 << 20
# SQLite's default limit on host parameters is 32766; stay well below it.
_IN_CHUNK = 500


def _loads(doc: str) -> Any:
    """JSON text from SQLite -> Python (pydantic-core's parser: about 3x ``json.loads``
    on the claim's aggregated rows)."""
    return pydantic_core.from_json(doc)


def _dumps(value: Any) -> str:
    """Python -> JSON text for SQLite's json functions (text: they refuse a BLOB)."""
    return pydantic_core.to_json(value).decode()


def row_for(outcome: CallOutcome, urgent_dispositions: frozenset[str]) -> Row:
    """The indexed columns and JSON payload of one outcome (pure; runs in the caller)."""
    version, seq, ts = outcome.order_key
    urgent = 1 if outcome.live or outcome.disposition.value in urgent_dispositions else 0
    lead_key = outcome.lead.key if outcome.lead is not None else None
    return (
        outcome.source,
        outcome.call_id,
        version,
        seq,
        ts,
        urgent,
        lead_key,
        outcome.to_stored_json(),
    )


# Row fields in Row order, then now (4 times), then batch_rows (see _schema v2).
_INSERT_NEW_HEAD = (
    "INSERT INTO outcomes (source, call_id, ord_version, ord_seq, ord_ts, urgent, lead_key,"
    " payload, state, rail, rev, attempt, next_attempt_at, queued_at, created_at, updated_at,"
    " claims, batch_rows) VALUES "
)
_INSERT_NEW_ROW = "(?,?,?,?,?,?,?,?,0,'',1,0,?,?,?,?,?,?)"
# In flight -> pending (params: next_attempt_at, error_code, error_message, updated_at).
_TO_PENDING = (
    "UPDATE outcomes SET state = 0, rail = '', lease_until = NULL, next_attempt_at = ?,"
    " error_code = coalesce(?, error_code), error_message = coalesce(?, error_message),"
    " updated_at = ? WHERE state = 1 AND id IN ({ids})"
)
# Rows per INSERT statement (13 parameters a row; SQLite allows 32766 per statement).
_INSERT_CHUNK = 512


@dataclass(slots=True)
class PutRequest:
    """One caller's put / put_many: all its rows are accepted or refused together."""

    rows: list[Row]
    cursor: tuple[str, str] | None = None


def _refusal(
    req: PutRequest,
    undelivered: int,
    too_big: bool,
    max_pending: int | None,
    max_bytes: int | None,
) -> SpoolFull | None:
    """Why this request cannot be stored now, if it cannot (checked before any row)."""
    if too_big:
        return SpoolFull(
            f"spool file is over max_bytes={max_bytes}", reason="max_bytes", limit=max_bytes
        )
    if max_pending is not None and undelivered + len(req.rows) > max_pending:
        return SpoolFull(
            f"spool holds {undelivered} unsent records (max_pending={max_pending})",
            reason="max_pending",
            limit=max_pending,
        )
    return None


def translate_sqlite_error(exc: BaseException) -> BaseException:
    """Map a sqlite3 error to the spool's own error (or return it unchanged if it is a bug)."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    name = getattr(exc, "sqlite_errorname", None) or ""
    if name.startswith("SQLITE_FULL"):
        err: SpoolError = SpoolFull("the disk holding the spool is full", reason="disk_full")
    elif name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        err = SpoolCorrupt(f"the spool file is not a usable database ({name})")
    elif name.startswith(
        (
            "SQLITE_BUSY",
            "SQLITE_LOCKED",
            "SQLITE_IOERR",
            "SQLITE_CANTOPEN",
            "SQLITE_PROTOCOL",
            "SQLITE_READONLY",
            "SQLITE_NOMEM",
        )
    ):
        err = SpoolUnavailable(
            f"SQLite could not complete the operation ({name})", sqlite_error=name
        )
    elif isinstance(exc, sqlite3.OperationalError) and not name:
        err = SpoolUnavailable(f"SQLite error: {exc}")
    else:
        return exc
    err.__cause__ = exc
    return err


def _refs(refs: Iterable[RecordRef]) -> list[tuple[int, int, int | None]]:
    """(record_id, rev, claim_no or None) for Claims and (record_id, rev) pairs."""
    out: list[tuple[int, int, int | None]] = []
    for ref in refs:
        if isinstance(ref, Claim | StoredClaim):
            out.append((ref.record_id, ref.rev, ref.claim_no))
        else:
            record_id, rev = ref
            out.append((int(record_id), int(rev), None))
    return out


def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Store:
    """One connection's worth of spool operations; each public method is one transaction."""

    def __init__(
        self, conn: sqlite3.Connection, path: str, *, purged_horizon_s: float = math.inf
    ) -> None:
        self.conn = conn
        self.path = path
        #: A call that ended more than this long before it is stored may have been stored,
        #: sent and purged already: its new row counts as claimed once (``claims`` = 1, so
        #: its first claim says ``maybe_sent``). See :meth:`_first_claims`.
        self.purged_horizon_s = purged_horizon_s
        #: Claims committed with the connection's own ``synchronous`` (an fsync) instead of
        #: NORMAL: for rails that insert (not upsert) Tasks, a claim rolled back by a power
        #: cut after its insert landed would read as never sent.
        self.durable_claims = False

    def _first_claims(self, ord_ts: float, now: float) -> int:
        """``claims`` of a new row: 0, or 1 when an earlier row of its call may have been
        purged (only rows done longer ago than the retention are, and a call is stored
        after it ended: its end is then older than the retention, give or take clock skew,
        which ``purged_horizon_s`` leaves a day for)."""
        return 1 if ord_ts < now - self.purged_horizon_s else 0

    # ------------------------------------------------------------------ plumbing

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _lease_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A transaction that only moves leases (claim), committed without waiting for an
        fsync (WAL + synchronous=NORMAL: never corrupt; after a power cut it may be rolled
        back, i.e. the records are pending again, which is what a lost lease means anyway).
        The live rail's latency from commit to request was mostly this fsync (p99 of a claim
        under load: 27 ms FULL, 8 ms NORMAL). The next FULL commit syncs it too."""
        conn = self.conn
        (level,) = conn.execute("PRAGMA synchronous").fetchone()
        if int(level) <= 1:
            return self._tx(fn)
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            return self._tx(fn)
        finally:
            conn.execute(f"PRAGMA synchronous = {int(level)}")

    def used_bytes(self) -> int:
        """Bytes of pages in use (free pages left by purges do not count)."""
        c = self.conn
        pages = int(c.execute("PRAGMA page_count").fetchone()[0])
        free = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        size = int(c.execute("PRAGMA page_size").fetchone()[0])
        return (pages - free) * size

    # ------------------------------------------------------------------ ingest

    def put_batch(
        self,
        requests: Sequence[PutRequest],
        now: float,
        *,
        max_pending: int | None,
        max_bytes: int | None,
    ) -> list[list[PutResult] | SpoolFull]:
        """Store many callers' rows (group commit); results in request order.

        Each request is checked against the caps before any of its rows is written, so a
        refused request leaves no trace and the others are still stored. A request's rows
        (and its cursor) are committed together.
        """
        fast = self._put_all_new(requests, now, max_pending, max_bytes)
        if fast is not None:
            return fast

        def run(c: sqlite3.Connection) -> list[list[PutResult] | SpoolFull]:
            undelivered = self._undelivered(c)
            too_big = self._too_big(max_bytes)
            out: list[list[PutResult] | SpoolFull] = []
            for req in requests:
                refusal = _refusal(req, undelivered, too_big, max_pending, max_bytes)
                if refusal is not None:
                    out.append(refusal)
                    continue
                results: list[PutResult] = []
                for row in req.rows:
                    result, added = self._put_one(c, row, now)
                    undelivered += added
                    results.append(result)
                if req.cursor is not None:
                    self._set_kv(c, "cursor:" + req.cursor[0], req.cursor[1], now)
                out.append(results)
            return out

        return self._tx(run)

    @staticmethod
    def _undelivered(c: sqlite3.Connection) -> int:
        sql = "SELECT coalesce(sum(n), 0) FROM counts WHERE state IN (0, 1)"
        return int(c.execute(sql).fetchone()[0])

    def _too_big(self, max_bytes: int | None) -> bool:
        return max_bytes is not None and self.used_bytes() >= max_bytes

    def _put_all_new(
        self,
        requests: Sequence[PutRequest],
        now: float,
        max_pending: int | None,
        max_bytes: int | None,
    ) -> list[list[PutResult] | SpoolFull] | None:
        """Fast path for the common case, every row a call never seen before: one
        multi-row INSERT in autocommit mode, i.e. one statement that is its own (durable)
        transaction. Returns None, having written nothing, when it does not apply (a
        cursor to store, a call twice in the batch, or a call already stored: the INSERT
        then fails as a whole on the UNIQUE constraint); put_batch then goes row by row.

        Why so few statements: each one makes the connection thread give up the GIL and
        take it back, and while the event loop is busy every retake can wait a whole
        switch interval (5 ms by default). Here a batch costs two: the cap read and the
        INSERT. When every row is new, a request adds exactly ``len(rows)`` unsent records,
        so the cap decisions are the ones the row-by-row path would make.
        """
        c = self.conn
        if any(req.cursor is not None for req in requests):
            return None
        undelivered = self._undelivered(c)
        too_big = self._too_big(max_bytes)
        plan: list[SpoolFull | None] = []
        rows: list[Row] = []
        for req in requests:
            refusal = _refusal(req, undelivered, too_big, max_pending, max_bytes)
            plan.append(refusal)
            if refusal is None:
                rows.extend(req.rows)
                undelivered += len(req.rows)
        if len({(r[0], r[1]) for r in rows}) != len(rows):
            return None
        ids: list[int] = []
        if rows:
            chunks = list(_chunks(rows, _INSERT_CHUNK))
            own_tx = len(chunks) > 1
            if own_tx:
                c.execute("BEGIN IMMEDIATE")
            try:
                for chunk in chunks:
                    params: list[Any] = []
                    for r in chunk:
                        params += r
                        params += (now, now, now, now, self._first_claims(r[4], now), None)
                    params[-1] = len(chunk)  # the last row makes the trigger count them all
                    cur = c.execute(
                        _INSERT_NEW_HEAD + ",".join([_INSERT_NEW_ROW] * len(chunk)), params
                    )
                    last = cur.lastrowid
                    assert last is not None
                    # AUTOINCREMENT: one INSERT's rows get consecutive ids up to lastrowid.
                    ids.extend(range(last - len(chunk) + 1, last + 1))
                if own_tx:
                    c.execute("COMMIT")
            except sqlite3.IntegrityError:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                return None
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        out: list[list[PutResult] | SpoolFull] = []
        next_id = 0
        for req, refusal in zip(requests, plan, strict=True):
            if refusal is not None:
                out.append(refusal)
                continue
            n = len(req.rows)
            out.append([PutResult(PutStatus.INSERTED, i, 1) for i in ids[next_id : next_id + n]])
            next_id += n
        return out

    def _put_one(self, c: sqlite3.Connection, row: Row, now: float) -> tuple[PutResult, int]:
        """Apply the idempotency/versioning rules to one row; return (result, new unsent)."""
        source, call_id, version, seq, ts, urgent, lead_key, payload = row
        cur = c.execute(
            "INSERT INTO outcomes (source, call_id, state, rail, urgent, lead_key,"
            " ord_version, ord_seq, ord_ts, rev, attempt, next_attempt_at, queued_at,"
            " created_at, updated_at, payload, claims, batch_rows)"
            " VALUES (?, ?, 0, '', ?, ?, ?, ?, ?, 1, 0, ?, ?, ?, ?, ?, ?, 1)"
            " ON CONFLICT (source, call_id) DO NOTHING",
            (
                source,
                call_id,
                urgent,
                lead_key,
                version,
                seq,
                ts,
                now,
                now,
                now,
                now,
                payload,
                self._first_claims(ts, now),
            ),
        )
        if cur.rowcount == 1:
            assert cur.lastrowid is not None
            return PutResult(PutStatus.INSERTED, cur.lastrowid, 1), 1
        record_id, state, rev, o_version, o_seq, o_ts = c.execute(
            "SELECT id, state, rev, ord_version, ord_seq, ord_ts FROM outcomes"
            " WHERE source = ? AND call_id = ?",
            (source, call_id),
        ).fetchone()
        new_key, old_key = (version, seq, ts), (o_version, o_seq, o_ts)
        if new_key == old_key:
            return PutResult(PutStatus.DUPLICATE, record_id, rev), 0
        if new_key < old_key:
            return PutResult(PutStatus.STALE, record_id, rev), 0
        if state in (PENDING, INFLIGHT):
            # In flight: the rail keeps its lease, but rev+1 makes its ack send the record
            # back to pending, so this newer version is delivered too. Pending and waiting
            # out a retry delay (the older version failed): the newer one is due now, not
            # after that delay (it may be a do-not-call).
            c.execute(
                "UPDATE outcomes SET urgent = ?, lead_key = ?, ord_version = ?, ord_seq = ?,"
                " ord_ts = ?, rev = rev + 1, updated_at = ?, payload = ?,"
                " next_attempt_at = CASE WHEN state = 0 THEN min(next_attempt_at, ?)"
                " ELSE next_attempt_at END WHERE id = ?",
                (urgent, lead_key, version, seq, ts, now, payload, now, record_id),
            )
            return PutResult(PutStatus.REPLACED, record_id, rev + 1), 0
        # done or dead: queued again from scratch
        c.execute(
            "UPDATE outcomes SET state = 0, rail = '', urgent = ?, lead_key = ?,"
            " ord_version = ?, ord_seq = ?, ord_ts = ?, rev = rev + 1, attempt = 0,"
            " next_attempt_at = ?, lease_until = NULL, queued_at = ?, updated_at = ?,"
            " error_code = NULL, error_message = NULL, payload = ?"
            " WHERE id = ?",
            (urgent, lead_key, version, seq, ts, now, now, now, payload, record_id),
        )
        status = PutStatus.REQUEUED if state == DONE else PutStatus.REPLACED
        return PutResult(status, record_id, rev + 1), 1

    def quarantine(self, source: str, raw: bytes, reason: str, now: float) -> int:
        if len(raw) > QUARANTINE_MAX_BYTES:
            reason = f"{reason} (input of {len(raw)} bytes kept truncated to 1 MiB)"
            raw = raw[:QUARANTINE_MAX_BYTES]

        def run(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO quarantine (source, raw, reason, created_at) VALUES (?, ?, ?, ?)",
                (source, raw, reason, now),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return self._tx(run)

    # ------------------------------------------------------------------ kv

    @staticmethod
    def _set_kv(c: sqlite3.Connection, key: str, value: str, now: float) -> None:
        c.execute(
            "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (key, value, now),
        )

    def set_kv(self, key: str, value: str, now: float) -> None:
        self._tx(lambda c: self._set_kv(c, key, value, now))

    def get_kv(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------ rails

    @staticmethod
    def _reap(c: sqlite3.Connection, now: float) -> int:
        """Expired leases go back to pending (the attempt stays counted)."""
        return c.execute(
            "UPDATE outcomes SET state = 0, rail = '', lease_until = NULL,"
            " next_attempt_at = ?, updated_at = ? WHERE state = 1 AND lease_until <= ?",
            (now, now, now),
        ).rowcount

    def reap_expired(self, now: float) -> int:
        return self._tx(lambda c: self._reap(c, now))

    def set_task_ids(self, items: Sequence[tuple[str, int]]) -> int:
        """``(task_id, record_id)`` pairs: remember each record's Task Id."""
        return self._tx(
            lambda c: c.executemany("UPDATE outcomes SET task_id = ? WHERE id = ?", items).rowcount
        )

    def forget_task_ids(self, record_ids: Sequence[int]) -> int:
        """Clear the Task Id of these records (those that had one)."""
        return self._tx(
            lambda c: (
                c.execute(
                    "UPDATE outcomes SET task_id = NULL WHERE task_id IS NOT NULL"
                    " AND id IN (SELECT value FROM json_each(?))",
                    (_dumps(list(record_ids)),),
                ).rowcount
            )
        )

    def suspect_unkeyed_tasks(self, only_if_inserted: bool) -> int:
        """Mark (``task_id = ''``) the records not done that were claimed before and have
        no Task Id: an insert may have landed unanswered. ``only_if_inserted``: only if
        some record has a Task Id at all (Tasks were inserted from this spool)."""
        guard = ""
        if only_if_inserted:
            guard = " AND EXISTS (SELECT 1 FROM outcomes WHERE task_id <> '')"
        return self._tx(
            lambda c: (
                c.execute(
                    "UPDATE outcomes SET task_id = '' WHERE task_id IS NULL AND claims > 0"
                    f" AND state <> {DONE}{guard}"
                ).rowcount
            )
        )

    def release_orphans(self, now: float) -> int:
        """Records in flight outside any unfinished Bulk job back to pending, leases or not
        (the attempt stays counted, as when a lease expires)."""
        return self._tx(
            lambda c: (
                c.execute(
                    "UPDATE outcomes SET state = 0, rail = '', lease_until = NULL,"
                    " next_attempt_at = ?, updated_at = ? WHERE state = 1 AND id NOT IN"
                    " (SELECT j.record_id FROM jobs AS b JOIN job_records AS j"
                    " ON j.sf_job_id = b.sf_job_id WHERE b.finished = 0)",
                    (now, now),
                ).rowcount
            )
        )

    def _claim_rows(
        self, rail: str, limit: int, urgent: bool | None, lease_s: float, now: float
    ) -> list[list[Any]]:
        """Atomically move up to ``limit`` due pending records to ``inflight`` in ``rail``;
        their ``[id, rev, attempt, lead_key, ord_ts, payload, claims, task_id]``, oldest
        first."""
        if limit <= 0:
            return []
        # Rows come back aggregated into one JSON value per statement, and ids go in as
        # one JSON array: row by row, each would cost the connection thread a GIL round
        # trip.
        select = (
            "SELECT json_group_array(json_array(id, next_attempt_at)) FROM (SELECT id,"
            " next_attempt_at FROM outcomes WHERE state = 0 AND urgent = ?"
            " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?)"
        )
        # In claim order: CROSS JOIN keeps json_each the outer loop (SQLite does not
        # reorder it), and json_each walks the array in order; no sort needed.
        # ord_ts with 17 digits: JSON renders a REAL with 15, which rounds an end time with
        # microseconds, and the rails compare it with ended_at.timestamp() exactly.
        read = (
            "SELECT json_group_array(json_array(o.id, o.rev, o.attempt, o.lead_key,"
            " json(printf('%!.17g', o.ord_ts)), o.payload, o.claims, o.task_id))"
            " FROM json_each(?) AS j CROSS JOIN outcomes AS o"
            " ON o.id = j.value"
            " WHERE o.state = 1"
        )
        lease_until = now + lease_s

        def run(c: sqlite3.Connection) -> list[list[Any]]:
            self._reap(c, now)
            flags = (1, 0) if urgent is None else ((1,) if urgent else (0,))
            due: list[tuple[float, int]] = []
            for flag in flags:
                (doc,) = c.execute(select, (flag, now, limit)).fetchone()
                due.extend((t, i) for i, t in _loads(doc))
            if len(flags) > 1:
                due.sort()
            ids = [i for _, i in due[:limit]]
            if not ids:
                return []
            id_doc = _dumps(ids)
            c.execute(
                "UPDATE outcomes SET state = 1, rail = ?, lease_until = ?,"
                " attempt = attempt + 1, claims = claims + 1, updated_at = ?"
                " WHERE id IN (SELECT value FROM json_each(?)) AND state = 0",
                (rail, lease_until, now, id_doc),
            )
            (doc,) = c.execute(read, (id_doc,)).fetchone()
            rows: list[list[Any]] = _loads(doc)
            return rows

        return self._tx(run) if self.durable_claims else self._lease_tx(run)

    def _decode_claimed(
        self,
        rail: str,
        limit: int,
        urgent: bool | None,
        lease_s: float,
        now: float,
        build: Callable[[list[Any], float], T],
    ) -> list[T]:
        """Claim rows, each turned into a claim by ``build(row, lease_until)`` after the
        commit (the write lock is not held meanwhile); see :meth:`_readable`."""
        lease_until = now + lease_s
        return self._readable(
            self._claim_rows(rail, limit, urgent, lease_s, now),
            lambda row: build(row, lease_until),
            lambda row: (row[0], row[6]),
            now,
        )

    def _readable(
        self,
        items: Iterable[X],
        build: Callable[[X], T],
        claim_of: Callable[[X], tuple[int, int | None]],
        now: float,
    ) -> list[T]:
        """``build(item)`` for each claimed item. One whose payload this version cannot
        read (``build`` raises ValidationError, e.g. another version wrote it) is
        dead-lettered instead, under its claim (``claim_of(item)``: record id, claim_no):
        it must not block the queue."""
        built: list[T] = []
        unreadable: list[tuple[str, float, int, int | None]] = []
        for item in items:
            try:
                built.append(build(item))
            except ValidationError as exc:
                unreadable.append((format_validation_error(exc)[:2000], now, *claim_of(item)))
        if unreadable:
            self._tx(
                lambda c: c.executemany(
                    "UPDATE outcomes SET state = 3, lease_until = NULL, error_code = ?,"
                    " error_message = ?, updated_at = ? WHERE id = ? AND state = 1"
                    " AND claims = ifnull(?, claims)",
                    [(UNREADABLE_PAYLOAD, *row) for row in unreadable],
                )
            )
        return built

    def decode_stored(self, claims: Iterable[StoredClaim], now: float) -> list[Claim]:
        """These claims with their outcomes validated in full; see :meth:`_readable`."""
        return self._readable(claims, StoredClaim.claim, lambda c: (c.record_id, c.claim_no), now)

    def claim(
        self, rail: str, limit: int, urgent: bool | None, lease_s: float, now: float
    ) -> list[Claim]:
        """Atomically move up to ``limit`` due pending records to ``inflight`` in ``rail``."""

        def build(row: list[Any], lease_until: float) -> Claim:
            record_id, rev, attempt, lead_key, _, payload, claims, task_id = row
            outcome = CallOutcome.from_stored_json(payload)
            return Claim(
                record_id,
                rev,
                outcome,
                attempt,
                rail,
                lease_until,
                lead_key,
                claims > 1,
                task_id,
                claims,
            )

        return self._decode_claimed(rail, limit, urgent, lease_s, now, build)

    def claim_stored(
        self, rail: str, limit: int, urgent: bool | None, lease_s: float, now: float
    ) -> list[StoredClaim]:
        """:meth:`claim`, each outcome read lazily from its payload (:class:`StoredOutcome`).
        A payload the lazy reader refuses is validated in full; one that fails that too is
        dead-lettered, as by :meth:`claim`."""
        parse = StoredOutcome.parse

        def build(row: list[Any], lease_until: float) -> StoredClaim:
            record_id, rev, attempt, lead_key, ord_ts, payload, claims, task_id = row
            outcome = parse(payload)
            if outcome is None:
                # Readable in full (e.g. an older layout): read lazily from its current form.
                outcome = parse(CallOutcome.from_stored_json(payload).to_stored_json())
                if outcome is None:  # pragma: no cover - to_stored_json always parses
                    raise AssertionError(f"unparsable stored payload of record {record_id}")
            return StoredClaim(
                record_id,
                rev,
                outcome,
                attempt,
                rail,
                lease_until,
                lead_key,
                ord_ts,
                claims > 1,
                task_id,
                claims,
            )

        return self._decode_claimed(rail, limit, urgent, lease_s, now, build)

    @staticmethod
    def _current(c: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
        """record_id -> (state, rev, claims), read in one step per chunk (rows aggregated
        into one JSON value: each row fetched separately would cost a GIL round trip)."""
        out: dict[int, tuple[int, int, int]] = {}
        for chunk in _chunks(list(dict.fromkeys(ids))):
            marks = ",".join("?" * len(chunk))
            (doc,) = c.execute(
                "SELECT json_group_array(json_array(id, state, rev, claims)) FROM outcomes"
                f" WHERE id IN ({marks})",
                chunk,
            ).fetchone()
            for record_id, state, rev, claims in _loads(doc):
                out[record_id] = (state, rev, claims)
        return out

    @staticmethod
    def _update_ids(c: sqlite3.Connection, sql: str, params: Sequence[Any], ids: list[int]) -> int:
        """Run ``sql`` (ending in ``id IN ({ids})``) over ``ids`` in chunks; rows changed."""
        n = 0
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            n += c.execute(sql.format(ids=marks), (*params, *chunk)).rowcount
        return n

    def _transition(
        self,
        refs: Iterable[RecordRef],
        decide: Callable[[int, int, int | None, tuple[int, int, int] | None], str],
        apply: Callable[[sqlite3.Connection, str, list[int]], None],
    ) -> dict[str, list[int]]:
        """One transaction: read the current state of every record, let ``decide`` pick a
        category per record (from its ref's rev/claim_no and the current state), then
        ``apply`` one set-based UPDATE per category. Guards live in ``decide``; the
        write lock (BEGIN IMMEDIATE) keeps what it read true until COMMIT."""
        items = _refs(refs)

        def run(c: sqlite3.Connection) -> dict[str, list[int]]:
            current = self._current(c, [i for i, _, _ in items])
            groups: dict[str, list[int]] = {}
            seen: set[int] = set()
            for record_id, rev, claim_no in items:
                if record_id in seen:
                    continue
                seen.add(record_id)
                category = decide(record_id, rev, claim_no, current.get(record_id))
                groups.setdefault(category, []).append(record_id)
            for category, ids in groups.items():
                apply(c, category, ids)
            return groups

        return self._tx(run)

    def ack(self, refs: Iterable[RecordRef], now: float) -> AckResult:
        """Done if the acknowledged revision is still current; if a newer version arrived
        while in flight, back to pending so that it is sent too.

        The common case (every revision still current and pending or in flight: a Bulk
        job's successes) is one set-based UPDATE per rail, with no per-record read; any
        other case is rolled back to a savepoint and decided record by record."""
        ref_list = list(refs)
        fast = self._ack_all_current(ref_list, now)
        if fast is not None:
            return fast
        rails = {r.record_id: r.rail for r in ref_list if isinstance(r, Claim | StoredClaim)}

        def decide(rid: int, rev: int, no: int | None, cur: tuple[int, int, int] | None) -> str:
            if cur is None:
                return "skipped"
            state, current_rev, _ = cur
            if state in (PENDING, INFLIGHT) and rev == current_rev:
                # A pending record that is acked was delivered: it keeps the acking rail.
                return "done:" + rails.get(rid, "")
            # A newer version while this claim held the record: pending again, to be sent
            # too. Not when a later claim holds it (this one's lease ran out, or this is a
            # repeated ack): that claim sends the newer version already.
            return "requeued" if self._held(no, cur) else "skipped"

        def apply(c: sqlite3.Connection, category: str, ids: list[int]) -> None:
            if category.startswith("done:"):
                self._update_ids(
                    c,
                    "UPDATE outcomes SET state = 2, rail = CASE WHEN rail = '' THEN ?"
                    " ELSE rail END, lease_until = NULL, error_code = NULL,"
                    " error_message = NULL, updated_at = ? WHERE state IN (0, 1)"
                    " AND id IN ({ids})",
                    (category[5:], now),
                    ids,
                )
            elif category == "requeued":
                self._update_ids(c, _TO_PENDING, (now, None, None, now), ids)

        groups = self._transition(ref_list, decide, apply)
        done = [i for k, ids in groups.items() if k.startswith("done:") for i in ids]
        return AckResult(
            done=sorted(done),
            requeued=groups.get("requeued", []),
            skipped=groups.get("skipped", []),
        )

    def _ack_all_current(self, refs: list[RecordRef], now: float) -> AckResult | None:
        """Ack ``refs`` if every one is pending or in flight at its revision; else None and
        nothing changed (the caller decides per record)."""
        by_rail: dict[str, dict[int, int]] = {}
        for ref in refs:
            if isinstance(ref, Claim | StoredClaim):
                by_rail.setdefault(ref.rail, {})[ref.record_id] = ref.rev
            else:
                record_id, rev = ref
                by_rail.setdefault("", {})[int(record_id)] = int(rev)
        ids: set[int] = set()
        for pairs in by_rail.values():
            if not ids.isdisjoint(pairs):
                return None  # one record acked under two rails: decide per record
            ids.update(pairs)

        def run(c: sqlite3.Connection) -> bool:
            c.execute("SAVEPOINT ack_fast")
            changed = 0
            for rail, pairs in by_rail.items():
                changed += c.execute(
                    "UPDATE outcomes SET state = 2, rail = CASE WHEN rail = '' THEN ? ELSE rail"
                    " END, lease_until = NULL, error_code = NULL, error_message = NULL,"
                    " updated_at = ? FROM json_each(?) AS a WHERE outcomes.id = a.key"
                    " AND outcomes.rev = a.value AND outcomes.state IN (0, 1)",
                    (rail, now, _dumps(pairs)),
                ).rowcount
            if changed == len(ids):
                c.execute("RELEASE ack_fast")
                return True
            c.execute("ROLLBACK TO ack_fast")
            c.execute("RELEASE ack_fast")
            return False

        if not ids or not self._tx(run):
            return None
        return AckResult(done=sorted(ids), requeued=[], skipped=[])

    @staticmethod
    def _held(claim_no: int | None, cur: tuple[int, int, int] | None) -> bool:
        """In flight, and (for a Claim) still under that claim, not a later one."""
        return cur is not None and cur[0] == INFLIGHT and (claim_no is None or cur[2] == claim_no)

    def retry_later(
        self,
        refs: Iterable[RecordRef],
        delay_s: float,
        error_code: str | None,
        message: str | None,
        now: float,
    ) -> int:
        def decide(_r: int, _v: int, no: int | None, cur: tuple[int, int, int] | None) -> str:
            return "retry" if self._held(no, cur) else "skip"

        def apply(c: sqlite3.Connection, category: str, ids: list[int]) -> None:
            if category == "retry":
                self._update_ids(c, _TO_PENDING, (now + delay_s, error_code, message, now), ids)

        return len(self._transition(refs, decide, apply).get("retry", []))

    def release(self, refs: Iterable[RecordRef], now: float) -> int:
        def decide(_r: int, _v: int, no: int | None, cur: tuple[int, int, int] | None) -> str:
            return "release" if self._held(no, cur) else "skip"

        def apply(c: sqlite3.Connection, category: str, ids: list[int]) -> None:
            if category == "release":
                self._update_ids(
                    c,
                    "UPDATE outcomes SET state = 0, rail = '', lease_until = NULL,"
                    " attempt = max(attempt - 1, 0), next_attempt_at = ?, updated_at = ?"
                    " WHERE state = 1 AND id IN ({ids})",
                    (now, now),
                    ids,
                )

        return len(self._transition(refs, decide, apply).get("release", []))

    def dead(
        self, refs: Iterable[RecordRef], error_code: str | None, message: str | None, now: float
    ) -> int:
        """Permanent failure: dead letter. A record replaced meanwhile goes back to pending,
        since the newer version may well be accepted."""

        def decide(_r: int, rev: int, no: int | None, cur: tuple[int, int, int] | None) -> str:
            if not self._held(no, cur):
                return "skip"
            assert cur is not None
            return "dead" if cur[1] == rev else "requeue"

        def apply(c: sqlite3.Connection, category: str, ids: list[int]) -> None:
            if category == "dead":
                self._update_ids(
                    c,
                    "UPDATE outcomes SET state = 3, lease_until = NULL, error_code = ?,"
                    " error_message = ?, updated_at = ? WHERE state = 1 AND id IN ({ids})",
                    (error_code, message, now),
                    ids,
                )
            elif category == "requeue":
                self._update_ids(c, _TO_PENDING, (now, error_code, message, now), ids)

        return len(self._transition(refs, decide, apply).get("dead", []))

    def extend_lease(self, refs: Iterable[RecordRef], lease_s: float, now: float) -> int:
        def decide(_r: int, _v: int, no: int | None, cur: tuple[int, int, int] | None) -> str:
            return "extend" if self._held(no, cur) else "skip"

        def apply(c: sqlite3.Connection, category: str, ids: list[int]) -> None:
            if category == "extend":
                self._update_ids(
                    c,
                    "UPDATE outcomes SET lease_until = ?, updated_at = ?"
                    " WHERE state = 1 AND id IN ({ids})",
                    (now + lease_s, now),
                    ids,
                )

        return len(self._transition(refs, decide, apply).get("extend", []))

    # ------------------------------------------------------------------ leads (reads)

    def newest_per_lead(self, lead_keys: Iterable[str]) -> dict[str, tuple[int, tuple[float, int]]]:
        """lead_key -> (record_id, (ended_at, record_id)) of its newest not-dead outcome."""
        out: dict[str, tuple[int, tuple[float, int]]] = {}
        keys = list(dict.fromkeys(lead_keys))
        # One statement per chunk of keys (not one per key): each statement costs the
        # connection thread a GIL round trip. Per key, one backwards seek in outcomes_lead
        # (LIMIT 1), not a window over all of the Lead's rows: done rows pile up per Lead,
        # and the window made this O(outcomes per Lead) (measured at 1M rows / 20k Leads:
        # 150 ms against 7.5 ms per 1,900 keys).
        for chunk in _chunks(keys):
            for key, record_id, ts in self.conn.execute(
                "SELECT o.lead_key, o.id, o.ord_ts FROM json_each(?) AS k JOIN outcomes AS o"
                " ON o.id = (SELECT id FROM outcomes WHERE lead_key = k.value AND state <> 3"
                " ORDER BY ord_ts DESC, id DESC LIMIT 1)",
                (_dumps(list(chunk)),),
            ):
                out[key] = (int(record_id), (float(ts), int(record_id)))
        return out

    def has_newer_for_lead(self, lead_key: str, record_id: int) -> bool:
        """True if another not-dead outcome of this Lead ended later (ties: arrived later)."""
        row = self.conn.execute("SELECT ord_ts FROM outcomes WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            return False
        hit = self.conn.execute(
            "SELECT 1 FROM outcomes WHERE lead_key = ? AND state <> 3"
            " AND (ord_ts, id) > (?, ?) LIMIT 1",
            (lead_key, row[0], record_id),
        ).fetchone()
        return hit is not None

    # ------------------------------------------------------------------ bulk jobs

    def record_job(
        self,
        sf_job_id: str,
        object_name: str,
        operation: str,
        refs: Iterable[RecordRef],
        state: str,
        now: float,
    ) -> None:
        items = _refs(refs)

        def run(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO jobs (sf_job_id, object, operation, state, record_count,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?)"
                " ON CONFLICT (sf_job_id) DO NOTHING",
                (sf_job_id, object_name, operation, state, now, now),
            )
            # One statement over a JSON array: executemany would cost the connection
            # thread a GIL round trip per row.
            c.execute(
                "INSERT INTO job_records (sf_job_id, record_id, rev)"
                " SELECT ?, value ->> 0, value ->> 1 FROM json_each(?) WHERE true"
                " ON CONFLICT DO NOTHING",
                (sf_job_id, _dumps([(rid, rev) for rid, rev, _ in items])),
            )
            c.execute(
                "UPDATE jobs SET record_count = (SELECT count(*) FROM job_records"
                " WHERE sf_job_id = ?) WHERE sf_job_id = ?",
                (sf_job_id, sf_job_id),
            )

        self._tx(run)

    def update_job(
        self, sf_job_id: str, state: str | None, counters: dict[str, Any], now: float
    ) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            row = c.execute(
                "SELECT counters FROM jobs WHERE sf_job_id = ?", (sf_job_id,)
            ).fetchone()
            if row is None:
                return False
            merged = {**json.loads(row[0]), **counters}
            c.execute(
                "UPDATE jobs SET state = coalesce(?, state), counters = ?, updated_at = ?"
                " WHERE sf_job_id = ?",
                (state, json.dumps(merged, sort_keys=True), now, sf_job_id),
            )
            return True

        return self._tx(run)

    def finish_job(self, sf_job_id: str, state: str, now: float) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            hit = c.execute(
                "UPDATE jobs SET state = ?, finished = 1, updated_at = ? WHERE sf_job_id = ?",
                (state, now, sf_job_id),
            ).rowcount
            return bool(hit)

        return self._tx(run)

    def jobs(self, states: set[str] | None) -> list[JobRow]:
        sql = (
            "SELECT sf_job_id, object, operation, state, finished, record_count, counters,"
            " created_at, updated_at FROM jobs"
        )
        params: list[Any] = []
        if states is not None:
            if not states:
                return []
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            params.extend(sorted(states))
        sql += " ORDER BY created_at, sf_job_id"
        return [
            JobRow(
                sf_job_id=r[0],
                object=r[1],
                operation=r[2],
                state=r[3],
                finished=bool(r[4]),
                record_count=r[5],
                counters=json.loads(r[6]),
                created_at=r[7],
                updated_at=r[8],
            )
            for r in self.conn.execute(sql, params)
        ]

    def job_records_page(self, sf_job_id: str, after_id: int, batch: int) -> list[Claim]:
        """Records a job carries (with the revision that was uploaded), by record id."""
        rows = self.conn.execute(
            "SELECT j.record_id, j.rev, o.attempt, o.rail, o.lease_until, o.lead_key,"
            " o.payload FROM job_records j JOIN outcomes o ON o.id = j.record_id"
            " WHERE j.sf_job_id = ? AND j.record_id > ? ORDER BY j.record_id LIMIT ?",
            (sf_job_id, after_id, batch),
        ).fetchall()
        return [
            Claim(
                record_id=r[0],
                rev=r[1],
                outcome=CallOutcome.from_stored_json(r[6]),
                attempt=r[2],
                rail=r[3],
                lease_until=r[4] if r[4] is not None else 0.0,
                lead_key=r[5],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ dead letters

    _DEAD_COLS = (
        "id, source, call_id, payload, rail, error_code, error_message, attempt,"
        " created_at, updated_at"
    )

    @staticmethod
    def _dead_letter(r: Sequence[Any]) -> DeadLetter:
        try:
            outcome: CallOutcome | None = CallOutcome.from_stored_json(r[3])
        except ValidationError:
            outcome = None
        return DeadLetter(
            record_id=r[0],
            source=r[1],
            call_id=r[2],
            outcome=outcome,
            payload=r[3],
            rail=r[4],
            error_code=r[5],
            error_message=r[6],
            attempt=r[7],
            created_at=r[8],
            failed_at=r[9],
        )

    def dead_letters(self, limit: int, offset: int, error_code: str | None) -> list[DeadLetter]:
        sql = f"SELECT {self._DEAD_COLS} FROM outcomes WHERE state = 3"
        params: list[Any] = []
        if error_code is not None:
            sql += " AND error_code = ?"
            params.append(error_code)
        sql += " ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?"
        params += [limit, offset]
        return [self._dead_letter(r) for r in self.conn.execute(sql, params)]

    def dead_letter(self, record_id: int) -> DeadLetter | None:
        row = self.conn.execute(
            f"SELECT {self._DEAD_COLS} FROM outcomes WHERE id = ? AND state = 3", (record_id,)
        ).fetchone()
        return None if row is None else self._dead_letter(row)

    def resend(self, ids: Sequence[int], now: float) -> int:
        """Send these records again, each under a new revision: done ones back to pending
        (a late ack of the send that made them done then cannot mark them done again);
        in-flight ones stay in flight, and the ack of their current send puts them back to
        pending instead of marking them done (as when a newer version arrives meanwhile).
        Pending and dead records are left alone. Returns how many were done or in flight."""

        def run(c: sqlite3.Connection) -> int:
            n = 0
            for chunk in _chunks(list(ids)):
                marks = ",".join("?" * len(chunk))
                n += c.execute(
                    "UPDATE outcomes SET state = 0, rail = '', lease_until = NULL, rev = rev + 1,"
                    " next_attempt_at = ?, queued_at = ?, updated_at = ?"
                    f" WHERE state = 2 AND id IN ({marks})",
                    [now, now, now, *chunk],
                ).rowcount
                n += c.execute(
                    "UPDATE outcomes SET rev = rev + 1, updated_at = ?"
                    f" WHERE state = 1 AND id IN ({marks})",
                    [now, *chunk],
                ).rowcount
            return n

        return self._tx(run)

    def retry_dead(
        self, ids: Sequence[int] | None, everything: bool, error_code: str | None, now: float
    ) -> int:
        set_pending = (
            "UPDATE outcomes SET state = 0, rail = '', attempt = 0, next_attempt_at = ?,"
            " lease_until = NULL, queued_at = ?, updated_at = ?, error_code = NULL,"
            " error_message = NULL WHERE state = 3"
        )

        def run(c: sqlite3.Connection) -> int:
            if ids is not None:
                n = 0
                for chunk in _chunks(list(ids)):
                    marks = ",".join("?" * len(chunk))
                    extra = "" if error_code is None else " AND error_code = ?"
                    params: list[Any] = [now, now, now, *chunk]
                    if error_code is not None:
                        params.append(error_code)
                    n += c.execute(f"{set_pending} AND id IN ({marks}){extra}", params).rowcount
                return n
            if error_code is not None:
                return c.execute(
                    f"{set_pending} AND error_code = ?", (now, now, now, error_code)
                ).rowcount
            assert everything
            return c.execute(set_pending, (now, now, now)).rowcount

        return self._tx(run)

    def drop_dead(self, ids: Sequence[int]) -> int:
        def run(c: sqlite3.Connection) -> int:
            n = 0
            for chunk in _chunks(list(ids)):
                marks = ",".join("?" * len(chunk))
                n += c.execute(
                    f"DELETE FROM outcomes WHERE state = 3 AND id IN ({marks})", chunk
                ).rowcount
            return n

        return self._tx(run)

    # ------------------------------------------------------------------ quarantine (reads)

    def list_quarantine(self, limit: int, offset: int = 0) -> list[QuarantineRow]:
        return [
            QuarantineRow(id=r[0], source=r[1], raw=bytes(r[2]), reason=r[3], created_at=r[4])
            for r in self.conn.execute(
                "SELECT id, source, raw, reason, created_at FROM quarantine"
                " ORDER BY id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            )
        ]

    # ------------------------------------------------------------------ retention

    def purge(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` done records, finished jobs and quarantined inputs older
        than ``before``; returns how many rows went (call again while it returns ``limit``)."""

        def run(c: sqlite3.Connection) -> int:
            n = c.execute(
                "DELETE FROM outcomes WHERE id IN (SELECT id FROM outcomes"
                " WHERE state = 2 AND updated_at < ? LIMIT ?)",
                (before, limit),
            ).rowcount
            n += c.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine"
                " WHERE created_at < ? LIMIT ?)",
                (before, limit),
            ).rowcount
            jobs = [
                r[0]
                for r in c.execute(
                    "SELECT sf_job_id FROM jobs WHERE finished = 1 AND updated_at < ? LIMIT 4",
                    (before,),
                )
            ]
            for job in jobs:
                # (job_records is WITHOUT ROWID: rows are named by their primary key)
                gone = c.execute(
                    "DELETE FROM job_records WHERE sf_job_id = ? AND record_id IN"
                    " (SELECT record_id FROM job_records WHERE sf_job_id = ? LIMIT ?)",
                    (job, job, limit),
                ).rowcount
                n += gone
                if gone < limit:
                    c.execute("DELETE FROM jobs WHERE sf_job_id = ?", (job,))
                    n += 1
            return min(n, limit)

        return self._tx(run)

    # ------------------------------------------------------------------ stats

    def stats(self, now: float) -> SpoolStats:
        return query_stats(self.conn, self.path, now)


def query_stats(conn: sqlite3.Connection, path: str, now: float) -> SpoolStats:
    """A consistent snapshot in one read transaction; index lookups only, no scans."""
    own_tx = not conn.in_transaction
    if own_tx:
        conn.execute("BEGIN")
    try:
        by_state = {name: 0 for name in STATE_NAMES.values()}
        by_rail: dict[str, dict[str, int]] = {name: {} for name in STATE_NAMES.values()}
        quarantined = 0
        for state, rail, n in conn.execute("SELECT state, rail, n FROM counts WHERE n <> 0"):
            if state == QUARANTINE_STATE:
                quarantined += n
                continue
            name = STATE_NAMES.get(state, str(state))
            by_state[name] = by_state.get(name, 0) + n
            by_rail.setdefault(name, {})[rail] = n
        oldest = conn.execute("SELECT min(queued_at) FROM outcomes WHERE state = 0").fetchone()[0]
        dead_by_error = {
            (code or ""): n
            for code, n in conn.execute(
                "SELECT error_code, count(*) FROM outcomes WHERE state = 3 GROUP BY error_code"
            )
        }
        jobs_by_state = {
            state: n
            for state, n in conn.execute(
                "SELECT state, count(*) FROM jobs WHERE finished = 0 GROUP BY state"
            )
        }
        page_count = int(conn.execute("PRAGMA page_count").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        if own_tx:
            conn.execute("COMMIT")
    try:
        wal = os.stat(path + "-wal").st_size
    except OSError:
        wal = 0
    return SpoolStats(
        pending=by_state["pending"],
        inflight=by_state["inflight"],
        done=by_state["done"],
        dead=by_state["dead"],
        by_state=by_state,
        by_rail=by_rail,
        oldest_pending_age_s=None if oldest is None else max(0.0, now - float(oldest)),
        dead_by_error=dead_by_error,
        jobs_in_flight=sum(jobs_by_state.values()),
        jobs_by_state=jobs_by_state,
        quarantined=quarantined,
        file_bytes=page_count * page_size + wal,
        schema_version=version,
    )
