"""Bulk API 2.0 ingest processing: jobs, the one upload, asynchronous batches, result files.

Wire facts: shared/reference/salesforce-api.md §4 (and §5.3 for DailyBulkApiBatches, §7.1/2/3/5/7
for the gotchas this reproduces). HTTP lives in ``sfsim.bulk_routes``; CSV rules in
``sfsim.bulk_csv``; job state in ``sfsim.bulk_jobs``.

Lifecycle: :meth:`BulkEngine.run` is a long-lived task owned by the org's TaskGroup. It owns a
temporary directory (uploads are spilled to disk, never held in memory) and a TaskGroup of its own
in which each closed job is processed. Cancelling ``run`` cancels every job being processed and
removes the directory.

Processing follows §4.10: the data is split into internal batches of ``batch_size`` (10,000)
records, each charged to DailyBulkApiBatches; records are saved in chunks of ``chunk_size`` (200),
and the engine yields to the event loop between chunks. ``rate`` caps records per second (0 = as
fast as possible). Every row goes through :class:`~sfsim.store.RecordStore`, the same validation
REST uses. Faults: UNABLE_TO_LOCK_ROW on a rate of rows (the store's lock hook, shared with REST),
lock contention between rows that share a parent with a row of another batch being processed at
the same time, and whole-job failure (``Faults.take_job_failure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from operator import itemgetter
from typing import IO, Any, Final, cast

import structlog

from sfsim.bulk_csv import (
    BadRow,
    BulkFileError,
    UploadScanner,
    base64_size,
    format_sf_error,
    invalid_batch,
    iter_data_rows,
    open_upload,
    result_header,
    write_rows,
)
from sfsim.bulk_fast import FastSaver
from sfsim.bulk_jobs import (
    TERMINAL_STATES,
    BulkApiError,
    Job,
    JobState,
    RowOutcomes,
    invalid_job,
    not_found,
    parse_create_request,
)
from sfsim.errors import SfError
from sfsim.ids import normalize_id
from sfsim.store import Column, RecordStore

__all__ = [
    "DEFAULT_MAX_UPLOAD_BASE64",
    "RESULT_KINDS",
    "BulkEngine",
    "BulkSettings",
]

_log = structlog.get_logger("sfsim.bulk")

#: §4.2: 150 MB of base64-encoded content per upload.
DEFAULT_MAX_UPLOAD_BASE64: Final = 150 * 1024 * 1024
#: URL segment -> kind. ``unprocessedrecords`` is the documented spelling (§4.8); simple-salesforce
#: 1.12.10 asks for ``unprocessedRecords`` and works against real orgs, so the segment is matched
#: case-insensitively by the routes.
RESULT_KINDS: Final = {
    "successfulresults": "successful",
    "failedresults": "failed",
    "unprocessedrecords": "unprocessed",
}
#: §4.5: jobs in a terminal state are deleted after 7 days.
_RETENTION_S: Final = 7 * 86400
_LOCK_MESSAGE: Final = "unable to obtain exclusive access to this record or 1 records: {}"
# Parents that never lock in practice: owners and creators (User/Group rows).
_NON_LOCKING_TARGETS: Final = frozenset({"User", "Group"})


@dataclass(slots=True)
class BulkSettings:
    """Tunables; defaults follow §4.10 (10,000-record batches, 200-record chunks)."""

    # Throughput
    rate: float = 0.0
    batch_size: int = 10_000
    chunk_size: int = 200
    # Batches of one job processed "at the same time" (lock contention window).
    parallel_batches: int = 2
    # Limits
    max_upload_base64: int = DEFAULT_MAX_UPLOAD_BASE64
    page_size: int = 1000
    # Faults
    lock_contention: bool = False
    # Column-at-a-time saving for insert/upsert/update (sfsim.bulk_fast); False: row by row.
    fast_path: bool = True
    lock_retries: int = 1
    allow_hard_delete: bool = False


@dataclass(slots=True)
class _Pacing:
    """``--bulk-rate`` bookkeeping of one job: records saved since ``since`` (monotonic)."""

    since: float
    records: int = 0


@dataclass(slots=True)
class _Plan:
    columns: list[Column]
    id_index: int | None = None
    key_index: int | None = None
    key_field: str | None = None
    parent_indexes: list[int] = field(default_factory=list)
    fast: FastSaver | None = None


class BulkEngine:
    """All ingest jobs of one org. Every method runs on the org's event loop."""

    def __init__(
        self,
        store: RecordStore,
        *,
        settings: BulkSettings | None = None,
        take_job_failure: Callable[[], str | None] = lambda: None,
        add_bulk_batches: Callable[[int], None] = lambda n: None,
        batches_remaining: Callable[[], int] = lambda: 1 << 62,
        lock_contention: Callable[[], bool] = lambda: False,
        assignment_owner: Callable[[], str | None] = lambda: None,
        upsert_race_possible: Callable[[], bool] = lambda: False,
        row_locks_possible: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
        upload_dir: str | None = None,
    ) -> None:
        self.store = store
        self._upload_dir = upload_dir
        self.settings = settings or BulkSettings()
        self._take_job_failure = take_job_failure
        self._add_bulk_batches = add_bulk_batches
        self._batches_remaining = batches_remaining
        self._lock_contention = lock_contention
        self._assignment_owner = assignment_owner
        self._upsert_race_possible = upsert_race_possible
        # False while no write can hit the store's lock hook (the fast path then skips it).
        self._row_locks_possible = row_locks_possible
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._dir: str | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started = asyncio.Event()
        # Parent record id -> the (job id, batch number) that holds its lock.
        self._lock_holders: dict[str, tuple[str, int]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Own the upload directory and the job processors until cancelled.

        Uploads go to ``upload_dir`` when one was given (the org's ``--state-dir``, so they
        survive a restart), else to a temporary directory removed on the way out.
        """
        with contextlib.ExitStack() as stack:
            if self._upload_dir is not None:
                os.makedirs(self._upload_dir, exist_ok=True)
                self._dir = self._upload_dir
            else:
                self._dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="sfsim-bulk-"))
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    for job in list(self._jobs.values()):
                        if job.state is JobState.UPLOAD_COMPLETE:
                            self._spawn(job)  # queued before a restart
                    self._started.set()
                    await asyncio.Event().wait()
            finally:
                self._tg = None
                self._dir = None
                self._started.clear()

    def now(self) -> float:
        """The engine's clock (wall-clock seconds)."""
        return self._clock()

    async def started(self) -> None:
        """Return once :meth:`run` accepts uploads."""
        await self._started.wait()

    def _spawn(self, job: Job) -> None:
        tg = self._tg
        if tg is None:
            raise RuntimeError("bulk engine is not running")
        # Registered before it can run; removes itself when done (STYLE.md habit 5).
        self._tasks[job.id] = tg.create_task(self._process(job), name=f"bulk-job-{job.id}")

    # ------------------------------------------------------------------ API: jobs

    def create_job(self, body: object, *, api_version: str, user_id: str) -> Job:
        """``POST /jobs/ingest`` (§4.1): check the request against the schema and open a job."""
        spec = parse_create_request(body, api_version=api_version)
        obj = self.store.schema.get(spec.object)
        if obj is None:
            raise invalid_job(f"Unable to find object: {spec.object}")
        if spec.operation == "hardDelete" and not self.settings.allow_hard_delete:
            # §4.1: without the "Bulk API Hard Delete" permission.
            raise BulkApiError(
                400,
                "FEATURENOTENABLED",
                "FeatureNotEnabled : The user does not have the Bulk API Hard Delete permission",
            )
        if spec.external_id_field is not None:
            key = obj.field(spec.external_id_field)
            if key is None or not (key.is_upsert_key or key.name == "Id"):
                # Observed: "InvalidJob : Field name provided, X does not match an External ID
                # for Obj".
                raise invalid_job(
                    f"Field name provided, {spec.external_id_field} does not match an External "
                    f"ID for {obj.name}"
                )
        if spec.assignment_rule_id is not None and obj.name not in ("Lead", "Case"):
            # §4.1: assignmentRuleId is for Case or Lead. [U] wording.
            raise invalid_job(f"assignmentRuleId is not supported for {obj.name}")
        now = self._clock()
        self._expire(now)
        job = Job(
            id=self.store.ids.new("750"),
            # The object's canonical API name (``task`` -> ``Task``).
            spec=replace(spec, object=obj.name),
            created_by_id=user_id,
            created_at=now,
        )
        self._jobs[job.id] = job
        self._done[job.id] = asyncio.Event()
        _log.info("bulk_job_created", job_id=job.id, object=obj.name, operation=spec.operation)
        return job

    def _expire(self, now: float) -> None:
        """Forget jobs that ended more than 7 days ago, with their data (§4.5)."""
        cutoff = now - _RETENTION_S
        for job in list(self._jobs.values()):
            if job.state in TERMINAL_STATES and job.modified_at < cutoff:
                del self._jobs[job.id]
                self._done.pop(job.id).set()
                self._remove_upload(job)

    def jobs(self) -> list[Job]:
        """Every job, oldest first."""
        return list(self._jobs.values())

    def reset(self) -> None:
        """Forget every job. One being processed stops after its current chunk."""
        for job in self._jobs.values():
            if job.state not in TERMINAL_STATES:
                job.set_state(JobState.ABORTED, self._clock())
            self._remove_upload(job)
        for done in self._done.values():
            done.set()
        self._jobs.clear()
        self._done.clear()
        self._lock_holders.clear()

    def dump_state(self) -> dict[str, Any]:
        """Every job with its outcomes; uploads are already files in the upload directory."""
        return {"jobs": [job.to_state() for job in self._jobs.values()]}

    def load_state(self, state: Any) -> None:
        """Restore jobs saved by :meth:`dump_state` (before :meth:`run`).

        A job that was being processed when the org stopped ends ``Failed`` with its remaining
        rows unprocessed ([U]: a real org would resume it; failing is the case a client must
        handle anyway). Queued jobs are processed once :meth:`run` starts.
        """
        if not isinstance(state, dict):
            return
        now = self._clock()
        for data in state.get("jobs") or []:
            job = Job.from_state(data)
            if job.upload_path is not None and not os.path.exists(job.upload_path):
                job.upload_path = None
            if job.state is JobState.IN_PROGRESS:
                job.set_state(JobState.FAILED, now)
                job.finished_at = now
                job.error_message = (
                    "InternalServerError : Processing was interrupted by a restart of the org."
                )
            self._jobs[job.id] = job
            done = asyncio.Event()
            if job.state in TERMINAL_STATES:
                done.set()
            self._done[job.id] = done

    def job(self, job_id: str) -> Job:
        """The job ``job_id`` (15 or 18 characters); 404 NOT_FOUND when unknown or deleted."""
        rid = normalize_id(job_id)
        job = self._jobs.get(rid) if rid is not None else None
        if job is None:
            raise not_found()
        return job

    def close(self, job_id: str) -> Job:
        """PATCH ``{"state": "UploadComplete"}``: queue the job for processing (§4.3)."""
        job = self.job(job_id)
        job.check_close()
        job.set_state(JobState.UPLOAD_COMPLETE, self._clock())
        self._spawn(job)
        return job

    def abort(self, job_id: str) -> Job:
        """PATCH ``{"state": "Aborted"}``: stop; rows already saved stay saved (§4.3)."""
        job = self.job(job_id)
        job.check_abort()
        now = self._clock()
        job.set_state(JobState.ABORTED, now)
        if job.started_at is not None:
            job.finished_at = now
        self._done[job.id].set()
        _log.info("bulk_job_aborted", job_id=job.id, processed=job.records_processed)
        return job

    def delete(self, job_id: str) -> None:
        """``DELETE``: forget the job and its data (§4.6)."""
        job = self.job(job_id)
        job.check_delete()
        del self._jobs[job.id]
        self._done.pop(job.id).set()
        self._remove_upload(job)

    async def wait(self, job_id: str) -> Job:
        """Wait until the job reaches a final state (for benchmarks and in-process callers)."""
        job = self.job(job_id)
        await self._done[job.id].wait()
        return job

    def list_page(
        self, locator: str | None, *, api_version: str, filters: dict[str, str]
    ) -> dict[str, Any]:
        """``GET /jobs/ingest`` (§4.7): up to ``page_size`` jobs and a ``nextRecordsUrl``."""
        offset = 0
        if locator:
            try:
                offset = int(locator.rsplit("-", 1)[1])
            except (IndexError, ValueError):
                raise BulkApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator") from None
            if offset < 0:
                raise BulkApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        jobs = [j for j in self._jobs.values() if _matches(j, filters)]
        size = self.settings.page_size
        page = jobs[offset : offset + size]
        done = offset + size >= len(jobs)
        next_url = None
        if not done:
            next_url = (
                f"/services/data/v{api_version}/jobs/ingest?queryLocator=01gsfsim-{offset + size}"
            )
        return {"done": done, "records": [j.list_entry() for j in page], "nextRecordsUrl": next_url}

    # ------------------------------------------------------------------ API: upload

    async def upload(self, job_id: str, chunks: AsyncIterator[bytes]) -> None:
        """``PUT .../batches`` (§4.2): spill the one CSV upload to disk while checking it."""
        job = self.job(job_id)
        job.check_upload()
        directory = self._dir
        if directory is None:
            raise RuntimeError("bulk engine is not running")
        scanner = UploadScanner()
        limit = self.settings.max_upload_base64
        fd, path = tempfile.mkstemp(prefix=f"{job.id}-", suffix=".csv", dir=directory)
        # Claim the job's one upload before the first await, so a concurrent PUT is refused.
        job.upload_path = path
        ok = False
        try:
            with os.fdopen(fd, "wb") as out:
                pending: list[bytes] = []
                pending_size = 0
                async for chunk in chunks:
                    scanner.feed(chunk)
                    if base64_size(scanner.size) > limit:
                        # §4.2: 150 MB of base64 content. [U] status and wording.
                        raise BulkApiError(
                            413,
                            "BULK_API_ERROR",
                            f"The data exceeds the limit of {limit} bytes of base64-encoded "
                            "content for one upload. Split it across several jobs.",
                        )
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= 1 << 20:
                        await asyncio.to_thread(out.write, b"".join(pending))
                        pending, pending_size = [], 0
                if pending:
                    await asyncio.to_thread(out.write, b"".join(pending))
            if job.state is not JobState.OPEN or self._jobs.get(job.id) is not job:
                # Aborted (or deleted) while the body was still arriving.
                raise BulkApiError(
                    400, "INVALIDJOBSTATE", "The job was aborted while its data was uploading"
                )
            ok = True
        finally:
            if not ok:
                job.upload_path = None
                with contextlib.suppress(OSError):
                    os.unlink(path)
        job.upload_size = scanner.size
        job.upload_plain = scanner.plain
        problem = scanner.finish(job.spec.line_ending)
        job.upload_error = problem.error_message if problem is not None else None
        job.modified_at = self._clock()
        _log.info("bulk_job_uploaded", job_id=job.id, bytes=scanner.size)

    def _remove_upload(self, job: Job) -> None:
        if job.upload_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(job.upload_path)

    # ------------------------------------------------------------------ API: results

    def nothing_of_kind(self, job_id: str, kind: str) -> bool:
        """True when the ``kind`` result file of a final job has no row (only its header)."""
        return _nothing_of_kind(self.job(job_id), kind)

    def result_chunks(self, job_id: str, kind: str, *, rows_per_chunk: int = 5000) -> Iterator[str]:
        """The CSV of ``kind`` (successful / failed / unprocessed), regenerated from the upload
        and the compact per-row outcomes, in pieces. Checks the job state first (§4.8)."""
        job = self.job(job_id)
        job.check_results(
            {"successful": "successfulResults", "failed": "failedResults"}.get(
                kind, "unprocessedrecords"
            )
        )
        return _result_chunks(job, kind, rows_per_chunk)

    # ------------------------------------------------------------------ processing

    async def _process(self, job: Job) -> None:
        try:
            if self._jobs.get(job.id) is not job or job.state is not JobState.UPLOAD_COMPLETE:
                return
            now = self._clock()
            job.set_state(JobState.IN_PROGRESS, now)
            job.started_at = now
            _log.info("bulk_job_started", job_id=job.id)
            try:
                await self._run_job(job)
            except BulkFileError as exc:
                self._finish(job, JobState.FAILED, exc.error_message)
            except Exception:
                _log.exception("bulk_job_crashed", job_id=job.id)
                self._finish(job, JobState.FAILED, "Unknown : An unexpected error occurred.")
            else:
                self._finish(job, JobState.JOB_COMPLETE)
        finally:
            self._tasks.pop(job.id, None)
            done = self._done.get(job.id)
            if done is not None and job.state in TERMINAL_STATES:
                done.set()

    def _finish(self, job: Job, state: JobState, error_message: str | None = None) -> None:
        if job.state is not JobState.IN_PROGRESS:
            return  # aborted meanwhile: the abort already stamped it
        now = self._clock()
        job.set_state(state, now)
        job.finished_at = now
        job.error_message = error_message
        _log.info(
            "bulk_job_finished",
            job_id=job.id,
            state=state.value,
            processed=job.records_processed,
            failed=job.records_failed,
            retries=job.retries,
            error=error_message,
        )

    async def _run_job(self, job: Job) -> None:
        if job.upload_path is None:
            # [U] Closing a job that never received data: fail it rather than complete it
            # empty, so a client that lost its PUT finds out.
            raise invalid_batch("No data was uploaded for this job")
        if job.upload_error is not None:
            raise BulkFileError(job.upload_error)
        failure = self._take_job_failure()
        # Reads from a local file (page cache) in 10,000-row batches; cheap next to the saves.
        with open_upload(job.upload_path) as stream:
            header, rows = iter_data_rows(stream, job.spec.delimiter, plain=job.upload_plain)
            job.header = header
            plan = self._plan(job, header)
            if failure is not None:
                # Whole-job failure on demand: the first batch never runs, every row stays
                # unprocessed (as when retries are exhausted, §4.10).
                raise BulkFileError(failure)
            await self._run_batches(job, plan, rows)

    def _plan(self, job: Job, header: list[str]) -> _Plan:
        spec = job.spec
        columns: list[Column] = []
        seen: set[str] = set()
        for name in header:
            try:
                column = self.store.resolve_column(spec.object, name)
            except SfError as exc:
                # §4.5 / §7.3: "InvalidBatch : InvalidBatch : Field name not found : X. Batch will
                # not be retried." A BOM stays glued to the first name and lands here.
                raise invalid_batch(exc.message) from None
            if column.field.name in seen:
                # [U] wording: the same field twice (or Rel.Field beside its Id) is ambiguous.
                raise invalid_batch(f"Duplicate field name : {name}")
            seen.add(column.field.name)
            columns.append(column)
        plan = _Plan(columns=columns)
        for index, column in enumerate(columns):
            if column.field.name == "Id" and column.target is None:
                plan.id_index = index
            key = spec.external_id_field
            if (
                key is not None
                and column.target is None
                and column.field.name.lower() == key.lower()
            ):
                plan.key_index = index
                plan.key_field = column.field.name
            if column.field.type == "reference" and not (
                set(column.field.reference_to) <= _NON_LOCKING_TARGETS
            ):
                plan.parent_indexes.append(index)
        if spec.operation in ("delete", "hardDelete") and [h.lower() for h in header] != ["id"]:
            # [U] Salesforce's own behaviour with extra columns is unconfirmed (§4.9);
            # simple-salesforce refuses them with this text; we take that stricter reading.
            raise invalid_batch(f"The '{spec.operation}' batch must contain only 'Id'")
        plan.fast = (
            FastSaver.for_job(
                self.store,
                spec.object,
                spec.operation,
                columns,
                plan.key_index,
                plan.key_field,
                self._upsert_race_possible,
                self._row_locks_possible,
                plan.id_index,
            )
            if self.settings.fast_path
            else None
        )
        if spec.operation == "upsert" and plan.key_index is None:
            # [U] wording: the upsert key column must be in the file (§4.1).
            raise invalid_batch(
                f"External ID field {spec.external_id_field} was not found in the header row"
            )
        return plan

    async def _run_batches(self, job: Job, plan: _Plan, rows: Iterator[list[str] | BadRow]) -> None:
        settings = self.settings
        batch_no = 0
        pacing = _Pacing(time.monotonic())
        # At full speed a wave of batches is saved in a fraction of a second: the cyclic GC is
        # held off for all of it (rows read, saved, dropped), so no collection ever walks the
        # wave's 20,000 row lists. When paced, it is held off per chunk only.
        whole_wave = settings.rate <= 0
        while True:
            with _gc_paused(whole_wave):
                with _gc_paused():  # 10,000 new lists that all live until the wave is saved
                    wave = self._read_wave(rows, batch_no)
                if not wave:
                    return
                batch_no += len(wave)
                finished = await self._run_wave(job, plan, wave, pacing)
                del wave  # freed before the GC runs again
            if finished:
                return

    def _read_wave(
        self, rows: Iterator[list[str] | BadRow], batch_no: int
    ) -> list[tuple[int, list[list[str] | BadRow]]]:
        """The next ``parallel_batches`` batches of rows (fewer at the end of the file)."""
        settings = self.settings
        wave: list[tuple[int, list[list[str] | BadRow]]] = []
        for number in range(batch_no, batch_no + max(1, settings.parallel_batches)):
            batch = list(islice(rows, settings.batch_size))
            if not batch:
                break
            wave.append((number, batch))
        return wave

    async def _run_wave(
        self,
        job: Job,
        plan: _Plan,
        wave: list[tuple[int, list[list[str] | BadRow]]],
        pacing: _Pacing,
    ) -> bool:
        """Save a wave of batches chunk by chunk; True when the job stopped (aborted)."""
        settings = self.settings
        if self._batches_remaining() < len(wave):
            # §5.3 / §4.8: past the DailyBulkApiBatches allocation nothing more is processed
            # and no result is recorded. [U] wording.
            raise BulkFileError(
                "ExceededQuota : ExceededQuota : The daily limit of Bulk API batches "
                "(DailyBulkApiBatches) has been reached."
            )
        self._add_bulk_batches(len(wave))
        contention = settings.lock_contention or self._lock_contention()
        held = self._hold_parents(job, plan, wave) if contention else []
        try:
            for number, batch in wave:
                start = job.outcomes.reserve(len(batch))
                for offset in range(0, len(batch), settings.chunk_size):
                    chunk = batch[offset : offset + settings.chunk_size]
                    began = time.perf_counter()
                    with _gc_paused():
                        self._apply_chunk(job, plan, chunk, start + offset, (job.id, number))
                    job.active_s += time.perf_counter() - began
                    job.records_processed += len(chunk)
                    job.modified_at = self._clock()
                    pacing.records += len(chunk)
                    await self._pace(pacing.since, pacing.records)
                    if job.state is not JobState.IN_PROGRESS:
                        return True  # aborted: the remaining rows stay unprocessed
        finally:
            for parent in held:
                self._lock_holders.pop(parent, None)
        return False

    async def _pace(self, since: float, records: int) -> None:
        rate = self.settings.rate
        if rate > 0:
            due = since + records / rate - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
                return
        await asyncio.sleep(0)

    # ------------------------------------------------------------------ rows

    def _hold_parents(
        self, job: Job, plan: _Plan, wave: Sequence[tuple[int, Sequence[list[str] | BadRow]]]
    ) -> list[str]:
        """Register the parents every batch of the wave will lock; first come holds (§7.7)."""
        taken: list[str] = []
        holders = self._lock_holders
        for number, batch in wave:
            token = (job.id, number)
            for row in batch:
                if isinstance(row, BadRow):
                    continue
                for parent in self._row_parents(plan, row):
                    if parent not in holders:
                        holders[parent] = token
                        taken.append(parent)
        return taken

    def _row_parents(self, plan: _Plan, row: list[str]) -> list[str]:
        parents: list[str] = []
        for index in plan.parent_indexes:
            cell = row[index]
            if not cell or cell == "#N/A":
                continue
            column = plan.columns[index]
            target_field = column.target_field
            if column.target is not None and target_field is not None and target_field.name != "Id":
                matches = self.store.find(column.target, target_field.name, cell)
                if len(matches) == 1:
                    parents.append(matches[0])
                continue
            rid = normalize_id(cell)
            if rid is not None:
                parents.append(rid)
        return parents

    def _apply_chunk(
        self,
        job: Job,
        plan: _Plan,
        chunk: Sequence[list[str] | BadRow],
        base: int,
        token: tuple[str, int],
    ) -> None:
        """Save one chunk of rows (one transaction's worth, §4.10) and record each outcome."""
        outcomes = job.outcomes
        duplicates = _duplicate_keys(job.spec.operation, plan, chunk)
        holders = self._lock_holders
        contention = bool(holders)
        failures: list[tuple[int, SfError, str]] = []
        todo: list[tuple[int, list[str]]] = []
        usual = not duplicates and not contention and BadRow not in map(type, chunk)
        for i, row in enumerate(() if usual else chunk):
            if isinstance(row, BadRow):
                if row.unparsed:
                    job.upload_plain = False  # lines and rows no longer match one to one
                # [U] code for a row the CSV parser refused.
                failures.append((base + i, SfError(400, "INVALID_FIELD", row.message), ""))
                continue
            try:
                if duplicates:
                    _check_duplicate(plan, row, duplicates)
                if contention:
                    for parent in self._row_parents(plan, row):
                        holder = holders.get(parent)
                        if holder is not None and holder != token:
                            raise SfError(400, "UNABLE_TO_LOCK_ROW", _LOCK_MESSAGE.format(parent))
            except SfError as exc:
                failures.append((base + i, exc, _given_id(plan, row)))
                continue
            todo.append((base + i, row))
        if usual:
            # The usual chunk: nothing to sort out before saving (and no BadRow in it).
            rows = cast(Sequence[list[str]], chunk)
            todo = list(zip(range(base, base + len(rows)), rows, strict=True))
        else:
            rows = [row for _, row in todo]
        with self.store.frozen_clock():
            fast = plan.fast
            if fast is not None and todo:
                positions = range(base, base + len(rows)) if usual else [i for i, _ in todo]
                slow: list[tuple[int, list[str]]] = []
                for i, error in fast.save(rows, positions, outcomes):
                    index, row = todo[i]
                    if error is None:
                        slow.append((index, row))
                    else:
                        failures.append((index, error, _given_id(plan, row)))
                todo = slow
            for index, row in todo:
                try:
                    record_id, created = self._apply_row(job, plan, row)
                except SfError as exc:
                    failures.append((index, exc, _given_id(plan, row)))
                    continue
                outcomes.succeed(index, record_id, created)
        if job.spec.assignment_rule_id is not None:
            self._assign(job, base, len(chunk))
        locked = False
        for index, error, given in failures:
            err = _bulk_error(error)
            locked = locked or err.error_code == "UNABLE_TO_LOCK_ROW"
            outcomes.fail(
                index,
                format_sf_error(err.error_code, err.message, err.fields),
                normalize_id(given) if given else None,
            )
        if locked:
            # §4.4: ``retries`` counts save attempts retried because of lock contention; a chunk
            # with a locked row is retried before its rows are given up on.
            job.retries += self.settings.lock_retries
        job.records_failed += len(failures)

    def _assign(self, job: Job, base: int, count: int) -> None:
        """Run the job's assignment rule on the rows this chunk saved (§4.1 assignmentRuleId).

        Bulk runs assignment rules only when the job names one; the org's simulated Lead rule
        stands for whichever rule is named ([U] the id itself is not looked up).
        """
        owner = self._assignment_owner()
        if owner is None:
            return
        status, ids = job.outcomes.status, job.outcomes.ids
        saved = (RowOutcomes.CREATED, RowOutcomes.UPDATED)
        for index in range(base, base + count):
            record_id = ids[index]
            if status[index] in saved and record_id is not None:
                self.store.assign_owner(job.spec.object, record_id, owner)

    def _apply_row(self, job: Job, plan: _Plan, row: list[str]) -> tuple[str, bool]:
        store = self.store
        spec = job.spec
        operation = spec.operation
        obj = spec.object
        if operation in ("delete", "hardDelete"):
            rid = row[0]
            if not rid:
                raise SfError(400, "MISSING_ARGUMENT", "Id not specified", [])
            store.delete(obj, rid)
            normal = normalize_id(rid)
            return normal or rid, False
        values = store.csv_row_to_fields(plan.columns, row, creating=operation == "insert")
        if operation == "insert":
            return store.insert(obj, values), True
        if operation == "update":
            rid = row[plan.id_index] if plan.id_index is not None else ""
            if not rid:
                raise SfError(400, "MISSING_ARGUMENT", "Id not specified", [])
            values.pop("Id", None)
            store.update(obj, rid, values)
            normal = normalize_id(rid)
            return normal or rid, False
        # upsert
        assert plan.key_index is not None and plan.key_field is not None
        key = row[plan.key_index]
        values.pop(plan.key_field, None)
        if plan.key_field == "Id" and not key:
            return store.insert(obj, values), True
        if not key:
            raise SfError(400, "MISSING_ARGUMENT", f"{plan.key_field} not specified", [])
        return store.upsert(obj, plan.key_field, key, values)


# ---------------------------------------------------------------------- helpers


def _matches(job: Job, filters: dict[str, str]) -> bool:
    job_type = filters.get("jobType")
    if job_type is not None and job_type != "V2Ingest":
        return False
    mode = filters.get("concurrencyMode")
    return mode is None or mode == "Parallel"


@contextlib.contextmanager
def _gc_paused(hold: bool = True) -> Iterator[None]:
    """Hold the cyclic GC off (unless ``hold`` is false) for a chunk, or a whole wave at full speed.

    A chunk allocates thousands of container objects that die with it, and a wave's row lists
    live until the wave is saved; left alone they trigger collections that walk them again and
    again (and now and then everything else in the process), which costs a good part of the
    saving itself. Nothing here allocates cycles; whatever others allocate meanwhile is collected
    once the block ends. The GC is left alone when someone else already turned it off.
    """
    if not hold or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _given_id(plan: _Plan, row: list[str]) -> str:
    """The Id a row named (update/delete), reported as sf__Id of a failed row (§4.8)."""
    return row[plan.id_index] if plan.id_index is not None else ""


def _bulk_error(exc: SfError) -> SfError:
    """Record-level errors as Bulk reports them, where that differs from REST's status answer."""
    if exc.error_code == "NOT_FOUND":
        # A well-formed id of no record: REST answers 404, a bulk row INVALID_CROSS_REFERENCE_KEY
        # (§4.8's own example of sf__Error).
        return SfError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
    if exc.error_code == "MULTIPLE_CHOICES":
        # REST answers 300 (§2.6); per record the SOAP/Bulk code is DUPLICATE_EXTERNAL_ID. [U]
        return SfError(400, "DUPLICATE_EXTERNAL_ID", exc.message, exc.fields)
    return exc


def _duplicate_keys(operation: str, plan: _Plan, chunk: Sequence[list[str] | BadRow]) -> set[str]:
    """Keys given more than once in one chunk (one save call)."""
    if operation == "upsert":
        index = plan.key_index
    elif operation in ("update", "delete", "hardDelete"):
        index = plan.id_index if operation == "update" else 0
    else:
        return set()
    if index is None:
        return set()
    if BadRow not in map(type, chunk) and len(
        set(map(str.lower, map(itemgetter(index), cast(Sequence[list[str]], chunk))))
    ) == len(chunk):
        return set()  # the usual chunk: every key once (checked without a Python-level loop)
    seen: set[str] = set()
    dup: set[str] = set()
    for row in chunk:
        if isinstance(row, BadRow):
            continue
        key = row[index].lower()
        if not key:
            continue
        if key in seen:
            dup.add(key)
        seen.add(key)
    return dup


def _check_duplicate(plan: _Plan, row: list[str], duplicates: set[str]) -> None:
    # [U] Salesforce refuses an upsert call that names the same external id twice ("Duplicate
    # external id specified") and an update naming an id twice ("Duplicate id in list"). Which of
    # the rows fail is undocumented; we fail every one of them, the stricter reading.
    if plan.key_index is not None and plan.key_field != "Id":
        key = row[plan.key_index]
        if key.lower() in duplicates:
            raise SfError(400, "DUPLICATE_VALUE", f"Duplicate external id specified: {key}", [])
        return
    index = plan.id_index if plan.id_index is not None else 0
    rid = row[index]
    if rid.lower() in duplicates:
        raise SfError(400, "DUPLICATE_VALUE", f"Duplicate id in list: {rid}", [])


def _result_chunks(job: Job, kind: str, rows_per_chunk: int) -> Iterator[str]:
    """Regenerate a result file from the upload on disk and the compact outcomes."""
    path = job.upload_path
    header = job.header
    if path is None or job.upload_error is not None:
        # No rows were read: a result file is just its header (§4.8), or nothing when even the
        # header is unknown.
        yield write_rows([result_header(kind, header or [])]) if kind != "unprocessed" else ""
        return
    out = job.outcomes
    if header is not None and _nothing_of_kind(job, kind):
        # No row of this kind (the failed rows of a clean job, say): the header alone, without
        # reading the upload again. job.header is the header the rows were read with.
        if os.path.exists(path):
            yield write_rows([result_header(kind, header)])
        return
    try:
        stream = open_upload(path)
    except FileNotFoundError:
        return
    try:
        if (
            job.upload_plain
            and job.state is JobState.JOB_COMPLETE  # every line was read as one row
            and header is not None
            and _plain_header(stream, job, header)
        ):
            yield write_rows([result_header(kind, header)])
            yield from _plain_result_chunks(job, kind, rows_per_chunk, stream)
            return
        try:
            file_header, rows = iter_data_rows(stream, job.spec.delimiter)
        except BulkFileError:
            yield write_rows([result_header(kind, [])]) if kind != "unprocessed" else ""
            return
        width = len(file_header)
        yield write_rows([result_header(kind, file_header)])
        status, ids, errors = out.status, out.ids, out.errors
        total = len(status)
        buffer: list[list[str]] = []
        for index, row in enumerate(rows):
            code = status[index] if index < total else RowOutcomes.UNPROCESSED
            values = row.values if isinstance(row, BadRow) else row
            if len(values) != width:
                values = (list(values) + [""] * width)[:width]
            if kind == "successful":
                if code == RowOutcomes.CREATED:
                    buffer.append([ids[index] or "", "true", *values])
                elif code == RowOutcomes.UPDATED:
                    buffer.append([ids[index] or "", "false", *values])
            elif kind == "failed":
                if code == RowOutcomes.FAILED:
                    buffer.append([ids[index] or "", errors.get(index, ""), *values])
            elif code == RowOutcomes.UNPROCESSED:
                buffer.append(list(values))
            if len(buffer) >= rows_per_chunk:
                yield write_rows(buffer)
                buffer = []
        if buffer:
            yield write_rows(buffer)
    finally:
        stream.close()


def _nothing_of_kind(job: Job, kind: str) -> bool:
    """True when no row can be in the ``kind`` result file (known from the outcomes alone)."""
    status = job.outcomes.status
    if kind == "successful":
        return RowOutcomes.CREATED not in status and RowOutcomes.UPDATED not in status
    if kind == "failed":
        return RowOutcomes.FAILED not in status
    # Rows past the outcomes are unprocessed too, unless every row of the file was processed.
    return job.state is JobState.JOB_COMPLETE and RowOutcomes.UNPROCESSED not in status


def _plain_header(stream: IO[str], job: Job, header: list[str]) -> bool:
    """Read the header line of a plain upload; False (and back to the start) if it is not
    ``header`` as the CSV reader read it."""
    line = stream.readline()
    if line.rstrip("\r\n").split(job.spec.delimiter) == header:
        return True
    stream.seek(0)
    return False


def _plain_result_chunks(job: Job, kind: str, rows_per_chunk: int, lines: IO[str]) -> Iterator[str]:
    """The rows of a result file of a plain upload (no quote, no NUL: UploadScanner.plain), read
    line by line: each line is one row split at the delimiter, a blank one is skipped, a row of
    the wrong width is padded or cut, as ``_result_chunks`` does from the CSV reader's rows. The
    text is what ``write_rows`` writes (every value quoted, comma-delimited, LF)."""
    delimiter = job.spec.delimiter
    header = job.header or []
    width = len(header)
    out = job.outcomes
    status, ids, errors = out.status, out.ids, out.errors
    total = len(status)
    wanted = {
        "successful": (RowOutcomes.CREATED, RowOutcomes.UPDATED),
        "failed": (RowOutcomes.FAILED,),
        "unprocessed": (RowOutcomes.UNPROCESSED,),
    }[kind]
    buffer: list[str] = []
    index = -1
    for line in lines:
        body = line.rstrip("\r\n")  # the one line end (UploadScanner allows no other CR/LF)
        if not body:
            continue  # the CSV reader skips a blank line (no row)
        index += 1
        code = status[index] if index < total else RowOutcomes.UNPROCESSED
        if code not in wanted:
            continue
        if body.count(delimiter) == width - 1:
            values = '"' + body.replace(delimiter, '","') + '"'
        else:
            cells = (body.split(delimiter) + [""] * width)[:width]
            values = '"' + '","'.join(cells) + '"'
        if kind == "successful":
            created = "true" if code == RowOutcomes.CREATED else "false"
            buffer.append(f'"{ids[index] or ""}","{created}",{values}\n')
        elif kind == "failed":
            error = errors.get(index, "").replace('"', '""')
            # (an sf__Id is a normalized id: letters and digits only)
            buffer.append(f'"{ids[index] or ""}","{error}",{values}\n')
        else:
            buffer.append(values + "\n")
        if len(buffer) >= rows_per_chunk:
            yield "".join(buffer)
            buffer = []
    if buffer:
        yield "".join(buffer)
