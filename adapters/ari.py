"""``ari`` adapter: Asterisk REST Interface events over a websocket.

Connects to ``/ari/events?app=<app>&subscribeAll=<bool>`` with ``api_key``
(``user:password``) or HTTP Basic auth, follows every channel through its
lifecycle (``StasisStart`` / ``Dial`` / ``ChannelVarset`` / ``ChannelStateChange``
/ ``ChannelHangupRequest`` / ``ChannelDestroyed``) and stores one outcome per call
when its root channel is destroyed. Which channel is "the call", how memory stays
bounded and how events are ordered: see ``adapters._ari_track``. The disposition
follows reference/dialers.md section 7.3: see ``adapters._ari_map``.

Configuration::

    [[adapter]]
    type = "ari"
    name = "asterisk"                 # the outcomes' `source`
    url = "wss://pbx.example.com:8089"   # http(s):// or ws(s)://; /ari/events is added
    app = "dialer"                    # or ["dialer", "ivr"]
    subscribe_all = false
    username = "dispo"
    secret = ""                       # ari.conf password (credential: adapter-asterisk-secret)
    auth = "api_key"                  # or "basic" (keeps the password out of the URL)
    ca_file = ""
    disposition_var = "DISPOSITION"   # set by the dialplan or the agent app
    lead_var = "LEAD_ID"              # 00Q... ids become Lead ids, anything else an external key
    lead_ref = "auto"                 # "id" | "external_key" | "auto"
    agent_var = "AGENT_ID"; campaign_var = "CAMPAIGN"; callback_var = "CALLBACK_AT"
    phone_var = "PHONE"; notes_var = "NOTES"; extra_vars = ["QUEUE"]
    stasis_args = ["AMDSTATUS", "AMDCAUSE"]   # what Stasis(app, arg1, arg2...) passes
    dispositions = { SALE = "connected", "AMDSTATUS=NOTSURE" = "unknown" }
    direction = "outbound"
    ignore_channels = "^(Snoop|Announcer|Recorder|UnicastRTP|AudioSocket|WebSocket)/"
    require_var = ""                  # e.g. "LEAD_ID": channels without it are not calls
    max_channels = 10000; channel_ttl_s = 14400.0
    batch_max = 500
    tz = "America/Chicago"            # zone of a CALLBACK_AT value without an offset
    open_timeout_s = 10.0; ping_interval_s = 20.0; ping_timeout_s = 20.0; close_timeout_s = 5.0
    reconnect_initial_s = 1.0; reconnect_max_s = 30.0

Delivery: ARI has no acks and no replay (reference section 1.1 and 8): events
sent while we are disconnected are lost, and the app is unregistered when the
socket closes. So the adapter reconnects quickly, logs every reconnect, and
when the spool refuses it keeps the finished calls in a bounded queue and
retries the commit with backoff (reading pauses; nothing is dropped while the
connection lives). After a reconnect the adapter lists the live channels
(``GET /ari/channels``) and closes the calls that ended meanwhile: one that
already carried the agent's disposition or the AMD result is stored, flagged
ambiguous ("ended while disconnected"); the others are logged as lost. Reconcile
those with CDRs (the ``file`` adapter).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from pydantic_core import from_json
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from adapters._ari_map import BUILTIN_TOKENS
from adapters._ari_outcome import OutcomeBuildError, OutcomeConfig, build_outcome
from adapters._ari_track import (
    DEFAULT_IGNORE_CHANNELS,
    AriEventError,
    AriTracker,
    DroppedCall,
    FinishedCall,
    TrackerConfig,
)
from adapters._ws_client import (
    ClientTimeouts,
    ConnectTarget,
    ReconnectingClient,
    backoff,
    log_reason,
    make_ssl_context,
)
from adapters._ws_config import ConfigError, TableReader, disposition_overrides
from adapters.dispositions import DispositionMap, Mapped
from spool import Spool
from spool.errors import SpoolFull, SpoolUnavailable
from spool.record import CallOutcome, Direction, Disposition

__all__ = ["AriAdapter", "AriConfig", "build", "validate"]

_KEYS: Final = {
    "type",
    "name",
    "url",
    "app",
    "subscribe_all",
    "username",
    "secret",
    "auth",
    "ca_file",
    "disposition_var",
    "lead_var",
    "lead_ref",
    "agent_var",
    "campaign_var",
    "callback_var",
    "phone_var",
    "notes_var",
    "extra_vars",
    "stasis_args",
    "dispositions",
    "direction",
    "ignore_channels",
    "require_var",
    "max_channels",
    "channel_ttl_s",
    "batch_max",
    "tz",
    "open_timeout_s",
    "ping_interval_s",
    "ping_timeout_s",
    "close_timeout_s",
    "reconnect_initial_s",
    "reconnect_max_s",
}
_EOF: Final = object()
_REPLACED: Final = object()


@dataclass(frozen=True)
class AriConfig:
    url: str
    apps: tuple[str, ...]
    name: str = "asterisk"
    subscribe_all: bool = False
    username: str = ""
    secret: str | None = field(default=None, repr=False)
    auth: str = "api_key"
    ca_file: str | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    lead_ref: str = "auto"
    direction: Direction = Direction.OUTBOUND
    dispositions: Mapping[str, Mapped] = field(default_factory=dict)
    batch_max: int = 500
    tz: str | None = None  # zone of a CALLBACK_AT without offset; default: the daemon's
    timeouts: ClientTimeouts = field(default_factory=lambda: ClientTimeouts(reconnect_max_s=30.0))

    @classmethod
    def from_table(cls, table: Mapping[str, Any], index: int = 0) -> AriConfig:
        """Parse and check one ``[[adapter]]`` table; :class:`ConfigError` lists every problem."""
        r = TableReader(table, index, _KEYS)
        url = r.get("url", str, "")
        scheme = urlsplit(url).scheme if url else ""
        if not url:
            r.problem("url", 'required, e.g. "ws://127.0.0.1:8088"')
        elif scheme not in ("ws", "wss", "http", "https") or not urlsplit(url).hostname:
            r.problem("url", f"must be an http(s):// or ws(s):// URL, got {url!r}")
        app_value = table.get("app")
        apps: tuple[str, ...] = ()
        if isinstance(app_value, str) and app_value:
            apps = tuple(a.strip() for a in app_value.split(",") if a.strip())
        elif isinstance(app_value, list) and all(isinstance(a, str) and a for a in app_value):
            apps = tuple(app_value)
        else:
            r.problem("app", "required: the Stasis application name (or a list of them)")
        username = r.get("username", str, "")
        secret = r.get("secret", str, "") or None
        if bool(username) != bool(secret):
            r.problem("secret" if username else "username", "username and secret go together")
        ignore = r.get("ignore_channels", str, DEFAULT_IGNORE_CHANNELS)
        r.check("ignore_channels", lambda: _check_regex(ignore), None)
        direction = r.choice("direction", "outbound", ("outbound", "inbound"))
        tracker = TrackerConfig(
            disposition_var=r.get("disposition_var", str, "DISPOSITION"),
            lead_var=r.get("lead_var", str, "LEAD_ID"),
            agent_var=r.get("agent_var", str, "AGENT_ID"),
            campaign_var=r.get("campaign_var", str, "CAMPAIGN"),
            callback_var=r.get("callback_var", str, "CALLBACK_AT"),
            phone_var=r.get("phone_var", str, "PHONE"),
            notes_var=r.get("notes_var", str, "NOTES"),
            extra_vars=tuple(r.string_list("extra_vars")),
            stasis_args=tuple(r.string_list("stasis_args"))
            if "stasis_args" in table
            else ("AMDSTATUS", "AMDCAUSE"),
            ignore_channels=ignore,
            require_var=r.get("require_var", str, "") or None,
            max_calls=r.integer("max_channels", 10_000, low=10, high=1_000_000),
            ttl_s=r.number("channel_ttl_s", 4 * 3600.0, low=1.0, high=7 * 86400.0),
        )
        cfg = cls(
            url=url,
            apps=apps,
            name=r.name("asterisk"),
            subscribe_all=r.get("subscribe_all", bool, False),
            username=username,
            secret=secret,
            auth=r.choice("auth", "api_key", ("api_key", "basic")),
            ca_file=r.get("ca_file", str, "") or None,
            tracker=tracker,
            lead_ref=r.choice("lead_ref", "auto", ("auto", "id", "external_key")),
            direction=Direction(direction),
            dispositions=disposition_overrides(r),
            batch_max=r.integer("batch_max", 500, low=1, high=100_000),
            tz=r.tz(),
            timeouts=ClientTimeouts(
                open_s=r.number("open_timeout_s", 10.0, low=0.1, high=300),
                ping_interval_s=r.number("ping_interval_s", 20.0, low=0.1, high=3600),
                ping_timeout_s=r.number("ping_timeout_s", 20.0, low=0.1, high=3600),
                close_s=r.number("close_timeout_s", 5.0, low=0.1, high=300),
                reconnect_initial_s=r.number("reconnect_initial_s", 1.0, low=0.001, high=600),
                reconnect_max_s=r.number("reconnect_max_s", 30.0, low=0.001, high=3600),
            ),
        )
        r.raise_if_problems()
        return cfg

    def rest_url(self, resource: str) -> str:
        """``http(s)://host:port[/prefix]/ari<resource>`` for the REST side."""
        parts = urlsplit(self.url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        path = parts.path.rstrip("/").removesuffix("/events").removesuffix("/ari")
        return urlunsplit((scheme, parts.netloc, f"{path}/ari{resource}", "", ""))

    def events_uri(self) -> str:
        """``ws(s)://host:port/ari/events?app=...&subscribeAll=...[&api_key=user:pass]``."""
        parts = urlsplit(self.url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        path = parts.path.rstrip("/")
        if not path.endswith("/ari/events"):
            path = (path.removesuffix("/ari")) + "/ari/events"
        query = [("app", ",".join(self.apps)), ("subscribeAll", str(self.subscribe_all).lower())]
        if self.secret and self.auth == "api_key":
            query.append(("api_key", f"{self.username}:{self.secret}"))
        q = urlencode(query, quote_via=quote, safe=",:")
        return urlunsplit((scheme, parts.netloc, path, q, ""))


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None


def validate(table: Mapping[str, Any], index: int) -> list[str]:
    """Every problem with a ``type = "ari"`` table (empty when it is fine)."""
    try:
        AriConfig.from_table(table, index)
    except ConfigError as exc:
        return exc.problems
    return []


def build(table: Mapping[str, Any], spool: Spool, *, default_tz: str = "UTC") -> AriAdapter:
    return AriAdapter(AriConfig.from_table(table), spool, default_tz=default_tz)


@dataclass(frozen=True, slots=True)
class _Bad:
    raw: str | bytes
    reason: str


class AriAdapter(ReconnectingClient):
    """Asterisk ARI events -> one outcome per call, stored in the spool."""

    type = "ari"

    def __init__(
        self,
        config: AriConfig,
        spool: Spool,
        *,
        default_tz: str = "UTC",
        reconnect_delays: Callable[[], Iterator[float]] | None = None,
        commit_retry_delays: Callable[[], Iterator[float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config.name, timeouts=config.timeouts, reconnect_delays=reconnect_delays)
        self.config = config
        self._spool = spool
        self._clock = clock
        self.tracker = AriTracker(config.tracker)
        self._outcome_cfg = OutcomeConfig(
            source=config.name,
            vars=config.tracker,
            lead_ref=config.lead_ref,
            direction=config.direction,
            default_tz=config.tz or default_tz,
        )
        # Site table: raw disposition-variable values, and built-in tokens to override.
        self._overrides = {
            k.upper(): v.disposition
            for k, v in config.dispositions.items()
            if k.upper() in BUILTIN_TOKENS
        }
        site_values = {
            k: v for k, v in config.dispositions.items() if k.upper() not in BUILTIN_TOKENS
        }
        self._dmap = DispositionMap("vocabulary", config.name, site_values)
        self._unknown_tokens: set[str] = set()
        self._commit_delays = commit_retry_delays or (
            lambda: backoff(0.2, config.timeouts.reconnect_max_s)
        )
        self._served_before = False
        # Bounded: the spool is the buffer; a full queue pauses reading.
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=max(100, config.batch_max * 4))

    def _map_var(self, raw: str) -> tuple[Disposition, bool]:
        """The agent's or app's disposition value through the site's table."""
        mapped = self._dmap.lookup(raw)
        return mapped.disposition, mapped.ambiguous

    async def _connect_target(self) -> ConnectTarget:
        cfg = self.config
        headers: list[tuple[str, str]] = []
        if cfg.secret and cfg.auth == "basic":
            token = base64.b64encode(f"{cfg.username}:{cfg.secret}".encode()).decode()
            headers.append(("Authorization", f"Basic {token}"))
        uri = cfg.events_uri()
        ctx = make_ssl_context(cfg.ca_file) if uri.startswith("wss:") else None
        return ConnectTarget(uri=uri, headers=headers, ssl_context=ctx, max_queue=1024)

    # ------------------------------------------------------------------ serve

    async def _serve(self, conn: ClientConnection) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._commit_loop(), name=f"{self.name}-commit")
            expiry = tg.create_task(self._expiry_loop(), name=f"{self.name}-expiry")
            try:
                if self._served_before and self.tracker.open_calls:
                    await self._reconcile()
                self._served_before = True
                await self._read(conn)
            finally:
                # The committer stores everything read so far, then ends at _EOF.
                expiry.cancel()

    async def _read(self, conn: ClientConnection) -> None:
        try:
            async for message in conn:
                self._health.received += 1
                item = self._handle(message)
                if item is _REPLACED:
                    await conn.close(1000, "application replaced")
                    break
                if item is not None:
                    await self._queue.put(item)
        except ConnectionClosed as exc:
            self._set_error(exc)
        finally:
            await self._queue.put(_EOF)

    def _handle(self, message: str | bytes) -> CallOutcome | _Bad | object | None:
        try:
            # pydantic-core's parser, as the websocket adapter's: it reports nesting
            # deeper than its limit as ValueError, where json.loads raises RecursionError
            # (about 1000 levels, a 6 kB frame) and would stop the adapter.
            event = from_json(message)
        except ValueError as exc:  # bad UTF-8 too (json.loads: UnicodeDecodeError)
            return _Bad(message, f"not JSON: {exc}")
        if not isinstance(event, dict):
            return _Bad(message, f"event is a JSON {type(event).__name__}, expected an object")
        etype = event.get("type")
        if etype == "ApplicationReplaced":
            # Another client took this app over (one socket per app, reference 1.1):
            # fighting back would flap both; wait the longest delay before retrying.
            self._log.error(
                "ari_application_replaced",
                app=event.get("application"),
                retry_in_s=self.config.timeouts.reconnect_max_s,
            )
            self._hold_off_s = self.config.timeouts.reconnect_max_s
            self._extra("replaced")
            return _REPLACED
        try:
            result = self.tracker.feed(event, self._clock())
        except AriEventError as exc:
            return _Bad(message, exc.reason)
        self._health.extra["open_channels"] = self.tracker.open_calls
        if isinstance(result, DroppedCall):
            self._extra("not_calls")
            return None
        if result is None:
            return None
        return self._outcome(result, message)

    def _outcome(self, done: FinishedCall, message: str | bytes) -> CallOutcome | _Bad:
        try:
            outcome, decision = build_outcome(
                done, self._outcome_cfg, overrides=self._overrides, map_var=self._map_var
            )
        except OutcomeBuildError as exc:
            return _Bad(message, f"call {done.call_id}: {exc.reason}")
        if (
            outcome.disposition is Disposition.UNKNOWN
            and not decision.from_agent
            and decision.raw not in self._unknown_tokens
            and len(self._unknown_tokens) < 10_000
        ):
            self._unknown_tokens.add(decision.raw)
            self._log.warning("unknown_disposition", raw_disposition=decision.raw[:64])
        return outcome

    async def _reconcile(self) -> None:
        """After a reconnect, close the calls that ended while we were away."""
        alive = await self._alive_channels()
        if alive is None:
            return  # unknown: the TTL expires them later
        for item in self.tracker.reconcile(alive):
            if isinstance(item, DroppedCall):
                self._extra("lost_on_disconnect")
                self._log.warning(
                    "ari_call_lost_on_disconnect", call_id=item.call_id, channel=item.channel_name
                )
                continue
            outcome = self._outcome(item, json.dumps({"call_id": item.call_id, "partial": True}))
            self._extra("partial_on_disconnect")
            await self._queue.put(outcome)

    async def _alive_channels(self) -> set[str] | None:
        """``GET /ari/channels``: the ids of the channels that exist now."""
        cfg = self.config
        url = cfg.rest_url("/channels")
        verify: ssl.SSLContext | bool = (
            make_ssl_context(cfg.ca_file) if url.startswith("https:") else True
        )
        auth = httpx.BasicAuth(cfg.username, cfg.secret) if cfg.secret else None
        try:
            async with httpx.AsyncClient(
                timeout=httpx.Timeout(cfg.timeouts.open_s), verify=verify, trust_env=False
            ) as client:
                response = await client.get(url, auth=auth)
                response.raise_for_status()
                # not response.json(): json.loads raises RecursionError on deep nesting
                channels = from_json(response.content)
        except (httpx.HTTPError, ValueError) as exc:
            self._log.warning("ari_channel_list_failed", error=type(exc).__name__)
            return None
        if not isinstance(channels, list):
            self._log.warning("ari_channel_list_failed", error="not a JSON list")
            return None
        return {c["id"] for c in channels if isinstance(c, dict) and isinstance(c.get("id"), str)}

    async def _expiry_loop(self) -> None:
        interval = min(60.0, max(0.05, self.config.tracker.ttl_s / 10))
        while True:
            await asyncio.sleep(interval)
            self._expire()

    def _expire(self) -> None:
        for dropped in self.tracker.expire(self._clock()):
            self._extra(f"expired_{dropped.reason}")
            self._log.warning(
                "ari_channel_expired",
                call_id=dropped.call_id,
                channel=dropped.channel_name,
                reason=dropped.reason,
            )
        self._health.extra["open_channels"] = self.tracker.open_calls

    async def _commit_loop(self) -> None:
        queue = self._queue
        while True:
            item = await queue.get()
            if item is _EOF:
                return
            items = [item]
            eof = False
            while len(items) < self.config.batch_max:
                try:
                    nxt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if nxt is _EOF:
                    eof = True
                    break
                items.append(nxt)
            await self._commit(items)
            if eof:
                return

    async def _commit(self, items: list[object]) -> None:
        outcomes = [i for i in items if isinstance(i, CallOutcome)]
        bad = [i for i in items if isinstance(i, _Bad)]
        delays: Iterator[float] | None = None
        while True:
            try:
                while bad:
                    await self._spool.quarantine(self.name, bad[0].raw, bad[0].reason)
                    self._health.rejected += 1
                    self._log.warning("ari_event_rejected", reason=log_reason(bad[0].reason))
                    bad.pop(0)
                results = await self._spool.put_many(outcomes)
                break
            except (SpoolFull, SpoolUnavailable) as exc:
                if delays is None:  # count a held batch once, not on every retry
                    self._health.refused += len(outcomes)
                self._health.last_error = f"spool refused: {type(exc).__name__}"
                if self._stopping.is_set():
                    self._log.error("ari_outcomes_lost_on_stop", outcomes=len(outcomes))
                    return
                delays = delays or self._commit_delays()
                delay = max(next(delays), min(exc.retry_after_s or 1.0, 30.0))
                self._log.warning(
                    "ari_commit_held",
                    outcomes=len(outcomes),
                    error=type(exc).__name__,
                    delay_s=round(delay, 3),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        for outcome, result in zip(outcomes, results, strict=True):
            if result.stored:
                self._health.accepted += 1
                self._log.info(
                    "ari_outcome",
                    call_id=outcome.call_id,
                    disposition=outcome.disposition.value,
                    raw_disposition=outcome.raw_disposition,
                )
            else:
                self._health.duplicates += 1
