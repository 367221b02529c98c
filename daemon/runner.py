"""``dispo-sync run``: one TaskGroup owning the spool, adapters, rails and HTTP server.

Lifecycle (STYLE habit 7):

1. open the spool; build and start every adapter (bound / connected); start
   the health server; build the rails. Then ``READY=1``.
2. serve: adapters, the rails flusher, the health server, the watchdog pings
   and the status loop all run as tasks of one :class:`asyncio.TaskGroup`.
3. SIGTERM / SIGINT only set the stop event. Then, in order: ``STOPPING=1``;
   adapters stop intake (webhooks answer 503 with Retry-After); the rails are
   told to stop (they finish in-flight REST calls and leave bulk jobs recorded
   in the spool for the next start); all of it within
   ``[daemon] shutdown_timeout_s`` (below the unit's TimeoutStopSec), after
   which what is left is cancelled; the spool is closed last, which flushes it.
   A second SIGTERM/SIGINT skips the wait. Exit code 0.
4. SIGHUP asks the rails to reload the mapping file; if they cannot, the log
   says so and nothing changes.

A task that fails takes the daemon down with exit code 1 (systemd restarts
it): a half-working bridge that silently stops sending is worse. A configuration
problem found while starting (the ``[mapping] file``, ``[salesforce] ca_file``:
:class:`~daemon.settings.SettingsError` from the rails factory) ends it with 78
before ``READY=1``, one ``invalid configuration`` line per problem: a restart
cannot fix it, and the unit does not restart on 78.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from daemon.admin import QUOTA_STATE_KEY
from daemon.cli import EXIT_CONFIG
from daemon.http import HealthServer, ReadinessCheck
from daemon.metrics import Metrics
from daemon.notify import Notifier, watchdog_loop
from daemon.settings import Settings, SettingsError

__all__ = ["QUOTA_STATE_KEY", "Daemon", "RailsHandle", "event_loop_factory", "run_daemon"]

log = structlog.get_logger("daemon.runner")

# How long a successful spool write keeps /readyz's "spool writable" fresh.
_SPOOL_PROBE_TTL_S = 5.0
# A scrape or probe waits this long for the spool's stats (a read on its own connection);
# past it, the gauges keep their previous values rather than hold up the answer.
_STATS_TIMEOUT_S = 2.0


class RailsHandle(Protocol):
    """What the daemon needs from the Salesforce side (built by :mod:`daemon.wiring`)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set; then finish in-flight calls and return."""

    def readiness(self) -> Sequence[ReadinessCheck]:
        """Salesforce reachable and authenticated; no rail paused."""

    def quota(self) -> dict[str, Any] | None:
        """Last quota reading: at least ``used`` and ``max`` (None when unknown)."""

    def reload_mapping(self) -> str:
        """Re-read the mapping file; return a summary. Raise ValueError if invalid."""


RailsFactory = Callable[[Settings, Any, Metrics], Awaitable[RailsHandle | None]]


@dataclass
class _ShutdownState:
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    force: asyncio.Event = field(default_factory=asyncio.Event)

    def on_stop_signal(self, signame: str) -> None:
        if self.stop.is_set():
            log.warning("second stop signal: not waiting for in-flight work", signal=signame)
            self.force.set()
        else:
            log.info("stop requested", signal=signame)
        self.stop.set()


class Daemon:
    """The running service. ``await Daemon(settings).run()`` returns the exit code."""

    def __init__(
        self,
        settings: Settings,
        *,
        notifier: Notifier | None = None,
        rails_factory: RailsFactory | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.settings = settings
        self.notifier = notifier if notifier is not None else Notifier.from_environ()
        self.metrics = Metrics()
        self._rails_factory = rails_factory if rails_factory is not None else _default_rails
        self._install_signals = install_signal_handlers
        self.state = _ShutdownState()
        self.spool: Any = None
        # The spool as adapters and rails write to it (its last refusal, for /readyz).
        self._intake: Any = None
        self.adapters: list[Any] = []
        self.rails: RailsHandle | None = None
        self.health: HealthServer | None = None
        self.started = asyncio.Event()  # READY=1 was sent (tests wait on it)
        self._spool_ok_at = 0.0
        self._quota_state = "ok"
        self._spool_error = ""

    # ----------------------------------------------------------------- public

    def request_stop(self) -> None:
        self.state.on_stop_signal("request")

    def request_reload(self) -> None:
        """SIGHUP: reload the mapping now (a small file read), or once started."""
        if self.started.is_set() and not self.state.stop.is_set():
            self._reload()
        else:
            log.info("reload requested before the service was ready: ignored")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if self._install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.state.on_stop_signal, sig.name)
                installed.append(sig)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            installed.append(signal.SIGHUP)
        try:
            return await self._run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            self.notifier.close()

    # --------------------------------------------------------------- internals

    async def _run(self) -> int:
        from spool import open_spool  # the daemon's only spool entry point

        s = self.settings
        started_at = time.monotonic()
        code = 1
        try:
            async with open_spool(
                s.spool.path,
                synchronous=s.spool.synchronous,
                max_pending=s.spool.max_pending,
                max_bytes=s.spool.max_bytes or None,
                urgent_dispositions=frozenset(str(d) for d in s.rails.live_dispositions),
                retention_s=s.spool.retention_days * 86400,
                lease_s=s.spool.lease_s,
            ) as spool:
                self.spool = spool
                log.info("spool open", path=str(s.spool.path))
                code = await self._serve(spool, started_at)
        except* SettingsError as group:
            problems = [
                p for e in group.exceptions if isinstance(e, SettingsError) for p in e.problems
            ]
            for problem in problems:
                log.error("invalid configuration", problem=str(problem))
            # `systemctl status` shows the first one next to the failed unit.
            self.notifier.status(f"invalid configuration: {problems[0] if problems else '?'}")
            code = EXIT_CONFIG
        except* Exception as group:
            for exc in group.exceptions:
                # Task failures were logged with their traceback by _guard.
                log.error("dispo-sync stopped on an error", error=f"{type(exc).__name__}: {exc}")
            self.notifier.stopping()
        finally:
            log.info("spool closed", path=str(s.spool.path))
        return code

    async def _serve(self, raw_spool: Any, started_at: float) -> int:
        from daemon.wiring import CountingSpool

        s = self.settings
        spool = CountingSpool(raw_spool, self.metrics)
        self._intake = spool
        self.rails = await self._rails_factory(s, spool, self.metrics)
        if self.rails is None:
            log.warning(
                "no Salesforce rail in this build: outcomes are stored in the spool "
                "but NOT sent to Salesforce",
            )
        else:
            # A stored outcome wakes the rails at once instead of at their next poll.
            spool.on_stored = getattr(self.rails, "wake", None)

        self.adapters = _build_adapters(list(s.adapter), spool, default_tz=s.daemon.default_tz)
        if not self.adapters:
            log.warning("no [[adapter]] configured: no call outcome will be received")
        started: list[Any] = []
        try:
            for adapter in self.adapters:
                await adapter.start()
                started.append(adapter)
                log.info("adapter started", adapter=adapter.name)
            self.health = HealthServer(
                host=s.http.host,
                port=s.http.port,
                metrics=self.metrics,
                readiness=self._readiness,
                before_scrape=self._refresh_metrics,
            )
            await self.health.start()
        except BaseException:
            # E.g. a port already in use: undo what was started, then fail the start.
            for adapter in reversed(started):
                with contextlib.suppress(Exception):
                    await adapter.stop()
            raise

        async with asyncio.TaskGroup() as tg:
            adapter_tasks = [
                tg.create_task(_guard(f"adapter {a.name}", a.run()), name=f"adapter:{a.name}")
                for a in self.adapters
            ]
            rails_stop = asyncio.Event()
            rails_task = (
                tg.create_task(_guard("rails", self.rails.run(rails_stop)), name="rails")
                if self.rails is not None
                else None
            )
            tg.create_task(_guard("health server", self.health.serve()), name="http")
            service_stop = asyncio.Event()
            tg.create_task(
                _guard("watchdog", watchdog_loop(self.notifier, service_stop)), name="watchdog"
            )
            tg.create_task(_guard("status", self._status_loop(service_stop)), name="status")

            status = await self._status_text()
            self.notifier.ready(status)
            self.started.set()
            log.info(
                "dispo-sync ready",
                adapters=len(self.adapters),
                http=f"{s.http.host}:{self.health.port}",
                startup_s=round(time.monotonic() - started_at, 2),
            )

            # A failing task makes the TaskGroup cancel this body; the stop event
            # covers the orderly way out.
            await self.state.stop.wait()
            await self._shutdown(adapter_tasks, rails_stop, rails_task, service_stop)
        return 0

    async def _shutdown(
        self,
        adapter_tasks: list[asyncio.Task[None]],
        rails_stop: asyncio.Event,
        rails_task: asyncio.Task[None] | None,
        service_stop: asyncio.Event,
    ) -> None:
        s = self.settings
        t0 = time.monotonic()
        deadline = t0 + s.daemon.shutdown_timeout_s
        self.notifier.stopping()
        log.info(
            "stopping: intake closed, finishing in-flight work",
            timeout_s=s.daemon.shutdown_timeout_s,
        )
        # 1. intake: adapters refuse new outcomes (503 + Retry-After) from now on.
        for adapter in self.adapters:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await adapter.stop()
            except TimeoutError:
                log.warning("adapter did not stop in time", adapter=adapter.name)
        # 2. rails: finish in-flight REST calls; bulk jobs stay recorded in the spool.
        rails_stop.set()
        pending = [t for t in [*adapter_tasks, rails_task] if t is not None and not t.done()]
        await _wait_all(pending, self.state.force, deadline - time.monotonic())
        left = [t for t in pending if not t.done()]
        for task in left:
            log.warning("cancelled at the shutdown deadline", task=task.get_name())
            task.cancel()
        # 3. the rest: health server, watchdog, status, reload.
        service_stop.set()
        if self.health is not None:
            await self.health.stop()
        log.info("stopped", shutdown_s=round(time.monotonic() - t0, 2))

    # ------------------------------------------------------------ background

    async def _status_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.daemon.status_interval_s
        while not stop.is_set():
            try:
                async with asyncio.timeout(interval):
                    await stop.wait()
                    return
            except TimeoutError:
                pass
            text = await self._status_text()
            self.notifier.status(text)

    async def _status_text(self) -> str:
        """``STATUS=`` line: pending count, oldest pending age, quota headroom."""
        parts: list[str] = []
        try:
            stats = await self.spool.stats()
            self._update_spool_metrics(stats)
            pending = _get(stats, "pending", 0)
            oldest = _get(stats, "oldest_pending_age_s", None)
            parts.append(f"{pending} pending")
            parts.append(f"oldest {_age(oldest)}" if oldest is not None else "none waiting")
        except Exception as exc:  # the status line must not take the daemon down
            parts.append(f"spool unreadable ({type(exc).__name__})")
        quota = await self._quota()
        if quota and quota.get("max"):
            used, maximum = int(quota["used"]), int(quota["max"])
            headroom = 100.0 * (maximum - used) / maximum
            parts.append(f"API quota {used}/{maximum} ({headroom:.0f}% left)")
        else:
            parts.append("API quota unknown")
        if self.rails is None:
            parts.append("NOT SENDING (no Salesforce rail)")
        return ", ".join(parts)

    async def _quota(self) -> dict[str, Any] | None:
        quota = self.rails.quota() if self.rails is not None else None
        state = str(quota.get("state", "ok")) if quota else "ok"
        if state != self._quota_state:
            fields = (
                {"state": state, "used": quota.get("used"), "max": quota.get("max")}
                if quota
                else {}
            )
            if state == "ok":
                log.info("API quota back to normal", **fields)
            elif state == "low":
                log.warning(
                    "API quota low: urgent outcomes go out in batches, the rest waits", **fields
                )
            else:
                log.error("API quota exhausted: nothing is sent until it recovers", **fields)
            self._quota_state = state
        if quota and quota.get("max"):
            self.metrics.quota(int(quota["used"]), int(quota["max"]))
            record = {"used": quota["used"], "max": quota["max"], "at": time.time()}
            with contextlib.suppress(Exception):
                await self.spool.set_state(QUOTA_STATE_KEY, json.dumps(record))
        return quota

    def _reload(self) -> None:
        self.notifier.reloading()
        path = self.settings.mapping.file
        try:
            if self.rails is None:
                log.warning(
                    "reload requested but there is no Salesforce rail in this build: nothing "
                    "to reload",
                )
                return
            summary = self.rails.reload_mapping()
            log.info("mapping reloaded", file=str(path) if path else "(built-in)", summary=summary)
        except (ValueError, OSError) as exc:
            log.error(
                "mapping reload failed; keeping the previous mapping",
                file=str(path) if path else "(built-in)",
                error=str(exc),
            )
        finally:
            self.notifier.ready()

    # -------------------------------------------------------------- probes

    async def _readiness(self) -> Sequence[ReadinessCheck]:
        # One read of the spool's stats serves the intake check and the spool gauges (a
        # /metrics scrape runs these checks too, so its gauges are this same snapshot).
        stats = await self._spool_stats()
        if stats is not None:
            self._update_spool_metrics(stats)
        checks = [await self._spool_check(), self._intake_check(stats)]
        if self.rails is None:
            checks.append(
                ReadinessCheck("salesforce", False, "no Salesforce rail in this build: not sending")
            )
        else:
            checks.extend(self.rails.readiness())
        for adapter in self.adapters:
            h = adapter.health()
            state = str(getattr(h.state, "value", h.state))
            checks.append(ReadinessCheck(f"adapter {h.name}", bool(h.up), state))
        return checks

    async def _spool_check(self) -> ReadinessCheck:
        now = time.monotonic()
        if now - self._spool_ok_at > _SPOOL_PROBE_TTL_S:
            try:
                async with asyncio.timeout(2.0):
                    await self.spool.set_state("probe", json.dumps({"at": time.time()}))
                self._spool_ok_at = now
                self._spool_error = ""
            except Exception as exc:
                self._spool_error = f"{type(exc).__name__}: {exc}"
        if self._spool_error:
            return ReadinessCheck("spool writable", False, self._spool_error)
        return ReadinessCheck("spool writable", True, str(self.settings.spool.path))

    def _intake_check(self, stats: Any) -> ReadinessCheck:
        """Whether the spool takes new outcomes, or is full and has the dialers retry.

        ``max_pending`` is read from the stats (unsent = pending + in flight), so it shows
        before any dialer is refused. A full ``max_bytes`` or disk only shows as a refusal
        (the stats' file size counts free pages a purge left, which new records reuse);
        it lasts until a put succeeds, or the file is below ``max_bytes`` again.
        """
        name = "spool accepting outcomes"
        limit = self.settings.spool.max_pending
        unsent = None if stats is None else stats.pending + stats.inflight
        if unsent is not None and unsent >= limit:
            return ReadinessCheck(
                name,
                False,
                f"full: {unsent} unsent records, [spool] max_pending = {limit}; "
                "dialers are told to retry (503) until Salesforce takes some",
            )
        refusal = getattr(self._intake, "refusal", None)
        if refusal is not None and not self._refusal_over(refusal, stats):
            return ReadinessCheck(name, False, f"full: {refusal}; dialers are told to retry (503)")
        if unsent is None:
            return ReadinessCheck(name, True, "no refusal (spool stats unreadable)")
        return ReadinessCheck(name, True, f"{unsent} unsent, max_pending = {limit}")

    def _refusal_over(self, refusal: Any, stats: Any) -> bool:
        """Whether the stats show the cause of the last refusal gone (no put since)."""
        if stats is None:
            return False
        if refusal.reason == "max_pending":
            return True  # the caller found the unsent records under max_pending
        if refusal.reason == "max_bytes":
            # The file's size is at least the bytes in use: under the cap, a put fits.
            return bool(stats.file_bytes < self.settings.spool.max_bytes)
        return False  # the disk was full: until a put succeeds

    async def _spool_stats(self) -> Any:
        """The spool's O(1) stats, None when they cannot be read in time."""
        try:
            async with asyncio.timeout(_STATS_TIMEOUT_S):
                return await self.spool.stats()
        except Exception as exc:  # a probe or scrape must answer; "spool writable" says why
            log.debug("spool stats unreadable", error=f"{type(exc).__name__}: {exc}")
            return None

    async def _refresh_metrics(self) -> None:
        """Before each scrape: the adapters' gauges (the spool's come with the readiness
        checks the scrape runs next, see :meth:`_readiness`)."""
        self.metrics.update_adapters(a.health() for a in self.adapters)

    def _update_spool_metrics(self, stats: Any) -> None:
        self.metrics.update_spool(
            by_state=_get(stats, "by_state", {}) or {},
            oldest_pending_s=_get(stats, "oldest_pending_age_s", None),
            dead_by_error=_get(stats, "dead_by_error", {}) or {},
            jobs_by_state=_get(stats, "jobs_by_state", {}) or {},
            quarantined=_get(stats, "quarantined", 0) or 0,
        )


async def _wait_all(tasks: list[asyncio.Task[None]], force: asyncio.Event, within_s: float) -> None:
    """Wait until every task is done, ``force`` is set, or ``within_s`` passes."""
    waiting = set(tasks)
    if not waiting:
        return
    forced = asyncio.ensure_future(force.wait())
    try:
        async with asyncio.timeout(max(0.0, within_s)):
            while waiting and not forced.done():
                done, _ = await asyncio.wait(
                    [*waiting, forced], return_when=asyncio.FIRST_COMPLETED
                )
                waiting -= done
    except TimeoutError:
        pass
    finally:
        forced.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forced


def _get(obj: Any, name: str, default: Any) -> Any:
    return getattr(obj, name, default)


def _age(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


async def _guard(name: str, coro: Coroutine[Any, Any, None]) -> None:
    """Top of a task: log the traceback once, then let the TaskGroup stop the daemon."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("task failed", task=name)
        raise


def _build_adapters(tables: list[dict[str, Any]], spool: Any, *, default_tz: str) -> list[Any]:
    if not tables:
        return []
    from adapters import build_adapters  # type: ignore[attr-defined,unused-ignore]

    return list(build_adapters(tables, spool, default_tz=default_tz))


async def _default_rails(settings: Settings, spool: Any, metrics: Metrics) -> RailsHandle | None:
    from daemon.wiring import build_rails

    return await build_rails(settings, spool, metrics)


def event_loop_factory(
    choice: str = "auto",
) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """``[daemon] event_loop`` -> (the loop's name, an ``asyncio.Runner`` loop factory).

    ``auto`` takes uvloop when it is installed (bench/ingest_throughput.py: webhook
    intake 660/s on asyncio's loop, 2,516/s on uvloop), else asyncio's own loop
    (factory None).
    """
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def run_daemon(settings: Settings, *, config_path: Path | None = None) -> int:
    """Run until stopped; the process exit code."""
    loop_name, loop_factory = event_loop_factory(settings.daemon.event_loop)
    log.info(
        "dispo-sync starting",
        config=str(config_path) if config_path else None,
        spool=str(settings.spool.path),
        salesforce=settings.salesforce.login_url,
        auth=settings.salesforce.auth,
        event_loop=loop_name,
    )
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(Daemon(settings).run())
