"""``webhook`` adapter: an HTTP server (uvicorn + Starlette) with dialer presets.

Presets (``preset = ...`` in the ``[[adapter]]`` table, see ``adapters.config``):

* ``vicidial``: ``GET <path>/dispo`` (the campaign's Dispo Call URL: agent
  dispositions, ``live``) and ``GET|POST <path>/no-agent`` (No Agent Call URL:
  calls that never reached an agent). Authenticated by the ``token`` query
  parameter (VICIdial cannot add headers) or ``Authorization: Bearer``.
* ``twilio``: ``POST|GET <path>[/...]``: Voice status callbacks, authenticated
  by ``X-Twilio-Signature`` (the adapter's ``secret`` is the account's auth
  token).
* ``json``: ``POST <path>``: one outcome or an array in the ``CallOutcome``
  shape, authenticated by an HMAC-SHA256 signature header or a bearer token.

Delivery: the response is sent after the spool committed. 200 for stored,
duplicate and stale outcomes alike (a retrying dialer is harmless); 400/422
naming what was wrong for bad input (kept in the quarantine table); 401/403
for failed authentication (not stored: unauthenticated bytes never fill the
disk); 413 past ``max_body_bytes``; 503 with ``Retry-After`` when the spool
refuses, and from the moment ``stop()`` is called until the server is down.
VICIdial never retries its GET, so the handler does nothing but decode, commit
and answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
from collections import OrderedDict
from collections.abc import Generator, Mapping
from datetime import tzinfo
from typing import Any, Final
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters._base import AdapterHealth, AdapterState
from adapters._decode_util import DecodeError
from adapters._ingest import Intake, Refused
from adapters._json_hook import JsonBatch, decode_json, verify_hmac
from adapters._twilio import decode_twilio, validate_signature
from adapters._vicidial import VicidialKind, decode_vicidial
from adapters.config import WebhookConfig, parse_listen, table_problems
from adapters.dispositions import DispositionMap
from spool import CallOutcome, PutResult, Spool
from spool.errors import SpoolClosed, SpoolError

__all__ = ["WebhookAdapter", "build", "validate"]

log = structlog.get_logger("adapters.webhook")

# Query parameters never kept in the quarantine table (secrets VICIdial can
# substitute into a URL: the token, and the agent's and phone's passwords).
_SECRET_PARAMS: Final = frozenset({"token", "pass", "phone_pass", "secret", "api_key"})
_PLATFORM: Final = {"vicidial": "vicidial", "twilio": "twilio", "json": "vocabulary"}
_AMD_REMEMBERED: Final = 100_000
# Bad items of a JSON batch quarantined one row each up to this many; beyond, the body once.
_MAX_ITEM_ROWS: Final = 10

# One socket write per response (httptools, which uvicorn[standard] brings on CPython);
# uvicorn's own choice where httptools is missing.
_HTTP_PROTOCOL: type[asyncio.Protocol] | str
try:
    from adapters._http_proto import CoalescingHttpToolsProtocol as _HTTP_PROTOCOL
except ImportError:  # pragma: no cover - httptools not installed
    _HTTP_PROTOCOL = "auto"
# The bound on a request head when uvicorn falls back to h11 (its own setting; the
# httptools protocol above enforces the same target + header limits itself).
_H11_MAX_HEAD_BYTES: Final = 2 * 65_536


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The daemon owns SIGTERM/SIGINT (they set its stop event) and calls stop().
        yield


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=dict(headers) if headers else None,
    )


def validate(table: Mapping[str, Any], index: int) -> list[str]:
    """Every problem with a ``type = "webhook"`` table (empty when it is fine)."""
    return table_problems(WebhookConfig, table, index)[1]


def build(table: Mapping[str, Any], spool: Spool, *, default_tz: str = "UTC") -> WebhookAdapter:
    cfg, problems = table_problems(WebhookConfig, table, 0)
    if problems or not isinstance(cfg, WebhookConfig):
        raise ValueError("; ".join(problems))
    return WebhookAdapter(cfg, spool, default_tz=default_tz)


class WebhookAdapter:
    """One HTTP listener for one preset; the daemon's TaskGroup owns :meth:`run`."""

    def __init__(self, cfg: WebhookConfig, spool: Spool, *, default_tz: str = "UTC") -> None:
        self.cfg = cfg
        self.name = cfg.source
        self._health = AdapterHealth(name=self.name, type="webhook")
        self._intake = Intake(spool, self._health, source=self.name)
        self._dmap = DispositionMap(_PLATFORM[cfg.preset], self.name, cfg.overrides())
        self._tz: tzinfo = ZoneInfo(cfg.tz or default_tz)
        self._secret = cfg.secret
        self._stopping = False
        self._sock: socket.socket | None = None
        self._server: _Server | None = None
        self._log = log.bind(adapter=self.name, preset=cfg.preset)
        self.bound_port: int | None = None
        # Twilio async AMD reports AnsweredBy on its own callback (no CallStatus);
        # remembered per CallSid for the final status callback. In memory and
        # bounded: after a restart a call's AMD result may be missing ([U] whether
        # Twilio repeats AnsweredBy on the final callback is unconfirmed).
        self._answered_by: OrderedDict[str, str] = OrderedDict()
        self.app = Starlette(routes=self._routes())

    # ------------------------------------------------------------ lifecycle

    def health(self) -> AdapterHealth:
        return self._health

    async def start(self) -> None:
        """Bind and listen (port 0 picks a free port: see ``bound_port``)."""
        if self._secret is None and not self.cfg.trusted:
            raise ValueError(
                f"webhook {self.name!r}: no secret configured; refusing to start "
                "(set trusted = true only on a trusted network)"
            )
        if self._sock is not None:
            return
        host, port = parse_listen(self.cfg.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on an accepted socket only
        # when its proto says TCP (accepted sockets inherit the listener's). Without it
        # uvicorn's header and body writes meet Nagle + the client's delayed ACK: every
        # keep-alive response waited ~40 ms (about 700 requests/s at 32 clients).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.bound_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_keep_alive=15,
            timeout_graceful_shutdown=10,
            proxy_headers=False,
            limit_concurrency=self.cfg.max_connections,
            http=_HTTP_PROTOCOL,
            h11_max_incomplete_event_size=_H11_MAX_HEAD_BYTES,
        )
        self._server = _Server(config)
        self._health.state = AdapterState.LISTENING
        self._log.info(
            "webhook_listening",
            listen=f"{host}:{self.bound_port}",
            path=self.cfg.base_path,
            authenticated=self._secret is not None,
        )

    async def run(self) -> None:
        """Serve until :meth:`stop`."""
        if self._server is None or self._sock is None:
            raise RuntimeError("WebhookAdapter.start() was not called")
        try:
            await self._server.serve(sockets=[self._sock])
        finally:
            self._sock.close()
            self._health.state = AdapterState.STOPPED
            self._log.info("webhook_stopped")

    async def stop(self) -> None:
        """Intake answers 503 + Retry-After from now on; the server shuts down."""
        if not self._stopping:
            self._stopping = True
            self._log.info("webhook_stopping")
        if self._health.state is not AdapterState.STOPPED:
            self._health.state = AdapterState.STOPPING
        if self._server is not None:
            self._server.should_exit = True
        else:
            self._health.state = AdapterState.STOPPED

    # ------------------------------------------------------------ routing

    def _routes(self) -> list[Route]:
        base = self.cfg.base_path.rstrip("/")
        if self.cfg.preset == "vicidial":
            return [
                Route(f"{base}/dispo", self._vicidial_dispo, methods=["GET", "POST"]),
                Route(f"{base}/no-agent", self._vicidial_no_agent, methods=["GET", "POST"]),
            ]
        if self.cfg.preset == "twilio":
            return [
                Route(base or "/", self._twilio, methods=["GET", "POST"]),
                Route(f"{base}/{{tail:path}}", self._twilio, methods=["GET", "POST"]),
            ]
        return [Route(base or "/", self._json_post, methods=["POST"])]

    def _unavailable(self, reason: str, retry_after: str) -> Response:
        return _json(503, {"error": reason}, {"Retry-After": retry_after})

    def _stopping_response(self) -> Response:
        return self._unavailable("shutting down", str(max(1, round(self.cfg.retry_after_s))))

    async def _body(self, request: Request) -> bytes:
        limit = self.cfg.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.cfg.read_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise _TooLarge
                    chunks.append(chunk)
        except TimeoutError:
            raise _TooSlow from None
        return b"".join(chunks)

    async def _read(self, request: Request) -> bytes | Response:
        """The body, or the 413/408 response that refuses it."""
        if request.method != "POST":
            return b""
        try:
            return await self._body(request)
        except _TooLarge:
            return self._too_large()
        except _TooSlow:
            self._health.rejected += 1
            self._log.warning("webhook_body_too_slow", timeout_s=self.cfg.read_timeout_s)
            return _json(408, {"error": f"body not received within {self.cfg.read_timeout_s:g} s"})

    def _too_large(self) -> Response:
        self._health.rejected += 1
        self._log.warning("webhook_body_too_large", limit=self.cfg.max_body_bytes)
        return _json(413, {"error": f"body larger than {self.cfg.max_body_bytes} bytes"})

    def _unauthorized(self, why: str, status: int = 401) -> Response:
        self._health.extra["unauthorized"] = self._health.extra.get("unauthorized", 0) + 1
        self._log.warning("webhook_unauthorized", reason=why)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return _json(status, {"error": why}, headers)

    def _bearer_ok(self, request: Request) -> bool:
        assert self._secret is not None
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._secret.encode()
        )

    async def _commit(self, outcomes: list[CallOutcome]) -> list[PutResult] | Response:
        try:
            return await self._intake.store(outcomes)
        except Refused as exc:
            return self._unavailable(exc.reason, exc.retry_after_header)
        except SpoolClosed:
            return self._stopping_response()

    async def _reject(
        self, raw: bytes | str, reason: str, status: int = 400, call_id: str | None = None
    ) -> Response:
        try:
            await self._intake.reject(raw, reason, call_id=call_id)
        except Refused as exc:
            return self._unavailable(exc.reason, exc.retry_after_header)
        except SpoolClosed:
            return self._stopping_response()
        return _json(status, {"error": reason})

    def _stored(self, results: list[PutResult], outcomes: list[CallOutcome]) -> Response:
        if len(results) == 1:
            return _json(
                200,
                {"status": results[0].status.value, "call_id": outcomes[0].call_id},
            )
        return _json(200, {"results": [r.status.value for r in results]})

    # ------------------------------------------------------------ vicidial

    async def _vicidial_dispo(self, request: Request) -> Response:
        return await self._vicidial(request, "dispo")

    async def _vicidial_no_agent(self, request: Request) -> Response:
        return await self._vicidial(request, "no-agent")

    async def _vicidial(self, request: Request, kind: VicidialKind) -> Response:
        if self._stopping:
            return self._stopping_response()
        self._health.received += 1
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        pairs = parse_qs(request.url.query, keep_blank_values=True)
        if body:
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            for key, values in form.items():
                pairs.setdefault(key, values)
        query = {k: v[0] for k, v in pairs.items()}
        if self._secret is not None:
            token = query.get(self.cfg.params.get("token", "token"), "")
            if not (
                hmac.compare_digest(token.encode(), self._secret.encode())
                or self._bearer_ok(request)
            ):
                return self._unauthorized("missing or wrong token")
        hidden = _SECRET_PARAMS | {self.cfg.params.get("token", "token").lower()}
        raw = urlencode({k: v for k, v in query.items() if k.lower() not in hidden})
        try:
            fields = decode_vicidial(
                query,
                kind=kind,
                source=self.name,
                dmap=self._dmap,
                tz=self._tz,
                params=self.cfg.params,
            )
        except DecodeError as exc:
            return await self._reject(raw, str(exc))
        if fields is None:
            return self._ignored()
        # VICIdial sends each URL once and never retries (dialers.md section 8)
        return await self._store_fields(fields, raw, sender_retries=False)

    def _ignored(self) -> Response:
        self._health.extra["ignored"] = self._health.extra.get("ignored", 0) + 1
        return _json(200, {"status": "ignored", "reason": "not a final status"})

    async def _store_fields(
        self, fields: dict[str, Any], raw: bytes | str, *, sender_retries: bool = True
    ) -> Response:
        result = Intake.validate(fields)
        if isinstance(result, str):
            return await self._reject(raw, result, call_id=str(fields.get("call_id")))
        stored = await self._commit([result])
        if isinstance(stored, Response):
            if not sender_retries and stored.status_code == 503:
                await self._keep_refused(raw, result.call_id)
            return stored
        return self._stored(stored, [result])

    async def _keep_refused(self, raw: bytes | str, call_id: str) -> None:
        """Best effort for a sender that never retries (VICIdial): keep the refused request.

        The answer stays 503 (nothing was stored as an outcome); the quarantine table
        (a separate table, not bound by ``max_pending``) lets an admin replay it.
        """
        try:
            await self._intake.spool.quarantine(
                self.name, raw, "not stored: the spool refused it and this sender never retries"
            )
        except SpoolError:  # the spool is refusing anyway; the 503 and its log line stand
            self._log.warning("refused_request_lost", call_id=call_id)

    # ------------------------------------------------------------ twilio

    def _public_url(self, request: Request) -> str:
        query = request.url.query
        suffix = f"?{query}" if query else ""
        if self.cfg.public_url:
            base = self.cfg.public_url.rstrip("/")
            tail = request.url.path[len(self.cfg.base_path.rstrip("/")) :]
            return f"{base}{tail}{suffix}"
        scheme = request.url.scheme
        host = request.headers.get("host", "")
        if self.cfg.proxy_headers:
            scheme = request.headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
            host = request.headers.get("x-forwarded-host", host).split(",")[0].strip()
        # the raw path as sent (never re-encoded: the signature covers it byte for byte)
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        return f"{scheme}://{host}{raw_path.decode('latin-1')}{suffix}"

    async def _twilio(self, request: Request) -> Response:
        if self._stopping:
            return self._stopping_response()
        self._health.received += 1
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        ctype = request.headers.get("content-type", "")
        form_pairs: dict[str, list[str]] = {}
        if request.method == "POST" and "application/x-www-form-urlencoded" in ctype:
            form_pairs = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        if self._secret is not None:
            url = self._public_url(request)
            signature = request.headers.get("x-twilio-signature")
            if not validate_signature(url, form_pairs, signature, self._secret, body=body):
                return self._unauthorized("X-Twilio-Signature does not match", 403)
        query = {k: v[0] for k, v in parse_qs(request.url.query, keep_blank_values=True).items()}
        params = {**query, **{k: v[0] for k, v in form_pairs.items()}}
        raw = body if body else urlencode(params)
        sid = params.get("CallSid", "").strip()
        if sid and params.get("AnsweredBy") and not params.get("CallStatus"):
            # AsyncAmdStatusCallback: CallSid + AnsweredBy (+ MachineDetectionDuration)
            self._answered_by[sid] = params["AnsweredBy"]
            self._answered_by.move_to_end(sid)
            while len(self._answered_by) > _AMD_REMEMBERED:
                self._answered_by.popitem(last=False)
            return _json(200, {"status": "recorded", "call_id": sid})
        if sid and not params.get("AnsweredBy") and sid in self._answered_by:
            params["AnsweredBy"] = self._answered_by[sid]
        lead = query.get(self.cfg.lead_param) if self.cfg.lead_param else None
        try:
            fields = decode_twilio(params, source=self.name, dmap=self._dmap, lead=lead)
        except DecodeError as exc:
            return await self._reject(raw, str(exc))
        if fields is None:
            return self._ignored()
        return await self._store_fields(fields, raw)

    # ------------------------------------------------------------ json

    async def _json_post(self, request: Request) -> Response:
        if self._stopping:
            return self._stopping_response()
        self._health.received += 1
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        if self._secret is not None and not (
            verify_hmac(body, request.headers.get(self.cfg.signature_header), self._secret)
            or self._bearer_ok(request)
        ):
            return self._unauthorized(
                f"missing or wrong {self.cfg.signature_header} signature or bearer token"
            )
        try:
            batch = decode_json(
                body, source=self.name, dmap=self._dmap, max_batch=self.cfg.max_batch
            )
        except DecodeError as exc:
            return await self._reject(body, str(exc))
        results: list[PutResult] = []
        if batch.outcomes:
            stored = await self._commit(batch.outcomes)
            if isinstance(stored, Response):
                return stored
            results = stored
        if batch.errors:
            refused = await self._quarantine_items(body, batch)
            if refused is not None:
                return refused
            return _json(
                422 if results else 400,
                {
                    "error": "; ".join(reason for _, reason, _ in batch.errors)[:4000],
                    "accepted": len(results),
                    "rejected": [index for index, _, _ in batch.errors],
                },
            )
        if batch.is_batch:
            return _json(200, {"results": [r.status.value for r in results]})
        return self._stored(results, batch.outcomes)

    async def _quarantine_items(self, body: bytes, batch: JsonBatch) -> Response | None:
        """Keep the bad items (each alone, or the whole body when many); a 503 if refused."""
        if not batch.is_batch or len(batch.errors) > _MAX_ITEM_ROWS:
            reason = "; ".join(r for _, r, _ in batch.errors)
            refused = await self._reject(body, reason[:4000])
            return refused if refused.status_code == 503 else None
        items = json.loads(body)
        for index, reason, call_id in batch.errors:
            refused = await self._reject(json.dumps(items[index]), reason, call_id=call_id)
            if refused.status_code == 503:
                return refused
        return None
