"""The Bulk API 2.0 rail: one upsert job per object per batch, reconciled per record.

A batch: claim pending outcomes page by page (memory holds one small record per
outcome and its encoded CSV row, never the backlog), build the Task CSV (rows
ordered by parent Lead to reduce lock contention, §7.7) and the Lead CSV (one row
per Lead, the newest outcome's state plus sticky fields from all). For each job:
create -> record the job id in the spool (committed before any upload) -> one PUT
(≤100 MB, §4.2) -> UploadComplete -> poll with backoff (about 1 s up to 30 s) ->
read ``successfulResults/``, ``failedResults/`` and, when needed,
``unprocessedrecords/``, matching rows by key (order is not guaranteed, §4.8).
``JobComplete`` is not success (§7.1): every record needs its own result; a
record without one is retried. A job ``Failed`` for the whole file is a
configuration error, as is a record refused for one of its own (e.g. a Lead field the
integration user cannot update): the rail pauses and the records stay pending.

The batch's records are recorded in the spool with its first job; on restart
:meth:`BulkRail.recover` brings every unfinished job to a final state (aborting
``Open`` ones, polling running ones) and reconciles them together from their
result files (see there).

Per-record work is kept small (the hot path of a large backlog): Task cells that
depend only on the disposition/direction are computed once per kind, CSV lines are
``str`` from one C writer (encoded per upload chunk), result files are parsed by one
C reader per chunk, and cyclic GC is paused while a batch is built or reconciled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Container, Iterable, Iterator, Sequence
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.mapping import LeadNotFound, Mapping
from daemon.salesforce import (
    Backoff,
    ConfigurationError,
    Kind,
    RecordError,
    RetryableError,
    SalesforceClient,
    SalesforceError,
)
from daemon.salesforce.wire import (
    MAX_UPLOAD_BYTES,
    CsvLines,
    LiteralNullError,
    csv_value,
    iter_result_csv,
    iter_result_errors,
    utf8_len,
)
from spool import Claim, RecordRef, Spool, SpoolError, StoredClaim
from spool.record import Direction, Disposition, OutcomeFields

from ._leads import LeadLedger, LeadResolver, LruCache, SentLead, id_key
from ._rest import (
    LEAD_NOT_FOUND,
    Action,
    Ref,
    RestSender,
    Verdict,
    apply_verdicts,
    pause_reason,
    verdict_for,
)

__all__ = ["BulkRail", "BulkStats"]

log = structlog.get_logger("dispo_sync.rails.bulk")

# Job status polling: about 1 s, growing to 30 s (jobs take seconds to minutes).
DEFAULT_POLL = Backoff(initial=1.0, factor=1.5, cap=30.0, jitter=0.2)
TERMINAL = frozenset({"JobComplete", "Failed", "Aborted"})
OPEN_STATES = frozenset({"Open", "UploadComplete", "InProgress"})
_CHUNK = 1 << 20  # upload stream chunk size


@dataclass(slots=True)
class _Rec:
    """What we keep per outcome while its batch is out (small on purpose)."""

    ref: Ref
    ext_key: str
    lead_ref_key: str | None = None  # LeadRef.key of the outcome's Lead
    lead_key: str | None = None  # the key of its Lead row in a Lead job
    lead_job: int = -1  # index into the batch's lead jobs
    errors: list[RecordError] | None = None  # allocated on the first error only
    task_ok: bool = False
    lead_ok: bool = True
    resend: bool = False  # fixable at once (create-only field, missing WhoId): retry now

    def add_error(self, err: RecordError) -> None:
        if self.errors is None:
            self.errors = []
        self.errors.append(err)


@dataclass(slots=True)
class _LeadRow:
    key: str  # Id[:15] or external key value, as matched in result files
    lead_ref_key: str
    order: tuple[float, int] | None  # (ended_at, record_id) of the full state, None: sticky only
    fields: dict[str, Any]
    recs: list[_Rec]
    lead_id: str | None  # known Id (Id jobs; key upserts once their results are read)


@dataclass(slots=True)
class _Job:
    sobject: str
    operation: str
    key_column: str
    ext_field: str | None
    header: list[str]
    rows: list[tuple[str, str]]  # (sort key, CSV line)
    size: int
    job_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    results: dict[str, RecordError | None] = field(default_factory=dict)
    #: key -> the record's Id, for a Lead upsert by external key (its successful rows)
    ids: dict[str, str] = field(default_factory=dict)
    collected: bool = False  # results read in full


@dataclass(slots=True)
class BulkStats:
    batches: int = 0
    jobs: int = 0
    records: int = 0
    failed_jobs: int = 0
    resent_newer: int = 0


# Task fields whose value depends on nothing but these are computed once per
# (disposition, direction) instead of once per row.
_PER_KIND_INPUTS = frozenset({"disposition", "disposition_label", "direction", "call_type"})


def _none(o: OutcomeFields, agents: AbcMapping[str, str]) -> None:
    return None


class _TaskPlan:
    """The Task CSV row of an outcome, with the per-kind cells cached (the hot path).

    Columns: external key, the per-row fields, the Lead column, the per-kind fields.
    Create-only fields (TaskSubtype) are left empty for Tasks known to exist (an
    empty Bulk value is ignored on update, §4.9).
    """

    def __init__(self, m: Mapping) -> None:
        inputs = m.task_field_inputs()
        fns = m.task_value_fns()
        self._agents = m.agents
        self._ext_col = m.task_external_id
        self._per_row = [n for n, _ in fns if not inputs[n] <= _PER_KIND_INPUTS]
        self._per_kind = [n for n, _ in fns if inputs[n] <= _PER_KIND_INPUTS]
        by_name = dict(fns)
        # [include create-only fields?] -> the functions, with create-only ones blanked
        self._row_fns = {
            inc: [by_name[n] if inc or n not in m.create_only else _none for n in self._per_row]
            for inc in (False, True)
        }
        self._kind_fns = {
            inc: [by_name[n] if inc or n not in m.create_only else _none for n in self._per_kind]
            for inc in (False, True)
        }
        self._kind_cells: dict[tuple[Disposition, Direction, bool], list[str]] = {}

    def header(self, who_col: str) -> list[str]:
        return [self._ext_col, *self._per_row, who_col, *self._per_kind]

    def row(self, o: OutcomeFields, ext_key: str, who: str | None, new_task: bool) -> list[str]:
        """CSV cells (raises LiteralNullError for a text value that is exactly #N/A)."""
        kind = (o.disposition, o.direction, new_task)
        per_kind = self._kind_cells.get(kind)
        agents = self._agents
        if per_kind is None:
            per_kind = [csv_value(fn(o, agents)) for fn in self._kind_fns[new_task]]
            self._kind_cells[kind] = per_kind
        cells = [csv_value(ext_key)]
        cells += [csv_value(fn(o, agents)) for fn in self._row_fns[new_task]]
        cells.append(csv_value(who))
        cells += per_kind
        return cells


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while a batch is built or reconciled: it allocates ~10 objects per
    record, none in cycles (reference counting frees them), and every collection would
    walk all of them again (measured: ~17 % of the Bulk rail's CPU).

    On the way out the survivors are frozen (``gc.freeze``: set aside, not walked)
    instead of being left in the youngest generation, where the next collections would
    walk the whole batch twice more to promote it; :func:`_gc_thawed` gives them back
    to the collector when the batch is over."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


@contextlib.contextmanager
def _gc_thawed() -> Iterator[None]:
    """Return what :func:`_gc_paused` froze to the collector (oldest generation) at the
    end, so that any cyclic garbage among it is collected in the end."""
    try:
        yield
    finally:
        gc.unfreeze()


def _first(row: tuple[str, str]) -> str:
    return row[0]


class BulkRail:
    """Flushes the non-urgent backlog through Bulk API 2.0 ingest jobs."""

    def __init__(
        self,
        *,
        client: SalesforceClient,
        spool: Spool,
        mapping: Mapping,
        resolver: LeadResolver,
        ledger: LeadLedger,
        rest: RestSender,
        retry_backoff: Backoff,
        known_tasks: LruCache[str, bool],
        # Limits
        job_max_records: int = 50_000,
        max_upload_bytes: int = MAX_UPLOAD_BYTES - 5_000_000,
        claim_page: int = 5000,
        # Timeouts
        poll: Backoff = DEFAULT_POLL,
        lease_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._spool = spool
        self._m = mapping
        self._resolver = resolver
        self._ledger = ledger
        self._rest = rest
        self._retry = retry_backoff
        self._known = known_tasks
        self.job_max_records = job_max_records
        self.max_upload_bytes = max_upload_bytes
        self.claim_page = claim_page
        self._poll = poll
        self.lease_s = lease_s
        self._clock = clock
        self.stats = BulkStats()
        self.counts: dict[Action, int] = {}
        # Records of a batch whose job never got recorded (the spool refused the write), or
        # whose build failed and the spool refused their release: released as soon as the
        # spool takes it, at the latest by the next recover().
        self._orphans: list[RecordRef] = []
        # Why the last batch released records for a configuration error (see
        # take_pause_reason); None: it released none.
        self._pause_reason: str | None = None
        self._relook: set[str] = set()
        # When the batch being sent last took or extended its leases (see _keep_leases).
        self._leased_at = clock()
        # The batch being reconciled: Lead rows by key, for Id jobs (0) and key upserts (1).
        self._lead_rows: list[dict[str, _LeadRow]] = [{}, {}]
        # The ledger's stamp when the batch being sent started: states recorded with a
        # later one went out by REST while its jobs could run.
        self._ledger_mark = 0

    # ---------------------------------------------------------------- building
    async def _claim_batch(
        self,
    ) -> tuple[list[_Rec], list[_Job], list[_Job], list[StoredClaim]]:
        """Claim and build one batch (see :meth:`_build_batch`).

        A build that raises (a transient 5xx on the phone lookup, the spool failing, a
        cancel) gives every record it claimed back to pending at once: no job names them
        yet, so neither the batch's error handling nor :meth:`recover` would, and they
        would sit in flight for the whole lease. Records no longer in flight (dead-lettered
        as not found, a leftover already released) are skipped by the spool, so releasing
        every claim is safe. Kept as ``(record_id, rev)`` pairs, not the claims: a batch's
        50,000 claims with their payloads held to the end of the build cost ~40 MB of peak
        memory (``bench/bulk_throughput.py``); no other rail can hold these records before
        their lease ends.
        """
        claimed: list[tuple[int, int]] = []
        try:
            return await self._build_batch(claimed)
        except BaseException:
            await self._give_back(claimed)
            raise

    async def _give_back(self, refs: Sequence[RecordRef]) -> None:
        """Release the records of a batch no job names (yet), on its way out with an error;
        shielded, as apply_verdicts: a cancel must not strand them either. If the spool
        refuses, the next recover() releases them."""
        if not refs:
            return
        try:
            n = await asyncio.shield(self._spool.release(refs))
            log.info("bulk_records_released", records=n)
        except SpoolError:
            self._orphans.extend(refs)

    async def _build_batch(
        self, claimed: list[tuple[int, int]]
    ) -> tuple[list[_Rec], list[_Job], list[_Job], list[StoredClaim]]:
        """Claim pages until the batch is full; every claim is added to ``claimed`` at once,
        as its ``(record_id, rev)`` (the caller releases them if this raises)."""
        m = self._m
        lines = CsvLines()
        plan = _TaskPlan(m)
        rel_col = f"{m.lead_object}:Who.{m.lead_external_id}"
        # WhoId and Lead:Who.<key> set the same field: one header cannot carry both, so
        # Tasks whose Lead is named by Id and those named by external key go in two jobs.
        task_jobs = [
            _Job(
                m.task_object,
                "upsert",
                m.task_external_id,
                m.task_external_id,
                plan.header(who_col),
                [],
                0,
            )
            for who_col in ("WhoId", rel_col)
        ]
        for job in task_jobs:
            job.size = utf8_len(lines.line(job.header))
        task_bytes = task_jobs[0].size + task_jobs[1].size

        recs: list[_Rec] = []
        rest_claims: list[StoredClaim] = []  # records Bulk cannot express (#N/A, Task Id)
        # Lead rows by key: Id jobs (0) and external-key upsert jobs (1).
        lead_rows: list[dict[str, _LeadRow]] = [{}, {}]
        lead_cols = m.lead_columns()
        sticky_by_disposition = {d: m.sets_sticky(d) for d in Disposition}
        dead_letter_missing = m.lead_not_found is LeadNotFound.DEAD_LETTER
        known = self._known
        ledger = self._ledger
        resolver = self._resolver
        full_limit = self.job_max_records
        max_bytes = self.max_upload_bytes
        newest: dict[str, tuple[int, tuple[float, int]]] = {}
        # Task keys of this batch, casefolded, and the claims whose key one of them already
        # holds in another case (see below): released for the next batch once this one is
        # built (released now, the next page would claim them straight back).
        keys: set[str] = set()
        later: list[StoredClaim] = []
        while len(recs) < full_limit and task_bytes < max_bytes:
            want = min(self.claim_page, full_limit - len(recs))
            claims = await self._spool.claim_stored(
                "bulk", want, urgent=False, lease_s=self.lease_s
            )
            if not claims:
                break
            claimed.extend(c.pair for c in claims)
            # (a LeadRef is built only for a Lead named by phone: lead_key is its key)
            phone_refs = [
                ref
                for c in claims
                if c.lead_key is not None
                and c.lead_key.startswith("phone:")
                and (ref := c.outcome.lead) is not None
            ]
            phone_ids = await resolver.resolve(phone_refs, rail="bulk") if phone_refs else {}
            # Each Lead's newest outcome is asked once per batch, not once per page, unless
            # a claim of a later page is newer than the answer: it arrived after the
            # question (a small backlog claims new outcomes in the same batch), so the
            # Lead is asked again.
            ask = [
                k
                for c in claims
                if (k := c.lead_key) is not None
                and (
                    (hit := newest.get(k)) is None
                    or (hit[0] != c.record_id and hit[1] < (c.ord_ts, c.record_id))
                )
            ]
            if ask:
                newest.update(await self._spool.newest_per_lead(ask))
            leftover: list[StoredClaim] = []
            not_found: list[Verdict] = []
            for n, claim in enumerate(claims):
                if task_bytes >= max_bytes:
                    leftover = list(claims[n:])
                    break
                if claim.task_id is not None:
                    # Inserted before the mapping switched to upserts: the Task has no key
                    # yet, so an upsert job would make a second one; REST updates it by Id.
                    rest_claims.append(claim)
                    continue
                o = claim.outcome
                ext_key = o.external_key
                folded = ext_key.casefold()
                if folded in keys:
                    # "vici:ABC" and "vici:abc" are one key to a key field that is not
                    # case-sensitive (Salesforce's default for Unique text), and a job
                    # naming a key twice fails both rows with DUPLICATE_VALUE, in every
                    # batch that claims them together. In the next batch, the second
                    # updates the Task the first wrote, as the README says of such ids.
                    later.append(claim)
                    continue
                lead_key = claim.lead_key  # LeadRef.key of o.lead
                who_id: str | None = None
                rel: str | None = None
                lead_target: tuple[int, str, str | None] | None = None
                if lead_key is not None and not resolver.is_missing_key(lead_key):
                    ref_id, ref_ext, _ = o.lead_fields()
                    if ref_id is not None:
                        who_id = ref_id
                        lead_target = (0, ref_id[:15], ref_id)
                    elif ref_ext is not None:
                        rel = ref_ext
                        lead_target = (1, ref_ext, None)
                    else:
                        who_id = phone_ids.get(lead_key)
                        if who_id is not None:
                            lead_target = (0, who_id[:15], who_id)
                if lead_key is not None and lead_target is None and dead_letter_missing:
                    not_found.append(
                        Verdict(
                            Ref.of(claim),
                            Action.DEAD,
                            LEAD_NOT_FOUND,
                            f"no {m.lead_object} matches {lead_key}",
                        )
                    )
                    continue
                # Lead row first: whether this outcome carries the Lead's newest state.
                lead_update: dict[str, Any] = {}
                take_full = False
                lr: _LeadRow | None = None
                order: tuple[float, int] | None = None
                sticky = sticky_by_disposition[o.disposition]
                if lead_target is not None and lead_key is not None:
                    order = (claim.ord_ts, claim.record_id)
                    lr = lead_rows[lead_target[0]].get(lead_target[1])
                    is_newest = newest.get(lead_key, (claim.record_id,))[0] == claim.record_id
                    if is_newest:
                        if lead_key.startswith("id:"):
                            sent = ledger.get(lead_key)  # (the Lead's Id key: all namings)
                        else:
                            # Named by phone or key: a state sent under another naming of
                            # the Lead counts too, once its Id is known.
                            known_id = lead_target[2] or resolver.cached_key(lead_key)
                            sent = ledger.newest(lead_key, known_id)
                        if sent is not None and sent.order > order:
                            is_newest = False
                    take_full = is_newest and (lr is None or lr.order is None or order > lr.order)
                    if take_full or sticky:
                        lead_update = m.lead_update(o)
                try:
                    cells = plan.row(
                        o, ext_key, who_id if rel is None else rel, ext_key not in known
                    )
                    for v in lead_update.values():
                        csv_value(v)
                except LiteralNullError:
                    rest_claims.append(claim)
                    continue
                line = lines.line(cells)
                size = utf8_len(line)
                task_job = task_jobs[0 if rel is None else 1]
                task_job.rows.append((lead_key or "", line))
                task_job.size += size
                task_bytes += size
                keys.add(folded)
                rec = _Rec(Ref.of(claim), ext_key, lead_key)
                recs.append(rec)
                if lead_target is None or lead_key is None:
                    continue
                which, key, lead_id = lead_target
                rec.lead_key = key
                rec.lead_job = which
                rec.lead_ok = False
                if lr is None:
                    lr = _LeadRow(key, lead_key, None, {}, [], lead_id)
                    lead_rows[which][key] = lr
                lr.recs.append(rec)
                if take_full:
                    keep_sticky = {k: v for k, v in lr.fields.items() if k in m.sticky}
                    lr.fields = {**lead_update, **keep_sticky}
                    lr.order = order
                    lr.lead_ref_key = lead_key  # (the naming whose state the row carries)
                if lead_update and sticky:
                    lr.fields.update({k: v for k, v in lead_update.items() if k in m.sticky})
            if not_found:
                await apply_verdicts(self._spool, not_found, backoff=self._retry, rail="bulk")
            if leftover:
                await self._spool.release(leftover)
                break
        if later:
            log.info("bulk_key_case_later", records=len(later))
            await self._spool.release(later)
        lead_jobs: list[_Job] = []
        for which, rows in enumerate(lead_rows):
            key_col = "Id" if which == 0 else m.lead_external_id
            op = "update" if which == 0 else "upsert"
            hdr = [key_col, *lead_cols]
            job = _Job(m.lead_object, op, key_col, None if which == 0 else key_col, hdr, [], 0)
            job.size = utf8_len(lines.line(hdr))
            for lr in rows.values():
                if not lr.fields:
                    for rec in lr.recs:
                        rec.lead_ok = True
                    continue
                key_value = lr.lead_id if which == 0 else lr.key
                line = lines.line(
                    [key_value or "", *(csv_value(lr.fields.get(c)) for c in lead_cols)]
                )
                job.rows.append((lr.key, line))
                job.size += utf8_len(line)
            lead_jobs.append(job)
        self._lead_rows = lead_rows
        for job in task_jobs:
            job.rows.sort(key=_first)
        return recs, task_jobs, lead_jobs, rest_claims

    # ---------------------------------------------------------------- running
    async def flush_batch(self, stop: asyncio.Event) -> int:
        """Claim and send one batch; returns the number of outcomes it carried (0: nothing).

        Records refused for a configuration error are released (pending, attempt not
        counted): the caller pauses the rail on :meth:`take_pause_reason`."""
        with _gc_thawed():
            return await self._flush_batch(stop)

    def take_pause_reason(self) -> str | None:
        """The configuration error (``CODE: message``) a batch released records for since
        the last call, or None; cleared by the call. Sent again at once, they would fail
        the same way, job after job: the flusher pauses the rail as it pauses a REST rail
        on such a verdict. Kept when the batch raised afterwards: the flusher reads it
        either way."""
        reason, self._pause_reason = self._pause_reason, None
        return reason

    def _note_pause_reason(self, verdicts: Iterable[Verdict]) -> None:
        """Keep the first configuration error (a RELEASE verdict) for take_pause_reason."""
        if self._pause_reason is None:
            self._pause_reason = pause_reason(verdicts)

    async def _flush_batch(self, stop: asyncio.Event) -> int:
        self._leased_at = self._clock()  # (before the first claim: the sooner side)
        self._ledger_mark = self._ledger.stamp
        with _gc_paused():
            recs, task_jobs, lead_jobs, rest_claims = await self._claim_batch()
        if rest_claims:
            try:
                full = await self._spool.decode(rest_claims)
                verdicts = await self._rest.send(full, rail="collections")
            except BaseException:
                # (a configuration or auth error, the spool, a cancel) No job names this
                # batch's records yet: all go back to pending now, as a REST rail's do,
                # not after the whole lease.
                await self._give_back([*rest_claims, *(r.ref.pair for r in recs)])
                raise
            self._note_pause_reason(verdicts)
            await apply_verdicts(self._spool, verdicts, backoff=self._retry, rail="collections")
        if not recs:
            return len(rest_claims)
        claims = [r.ref.pair for r in recs]
        jobs = [j for j in (*task_jobs, *lead_jobs) if j.rows]
        started = self._clock()
        try:
            for n, job in enumerate(jobs):
                # The batch's records are recorded once, with its first job (recovery
                # reconciles every unfinished job together); that job is finished last.
                await self._start_job(job, claims if n == 0 else ())
            if not await self._finish_jobs(jobs, claims, stop):
                # Shutdown: the jobs are in the spool; the next start polls and reconciles them.
                log.info("bulk_checkpointed", jobs=[j.job_id for j in jobs])
                return len(recs)
        except ConfigurationError:
            # Paused (bad setup, or a job Failed on the file): records pending again,
            # attempt not counted; the batch's other jobs are closed in the spool.
            await self._spool.release(claims)
            await self._close_jobs(jobs)
            await self._resend_newest_after(recs, lead_jobs)
            raise
        except SalesforceError as exc:
            # Transport / server trouble in the middle of the cycle: retry the whole batch
            # later (upserts make the re-send harmless).
            log.warning("bulk_batch_retry", error=str(exc)[:300], records=len(recs))
            verdicts = [
                Verdict(r.ref, Action.RETRY, exc.error_code or type(exc).__name__, exc.message)
                for r in recs
            ]
            await apply_verdicts(self._spool, verdicts, backoff=self._retry, rail="bulk")
            await self._close_jobs(jobs)
            await self._resend_newest_after(recs, lead_jobs)
            return len(recs)
        except SpoolError:
            # The spool refused a write mid-cycle (disk full, I/O error). A batch whose
            # job is recorded is reconciled by recover() (the flusher runs it next); one
            # whose job is not would stay leased for the whole bulk lease: its jobs are
            # aborted and its records released (now, or by the next recover()).
            known = {j.sf_job_id for j in await self._spool.jobs()}
            if not any(j.job_id in known for j in jobs):
                for job in jobs:
                    if job.job_id is not None:
                        await self._abort_quietly(job.job_id, recorded=False)
                self._orphans.extend(claims)
                with contextlib.suppress(SpoolError):
                    await self._release_orphans()
            raise
        with _gc_paused():
            await self._reconcile(recs, task_jobs, lead_jobs, started)
        for job in reversed(jobs):
            assert job.job_id is not None
            await self._spool.finish_job(job.job_id, str(job.info.get("state")))
        self._lead_rows = [{}, {}]  # free the batch before the next one is built
        self.stats.batches += 1
        self.stats.records += len(recs)
        return len(recs)

    async def _finish_jobs(
        self, jobs: Sequence[_Job], claims: Sequence[tuple[int, int]], stop: asyncio.Event
    ) -> bool:
        """Poll the started jobs to the end and read their results; False when stopping.

        The jobs run in Salesforce whatever happens to our calls: a transient failure
        while polling or downloading (limit exhausted, 5xx, connection lost) is waited
        out with backoff, the same jobs kept, instead of sending the batch again.
        """
        delays = iter(self._poll)
        while True:
            try:
                await self._wait_jobs(jobs, claims, stop)
                if stop.is_set() and any(j.info.get("state") not in TERMINAL for j in jobs):
                    return False
                for job in jobs:
                    if not job.collected:
                        with _gc_paused():  # a result row is a few objects, none cyclic
                            await self._collect(job)
                return True
            except RetryableError as exc:
                delay = max(next(delays), exc.retry_after_s or 0.0)
                log.warning(
                    "bulk_poll_retry",
                    jobs=[j.job_id for j in jobs],
                    delay_s=round(delay, 2),
                    error=str(exc)[:300],
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return False
                await self._keep_leases(claims)

    async def _keep_leases(self, claims: Sequence[tuple[int, int]]) -> None:
        """Extend the batch's leases when a third of the lease has passed since it was last
        taken or extended. The jobs hold these records for as long as they run, whether
        Salesforce answers our polls or not: a lease run out during an outage would let
        another claim send them again while the jobs still might."""
        if self._clock() - self._leased_at > self.lease_s / 3:
            await self._spool.extend_lease(claims, self.lease_s)
            self._leased_at = self._clock()

    async def _start_job(self, job: _Job, claims: Sequence[tuple[int, int]]) -> None:
        info = await self._client.create_ingest_job(
            job.sobject, job.operation, external_id_field=job.ext_field
        )
        job.job_id = str(info["id"])
        job.info = info
        # Committed before the upload: a restart finds every job it started.
        await self._spool.record_job(job.job_id, job.sobject, job.operation, claims, state="Open")
        self.stats.jobs += 1
        header = CsvLines().line(job.header)
        rows = job.rows
        await self._client.upload_job_data(job.job_id, lambda: _stream(header, rows), size=job.size)
        job.info = await self._client.set_job_state(job.job_id, "UploadComplete")
        await self._spool.update_job(job.job_id, state="UploadComplete", rows=len(job.rows))
        log.info(
            "bulk_job_started",
            job_id=job.job_id,
            object=job.sobject,
            rows=len(job.rows),
            bytes=job.size,
        )

    async def _wait_jobs(
        self, jobs: Sequence[_Job], claims: Sequence[tuple[int, int]], stop: asyncio.Event
    ) -> None:
        delays = iter(self._poll)
        while not stop.is_set():
            pending = [j for j in jobs if j.info.get("state") not in TERMINAL]
            if not pending:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), next(delays))
            for job in pending:
                assert job.job_id is not None
                job.info = await self._client.job_info(job.job_id)
            await self._keep_leases(claims)

    async def _collect(self, job: _Job) -> None:
        """Read a finished job's result files into ``job.results`` (key -> None | error)."""
        assert job.job_id is not None
        state = job.info.get("state")
        await self._spool.update_job(
            job.job_id,
            state=state,
            processed=job.info.get("numberRecordsProcessed"),
            failed=job.info.get("numberRecordsFailed"),
        )
        if state == "Failed":
            self.stats.failed_jobs += 1
            message = str(job.info.get("errorMessage") or "job Failed")
            await self._spool.finish_job(job.job_id, "Failed")
            log.error(
                "bulk_job_failed", job_id=job.job_id, object=job.sobject, reason=message[:500]
            )
            raise ConfigurationError(f"Bulk job {job.job_id} ({job.sobject}) Failed: {message}")
        results = job.results
        results.clear()  # a download cut half way is read again in full
        job.ids.clear()
        lead_upsert = job.key_column != "Id" and job.sobject != self._m.task_object
        for which in ("successfulResults", "failedResults"):
            if which == "successfulResults" and lead_upsert:
                # A Lead upsert by external key: each row's Lead Id too (sf__Id), to compare
                # its state with those sent for the Lead under its Id or phone.
                async with self._client.job_results(job.job_id, which) as chunks:
                    async for rows in iter_result_csv(chunks, key_column=job.key_column):
                        for r in rows:
                            results[r.key] = r.error
                            if r.sf_id is not None and r.error is None:
                                job.ids[r.key] = r.sf_id
                continue
            async with self._client.job_results(job.job_id, which) as chunks:
                async for pairs in iter_result_errors(chunks, key_column=job.key_column):
                    if job.key_column == "Id":
                        results.update((key[:15], err) for key, err in pairs)
                    else:
                        results.update(pairs)
        if state == "Aborted" or len(results) < len(job.rows):
            unprocessed = RecordError("UNPROCESSED", "not processed by the job")
            async with self._client.job_results(job.job_id, "unprocessedrecords") as chunks:
                async for pairs in iter_result_errors(chunks, key_column=job.key_column):
                    for key, _ in pairs:
                        results.setdefault(
                            _id15(key) if job.key_column == "Id" else key, unprocessed
                        )
        job.collected = True

    async def _reconcile(
        self,
        recs: Sequence[_Rec],
        task_jobs: Sequence[_Job],
        lead_jobs: Sequence[_Job],
        started: float,
    ) -> None:
        m = self._m
        missing = RecordError(
            "NO_RESULT", "no result row for this record (job counted it as done?)"
        )
        verdicts: list[Verdict] = []
        resend_newer: list[tuple[str, SentLead]] = []
        self._relook.clear()  # phones looked up again (see _lead_not_found), this batch
        # A REST write of one of these Leads still in flight may have landed before this
        # job's row: wait for its answer (it is recorded in the ledger then) before asking
        # the ledger whether a newer state went out.
        # Each row's Lead Id too: a REST write names the Lead by its Id under every naming.
        # (A Lead upsert by external key answers with the Lead's Id: ``ids``.)
        ext_ids = lead_jobs[1].ids
        for lr in self._lead_rows[1].values():
            lr.lead_id = ext_ids.get(lr.key)
        sent_keys: list[str] = []
        for rows in self._lead_rows:
            for lr in rows.values():
                sent_keys.append(lr.lead_ref_key)
                if lr.lead_id is not None and (k := id_key(lr.lead_id)) != lr.lead_ref_key:
                    sent_keys.append(k)
        async with self._rest.settled(sent_keys):
            for which, rows in enumerate(self._lead_rows):
                job = lead_jobs[which]
                for lr in rows.values():
                    if not lr.fields:
                        continue
                    err = job.results.get(lr.key, missing)
                    # An upsert by external key of a Lead that does not exist tries to create
                    # one and fails on its required fields: that Lead is missing.
                    gone = err is not None and (
                        _lead_missing(err) or (which == 1 and err.code == "REQUIRED_FIELD_MISSING")
                    )
                    # Refused for good, a row is the fault of the outcome whose state it
                    # carries: the others (only their sticky fields, DoNotCall, or nothing)
                    # go again at once, on their own (that outcome is then dead).
                    full_id = lr.order[1] if lr.order is not None else None
                    shared = err is not None and err.kind is Kind.PERMANENT
                    for rec in lr.recs:
                        if err is None:
                            rec.lead_ok = True
                        elif gone:
                            self._lead_not_found(rec, err)
                        elif shared and full_id is not None and rec.ref.record_id != full_id:
                            rec.resend = True
                        else:
                            rec.add_error(err)
                    if err is not None:
                        continue
                    lead_id = lr.lead_id
                    if which == 1 and lead_id is not None:
                        self._resolver.remember(lr.lead_ref_key, lead_id)
                    if lr.order is None:
                        continue
                    sent = self._ledger.newest(lr.lead_ref_key, lead_id)
                    if sent is not None and sent.order > lr.order:
                        # A newer state went out (by REST, or by this batch's other Lead
                        # job under another naming of the Lead) after this row was built:
                        # the job may have overwritten it, so put it back.
                        resend_newer.append((sent.lead_key or lr.lead_ref_key, sent))
                    elif lead_id is not None:
                        state = SentLead(lr.order, lead_id, dict(lr.fields), lr.lead_ref_key)
                        self._ledger.record(lr.lead_ref_key, state)
                        if (
                            sent is not None
                            and sent.stamp > self._ledger_mark
                            and sent.order != lr.order
                        ) or (which == 1 and self._landed_by_id(lead_id, lead_jobs[0])):
                            # An older state of the Lead went out while the job ran: by REST
                            # under another naming (which did not know this newer one was
                            # under way), or by this batch's Id job (named by Id or phone);
                            # either may have landed after this row, so it is put back.
                            resend_newer.append((lr.lead_ref_key, state))
        task_results = {**task_jobs[0].results, **task_jobs[1].results}
        acks: list[Ref] = []  # the common case, without a Verdict each
        known = self._known
        for rec in recs:
            err = task_results.get(rec.ext_key, missing)
            if err is None:
                rec.task_ok = True
                known.put(rec.ext_key, True)
                if rec.errors is None and not rec.resend:
                    acks.append(rec.ref)
                    continue
            elif err.code == "INVALID_FIELD_FOR_INSERT_UPDATE" and (
                set(err.fields) & m.create_only or any(f in err.message for f in m.create_only)
            ):
                # The Task exists: next time it goes without create-only fields.
                self._known.put(rec.ext_key, True)
                rec.resend = True
            elif _lead_missing(err) and rec.lead_ref_key is not None:
                self._lead_not_found(rec, err)
                if m.lead_not_found is LeadNotFound.TASK_WITHOUT_WHO:
                    rec.resend = True
            else:
                rec.add_error(err)
            verdict = verdict_for(rec.ref, rec.errors or ())
            if verdict.action is Action.ACK and rec.resend:
                verdict = Verdict(rec.ref, Action.RETRY, "RESEND", "re-sent at once", 0.0)
            verdicts.append(verdict)
        if resend_newer:
            resend_newer = _newest_per_lead(resend_newer)
            # Before the batch is acked: a Lead queued again (the re-send failed) is then
            # pending before this batch stops being in flight, so "nothing left to send"
            # is never seen in between.
            self.stats.resent_newer += len(resend_newer)
            log.info("bulk_newer_state_resent", leads=len(resend_newer))
            await self._resend(resend_newer)
        self._note_pause_reason(verdicts)
        counts = await apply_verdicts(
            self._spool, verdicts, backoff=self._retry, rail="bulk", acks=acks
        )
        for action, n in counts.items():
            self.counts[action] = self.counts.get(action, 0) + n
        log.info("bulk_batch_done", records=len(recs), **{k.value: v for k, v in counts.items()})

    def _landed_by_id(self, lead_id: str, job: _Job) -> bool:
        """True when this batch's Lead Id job wrote a full state of this Lead."""
        row = self._lead_rows[0].get(lead_id[:15])
        return (
            row is not None
            and row.order is not None
            and bool(row.fields)
            and row.key in job.results
            and job.results[row.key] is None
        )

    def _lead_not_found(self, rec: _Rec, err: RecordError) -> None:
        key = rec.lead_ref_key
        if key is not None and (
            key in self._relook
            or (key.startswith("phone:") and self._resolver.drop_cached_key(key))
        ):
            # A Lead found by phone, its Id from the cache: it may have been merged into
            # another Lead since, which has the phone now. Sent again at once, looked up
            # afresh (once: a lookup that finds nothing marks the phone missing).
            self._relook.add(key)
            rec.lead_ok = True
            rec.resend = True
            return
        if key is not None:
            self._resolver.mark_missing_key(key)
        rec.lead_ok = True
        if self._m.lead_not_found is LeadNotFound.DEAD_LETTER:
            rec.add_error(RecordError(LEAD_NOT_FOUND, err.message))

    async def _resend(self, items: Sequence[tuple[str, SentLead]]) -> None:
        """Put back the newer state these Leads had (one call per 200). A Lead whose
        update fails, or whose answer is lost, has its newest outcome queued in the spool
        again instead: it then goes out by the rails, retried like any other."""
        m = self._m
        failed: list[str] = []
        for start in range(0, len(items), 200):
            chunk = items[start : start + 200]
            records = [{"Id": s.lead_id, **s.fields} for _, s in chunk]
            try:
                results = await self._client.update_collection(
                    m.lead_object,
                    records,
                    rail="collections",
                    headers={"Sforce-Auto-Assign": "FALSE"},
                )
            except SalesforceError as exc:
                log.warning("bulk_newer_resend_failed", error=str(exc)[:300], leads=len(chunk))
                failed.extend(key for key, _ in chunk)
                continue
            refused = [
                (key, r) for (key, _), r in zip(chunk, results, strict=True) if not r.success
            ]
            if refused:
                # One line per call, not per Lead (a locked org refuses a whole chunk).
                codes = Counter(r.error.code if r.error else "NO_RESULT" for _, r in refused)
                first = refused[0][1].error
                log.warning(
                    "bulk_newer_resend_failed",
                    leads=len(refused),
                    codes=dict(codes),
                    first_lead=refused[0][0],
                    error=f"{first.code}: {first.message}"[:300] if first else "no result",
                )
            failed.extend(key for key, _ in refused)
        if failed:
            await self._resend_newest(failed, ())

    async def _resend_newest_after(self, recs: Sequence[_Rec], lead_jobs: Sequence[_Job]) -> None:
        """A batch given up after its Lead jobs were started: they may have landed."""
        if any(j.job_id is not None for j in lead_jobs):
            await self._resend_sent_to_other_namings()
            keys = {r.lead_ref_key for r in recs if r.lead_ref_key is not None}
            await self._resend_newest(keys, {r.ref.record_id for r in recs})

    async def _resend_sent_to_other_namings(self) -> None:
        """The batch's Lead rows whose Lead had a newer state sent under another naming (by
        Id, key or phone; the same naming is left to :meth:`_resend_newest`): that state is
        put back, as :meth:`_reconcile` does for a finished job."""
        found: list[tuple[str, SentLead]] = []
        for rows in self._lead_rows:
            for lr in rows.values():
                if lr.order is None or not lr.fields:
                    continue
                # (a key upsert's row: its Id only if cached, its results unread)
                lead_id = lr.lead_id or self._resolver.cached_key(lr.lead_ref_key)
                sent = self._ledger.newest(lr.lead_ref_key, lead_id)
                if sent is not None and sent.order > lr.order and sent.lead_key != lr.lead_ref_key:
                    found.append((sent.lead_key or lr.lead_ref_key, sent))
        if found:
            items = _newest_per_lead(found)
            self.stats.resent_newer += len(items)
            log.info("bulk_newer_state_resent", leads=len(items))
            await self._resend(items)

    async def _resend_newest(self, lead_keys: Iterable[str], carried: Container[int]) -> None:
        """Lead jobs not reconciled by ``_reconcile`` (a batch given up, a restart) may have
        landed after a newer outcome of their Lead went out by REST, putting the older state
        back; the ledger that would re-send it does not see them. Each such Lead's newest
        outcome goes out again if it was already sent or is being sent (pending ones go
        anyway) and is not one of the ``carried`` records (their own rows carried it)."""
        keys = sorted(set(lead_keys))
        if not keys:
            return
        newest = await self._spool.newest_per_lead(keys)
        again = sorted({rid for rid, _ in newest.values() if rid not in carried})
        if again and (n := await self._spool.resend(again)):
            log.info("bulk_newest_lead_state_resent", records=n)

    async def _close_jobs(self, jobs: Sequence[_Job]) -> None:
        """A batch given up: abort its unfinished jobs, mark every job finished in the spool."""
        for job in reversed(jobs):
            if job.job_id is None:
                continue
            state = job.info.get("state")
            if state in TERMINAL:
                await self._spool.finish_job(job.job_id, str(state))
            else:
                await self._abort_quietly(job.job_id)

    async def _release_orphans(self) -> None:
        if self._orphans:
            await self._spool.release(self._orphans)
            log.info("bulk_records_released", records=len(self._orphans))
            self._orphans = []

    async def _abort_quietly(self, job_id: str, *, recorded: bool = True) -> None:
        state = "Aborted"
        try:
            await self._client.set_job_state(job_id, "Aborted")
        except SalesforceError as exc:
            log.warning("bulk_abort_failed", job_id=job_id, error=str(exc)[:300])
            state = "Abandoned"
        # Finished either way: its records were re-queued with the batch, so nothing is
        # left to reconcile (left open, it would count as in flight for ever).
        if recorded:
            await self._spool.finish_job(job_id, state)

    # ---------------------------------------------------------------- restart
    async def recover(self, stop: asyncio.Event) -> int:
        """Jobs left by a previous run, in whatever state they were left; returns how many.

        - ``Open``: aborted (nothing of it was processed: its one upload may not have
          landed); its records are re-queued.
        - ``UploadComplete`` / ``InProgress``: polled (backing off) until they finish.
        - ``JobComplete``: reconciled per record from its result files. A record whose
          Task succeeded and whose Lead row succeeded (or that has no Lead) is done; a
          record refused for good is dead-lettered; every other one is re-queued.
        - ``Failed`` / ``Aborted`` / unknown to Salesforce (404): records re-queued.

        Re-queued records are sent again by the normal rails: safe, every write is an
        upsert (or an update of the newest Lead state). All jobs of one batch carry the
        same records, so they are reconciled together.
        """
        await self._release_orphans()
        rows = [j for j in await self._spool.jobs() if not j.finished]
        if not rows:
            return 0
        m = self._m
        states: dict[str, str] = {}
        untouched: set[str] = set()  # jobs Salesforce processed nothing of
        for row in rows:
            state = await self._terminal_state(row.sf_job_id, stop, untouched)
            if state is None:  # stopping: the next start picks them up again
                return len(rows)
            states[row.sf_job_id] = state
        task_results: dict[str, RecordError | None] = {}
        lead_results: dict[str, RecordError | None] = {}
        for row in rows:
            if states[row.sf_job_id] != "JobComplete":
                continue
            is_task = row.object == m.task_object
            if is_task and not m.upserts_tasks:
                # A job of before the mapping lost its Task key: its Task rows cannot be
                # matched now. Its records are re-queued and looked up by CallObject.
                continue
            if is_task:
                key_col = m.task_external_id
            else:
                key_col = "Id" if row.operation == "update" else m.lead_external_id
            into = task_results if is_task else lead_results
            for which in ("successfulResults", "failedResults"):
                async with self._client.job_results(row.sf_job_id, which) as chunks:
                    async for pairs in iter_result_errors(chunks, key_column=key_col):
                        for key, err in pairs:
                            into[_id15(key) if key_col == "Id" else key] = err
        verdicts: list[Verdict] = []
        seen: set[int] = set()
        lead_keys: set[str] = set()
        for row in rows:
            async for page in self._spool.iter_job_records(row.sf_job_id):
                for claim in page:
                    if claim.record_id in seen:
                        continue
                    seen.add(claim.record_id)
                    if claim.lead_key is not None:
                        lead_keys.add(claim.lead_key)
                    verdicts.append(self._recovered_verdict(claim, task_results, lead_results))
        if any(row.object != m.task_object and row.sf_job_id not in untouched for row in rows):
            # A Lead job that may have written rows (completed, or Failed or Aborted part
            # way): the in-process guard against a late Lead job (the ledger, see
            # _reconcile) died with the previous process. Queued before the carried
            # records are acked, so the spool never shows "nothing left" in between
            # (drain() and the campaigns read that as finished).
            await self._resend_newest(lead_keys, seen)
        counts = await apply_verdicts(self._spool, verdicts, backoff=self._retry, rail="bulk")
        for row in rows:
            await self._spool.finish_job(row.sf_job_id, states[row.sf_job_id])
            log.info("bulk_job_recovered", job_id=row.sf_job_id, state=states[row.sf_job_id])
        log.info(
            "bulk_recovery_done",
            jobs=len(rows),
            done=counts.get(Action.ACK, 0),
            requeued=counts.get(Action.RELEASE, 0),
            dead=counts.get(Action.DEAD, 0),
        )
        return len(rows)

    async def _terminal_state(
        self, job_id: str, stop: asyncio.Event, untouched: set[str]
    ) -> str | None:
        """Bring a recovered job to a final state (abort it if Open); None when stopping.
        A job Salesforce processed nothing of (unknown to it, or Open) joins ``untouched``."""
        try:
            info = await self._client.job_info(job_id)
        except SalesforceError as exc:
            if exc.status_code != 404:
                raise
            log.warning("bulk_job_unknown", job_id=job_id)
            untouched.add(job_id)
            return "Aborted"
        state = str(info.get("state"))
        if state == "Open":
            await self._client.set_job_state(job_id, "Aborted")
            untouched.add(job_id)
            return "Aborted"
        delays = iter(self._poll)
        while state not in TERMINAL:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), next(delays))
            if stop.is_set():
                return None
            state = str((await self._client.job_info(job_id)).get("state"))
        return state

    def _recovered_verdict(
        self,
        claim: Claim,
        task_results: dict[str, RecordError | None],
        lead_results: dict[str, RecordError | None],
    ) -> Verdict:
        o = claim.outcome
        missing = RecordError("UNPROCESSED", "no result")
        err = task_results.get(o.external_key, missing)
        if err is not None:
            if err.kind is Kind.PERMANENT and err is not missing:
                return Verdict(claim, Action.DEAD, err.code, err.message)
            return Verdict(claim, Action.RELEASE)
        ref = o.lead
        if ref is None:
            return Verdict(claim, Action.ACK)
        # Only a Lead row seen to succeed counts (a phone-named Lead's Id is not known
        # here, and a Lead job may not have been created before the crash): else re-send.
        key = ref.id[:15] if ref.id is not None else ref.external_key
        if key is not None and key in lead_results and lead_results[key] is None:
            return Verdict(claim, Action.ACK)
        return Verdict(claim, Action.RELEASE)


def _newest_per_lead(items: Iterable[tuple[str, SentLead]]) -> list[tuple[str, SentLead]]:
    """One ``(lead key, state)`` per Lead, its newest state: a Lead named two ways (by Id,
    key or phone) may come once per naming."""
    out: dict[str, tuple[str, SentLead]] = {}
    for key, state in items:
        have = out.get(id_key(state.lead_id))
        if have is None or state.order > have[1].order:
            out[id_key(state.lead_id)] = (key, state)
    return list(out.values())


def _id15(key: str) -> str:
    return key[:15]


def _lead_missing(err: RecordError) -> bool:
    if err.code in ("ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"):
        return True
    # A relationship column whose parent is missing (§4.9): "Foreign key external ID ... not found"
    return (
        err.code == "INVALID_FIELD"
        and "not found" in err.message.lower()
        and "foreign key" in err.message.lower()
    )


async def _stream(header: str, rows: Sequence[tuple[str, str]]) -> AsyncIterator[bytes]:
    """The CSV body in ~1 MB chunks, encoded a chunk at a time."""
    buf = [header]
    size = len(header)
    for _, line in rows:
        buf.append(line)
        size += len(line)
        if size >= _CHUNK:
            yield "".join(buf).encode("utf-8")
            buf, size = [], 0
            await asyncio.sleep(0)
    if buf:
        yield "".join(buf).encode("utf-8")
