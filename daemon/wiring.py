"""Settings -> constructor keyword arguments for the Salesforce side (STYLE habit 11).

The pydantic :class:`~daemon.settings.Settings` stops here: the Salesforce
client, the mapping and the rails receive plain values.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import structlog

from daemon.http import ReadinessCheck
from daemon.metrics import Metrics
from daemon.settings import Problem, Settings, SettingsError
from spool.errors import SpoolFull

if TYPE_CHECKING:
    from spool import Spool

__all__ = [
    "REFRESH_TOKEN_STATE_KEY",
    "CountingSpool",
    "DaemonRails",
    "SpoolRefreshTokens",
    "build_rails",
    "ca_file_problem",
    "client_kwargs",
    "refresh_token_fingerprint",
    "spool_refresh_tokens",
]

log = structlog.get_logger("daemon.wiring")


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for :class:`daemon.salesforce.SalesforceClient`."""
    sf = settings.salesforce

    def secret(value: Any) -> str | None:
        return None if value is None else str(value.get_secret_value())

    return {
        "login_url": sf.login_url,
        "auth": sf.auth,
        "client_id": sf.client_id,
        "client_secret": secret(sf.client_secret),
        "username": sf.username,
        "password": secret(sf.password),
        "refresh_token": secret(sf.refresh_token),
        "private_key": secret(sf.private_key),
        "private_key_file": sf.private_key_file,
        "ca_file": sf.ca_file,
        "api_version": sf.api_version,
        # Settings only accept http:// for a loopback host (a local sfsim).
        "allow_http": sf.login_url.startswith("http://"),
        "connect_timeout_s": sf.connect_timeout_s,
        "read_timeout_s": sf.read_timeout_s,
    }


# The spool kv key (Spool.set_state) a rotated refresh token is kept under.
REFRESH_TOKEN_STATE_KEY = "salesforce_refresh_token"


def refresh_token_fingerprint(token: str) -> str:
    """sha256 hex of a refresh token: which configured token a kept one descends from."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SpoolRefreshTokens:
    """The refresh token the connected app last rotated to, kept in the spool's key-value
    state (:class:`daemon.salesforce.auth.RefreshTokenStore`).

    With refresh token rotation on, Salesforce spends the refresh token a refresh sends and
    answers with a new one; the configured token works once. The newest one is kept here
    (the spool file is mode 0600) with the fingerprint of the configured token it descends
    from, and used instead of the configured one while that fingerprint matches: a refresh
    token configured anew (another fingerprint) wins, and the kept one is replaced at the
    first rotation of the new one. The token itself never appears in a log line.
    """

    def __init__(self, spool: Any, configured: str, *, path: Path | str) -> None:
        self._spool = spool
        self._from = refresh_token_fingerprint(configured)
        self.where = f"the spool file {path}"
        self.restored = False  # load() answered a kept token (check-config says so)

    async def load(self) -> str | None:
        raw = await self._spool.get_state(REFRESH_TOKEN_STATE_KEY)
        if raw is None:
            return None
        try:
            kept = json.loads(raw)
            token, origin = kept["token"], kept["from_sha256"]
        except (ValueError, KeyError, TypeError):
            token = origin = None
        if not isinstance(token, str) or not token or not isinstance(origin, str):
            log.warning(
                "salesforce_refresh_token_kept_unreadable",
                where=self.where,
                note="the kept refresh token cannot be read: the configured one is used",
            )
            return None
        if origin != self._from:
            log.info(
                "salesforce_refresh_token_kept_ignored",
                where=self.where,
                note=(
                    "the refresh token kept there descends from another refresh token than "
                    "the one configured now (a new one was put in place): the configured one "
                    "is used, and replaces the kept one at its first rotation"
                ),
            )
            return None
        self.restored = True
        return token

    async def save(self, token: str) -> None:
        value = json.dumps({"from_sha256": self._from, "token": token})
        await self._spool.set_state(REFRESH_TOKEN_STATE_KEY, value)


def spool_refresh_tokens(settings: Settings, spool: Any) -> SpoolRefreshTokens | None:
    """The rotated refresh token store in ``spool`` when ``auth = "refresh_token"``."""
    sf = settings.salesforce
    if sf.auth != "refresh_token" or sf.refresh_token is None:
        return None
    return SpoolRefreshTokens(spool, sf.refresh_token.get_secret_value(), path=settings.spool.path)


@dataclass(frozen=True, slots=True)
class _Claimed:
    rail: str
    source: str
    call_id: str
    disposition: str
    ended_ts: float
    attempt: int


class CountingSpool:
    """The spool as the adapters and the rails see it.

    Everything is the real :class:`spool.Spool` (attribute access is forwarded);
    ``put``/``put_many`` also count what was stored (by source and disposition)
    and wake the rails, and ``ack`` counts what Salesforce confirmed (by rail and
    disposition, with the live latency from call end to confirmation). Claims are
    remembered until they are settled, so an ack by ``(record_id, rev)`` pair
    (the Bulk rail's way) is counted too.

    ``refusal`` is the :class:`spool.SpoolFull` the last put was refused with (None
    once a put succeeds again), for ``/readyz``: the spool's O(1) stats show a full
    ``max_pending`` but not a full ``max_bytes`` or disk.
    """

    # Limits: claims remembered at most (the oldest are forgotten first).
    max_remembered = 500_000

    def __init__(self, spool: Spool, metrics: Metrics) -> None:
        self._spool = spool
        self._metrics = metrics
        self.on_stored: Callable[[], None] | None = None
        self.refusal: SpoolFull | None = None
        self._claimed: OrderedDict[int, _Claimed] = OrderedDict()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spool, name)

    async def put(self, outcome: Any) -> Any:
        try:
            result = await self._spool.put(outcome)
        except SpoolFull as exc:
            self.refusal = exc
            raise
        self.refusal = None
        self._received([outcome], [result])
        return result

    async def put_many(self, outcomes: Sequence[Any], **kwargs: Any) -> Any:
        outcomes = list(outcomes)
        try:
            results = await self._spool.put_many(outcomes, **kwargs)
        except SpoolFull as exc:
            self.refusal = exc
            raise
        self.refusal = None
        self._received(outcomes, results)
        return results

    def _received(self, outcomes: Sequence[Any], results: Iterable[Any]) -> None:
        stored = False
        for outcome, result in zip(outcomes, results, strict=False):
            if result.stored:
                stored = True
                self._metrics.outcome_received(outcome.source, str(outcome.disposition))
            log.info(
                "outcome received",
                call_id=outcome.call_id,
                source=outcome.source,
                disposition=str(outcome.disposition),
                stored=str(result.status),
                record_id=result.record_id,
            )
        if stored and self.on_stored is not None:
            self.on_stored()

    async def claim(self, rail: str, limit: int, **kwargs: Any) -> Any:
        claims = await self._spool.claim(rail, limit, **kwargs)
        for c in claims:
            self._remember(c)
        return claims

    def _remember(self, c: Any) -> None:
        o = c.outcome
        self._claimed[c.record_id] = _Claimed(
            c.rail, o.source, o.call_id, str(o.disposition), o.ended_at.timestamp(), c.attempt
        )
        self._claimed.move_to_end(c.record_id)
        while len(self._claimed) > self.max_remembered:
            self._claimed.popitem(last=False)

    def _forget(self, refs: Iterable[Any]) -> None:
        for ref in refs:
            self._claimed.pop(_record_id(ref), None)

    async def ack(self, refs: Iterable[Any]) -> Any:
        refs = list(refs)
        result = await self._spool.ack(refs)
        done = set(result.done)
        now = time.time()
        for ref in refs:
            record_id = _record_id(ref)
            outcome = getattr(ref, "outcome", None)
            known = self._claimed.pop(record_id, None)
            if record_id not in done:
                continue
            if outcome is not None:
                known = _Claimed(
                    ref.rail,
                    outcome.source,
                    outcome.call_id,
                    str(outcome.disposition),
                    outcome.ended_at.timestamp(),
                    ref.attempt,
                )
            if known is None:  # e.g. a job recovered after a restart
                self._metrics.outcome_sent("unknown", "unknown")
                continue
            latency = now - known.ended_ts
            self._metrics.outcome_sent(known.rail, known.disposition, latency_s=latency)
            # The one canonical line per delivered outcome.
            log.info(
                "outcome sent",
                call_id=known.call_id,
                source=known.source,
                disposition=known.disposition,
                rail=known.rail,
                attempt=known.attempt,
                since_call_end_s=round(latency, 2),
            )
        return result

    async def retry_later(self, refs: Iterable[Any], **kwargs: Any) -> Any:
        refs = list(refs)
        self._forget(refs)
        return await self._spool.retry_later(refs, **kwargs)

    async def release(self, refs: Iterable[Any]) -> Any:
        refs = list(refs)
        self._forget(refs)
        return await self._spool.release(refs)

    async def dead(self, refs: Iterable[Any], **kwargs: Any) -> Any:
        refs = list(refs)
        self._forget(refs)
        return await self._spool.dead(refs, **kwargs)


def _record_id(ref: Any) -> int:
    return int(ref[0]) if isinstance(ref, tuple) else int(ref.record_id)


class DaemonRails:
    """The Salesforce side as the runner needs it (:class:`daemon.runner.RailsHandle`).

    Raises :class:`~daemon.settings.SettingsError` for what a restart cannot fix: an
    invalid ``[mapping] file`` or ``[salesforce] ca_file``, or client settings the
    Salesforce client refuses. ``run`` exits 78 on it, which systemd does not restart.
    """

    def __init__(self, settings: Settings, spool: Any, metrics: Metrics) -> None:
        from daemon.mapping import MappingError, load_mapping
        from daemon.rails import Rails
        from daemon.salesforce import ConfigurationError, QuotaView, SalesforceClient

        try:
            mapping = load_mapping(settings.mapping.file)
        except MappingError as exc:
            raise SettingsError(
                [Problem("mapping.file", f"file {exc.source}", p) for p in exc.problems]
            ) from exc
        ca_file = settings.salesforce.ca_file
        # The client loads it only when the rails start sending, in a task whose failure
        # would exit 1, and systemd would restart into the same failure in a loop.
        ca_problem = ca_file_problem(ca_file)
        if ca_problem is not None:
            raise SettingsError([Problem("salesforce.ca_file", f"file {ca_file}", ca_problem)])

        self._metrics = metrics
        self._mapping_file = settings.mapping.file
        # Requests in a row that got no answer or a 5xx, since when, and the last one's why.
        self._failed_calls = 0
        self._failing_since = 0.0
        self._calls_counted = 0  # the quota view's calls_total the metric has
        self._last_failure = ""
        quota = QuotaView(
            reserve=settings.rails.quota_reserve, max_share=settings.rails.quota_max_share
        )
        try:
            self.client = SalesforceClient(
                **client_kwargs(settings),
                # The spool is open before the rails are built, and closed after they stop;
                # the client reads the kept token at its first refresh.
                refresh_token_store=spool_refresh_tokens(settings, spool),
                quota=quota,
                on_call=self._on_call,
            )
        except ConfigurationError as exc:
            raise SettingsError([Problem("salesforce", "settings", str(exc))]) from exc
        self.rails = Rails(
            spool=cast("Spool", spool),
            client=self.client,
            mapping=mapping,
            bulk_interval_s=settings.rails.bulk_interval_s,
            bulk_max_records=settings.rails.bulk_max_records,
            bulk_min_records=settings.rails.bulk_min_records,
            live_linger_s=settings.rails.live_linger_ms / 1000,
            limits_interval_s=settings.rails.limits_interval_s,
            config_recheck_s=settings.rails.config_recheck_s,
            bulk_lease_s=settings.rails.bulk_lease_s,
            on_event=self._on_event,
        )

    async def run(self, stop: Any) -> None:
        async with self.client:
            await self.rails.run(stop)

    def wake(self) -> None:
        self.rails.wake()

    def readiness(self) -> Sequence[ReadinessCheck]:
        status = self.rails.status()
        checks: list[ReadinessCheck] = []
        if self.client.instance_url is None:
            checks.append(ReadinessCheck("salesforce", False, "not authenticated yet"))
        elif self._failed_calls:
            checks.append(
                ReadinessCheck(
                    "salesforce",
                    False,
                    f"unreachable: the last {self._failed_calls} request(s) failed "
                    f"({self._last_failure}) over "
                    f"{time.monotonic() - self._failing_since:.0f} s; outcomes wait in the spool",
                )
            )
        else:
            checks.append(
                ReadinessCheck("salesforce", True, f"authenticated to {self.client.instance_url}")
            )
        for rail, reason in sorted(status.paused.items()):
            checks.append(ReadinessCheck(f"rail {rail}", False, f"paused: {reason[:300]}"))
        if not status.paused:
            checks.append(ReadinessCheck("rails", True, f"route: {status.route}"))
        state = str(status.quota.get("state", "ok"))
        checks.append(ReadinessCheck("API quota", state != "exhausted", state))
        return checks

    def quota(self) -> dict[str, Any] | None:
        snap = self.rails.quota.snapshot()
        return snap if snap.get("max") else None

    def reload_mapping(self) -> str:
        from daemon.mapping import load_mapping

        mapping = load_mapping(self._mapping_file)  # MappingError (a ValueError) if invalid
        self.rails.set_mapping(mapping)  # from the next send on; in-flight batches finish
        return f"{len(mapping.task_fields)} Task fields, {len(mapping.lead_fields)} Lead fields"

    def _on_call(self, rail: str, method: str, path_kind: str, status: int, seconds: float) -> None:
        # The calls the quota view counted (it skips one whose connection never opened),
        # counted just before this hook runs.
        counted = self.client.quota.calls_total
        if counted > self._calls_counted:
            self._metrics.api_call(rail, counted - self._calls_counted)
            self._calls_counted = counted
        # Reachability for /readyz: no answer (status 0) or a 5xx means the org is not
        # taking work; any other answer (errors included) means it is there.
        if status == 0 or status >= 500:
            if not self._failed_calls:
                self._failing_since = time.monotonic()
            self._failed_calls += 1
            self._last_failure = "no answer" if status == 0 else f"HTTP {status}"
        else:
            self._failed_calls = 0

    def _on_event(self, name: str, fields: dict[str, Any]) -> None:
        if name == "paused":
            self._metrics.paused(str(fields.get("rail")), True)
        elif name == "resumed":
            rail = str(fields.get("rail"))
            self._metrics.paused(rail, False)
            log.info("rail resumed", rail=rail)
        elif name == "quota" and fields.get("max"):
            self._metrics.quota(int(fields.get("used") or 0), int(fields["max"]))


def ca_file_problem(path: Path | None) -> str | None:
    """Why ``[salesforce] ca_file`` cannot be used as a CA bundle (None: it can, or none
    is set).

    The same load the Salesforce client does when it opens, done before it opens.
    """
    if path is None:
        return None
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        return f"cannot load it as a PEM CA bundle: {exc}"
    return None


async def build_rails(settings: Settings, spool: Any, metrics: Metrics) -> DaemonRails:
    """The runner's rails factory."""
    return DaemonRails(settings, spool, metrics)
