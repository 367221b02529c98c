"""The async spool: one SQLite file, a group-commit writer, and the rails' queries.

Threads and order. The spool keeps exactly two aiosqlite connections:

- the *write* connection: every write is one whole transaction (a ``Store`` method) queued
  on aiosqlite's worker thread, which runs them one at a time in FIFO order. ``put`` and
  ``put_many`` go through the writer task first, which gathers every request waiting at
  that moment into one transaction (group commit): one fsync for many callers;
- the *read* connection: stats, dead-letter listings, lead queries and job pages read a
  WAL snapshot and never wait behind a write batch.

Running a whole transaction as one call on the connection thread is what makes
cancellation safe: a cancelled ``await`` cannot stop the call, which runs to COMMIT or
ROLLBACK on its own; the caller must treat a cancelled operation as "may have happened"
(STYLE.md habit 9). Every operation is guarded by the record's current state, so repeating
it is harmless. We reach aiosqlite's thread through ``Connection._execute`` and hand our
code its ``sqlite3.Connection`` (``Connection._conn``): the two private aiosqlite names this
package depends on, checked at import (see ``_on_thread``).

Lifecycle: ``open_spool()`` is the only way to get a ``Spool``; its context manager owns the
writer and maintenance tasks (lease reaper, retention purge) in a TaskGroup. Leaving the
block (or ``aclose()``) stops intake, lets the writer commit what was queued, stops the
tasks, and closes the connections last.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import sqlite3
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from spool._schema import NewerSchemaError, migrate
from spool._store import PutRequest, Store, row_for, translate_sqlite_error
from spool.errors import SpoolClosed, SpoolCorrupt, SpoolError, SpoolFull, SpoolUnavailable
from spool.record import CallOutcome, Disposition
from spool.results import (
    AckResult,
    Claim,
    DeadLetter,
    JobRow,
    PutResult,
    QuarantineRow,
    RecordRef,
    SpoolStats,
    StoredClaim,
)

__all__ = ["DEFAULT_URGENT", "Spool", "open_spool"]

log = logging.getLogger("dispo.spool")

T = TypeVar("T")

DEFAULT_URGENT: frozenset[str] = frozenset(
    {Disposition.DO_NOT_CALL.value, Disposition.CALLBACK_REQUESTED.value}
)
_SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

if not all(hasattr(aiosqlite.Connection, n) for n in ("_execute", "_conn")):  # pragma: no cover
    raise ImportError(
        "spool needs aiosqlite.Connection._execute and ._conn (aiosqlite 0.17-0.22); "
        "this aiosqlite version lacks them"
    )


async def _on_thread(
    conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Run ``fn`` on the connection's worker thread, after everything queued before it.

    ``Connection._execute`` is how aiosqlite runs every one of its own methods; it is the
    one private aiosqlite name we use (checked at import). A whole transaction is one call.
    """
    result: T = await conn._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
    return result


# Transactions the writer may have queued on the connection thread at once.
_WRITER_SLOTS = 2
# How far a dialer's clock (a call's ended_at) may be off ours, for Store.purged_horizon_s.
_CLOCK_SKEW_S = 86_400.0
# Below this many queued rows the writer does not split the queue (see _take_batch):
# for a few rows the extra fsync costs more than the overlap gains.
_SPLIT_MIN_ROWS = 64


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(slots=True)
class _Queued:
    request: PutRequest
    future: asyncio.Future[list[PutResult]]


def _create_private(path: Path) -> bool:
    """Create the spool file with mode 0600 if it does not exist (SQLite gives its -wal and
    -shm files the same mode). Returns True if we created it."""
    if not path.parent.is_dir():
        raise SpoolUnavailable(f"spool directory does not exist: {path.parent}")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        # SQLite opens a file it cannot write read-only and fails only at the first write:
        # the daemon would start, report ready and answer every outcome "try again later".
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if name.exists() and not os.access(name, os.R_OK | os.W_OK):
                raise SpoolUnavailable(
                    f"the spool file is not readable and writable by this user: {name}",
                    sqlite_error="SQLITE_READONLY",
                ) from None
        return False
    os.close(fd)
    return True


def _setup_write(conn: sqlite3.Connection, synchronous: str) -> None:
    conn.execute("PRAGMA busy_timeout = 5000")
    mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
    if mode != "wal":
        raise SpoolUnavailable(f"could not put the spool in WAL mode (journal_mode={mode})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    # Bounded page cache: memory does not grow with the backlog.
    conn.execute("PRAGMA cache_size = -16384")
    migrate(conn)


def _setup_read(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA cache_size = -8192")
    conn.execute("PRAGMA query_only = 1")


class Spool:
    """The durable outcome spool. Get one with ``open_spool()``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        max_pending: int | None = 1_000_000,
        max_bytes: int | None = None,
        urgent_dispositions: Iterable[str] = DEFAULT_URGENT,
        retention_s: float = 7 * 86400,
        lease_s: float = 120.0,
        clock: Callable[[], float] = time.time,
        purge_interval_s: float = 60.0,
        purge_batch: int = 500,
        reap_interval_s: float | None = None,
        max_batch_rows: int = 4000,
    ) -> None:
        sync = str(synchronous).upper()
        if sync not in _SYNC_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(_SYNC_MODES)}: {synchronous!r}"
            )
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer or None: {max_pending!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer or None: {max_bytes!r}")
        if not lease_s > 0:
            raise ValueError(f"lease_s must be > 0: {lease_s!r}")
        if not retention_s >= 0:
            raise ValueError(f"retention_s must be >= 0: {retention_s!r}")
        urgent = frozenset(str(d) for d in urgent_dispositions)
        unknown = sorted(urgent - {d.value for d in Disposition})
        if unknown:
            raise ValueError(f"urgent_dispositions has unknown dispositions: {unknown}")
        self.path = Path(path)
        self.synchronous = sync
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.urgent_dispositions = urgent
        self.retention_s = float(retention_s)
        self.lease_s = float(lease_s)
        self._clock = clock
        self._purge_interval_s = purge_interval_s
        self._purge_batch = purge_batch
        self._reap_interval_s = (
            reap_interval_s if reap_interval_s is not None else min(5.0, self.lease_s / 4)
        )
        self._max_batch_rows = max_batch_rows
        self._state = _State.NEW
        self._wconn: aiosqlite.Connection | None = None
        self._rconn: aiosqlite.Connection | None = None
        self._wstore: Store | None = None
        self._rstore: Store | None = None
        # Puts waiting for the writer. Unbounded, but each caller waits for its own result,
        # so it never holds more than one request per concurrent caller.
        self._queue: deque[_Queued] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._draining = False
        self._committing = 0
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_purge = 0.0

    def __repr__(self) -> str:
        return f"<Spool {str(self.path)!r} {self._state.value}>"

    def __del__(self) -> None:
        if getattr(self, "_state", None) is _State.OPEN:
            warnings.warn(f"{self!r} was never closed", ResourceWarning, stacklevel=1)

    @property
    def closed(self) -> bool:
        return self._state is not _State.OPEN

    # ------------------------------------------------------------------ lifecycle

    async def _open(self) -> None:
        created = _create_private(self.path)
        try:
            self._wconn = await aiosqlite.connect(self.path, isolation_level=None)
            await _on_thread(self._wconn, _setup_write, self._wconn._conn, self.synchronous)
            self._wstore = Store(
                self._wconn._conn,
                str(self.path),
                purged_horizon_s=max(0.0, self.retention_s - _CLOCK_SKEW_S),
            )
            self._rconn = await aiosqlite.connect(self.path, isolation_level=None)
            await _on_thread(self._rconn, _setup_read, self._rconn._conn)
            self._rstore = Store(self._rconn._conn, str(self.path))
        except BaseException as exc:
            await self._close_connections()
            if created:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(OSError):
                        os.unlink(f"{self.path}{suffix}")
            if isinstance(exc, NewerSchemaError):
                raise SpoolCorrupt(str(exc)) from exc
            mapped = translate_sqlite_error(exc)
            if mapped is not exc:
                raise mapped from exc
            raise
        self._state = _State.OPEN
        log.info("spool opened", extra={"path": str(self.path), "new_file": created})

    def _start(self, tg: asyncio.TaskGroup) -> None:
        self._tasks.append(tg.create_task(self._writer(), name="spool-writer"))
        self._tasks.append(tg.create_task(self._maintenance(), name="spool-maintenance"))

    async def _stop_tasks(self) -> None:
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
        self._draining = True
        self._wake_writer()
        self._stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _close_connections(self) -> None:
        # Close last: aiosqlite's close() first runs everything already queued.
        for attr in ("_rconn", "_wconn"):
            conn: aiosqlite.Connection | None = getattr(self, attr)
            if conn is not None:
                setattr(self, attr, None)
                await conn.close()
        self._state = _State.CLOSED

    async def aclose(self) -> None:
        """Stop intake, commit what was queued, stop the tasks, close. Safe to call twice."""
        if self._state is _State.CLOSED:
            return
        await self._stop_tasks()
        await self._close_connections()

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise SpoolClosed(f"the spool {str(self.path)!r} is {self._state.value}")

    async def _db_call(
        self, conn: aiosqlite.Connection | None, fn: Callable[..., T], *args: Any
    ) -> T:
        """Run ``fn(*args)`` on the connection's thread and translate SQLite errors."""
        self._check_open()
        assert conn is not None
        try:
            # aiosqlite's own way to run a callable on its worker thread (it backs every
            # public method); a whole transaction is one such call.
            result: T = await _on_thread(conn, fn, *args)
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc) from exc
        return result

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._db_call(self._wconn, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._db_call(self._rconn, fn, *args)

    # ------------------------------------------------------------------ ingest

    async def put(self, outcome: CallOutcome) -> PutResult:
        """Store one outcome; returns after the transaction holding it has committed.

        Raises ``SpoolFull`` / ``SpoolUnavailable`` (retryable) or ``SpoolClosed``.
        """
        results = await self._submit(PutRequest([row_for(outcome, self.urgent_dispositions)]))
        return results[0]

    async def put_many(
        self, outcomes: Iterable[CallOutcome], *, cursor: tuple[str, str] | None = None
    ) -> list[PutResult]:
        """Store several outcomes (and optionally a resume cursor) in one transaction:
        all of them or none. Results are in input order."""
        rows = [row_for(o, self.urgent_dispositions) for o in outcomes]
        if not rows and cursor is None:
            self._check_open()
            return []
        return await self._submit(PutRequest(rows, cursor))

    async def _submit(self, request: PutRequest) -> list[PutResult]:
        self._check_open()
        future: asyncio.Future[list[PutResult]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(request, future))
        self._wake_writer()
        return await future

    def _wake_writer(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _take_batch(self, split: bool) -> list[_Queued]:
        """Requests for the next transaction: everything queued, up to max_batch_rows.

        ``split``: no transaction is running, so take only half of a large queue and let
        the other half follow at once as a second transaction. The callers of the first
        half then build their next puts while the second commits; otherwise the event loop
        and the SQLite thread would take turns, each idle while the other works.
        """
        queue = self._queue
        queued_rows = sum(len(q.request.rows) for q in queue) if split else 0
        limit = self._max_batch_rows
        if split and queued_rows >= _SPLIT_MIN_ROWS:
            limit = min(limit, (queued_rows + 1) // 2)
        batch: list[_Queued] = []
        rows = 0
        while queue and (not batch or rows + len(queue[0].request.rows) <= limit):
            item = queue.popleft()
            # A caller cancelled before we started gets nothing written.
            if not item.future.done():
                batch.append(item)
                rows += len(item.request.rows)
        return batch

    async def _writer(self) -> None:
        """Group commit: what is queued goes into one transaction; up to two transactions
        are queued on the connection thread at once (they run one after the other)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    while not self._queue and not self._draining:
                        self._wakeup = loop.create_future()
                        await self._wakeup
                    if not self._queue:
                        return  # draining and nothing left
                    while self._committing >= _WRITER_SLOTS:
                        self._slot_free.clear()
                        await self._slot_free.wait()
                    batch = self._take_batch(split=self._committing == 0)
                    if not batch:
                        continue
                    self._committing += 1
                    tg.create_task(self._commit(batch))
        finally:
            closed = SpoolClosed(f"the spool {str(self.path)!r} closed")
            while self._queue:
                left = self._queue.popleft()
                if not left.future.done():
                    left.future.set_exception(closed)

    async def _commit(self, batch: list[_Queued]) -> None:
        try:
            await self._commit_batch(batch)
        finally:
            self._committing -= 1
            self._slot_free.set()

    async def _commit_batch(self, batch: list[_Queued]) -> None:
        assert self._wconn is not None and self._wstore is not None
        try:
            results = await _on_thread(
                self._wconn,
                self._wstore.put_batch,
                [b.request for b in batch],
                self._clock(),
                max_pending=self.max_pending,
                max_bytes=self.max_bytes,
            )
        except sqlite3.Error as exc:
            log.warning(
                "spool write failed",
                extra={
                    "error": getattr(exc, "sqlite_errorname", type(exc).__name__),
                    "requests": len(batch),
                },
            )
            for b in batch:
                if not b.future.done():
                    b.future.set_exception(translate_sqlite_error(exc))
            return
        except Exception as exc:
            # Not SQLite's (e.g. a value the sqlite3 module cannot bind): the transaction
            # was rolled back; this batch's callers get the error, the writer goes on.
            log.error(
                "spool write failed",
                extra={"error": repr(exc)[:300], "requests": len(batch)},
            )
            for b in batch:
                if not b.future.done():
                    b.future.set_exception(exc)
            return
        except BaseException:
            for b in batch:
                if not b.future.done():
                    b.future.set_exception(SpoolClosed("spool writer stopped"))
            raise
        for b, result in zip(batch, results, strict=True):
            if b.future.done():
                continue
            if isinstance(result, SpoolFull):
                b.future.set_exception(result)
            else:
                b.future.set_result(result)

    async def quarantine(self, source: str, raw: bytes | str, reason: str) -> int:
        """Keep input that could not be decoded, for inspection; returns its id."""
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
        assert self._wstore is not None
        return await self._write(self._wstore.quarantine, source, data, reason, self._clock())

    async def list_quarantine(self, limit: int = 100, offset: int = 0) -> list[QuarantineRow]:
        assert self._rstore is not None
        return await self._read(self._rstore.list_quarantine, limit, offset)

    # ------------------------------------------------------------------ small kv

    async def get_cursor(self, key: str) -> str | None:
        """The resume point last committed with ``put_many(..., cursor=(key, value))``."""
        assert self._rstore is not None
        return await self._read(self._rstore.get_kv, "cursor:" + key)

    async def set_cursor(self, key: str, value: str) -> None:
        assert self._wstore is not None
        await self._write(self._wstore.set_kv, "cursor:" + key, value, self._clock())

    async def set_state(self, key: str, value: str) -> None:
        """Small durable key/value (e.g. the last API quota reading)."""
        assert self._wstore is not None
        await self._write(self._wstore.set_kv, "state:" + key, value, self._clock())

    async def get_state(self, key: str) -> str | None:
        assert self._rstore is not None
        return await self._read(self._rstore.get_kv, "state:" + key)

    # ------------------------------------------------------------------ rails

    async def claim(
        self,
        rail: str,
        limit: int,
        *,
        urgent: bool | None = None,
        lease_s: float | None = None,
    ) -> list[Claim]:
        """Atomically lease up to ``limit`` due pending records to ``rail``, oldest first.

        Expired leases are returned to pending first. ``urgent=True`` takes only live
        outcomes and urgent dispositions, ``False`` only the others, ``None`` any.
        """
        assert self._wstore is not None
        return await self._claim_with(self._wstore.claim, rail, limit, urgent, lease_s)

    async def claim_stored(
        self,
        rail: str,
        limit: int,
        *,
        urgent: bool | None = None,
        lease_s: float | None = None,
    ) -> list[StoredClaim]:
        """:meth:`claim`, each outcome read from its stored JSON only as far as it is used
        (:class:`spool.record.StoredOutcome`): for many records of which few fields are
        read (the Bulk rail)."""
        assert self._wstore is not None
        return await self._claim_with(self._wstore.claim_stored, rail, limit, urgent, lease_s)

    async def decode(self, claims: Iterable[StoredClaim]) -> list[Claim]:
        """These claims (from :meth:`claim_stored`) with their outcomes validated in full;
        one whose stored payload does not validate is dead-lettered, as by :meth:`claim`."""
        assert self._wstore is not None
        return await self._write(self._wstore.decode_stored, list(claims), self._clock())

    async def _claim_with(
        self,
        fn: Callable[[str, int, bool | None, float, float], list[T]],
        rail: str,
        limit: int,
        urgent: bool | None,
        lease_s: float | None,
    ) -> list[T]:
        if not rail:
            raise ValueError("rail must be a non-empty name")
        lease = self.lease_s if lease_s is None else float(lease_s)
        return await self._write(fn, rail, int(limit), urgent, lease, self._clock())

    async def ack(self, refs: Iterable[RecordRef]) -> AckResult:
        """Salesforce confirmed these revisions: done (or pending again if a newer version
        arrived meanwhile, so that it is sent too)."""
        assert self._wstore is not None
        return await self._write(self._wstore.ack, list(refs), self._clock())

    async def retry_later(
        self,
        refs: Iterable[RecordRef],
        *,
        delay_s: float,
        error_code: str | None = None,
        message: str | None = None,
    ) -> int:
        """Transient failure: back to pending, due again after ``delay_s``."""
        assert self._wstore is not None
        return await self._write(
            self._wstore.retry_later,
            list(refs),
            float(delay_s),
            error_code,
            message,
            self._clock(),
        )

    async def release(self, refs: Iterable[RecordRef]) -> int:
        """Back to pending at once, the attempt not counted (e.g. the rail paused)."""
        assert self._wstore is not None
        return await self._write(self._wstore.release, list(refs), self._clock())

    async def dead(
        self, refs: Iterable[RecordRef], *, error_code: str | None, message: str | None
    ) -> int:
        """Permanent failure: dead letter with Salesforce's error (returns how many)."""
        assert self._wstore is not None
        return await self._write(self._wstore.dead, list(refs), error_code, message, self._clock())

    async def extend_lease(self, refs: Iterable[RecordRef], lease_s: float) -> int:
        """Push the lease of records still held to now + ``lease_s`` (returns how many)."""
        assert self._wstore is not None
        return await self._write(
            self._wstore.extend_lease, list(refs), float(lease_s), self._clock()
        )

    async def newest_per_lead(
        self, lead_keys: Iterable[str]
    ) -> dict[str, tuple[int, tuple[float, int]]]:
        """lead_key -> (record_id, order) of the newest outcome that is not dead, where
        order is (ended_at timestamp, record_id): later end wins, ties go to the later
        arrival."""
        assert self._rstore is not None
        return await self._read(self._rstore.newest_per_lead, list(lead_keys))

    async def has_newer_for_lead(self, lead_key: str, record_id: int) -> bool:
        """Newest-wins across rails: does this Lead have a newer outcome than this one?"""
        assert self._rstore is not None
        return await self._read(self._rstore.has_newer_for_lead, lead_key, int(record_id))

    # ------------------------------------------------------------------ bulk jobs

    async def record_job(
        self,
        sf_job_id: str,
        object: str,
        operation: str,
        record_pairs: Iterable[RecordRef],
        state: str = "Open",
    ) -> None:
        """Commit a Bulk job and the record revisions it carries BEFORE uploading data.
        Idempotent: recording the same job again adds only missing records."""
        assert self._wstore is not None
        await self._write(
            self._wstore.record_job,
            sf_job_id,
            object,
            operation,
            list(record_pairs),
            state,
            self._clock(),
        )

    async def update_job(self, sf_job_id: str, state: str | None = None, **counters: Any) -> bool:
        """Update a job's state and merge counters (e.g. numberRecordsProcessed)."""
        assert self._wstore is not None
        return await self._write(self._wstore.update_job, sf_job_id, state, counters, self._clock())

    async def finish_job(self, sf_job_id: str, state: str) -> bool:
        assert self._wstore is not None
        return await self._write(self._wstore.finish_job, sf_job_id, state, self._clock())

    async def jobs(self, states: set[str] | None = None) -> list[JobRow]:
        """Jobs recorded (all, or those in ``states``), oldest first."""
        assert self._rstore is not None
        return await self._read(self._rstore.jobs, None if states is None else set(states))

    async def iter_job_records(
        self, sf_job_id: str, batch: int = 5000
    ) -> AsyncIterator[list[Claim]]:
        """Pages of the records a job carries. ``Claim.rev`` is the revision uploaded in the
        job (ack with it); ``outcome`` is the version stored now."""
        assert self._rstore is not None
        after = 0
        while True:
            page = await self._read(self._rstore.job_records_page, sf_job_id, after, batch)
            if not page:
                return
            yield page
            after = page[-1].record_id

    # ------------------------------------------------------------------ dead letters

    async def dead_letters(
        self, limit: int = 100, offset: int = 0, error_code: str | None = None
    ) -> list[DeadLetter]:
        """Dead letters, most recently failed first."""
        assert self._rstore is not None
        return await self._read(self._rstore.dead_letters, limit, offset, error_code)

    async def dead_letter(self, record_id: int) -> DeadLetter | None:
        assert self._rstore is not None
        return await self._read(self._rstore.dead_letter, int(record_id))

    async def release_orphans(self) -> int:
        """Records a previous process left in flight (it crashed), except those a recorded
        Bulk job carries (its recovery reconciles them), back to pending now rather than
        when their leases expire (up to the Bulk lease, 15 minutes). Only for the one
        process that sends from this spool, at its start, before it claims anything."""
        assert self._wstore is not None
        return await self._write(self._wstore.release_orphans, self._clock())

    async def set_task_ids(self, pairs: Iterable[tuple[int, str]]) -> int:
        """Remember the Salesforce Id of each record's Task (``(record_id, task_id)``): for
        orgs whose Tasks are inserted, the Id a later send updates instead of inserting a
        second Task. Kept through later versions of the call; returns records changed (a
        record given twice keeps the last Id)."""
        assert self._wstore is not None
        ids: dict[int, str] = {}
        for record_id, task_id in pairs:
            if not isinstance(task_id, str) or not task_id:
                raise ValueError(f"record {record_id}: not a Task Id: {task_id!r}")
            ids[int(record_id)] = task_id
        if not ids:
            return 0
        items = [(task_id, record_id) for record_id, task_id in ids.items()]
        return await self._write(self._wstore.set_task_ids, items)

    async def forget_task_ids(self, record_ids: Iterable[int]) -> int:
        """Forget the Task Id remembered for these records: a later send finds their Task
        by its external key again (once the key is filled in, after an org that inserted
        Tasks gained a Task external ID field). Returns records changed."""
        assert self._wstore is not None
        ids = sorted({int(r) for r in record_ids})
        if not ids:
            return 0
        return await self._write(self._wstore.forget_task_ids, ids)

    async def suspect_unkeyed_tasks(self, *, only_if_inserted: bool = False) -> int:
        """For rails that go from inserting Tasks to upserting them by an external key:
        every record not done that was claimed before and has no Task Id remembered may
        have had its Task inserted, without the key, by a send whose answer was lost. Each
        is marked (its ``task_id`` reads ``""``), so that the next send looks its Task up
        by ``CallObject`` before any upsert; :meth:`forget_task_ids` clears the mark.
        ``only_if_inserted``: only if some record has a Task Id (for a spool that does
        not say how it was used before). Returns records marked."""
        assert self._wstore is not None
        return await self._write(self._wstore.suspect_unkeyed_tasks, only_if_inserted)

    @property
    def durable_claims(self) -> bool:
        """Whether claims are committed with an fsync (the spool's ``synchronous``) rather
        than NORMAL. Off by default (a claim lost to a power cut only means the record is
        pending again); rails that insert Tasks turn it on, since there a claim that
        vanished after its insert landed would make the record look never sent."""
        return self._wstore is not None and self._wstore.durable_claims

    @durable_claims.setter
    def durable_claims(self, on: bool) -> None:
        assert self._wstore is not None
        self._wstore.durable_claims = bool(on)

    async def resend(self, ids: Sequence[int]) -> int:
        """Send these records again (the org's copy may have been overwritten, e.g. by an
        older Bulk job that landed later): done ones go back to pending; an in-flight one
        gets a new revision, so that the ack of its current send (which may have landed
        before the older job) puts it back to pending instead of marking it done. Pending
        and dead records are left alone; returns how many were done or in flight."""
        assert self._wstore is not None
        return await self._write(self._wstore.resend, [int(i) for i in ids], self._clock())

    async def retry_dead(
        self,
        ids: Sequence[int] | None = None,
        *,
        all: bool = False,
        error_code: str | None = None,
    ) -> int:
        """Dead letters back to pending (by id, by error code, or ``all=True``)."""
        if ids is None and not all and error_code is None:
            raise ValueError("retry_dead needs ids, error_code, or all=True")
        assert self._wstore is not None
        return await self._write(
            self._wstore.retry_dead,
            None if ids is None else [int(i) for i in ids],
            all,
            error_code,
            self._clock(),
        )

    async def drop_dead(self, ids: Sequence[int]) -> int:
        """Delete dead letters for good (only records that are dead)."""
        assert self._wstore is not None
        return await self._write(self._wstore.drop_dead, [int(i) for i in ids])

    # ------------------------------------------------------------------ stats, maintenance

    async def stats(self) -> SpoolStats:
        assert self._rstore is not None
        return await self._read(self._rstore.stats, self._clock())

    async def run_maintenance(self) -> tuple[int, int]:
        """One pass of lease expiry and retention purge; returns (reaped, purged)."""
        assert self._wstore is not None
        now = self._clock()
        reaped = await self._write(self._wstore.reap_expired, now)
        if reaped:
            log.warning("spool leases expired", extra={"records": reaped})
        purged = 0
        before = now - self.retention_s
        while True:
            n = await self._write(self._wstore.purge, before, self._purge_batch)
            purged += n
            if n < self._purge_batch or self._stop.is_set():
                break
            # Let queued writer batches run between purge batches.
            await asyncio.sleep(0)
        self._last_purge = now
        return reaped, purged

    async def _maintenance(self) -> None:
        delay = self._reap_interval_s
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                now = self._clock()
                if now - self._last_purge >= self._purge_interval_s:
                    await self.run_maintenance()
                else:
                    assert self._wstore is not None
                    await self._write(self._wstore.reap_expired, now)
                delay = self._reap_interval_s
            except SpoolClosed:
                return
            except Exception as exc:
                # Maintenance must not take ingest down: log (with the traceback unless it
                # is the usual busy / I/O trouble) and try again later, backing off.
                # Jittered so that several spools (or processes) do not retry in step.
                delay = min(max(delay * 2, 1.0), 60.0) * random.uniform(0.8, 1.2)
                log.warning(
                    "spool maintenance failed",
                    extra={"error": type(exc).__name__, "retry_in_s": delay},
                    exc_info=not isinstance(exc, SpoolError),
                )


@asynccontextmanager
async def open_spool(
    path: str | os.PathLike[str],
    *,
    synchronous: str = "FULL",
    max_pending: int | None = 1_000_000,
    max_bytes: int | None = None,
    urgent_dispositions: Iterable[str] = DEFAULT_URGENT,
    retention_s: float = 7 * 86400,
    lease_s: float = 120.0,
    **options: Any,
) -> AsyncIterator[Spool]:
    """Open (creating if needed, mode 0600) the spool at ``path``.

    ``options`` (tests, tuning): ``clock``, ``purge_interval_s``, ``purge_batch``,
    ``reap_interval_s``, ``max_batch_rows``.
    """
    spool = Spool(
        path,
        synchronous=synchronous,
        max_pending=max_pending,
        max_bytes=max_bytes,
        urgent_dispositions=urgent_dispositions,
        retention_s=retention_s,
        lease_s=lease_s,
        **options,
    )
    await spool._open()
    try:
        async with asyncio.TaskGroup() as tg:
            spool._start(tg)
            try:
                yield spool
            finally:
                await spool._stop_tasks()
    finally:
        await spool._close_connections()
