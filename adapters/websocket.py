"""``websocket`` adapter: a client for a dialer's JSON event stream.

Configuration (one ``[[adapter]]`` table; only ``type``, ``url`` and the three
required ``fields`` have no default)::

    [[adapter]]
    type = "websocket"
    name = "feed1"                      # the outcomes' `source`, and the resume cursor key
    url = "wss://dialer.example.com/events"
    headers = { X-Tenant = "acme" }     # sent with the handshake
    secret = ""                         # token (better: credential file adapter-feed1-secret)
    auth = "bearer"                     # bearer: "Authorization: Bearer <secret>";
                                        # header: "<auth_header>: <secret>";
                                        # query: "?<auth_param>=<secret>"; none
    auth_header = "X-Api-Key"
    auth_param = "token"
    ca_file = ""                        # extra CA bundle for wss://
    type_field = "type"                 # where the event type is ("" = no type)
    event_types = ["call.ended"]        # only these carry an outcome ([] = all)
    id_field = "id"                     # the event id, for acks and resume ("" = none)
    fields = { call_id = "data.call.id", disposition = "data.status", ended_at = "data.ended" }
    extra = { queue = "data.queue" }    # free extra values for custom field mappings
    dispositions = { SALE = "connected" }   # raw value -> normalized (site table)
    ack = "none"                        # "each": one ack per event; "batch": one per commit
    ack_message = { type = "ack", id = "{id}" }     # "{id}" = event id, "{ids}" = list
    nack_message = {}                   # sent when the spool refuses (optional)
    resume = "none"                     # "query" | "header" | "message": resend from last id
    resume_param = "last_event_id"      # query parameter or header name
    resume_message = { type = "resume", after = "{id}" }
    subscribe_message = {}              # sent after every connect (optional)
    keepalive_message = {}              # application-level ping some dialers expect
    keepalive_interval_s = 30.0         # (websocket pings run anyway: ping_interval_s)
    batch_max = 2000                    # events per spool commit
    compression = false                 # offer permessage-deflate (CPU for bandwidth)
    tz = "America/Chicago"              # zone of timestamps without an offset
    open_timeout_s = 10.0; ping_interval_s = 20.0; ping_timeout_s = 20.0; close_timeout_s = 5.0
    reconnect_initial_s = 1.0; reconnect_max_s = 60.0

Delivery (at least once, never acked before commit):

* Events are read into a bounded queue; the committer takes everything
  available (up to ``batch_max``), stores the outcomes with one ``put_many`` whose
  transaction also records the last event id as the resume cursor
  (``ws:<name>``), and only then sends the acks.
* Bad input (not JSON, a missing or invalid field) is quarantined in the spool
  with the reason, counted, logged, and acked after that commit; the adapter goes on.
* Events of other types are skipped, and acked, and they advance the cursor.
* When the spool refuses (full, disk error), nothing of the batch is acked: the
  adapter sends ``nack_message`` if set, closes with 1013 (Try Again Later) and
  reconnects after the spool's ``retry_after_s``, resuming from the last
  committed id. A stream with neither acks nor resume cannot be asked to resend,
  so there the adapter keeps the batch and retries the commit with backoff
  (reading stops meanwhile: TCP back-pressure reaches the dialer).
* After a reconnect, ``resume`` sends the last committed event id, so nothing is
  lost and nothing is stored twice; redeliveries that do happen (an ack lost with
  the connection) are duplicates the spool recognises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from adapters._ws_client import (
    ClientTimeouts,
    ConnectTarget,
    ReconnectingClient,
    backoff,
    json_headers,
    log_reason,
    make_ssl_context,
)
from adapters._ws_config import ConfigError, TableReader, disposition_overrides
from adapters._ws_decode import DecodeError, EventDecoder, fill_template
from adapters.dispositions import DispositionMap, Mapped
from spool import Spool
from spool.errors import SpoolFull, SpoolUnavailable
from spool.record import CallOutcome, Disposition

__all__ = ["WebsocketAdapter", "WebsocketConfig", "build", "validate"]

_KEYS: Final = {
    "type",
    "name",
    "url",
    "headers",
    "secret",
    "auth",
    "auth_header",
    "auth_param",
    "ca_file",
    "type_field",
    "event_types",
    "id_field",
    "fields",
    "extra",
    "dispositions",
    "live_when_agent",
    "ack",
    "ack_message",
    "nack_message",
    "resume",
    "resume_param",
    "resume_message",
    "subscribe_message",
    "keepalive_message",
    "keepalive_interval_s",
    "batch_max",
    "queue_max",
    "max_message_bytes",
    "compression",
    "tz",
    "open_timeout_s",
    "ping_interval_s",
    "ping_timeout_s",
    "close_timeout_s",
    "reconnect_initial_s",
    "reconnect_max_s",
}
_EOF: Final = object()
# RFC 6455 section 7.4 / IANA registry: 1013 "Try Again Later".
_TRY_AGAIN_LATER: Final = 1013


@dataclass(frozen=True)
class WebsocketConfig:
    url: str
    name: str = "websocket"
    headers: tuple[tuple[str, str], ...] = ()
    secret: str | None = field(default=None, repr=False)
    auth: str = "bearer"
    auth_header: str = "Authorization"
    auth_param: str = "token"
    ca_file: str | None = None
    type_field: str = "type"
    event_types: tuple[str, ...] = ()
    id_field: str = "id"
    fields: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)
    dispositions: Mapping[str, Mapped] = field(default_factory=dict)
    live_when_agent: bool = True
    ack: str = "none"
    ack_message: Any = None
    nack_message: Any = None
    resume: str = "none"
    resume_param: str = "last_event_id"
    resume_message: Any = None
    subscribe_message: Any = None
    keepalive_message: Any = None
    keepalive_interval_s: float = 30.0
    # Limits
    batch_max: int = 2000
    queue_max: int = 10_000
    max_message_bytes: int = 2**20
    compression: bool = False
    tz: str | None = None  # zone of naive timestamps; default: the daemon's
    timeouts: ClientTimeouts = field(default_factory=ClientTimeouts)

    @property
    def cursor_key(self) -> str:
        return f"ws:{self.name}"

    @classmethod
    def from_table(cls, table: Mapping[str, Any], index: int = 0) -> WebsocketConfig:
        """Parse and check one ``[[adapter]]`` table; :class:`ConfigError` lists every problem."""
        r = TableReader(table, index, _KEYS)
        url = r.get("url", str, "")
        if not url:
            r.problem("url", "required (ws:// or wss://)")
        elif urlsplit(url).scheme not in ("ws", "wss") or not urlsplit(url).hostname:
            r.problem("url", f"must be a ws:// or wss:// URL, got {url!r}")
        name = r.name("websocket")
        auth = r.choice("auth", "bearer", ("bearer", "header", "query", "none"))
        secret = r.get("secret", str, "") or None
        if auth != "none" and secret is None and "secret" in table:
            r.problem("secret", 'empty; set it or use auth = "none"')
        no_headers: list[tuple[str, str]] = []
        headers = tuple(
            r.check("headers", lambda: json_headers(table.get("headers", {})), no_headers)
        )
        fields = r.string_map("fields") if "fields" in table else {}
        fields = {**{k: k for k in ("call_id", "disposition", "ended_at")}, **fields}
        ack = r.choice("ack", "none", ("none", "each", "batch"))
        resume = r.choice("resume", "none", ("none", "query", "header", "message"))
        ack_message = table.get("ack_message")
        if ack != "none" and not isinstance(ack_message, dict):
            r.problem("ack_message", f"a table is required with ack = {ack!r}")
        resume_message = table.get("resume_message")
        if resume == "message" and not isinstance(resume_message, dict):
            r.problem("resume_message", 'a table is required with resume = "message"')
        for key in ("nack_message", "subscribe_message", "keepalive_message"):
            if key in table and not isinstance(table[key], dict):
                r.problem(key, "must be a table")
        id_field = r.get("id_field", str, "id")
        if (ack != "none" or resume != "none") and not id_field:
            r.problem("id_field", "acks and resume need the event id's path")
        t = ClientTimeouts(
            open_s=r.number("open_timeout_s", 10.0, low=0.1, high=300),
            ping_interval_s=r.number("ping_interval_s", 20.0, low=0.1, high=3600),
            ping_timeout_s=r.number("ping_timeout_s", 20.0, low=0.1, high=3600),
            close_s=r.number("close_timeout_s", 5.0, low=0.1, high=300),
            reconnect_initial_s=r.number("reconnect_initial_s", 1.0, low=0.001, high=600),
            reconnect_max_s=r.number("reconnect_max_s", 60.0, low=0.001, high=3600),
        )
        cfg = cls(
            url=url,
            name=name,
            headers=headers,
            secret=secret,
            auth=auth,
            auth_header=r.get("auth_header", str, "Authorization"),
            auth_param=r.get("auth_param", str, "token"),
            ca_file=r.get("ca_file", str, "") or None,
            type_field=r.get("type_field", str, "type"),
            event_types=tuple(r.string_list("event_types")),
            id_field=id_field,
            fields=fields,
            extra=r.string_map("extra"),
            dispositions=disposition_overrides(r),
            live_when_agent=r.get("live_when_agent", bool, True),
            ack=ack,
            ack_message=ack_message,
            nack_message=table.get("nack_message"),
            resume=resume,
            resume_param=r.get("resume_param", str, "last_event_id"),
            resume_message=resume_message,
            subscribe_message=table.get("subscribe_message"),
            keepalive_message=table.get("keepalive_message"),
            keepalive_interval_s=r.number("keepalive_interval_s", 30.0, low=0.01, high=3600),
            batch_max=r.integer("batch_max", 2000, low=1, high=100_000),
            queue_max=r.integer("queue_max", 10_000, low=1, high=1_000_000),
            max_message_bytes=r.integer("max_message_bytes", 2**20, low=1024, high=64 * 2**20),
            compression=r.get("compression", bool, False),
            tz=r.tz(),
            timeouts=t,
        )
        # Building the decoder checks the field paths.
        r.check("fields", lambda: cfg.decoder(lambda raw: Mapped(Disposition.UNKNOWN)), None)
        r.raise_if_problems()
        return cfg

    def decoder(self, mapper: Callable[[str], Mapped], default_tz: str = "UTC") -> EventDecoder:
        return EventDecoder(
            source=self.name,
            fields=self.fields,
            extra=self.extra,
            map_disposition=mapper,
            type_field=self.type_field or None,
            event_types=self.event_types,
            id_field=self.id_field or None,
            default_tz=default_tz,
            live_when_agent=self.live_when_agent,
        )


def validate(table: Mapping[str, Any], index: int) -> list[str]:
    """Every problem with a ``type = "websocket"`` table (empty when it is fine)."""
    try:
        WebsocketConfig.from_table(table, index)
    except ConfigError as exc:
        return exc.problems
    return []


def build(table: Mapping[str, Any], spool: Spool, *, default_tz: str = "UTC") -> WebsocketAdapter:
    return WebsocketAdapter(WebsocketConfig.from_table(table), spool, default_tz=default_tz)


# One decoded frame: (event id, outcome, (raw, rejection reason)).
_Item = tuple[str | None, CallOutcome | None, tuple[str | bytes, str] | None]


@dataclass(slots=True)
class _Batch:
    outcomes: list[CallOutcome] = field(default_factory=list)
    bad: list[tuple[str | bytes, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    size: int = 0

    @classmethod
    def of(cls, items: list[_Item]) -> _Batch:
        batch = cls(size=len(items))
        for event_id, outcome, bad in items:
            if event_id is not None:
                batch.ids.append(event_id)
            if outcome is not None:
                batch.outcomes.append(outcome)
            elif bad is not None:
                batch.bad.append(bad)
        return batch


class WebsocketAdapter(ReconnectingClient):
    """Reads a dialer's JSON event stream into the spool; acks after commit."""

    type = "websocket"

    def __init__(
        self,
        config: WebsocketConfig,
        spool: Spool,
        *,
        default_tz: str = "UTC",
        reconnect_delays: Callable[[], Iterator[float]] | None = None,
        commit_retry_delays: Callable[[], Iterator[float]] | None = None,
    ) -> None:
        super().__init__(config.name, timeouts=config.timeouts, reconnect_delays=reconnect_delays)
        self.config = config
        self._spool = spool
        # The feed speaks the normalized vocabulary unless the site maps its own codes.
        dmap = DispositionMap("vocabulary", config.name, config.dispositions)
        self._decoder = config.decoder(dmap.lookup, config.tz or default_tz)
        self._last_id: str | None = None
        self._cursor_loaded = False
        self._commit_delays = commit_retry_delays or (
            lambda: backoff(0.2, config.timeouts.reconnect_max_s)
        )

    # ------------------------------------------------------------------ connect

    async def _connect_target(self) -> ConnectTarget:
        cfg = self.config
        if not self._cursor_loaded:
            self._last_id = await self._spool.get_cursor(cfg.cursor_key)
            self._cursor_loaded = True
        uri = cfg.url
        headers = list(cfg.headers)
        query: list[tuple[str, str]] = []
        if cfg.secret and cfg.auth == "bearer":
            headers.append(("Authorization", f"Bearer {cfg.secret}"))
        elif cfg.secret and cfg.auth == "header":
            headers.append((cfg.auth_header, cfg.secret))
        elif cfg.secret and cfg.auth == "query":
            query.append((cfg.auth_param, cfg.secret))
        if self._last_id is not None and cfg.resume == "query":
            query.append((cfg.resume_param, self._last_id))
        if self._last_id is not None and cfg.resume == "header":
            headers.append((cfg.resume_param, self._last_id))
        if query:
            parts = urlsplit(uri)
            q = parts.query + ("&" if parts.query else "") + urlencode(query)
            uri = urlunsplit((parts.scheme, parts.netloc, parts.path, q, parts.fragment))
        ctx = make_ssl_context(cfg.ca_file) if uri.startswith("wss:") else None
        return ConnectTarget(
            uri=uri,
            headers=headers,
            ssl_context=ctx,
            max_queue=max(16, min(cfg.batch_max, 4096)),
            max_size=cfg.max_message_bytes,
            compression=cfg.compression,
        )

    async def _on_open(self, conn: ClientConnection) -> None:
        cfg = self.config
        if cfg.resume == "message" and self._last_id is not None:
            await conn.send(json.dumps(fill_template(cfg.resume_message, {"id": self._last_id})))
        if cfg.subscribe_message:
            await conn.send(json.dumps(cfg.subscribe_message))
        if self._last_id is not None and cfg.resume != "none":
            self._log.info("ws_resume", after_event_id=self._last_id[:64])

    # ------------------------------------------------------------------ serve

    async def _serve(self, conn: ClientConnection) -> None:
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=self.config.queue_max)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._commit_loop(conn, queue), name=f"{self.name}-commit")
            keepalive = None
            if self.config.keepalive_message:
                keepalive = tg.create_task(self._keepalive(conn), name=f"{self.name}-keepalive")
            try:
                await self._read(conn, queue)
            finally:
                if keepalive is not None:
                    keepalive.cancel()

    async def _keepalive(self, conn: ClientConnection) -> None:
        message = json.dumps(self.config.keepalive_message)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.config.keepalive_interval_s)
                await conn.send(message)

    async def _read(self, conn: ClientConnection, queue: asyncio.Queue[object]) -> None:
        # Decoding happens here, while the committer waits for SQLite: the two overlap.
        decode = self._decode
        put = queue.put
        recv = conn.recv
        try:
            while True:
                # Raw bytes: the JSON parser reads UTF-8 itself (and refuses bad UTF-8),
                # so decoding every text frame to str first would only cost time.
                await put(decode(await recv(decode=False)))
        except ConnectionClosedOK:
            pass
        except ConnectionClosed as exc:
            self._set_error(exc)
        finally:
            # The committer stores everything read so far before this connection ends.
            await queue.put(_EOF)

    async def _commit_loop(self, conn: ClientConnection, queue: asyncio.Queue[object]) -> None:
        batch_max = self.config.batch_max
        while True:
            item = await queue.get()
            if item is _EOF:
                return
            items: list[_Item] = [item]  # type: ignore[list-item]
            eof = False
            while len(items) < batch_max:
                try:
                    nxt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if nxt is _EOF:
                    eof = True
                    break
                items.append(nxt)  # type: ignore[arg-type]
            committed = await self._commit(conn, _Batch.of(items))
            if not committed:
                # Refused: nothing more from this connection is stored or acked.
                await conn.close(_TRY_AGAIN_LATER, "spool full, try again later")
                while not eof and (await queue.get()) is not _EOF:
                    pass
                return
            if eof:
                return

    def _decode(self, raw: str | bytes) -> _Item:
        """One frame -> (event id, outcome or None, rejection or None)."""
        decoder = self._decoder
        try:
            event = decoder.parse(raw)
        except DecodeError as exc:
            return (None, None, (raw, exc.reason))
        if not decoder.wanted(event):
            return (event.event_id, None, None)
        try:
            return (event.event_id, decoder.outcome(event), None)
        except DecodeError as exc:
            return (event.event_id, None, (raw, exc.reason))

    async def _commit(self, conn: ClientConnection, batch: _Batch) -> bool:
        """Store one batch, then ack it. False when the spool refused it."""
        health = self._health
        health.received += batch.size
        skipped = batch.size - len(batch.outcomes) - len(batch.bad)
        if skipped:
            self._extra("filtered", skipped)
        cursor = (self.config.cursor_key, batch.ids[-1]) if batch.ids else None
        holds = self.config.ack == "none" and self.config.resume == "none"
        delays: Iterator[float] | None = None
        while True:
            try:
                while batch.bad:
                    raw, reason = batch.bad[0]
                    await self._spool.quarantine(self.name, raw, reason)
                    batch.bad.pop(0)
                    health.rejected += 1
                    self._log.warning("ws_event_rejected", reason=log_reason(reason))
                results = await self._spool.put_many(batch.outcomes, cursor=cursor)
                break
            except (SpoolFull, SpoolUnavailable) as exc:
                if delays is None:  # count a held batch once, not on every retry
                    health.refused += len(batch.outcomes)
                health.last_error = f"spool refused: {type(exc).__name__}"
                retry_s = exc.retry_after_s or 1.0
                if not holds:
                    self._log.warning(
                        "ws_batch_refused",
                        events=batch.size,
                        error=type(exc).__name__,
                        retry_after_s=retry_s,
                    )
                    await self._send_nack(conn, batch.ids)
                    self._hold_off_s = min(retry_s, self.config.timeouts.reconnect_max_s)
                    return False
                if self._stopping.is_set():
                    # No acks and no resume: the dialer cannot be asked to resend.
                    self._log.error("ws_batch_lost_on_stop", events=batch.size)
                    return False
                delays = delays or self._commit_delays()
                delay = max(next(delays), retry_s)
                self._log.warning(
                    "ws_batch_held", events=batch.size, error=type(exc).__name__, delay_s=delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        for result in results:
            if result.stored:
                health.accepted += 1
            else:
                health.duplicates += 1
        if cursor is not None:
            self._last_id = cursor[1]
        self._extra("batches")
        await self._send_acks(conn, batch.ids)
        return True

    async def _send_acks(self, conn: ClientConnection, ids: list[str]) -> None:
        cfg = self.config
        if cfg.ack == "none" or not ids:
            return
        try:
            if cfg.ack == "each":
                for event_id in ids:
                    await conn.send(json.dumps(fill_template(cfg.ack_message, {"id": event_id})))
                self._extra("acks_sent", len(ids))
            else:
                message = fill_template(cfg.ack_message, {"id": ids[-1], "ids": ids})
                await conn.send(json.dumps(message))
                self._extra("acks_sent")
        except ConnectionClosed:
            # Committed but not acked: the dialer redelivers, the spool sees duplicates.
            self._extra("acks_lost", len(ids))

    async def _send_nack(self, conn: ClientConnection, ids: list[str]) -> None:
        template = self.config.nack_message
        if not template:
            return
        message = fill_template(template, {"id": ids[-1] if ids else None, "ids": ids})
        with contextlib.suppress(ConnectionClosed):
            await conn.send(json.dumps(message))
