"""The flusher: owns the rails' loops, the router, quota reads, pauses and metrics.

``Rails.run(stop)`` runs until ``stop`` is set; ``Rails.drain()`` runs until the
spool has nothing left to send (tests and benchmarks await it instead of sleeping).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.mapping import Mapping
from daemon.salesforce import (
    AuthError,
    Backoff,
    ConfigurationError,
    QuotaState,
    RetryableError,
    SalesforceClient,
    SalesforceError,
    TlsUntrustedError,
)
from spool import Claim, Spool, SpoolError

from ._leads import LeadLedger, LeadResolver, LruCache
from ._rest import KNOWN_TASKS, Action, RestSender, Verdict, apply_verdicts, pause_reason
from .bulk import DEFAULT_POLL, BulkRail
from .router import Route, Via, route

__all__ = ["EventHook", "Rails", "RailsStatus"]

log = structlog.get_logger("dispo_sync.rails")

# (event name, fields): "routed", "sent", "paused", "resumed", "quota", ...
EventHook = Callable[[str, dict[str, Any]], None]

DEFAULT_RETRY = Backoff(initial=2.0, factor=2.0, cap=900.0, jitter=0.5)
# Trouble outside a send (spool busy, Salesforce unreachable while polling).
_LOOP_BACKOFF = Backoff(initial=0.5, factor=2.0, cap=30.0, jitter=0.5)
# Urgent outcomes per live send: one sObject Collections call (§3.2).
_LIVE_BATCH = 200
# Spool state: how this spool's Tasks were last written ("insert" or "upsert").
_TASK_WRITES = "task_writes"
# How often (at most) the /limits loop re-evaluates when its next read is due.
_LIMITS_TICK_S = 5.0


@dataclass(frozen=True, slots=True)
class RailsStatus:
    """What /readyz and STATUS= show."""

    paused: dict[str, str]
    quota: dict[str, Any]
    route: str
    sent: dict[str, dict[str, int]]
    #: The mapping checked against the org's describe at start (and after a reload):
    #: unknown fields, wrong types, missing picklist values, read-only fields.
    mapping_problems: tuple[str, ...] = ()


class Rails:
    """Live, collections and Bulk rails over one spool and one Salesforce client.

    Urgency is the spool's (``live`` outcomes and its ``urgent_dispositions``); the
    router decides the rail from quota and backlog.
    """

    def __init__(
        self,
        *,
        spool: Spool,
        client: SalesforceClient,
        mapping: Mapping,
        bulk_interval_s: float = 60.0,
        bulk_max_records: int = 10_000,
        bulk_min_records: int = 2_000,
        bulk_job_max_records: int = 50_000,
        live_concurrency: int = 4,
        live_linger_s: float = 0.0,
        nested_collections: bool = True,
        on_event: EventHook | None = None,
        retry_backoff: Backoff = DEFAULT_RETRY,
        # Timeouts
        idle_poll_s: float = 0.05,
        limits_interval_s: float = 300.0,
        config_recheck_s: float = 60.0,
        bulk_poll: Backoff = DEFAULT_POLL,
        bulk_lease_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.client = client
        self.mapping = mapping
        self.quota = client.quota
        self.bulk_interval_s = bulk_interval_s
        self.bulk_max_records = bulk_max_records
        self.bulk_min_records = bulk_min_records
        self.live_concurrency = live_concurrency
        self.live_linger_s = live_linger_s
        self.idle_poll_s = idle_poll_s
        self.limits_interval_s = limits_interval_s
        self.config_recheck_s = config_recheck_s
        self._retry = retry_backoff
        self._on_event = on_event
        self._clock = clock
        # One event per waiter, each cleared *before* that loop looks for work, so a
        # wake() that lands while the loop is busy is never lost.
        self._wake_live = asyncio.Event()
        self._wake_batch = asyncio.Event()
        self._progress = asyncio.Event()
        self.paused: dict[str, str] = {}
        self._paused_at: dict[str, float] = {}
        self.sent: dict[str, dict[str, int]] = {}
        self._route: Route | None = None
        self._last_bulk = clock()
        self._burst = False
        self._recovered = False
        self._reconcile_due = False
        self._mapping_checked = False
        self.mapping_problems: tuple[
            str, ...
        ] = ()  # recovery needed now, even with nothing pending
        self._use_task_writes(mapping)
        # How Tasks are written ("insert" or "upsert"), once the spool knows it.
        self._task_writes: str | None = None
        self._task_writes_lock = asyncio.Lock()
        known: LruCache[str, bool] = LruCache(KNOWN_TASKS)
        self.resolver = LeadResolver(client, mapping, clock=clock)
        self.ledger = LeadLedger()
        self.rest = RestSender(
            client=client,
            spool=spool,
            mapping=mapping,
            resolver=self.resolver,
            ledger=self.ledger,
            nested_collections=nested_collections,
            known_tasks=known,
        )
        self.bulk = BulkRail(
            client=client,
            spool=spool,
            mapping=mapping,
            resolver=self.resolver,
            ledger=self.ledger,
            rest=self.rest,
            retry_backoff=retry_backoff,
            known_tasks=known,
            job_max_records=bulk_job_max_records,
            poll=bulk_poll,
            lease_s=bulk_lease_s,
            clock=clock,
        )

    # ------------------------------------------------------------------ public
    def wake(self) -> None:
        """New work was committed: look now instead of at the next poll."""
        self._wake_live.set()
        self._wake_batch.set()

    def set_mapping(self, mapping: Mapping) -> None:
        """Use a new field mapping from the next send on (in-flight batches finish as they are)."""
        self._install(mapping)
        self._mapping_checked = False  # against describe again, at the next batch turn
        log.info("mapping_replaced", source=mapping.source)

    def _install(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self._use_task_writes(mapping)
        self.rest._mapping = mapping
        self.bulk._m = mapping
        self.resolver._mapping = mapping

    def status(self) -> RailsStatus:
        return RailsStatus(
            paused=dict(self.paused),
            quota=self.quota.snapshot(),
            route=self._route.reason if self._route else "starting",
            sent={k: dict(v) for k, v in self.sent.items()},
            mapping_problems=self.mapping_problems,
        )

    @property
    def ready(self) -> bool:
        return not self.paused and self.quota.state() is not QuotaState.EXHAUSTED

    async def run(self, stop: asyncio.Event) -> None:
        """Recover jobs from a previous run, then flush until ``stop`` is set."""
        # Claims of a process that died (a crash) come back now, not when leases expire.
        released = await self.spool.release_orphans()
        if released:
            log.info("rails_released_orphans", records=released)
        await self._start(stop)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._live_loop(stop), name="rails-live")
            tg.create_task(self._batch_loop(stop), name="rails-batch")
            tg.create_task(self._limits_loop(stop), name="rails-limits")

    async def drain(self, *, timeout_s: float | None = None) -> None:
        """Run until nothing is left to send (pending and in flight both zero), then return.

        Bulk and collections flush at once (no interval wait). Dead letters do not
        count. Raises TimeoutError after ``timeout_s``, or ConfigurationError if a rail
        paused with records still pending.
        """
        stop = asyncio.Event()
        self._burst = True
        stuck: str | None = None
        try:
            async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tg:
                tg.create_task(self.run(stop), name="rails-run")
                while True:
                    stats = await self.spool.stats()
                    # Not before the previous run's jobs are recovered: recovery may queue
                    # records again (a Lead's newest state after a late Bulk Lead job).
                    if stats.pending == 0 and stats.inflight == 0 and self._recovered:
                        break
                    if self.paused and stats.inflight == 0:
                        stuck = "; ".join(f"{k}: {v}" for k, v in self.paused.items())
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._progress.wait(), self.idle_poll_s)
                    self._progress.clear()
                stop.set()
        finally:
            self._burst = False
        if stuck is not None:
            raise ConfigurationError(f"rails paused with records pending: {stuck}")

    # ------------------------------------------------------------------ loops
    async def _start(self, stop: asyncio.Event) -> None:
        for delay in self._retry:
            try:
                await self.client.limits()
                if not self._mapping_checked:
                    await self._check_mapping()
                await self._recover(stop)
                return
            except (ConfigurationError, AuthError) as exc:
                # E.g. the token endpoint refuses our credentials: every rail stops with
                # one clear line (rail_paused ... fix: ...) and rechecks now and then.
                self._pause("all", str(exc))
                return
            except RetryableError as exc:
                reason = str(exc)[:200]
                if isinstance(exc, TlsUntrustedError):
                    # Retrying cannot heal this by itself: say what to fix, loudly.
                    log.error(
                        "salesforce_tls_untrusted",
                        delay_s=round(delay, 2),
                        error=reason,
                        fix="set [salesforce] ca_file to the CA bundle that signs the org's "
                        "certificate (or fix the proxy that intercepts TLS)",
                    )
                else:
                    log.info("rails_start_retry", delay_s=round(delay, 2), error=reason)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return

    async def _check_mapping(self) -> None:
        """Check the mapping against describe (Task and Lead); every problem in one line.

        Problems do not stop the rails by themselves: a write they break fails at
        Salesforce and pauses its rail (configuration error) or dead-letters the record.
        A describe that cannot be read now is tried again at the next batch turn.
        """
        m = self.mapping
        try:
            describes = {
                name: await self.client.describe(name) for name in (m.task_object, m.lead_object)
            }
        except RetryableError as exc:
            log.info("mapping_check_postponed", error=str(exc)[:200])
            return
        except AuthError:
            raise
        except SalesforceError as exc:  # e.g. no access to describe: say so, carry on
            describes = {}
            self.mapping_problems = (f"describe failed: {exc}",)
        else:
            self.mapping_problems = tuple(m.check_against_describe(describes))
            for note in m.notes_against_describe(describes):
                log.warning("mapping_note", source=m.source, note=note)
            # Text of unbounded templates is cut to its field's length from now on (a
            # longer value would dead-letter the whole outcome); not if a reload replaced
            # the mapping during the describe calls: that one is checked next.
            if self.mapping is m:
                self._install(m.cut_to_fit(describes))
        self._mapping_checked = True
        if self.mapping_problems:
            log.error(
                "mapping_problems",
                source=m.source,
                count=len(self.mapping_problems),
                problems="; ".join(self.mapping_problems)[:2000],
            )
            self._event("mapping_problems", {"problems": list(self.mapping_problems)})
        else:
            log.info("mapping_checked", source=m.source, objects=sorted(describes))

    async def _recover(self, stop: asyncio.Event) -> None:
        """Bulk jobs of a previous run (once per process, retried until it succeeds)."""
        if not self._recovered:
            await self.bulk.recover(stop)
            self._recovered = not stop.is_set()
            self._reconcile_due = not self._recovered

    def _use_task_writes(self, mapping: Mapping) -> None:
        """Tasks inserted (no Task key): a claim must survive a power cut (see
        ``Spool.durable_claims``). The spool hears of a change before the next claim
        (:meth:`_settle_task_writes`)."""
        self.spool.durable_claims = not mapping.upserts_tasks

    async def _settle_task_writes(self) -> None:
        """Before the first claim under a mapping: when Tasks were inserted from this spool
        (no Task key) and are upserted by key now, mark the records whose Task an insert
        may have created unanswered, so the first send of each looks it up by CallObject
        instead of upserting a second Task (see ``Spool.suspect_unkeyed_tasks``). The
        spool keeps the mode (state ``task_writes``) across restarts."""

        def current() -> str:
            return "upsert" if self.mapping.upserts_tasks else "insert"

        if self._task_writes == current():
            return
        async with self._task_writes_lock:
            # Again if the mapping changed meanwhile (set_mapping during the awaits).
            while (mode := current()) != self._task_writes:
                await self._tell_task_writes(mode)
                self._task_writes = mode

    async def _tell_task_writes(self, mode: str) -> None:
        before = await self.spool.get_state(_TASK_WRITES)
        if mode == "upsert" and before != "upsert":
            # None: a spool from before the mode was kept; Task Ids say it inserted.
            n = await self.spool.suspect_unkeyed_tasks(only_if_inserted=before is None)
            if n:
                log.warning(
                    "task_key_switch_lookups",
                    records=n,
                    note="Tasks were inserted before the Task external ID field was "
                    "mapped: these records' Tasks are looked up by CallObject once, "
                    "before their first upsert",
                )
        if before != mode:
            await self.spool.set_state(_TASK_WRITES, mode)

    def _pause(self, rail: str, reason: str) -> None:
        if self.paused.get(rail) != reason:
            log.error(
                "rail_paused", rail=rail, reason=reason[:500], recheck_s=self.config_recheck_s
            )
            self._event("paused", {"rail": rail, "reason": reason})
        self.paused[rail] = reason
        self._paused_at[rail] = self._clock()
        self._progress.set()  # drain() notices at once

    def _is_paused(self, rail: str) -> bool:
        for name in (rail, "all"):
            since = self._paused_at.get(name)
            if since is None:
                continue
            if self._clock() - since >= self.config_recheck_s:
                # Recheck: try again; a still-broken setup pauses again at once.
                log.info("rail_recheck", rail=name)
                self.paused.pop(name, None)
                self._paused_at.pop(name, None)
                self._event("resumed", {"rail": name})
                continue
            return True
        return False

    def _event(self, name: str, fields: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(name, fields)

    def _count(self, rail: str, counts: dict[Action, int]) -> None:
        per = self.sent.setdefault(rail, {})
        for action, n in counts.items():
            per[action.value] = per.get(action.value, 0) + n
        self._event("sent", {"rail": rail, **{a.value: n for a, n in counts.items()}})

    async def _wait(
        self, stop: asyncio.Event, delay: float, wake: asyncio.Event | None = None
    ) -> None:
        """Sleep ``delay`` unless ``stop`` (or ``wake``) is set first."""
        waits = [asyncio.ensure_future(stop.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _paused_rails(self) -> frozenset[str]:
        if self._is_paused("all"):
            return frozenset({"live", "collections", "bulk"})
        return frozenset(r for r in ("live", "collections", "bulk") if self._is_paused(r))

    def _urgent_via(self) -> Via:
        """The live loop's view, fresh on every turn (quota headers update it per call)."""
        return route(
            quota=self.quota.state(),
            backlog=0,
            bulk_due=False,
            bulk_min_records=self.bulk_min_records,
            paused=self._paused_rails(),
        ).urgent

    def _decide(self, backlog: int) -> Route:
        now = self._clock()
        due = (
            self._burst
            or backlog >= self.bulk_max_records
            or now - self._last_bulk >= self.bulk_interval_s
        )
        paused = self._paused_rails()
        decision = route(
            quota=self.quota.state(),
            backlog=backlog,
            bulk_due=due,
            bulk_min_records=self.bulk_min_records,
            paused=paused,
            bulk_allowed=self.mapping.upserts_tasks,
        )
        if decision != self._route:
            log.info(
                "route",
                urgent=decision.urgent.value,
                other=decision.other.value,
                reason=decision.reason,
            )
            self._event(
                "routed",
                {
                    "urgent": decision.urgent.value,
                    "other": decision.other.value,
                    "reason": decision.reason,
                },
            )
            self._route = decision
        return decision

    async def _send_rest(self, claims: list[Claim], rail: str) -> None:
        try:
            verdicts = await self.rest.send(claims, rail=rail)
        except (ConfigurationError, AuthError) as exc:
            self._pause("all" if isinstance(exc, AuthError) else rail, str(exc))
            try:
                await self.spool.release(claims)
            except SpoolError as spool_exc:
                # Their leases expire and they come back then; the rails go on.
                log.warning("rails_spool_trouble", rail=rail, error=str(spool_exc)[:300])
            return
        except SalesforceError as exc:  # defensive: send() turns the rest into verdicts
            verdicts = [Verdict(c, Action.RETRY, exc.error_code, exc.message) for c in claims]
        except SpoolError as exc:
            # Could not read newest-per-lead: the leases expire and the records come back.
            log.warning("rails_spool_trouble", rail=rail, error=str(exc)[:300])
            return
        if (reason := pause_reason(verdicts)) is not None:
            self._pause(rail, reason)
        try:
            counts = await apply_verdicts(self.spool, verdicts, backoff=self._retry, rail=rail)
        except SpoolError as exc:
            # Sent but not recorded: the leases expire and the upserts are re-sent, harmlessly.
            log.warning("rails_spool_trouble", rail=rail, error=str(exc)[:300])
            return
        self._count(rail, counts)
        self._progress.set()

    async def _live_loop(self, stop: asyncio.Event) -> None:
        """Urgent outcomes: claim as soon as a slot is free; one -> composite, many -> batch."""
        slots = asyncio.Semaphore(self.live_concurrency)
        trouble: Iterator[float] | None = None
        async with asyncio.TaskGroup() as tg:
            while not stop.is_set():
                if self._urgent_via() is not Via.LIVE:
                    await self._wait(stop, self.idle_poll_s, self._wake_live)
                    continue
                await slots.acquire()
                self._wake_live.clear()
                try:
                    await self._settle_task_writes()
                    claims = await self.spool.claim("live", _LIVE_BATCH, urgent=True)
                    trouble = None
                except SpoolError as exc:
                    slots.release()
                    trouble = trouble or iter(_LOOP_BACKOFF)
                    await self._trouble(stop, "live", exc, next(trouble))
                    continue
                except BaseException:
                    slots.release()
                    raise
                if not claims:
                    slots.release()
                    await self._wait(stop, self.idle_poll_s, self._wake_live)
                    continue
                if self.live_linger_s > 0 and len(claims) < _LIVE_BATCH:
                    claims += await self._linger(stop, _LIVE_BATCH - len(claims))

                async def send(batch: list[Claim] = claims) -> None:
                    try:
                        await self._send_rest(batch, "live")
                    finally:
                        slots.release()

                tg.create_task(send())

    async def _linger(self, stop: asyncio.Event, room: int) -> list[Claim]:
        """Wait ``live_linger_s`` for more urgent outcomes to share the call (one
        Collections call instead of a composite each: fewer API calls for a burst, at the
        cost of that much latency). What is claimed already goes out whatever happens."""
        await self._wait(stop, self.live_linger_s)
        try:
            return await self.spool.claim("live", room, urgent=True)
        except SpoolError as exc:
            log.warning("rails_spool_trouble", rail="live", error=str(exc)[:300])
            return []

    async def _trouble(
        self, stop: asyncio.Event, loop: str, exc: BaseException, delay: float
    ) -> None:
        log.warning(
            "rails_loop_retry",
            loop=loop,
            delay_s=round(delay, 3),
            error="".join(traceback.format_exception_only(exc)).strip()[:300],
        )
        await self._wait(stop, delay)

    async def _batch_loop(self, stop: asyncio.Event) -> None:
        """Non-urgent work (and urgent work when degraded): collections or Bulk."""
        trouble: Iterator[float] | None = None
        while not stop.is_set():
            self._wake_batch.clear()
            try:
                worked = await self._batch_step(stop)
                trouble = None
            except (SpoolError, SalesforceError) as exc:
                # Trouble outside a send (spool busy, /limits or job polling failing).
                # A bulk batch cut short this way (e.g. the disk full while its job's
                # state was recorded) left its jobs unfinished in the spool and its
                # records leased for the whole bulk lease: reconcile them as a restart
                # would, before the next batch (and even when nothing new is pending).
                self._recovered = False
                self._reconcile_due = True
                trouble = trouble or iter(_LOOP_BACKOFF)
                await self._trouble(stop, "batch", exc, next(trouble))
                continue
            if not worked:
                await self._wait(
                    stop,
                    self.idle_poll_s if self._burst else min(1.0, self.bulk_interval_s),
                    self._wake_batch,
                )

    async def _batch_step(self, stop: asyncio.Event) -> bool:
        await self._settle_task_writes()
        stats = await self.spool.stats()
        decision = self._decide(stats.pending)
        if not self._mapping_checked and not self._is_paused("all"):
            await self._check_mapping()
        if not self._recovered and (decision.other is not Via.WAIT or self._reconcile_due):
            # Start-up recovery did not run (e.g. paused on auth): before any new job.
            try:
                await self._recover(stop)
            except (ConfigurationError, AuthError) as exc:
                self._pause("all" if isinstance(exc, AuthError) else "bulk", str(exc))
                return False
        worked = False
        if decision.urgent is Via.COLLECTIONS:
            claims = await self.spool.claim("collections", 200, urgent=True)
            if claims:
                await self._send_rest(claims, "collections")
                worked = True
        if decision.other is Via.COLLECTIONS:
            claims = await self.spool.claim("collections", 200, urgent=False)
            if claims:
                await self._send_rest(claims, "collections")
                worked = True
            else:
                self._last_bulk = self._clock()
        elif decision.other is Via.BULK:
            try:
                n = await self.bulk.flush_batch(stop)
            except (ConfigurationError, AuthError) as exc:
                self._pause("all" if isinstance(exc, AuthError) else "bulk", str(exc))
                n = 0
            finally:
                # Records refused for a configuration error of their own (e.g. a Lead field
                # the user cannot update) were released, attempt not counted: pause as the
                # REST rails do, or Bulk sends them again at once, job after job. Read
                # even when the batch raised afterwards; a pause for what it raised stays.
                reason = self.bulk.take_pause_reason()
                if reason is not None and not self.paused.keys() & {"bulk", "all"}:
                    self._pause("bulk", reason)
            if n:
                worked = True
                self.sent["bulk"] = {a.value: k for a, k in self.bulk.counts.items()}
                self._progress.set()
                self._event("sent", {"rail": "bulk", "records": n})
            else:
                self._last_bulk = self._clock()
        return worked

    async def _limits_loop(self, stop: asyncio.Event) -> None:
        """Re-read /limits every few minutes (and sooner while quota is exhausted).

        The due time is re-evaluated every few seconds while waiting: quota found
        exhausted in the middle of a long wait is rechecked a fifth of the interval after
        the last read, not at the end of that wait (nothing else is sent meanwhile, so
        nothing else would notice that the allocation came back).
        """
        last = self._clock()
        while not stop.is_set():
            exhausted = self.quota.state() is QuotaState.EXHAUSTED
            interval = self.limits_interval_s / (5 if exhausted else 1)
            left = last + interval - self._clock()
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), min(left, _LIMITS_TICK_S, self.limits_interval_s / 25)
                    )
                continue
            last = self._clock()
            try:
                await self.client.limits()
            except SalesforceError as exc:
                log.info("limits_read_failed", error=str(exc)[:200])
            self._event("quota", self.quota.snapshot())
