"""The ASGI app: auth, API-call accounting, faults and routing around the org's resources.

Paths:

- ``/services/oauth2/token``: OAuth token endpoint (§1), never counted;
- ``/services/data`` (and ``/``): the versions list, no auth, not counted, no limit header (§2.2);
- ``/services/data/vNN.N/...``: bearer auth (401 INVALID_SESSION_ID), version check (410 for a
  retired version), one API call counted (403 REQUEST_LIMIT_EXCEEDED past the limit), request
  faults, then the REST resources (``sfsim.rest``) or a plugin's routes (Bulk 2.0); every answer
  carries ``Sforce-Limit-Info`` (§5.1);
- ``/services/Soap/u/NN.N``: the SOAP ``login`` call some clients use to get a session;
- ``/__sim/...``: the control API (``sfsim.control``), open on loopback only.

The hot path is a plain ASGI callable with no framework routing, so the sim is never the
bottleneck of a benchmark.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from starlette.routing import BaseRoute, Mount, Router

from sfsim.control import ControlApi
from sfsim.errors import SfError
from sfsim.oauth import token_endpoint
from sfsim.org import LATEST_VERSION, MIN_VERSION, Org, version_label
from sfsim.rest import NO_BODY, Reply, RestApi
from sfsim.soap import soap_login

__all__ = ["SimApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Request headers the REST resources look at.
_PASSED_HEADERS: Final = frozenset(
    {b"if-modified-since", b"sforce-auto-assign", b"x-prettyprint", b"sforce-query-options"}
)
_VERSION_RE: Final = re.compile(r"^(\d{1,3})\.(\d)$")
#: Largest request body accepted on REST paths (50 MB of JSON text, §2.8 "413").
MAX_BODY: Final = 50 * 1024 * 1024
#: URI (and URI plus headers) size limit (§2.8: 414 / 431 at 16,384 bytes).
MAX_URI: Final = 16_384
_JSON_CT: Final = b"application/json;charset=UTF-8"
_SESSION_INVALID: Final = SfError(401, "INVALID_SESSION_ID", "Session expired or invalid")
_LIMIT_EXCEEDED: Final = SfError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
_ERROR_BODIES: Final[dict[int, SfError]] = {
    500: SfError(
        500,
        "UNKNOWN_EXCEPTION",
        "An unexpected error occurred. Please include this ErrorId if you contact "
        "support: 1404726549-52637 (-1328129466)",
    ),
    502: SfError(502, "SERVER_UNAVAILABLE", "Bad Gateway"),
    503: SfError(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable"),
}


#: One encoder for every response (json.dumps with options builds a new encoder per call).
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _kind(segments: list[str], plugin_kind: str | None) -> str:
    """The resource kind a request is counted under in /__sim/stats."""
    if plugin_kind is not None:
        return plugin_kind
    head = segments[0] if segments else ""
    if head == "sobjects":
        if len(segments) >= 3 and segments[2] == "describe":
            return "describe"
        return "sobjects"
    if head in ("query", "queryAll"):
        return "query"
    if head == "composite":
        if len(segments) > 1 and segments[1] == "sobjects":
            return "collections"
        if len(segments) > 1 and segments[1] == "batch":
            return "composite_batch"
        return "composite"
    if head == "limits":
        return "limits"
    # Unknown resources share one kind, so stats stay bounded whatever paths clients try.
    return "resources" if head == "" else "other"


class _Dropped(Exception):
    """Internal: the response must be cut off (a dropped-connection fault)."""


class SimApp:
    """The sim's ASGI application for one org."""

    def __init__(self, org: Org) -> None:
        self.org = org
        self.rest = RestApi(org)
        self.control = ControlApi(org)
        routes: list[BaseRoute] = []
        self._plugin_prefixes: list[tuple[str, str]] = []
        for plugin in org.plugins:
            routes.extend(plugin.routes())
            self._plugin_prefixes.extend((p, plugin.name) for p in plugin.path_prefixes())
        self._plugin_app = (
            Router(routes=[Mount("/services/data/v{version}", routes=routes)]) if routes else None
        )

    @property
    def token_url(self) -> str:
        return f"{self.org.instance_url}/services/oauth2/token"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/services/data/v"):
            await self._api(scope, receive, send)
        elif path in ("/services/data", "/services/data/"):
            await self._versions(scope, send)
        elif path == "/services/oauth2/token":
            await self._token(scope, receive, send)
        elif path.startswith("/services/Soap/u/"):
            try:
                body = await _read_body(receive, 1024 * 1024)
            except _TooLarge:
                await _send(send, 413, b"", b"text/plain")
                return
            status, text = soap_login(self.org, path, body)
            await _send(send, status, text.encode("utf-8"), b"text/xml;charset=UTF-8")
        elif path.startswith("/id/") or path == "/services/oauth2/userinfo":
            await self._identity(scope, send, path)
        elif path.startswith("/__sim/"):
            await self.control(scope, receive, send)
        else:
            await _send_json(
                send,
                404,
                [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}],
            )

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _versions(self, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _send_json(
                send,
                405,
                [
                    {
                        "errorCode": "METHOD_NOT_ALLOWED",
                        "message": "HTTP Method not allowed: Allow: GET",
                    }
                ],
            )
            return
        versions = [
            {"label": version_label(v), "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(MIN_VERSION, LATEST_VERSION + 1)
        ]
        await _send_json(send, 200, versions)

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _send_json(
                send, 405, {"error": "invalid_request", "error_description": "must use HTTP POST"}
            )
            return
        try:
            body = await _read_body(receive, 1024 * 1024)
        except _TooLarge:
            await _send_json(
                send, 400, {"error": "invalid_request", "error_description": "request too large"}
            )
            return
        handled, _ = await self._request_faults("oauth", send, None)
        if handled:
            return
        ctype = (_header(scope, b"content-type") or "").lower()
        if "json" in ctype:
            await _send_json(
                send,
                400,
                {"error": "invalid_request", "error_description": "unsupported content type"},
            )
            return
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        # Query-string parameters are accepted too, as a real org does for the token endpoint.
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            form.setdefault(key, value)
        base = self.org.instance_url
        status, payload = token_endpoint(
            config=self.org.oauth,
            tokens=self.org.tokens,
            form=form,
            authorization=_header(scope, b"authorization"),
            instance_url=base,
            user_id=self.org.user_id,
            accepted_audiences=self._audiences(base),
        )
        await _send_json(send, status, payload)

    async def _identity(self, scope: Scope, send: Send, path: str) -> None:
        """The identity URL from the token response (``/id/00D.../005...``) and ``userinfo``.

        Bearer auth; not an API call. Unknown ids are 404, a bad token 403 ``Bad_OAuth_Token``.
        """
        org = self.org
        if not self._authorized(scope):
            await _send(send, 403, b"Bad_OAuth_Token", b"text/plain")
            return
        user_id = org.user_id
        if path.startswith("/id/"):
            parts = path.strip("/").split("/")
            if len(parts) != 3 or parts[1] != org.org_id or parts[2] != user_id:
                await _send(send, 404, b"Bad_Id", b"text/plain")
                return
        base = org.instance_url
        user = org.store.get("User", user_id) if org.schema.get("User") else None
        user = user or {}
        identity = f"{base}/id/{org.org_id}/{user_id}"
        body = {
            "id": identity,
            "asserted_user": True,
            "user_id": user_id,
            "organization_id": org.org_id,
            "username": org.config.username,
            "nick_name": user.get("Alias") or "integration",
            "display_name": user.get("Name") or org.config.username,
            "email": user.get("Email"),
            "email_verified": True,
            "first_name": user.get("FirstName"),
            "last_name": user.get("LastName"),
            "timezone": user.get("TimeZoneSidKey") or "GMT",
            "active": True,
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": 0,
            "urls": {
                "rest": f"{base}/services/data/v{{version}}/",
                "sobjects": f"{base}/services/data/v{{version}}/sobjects/",
                "query": f"{base}/services/data/v{{version}}/query/",
                "partner": f"{base}/services/Soap/u/{{version}}/{org.org_id}",
                "profile": f"{base}/{user_id}",
            },
        }
        if path == "/services/oauth2/userinfo":
            body = {
                "sub": identity,
                "user_id": user_id,
                "organization_id": org.org_id,
                "preferred_username": org.config.username,
                "name": body["display_name"],
                "email": body["email"],
                "email_verified": True,
                "zoneinfo": body["timezone"],
                "active": True,
                "user_type": "STANDARD",
                "urls": body["urls"],
            }
        await _send_json(send, 200, body)

    @staticmethod
    def _audiences(base: str) -> frozenset[str]:
        """JWT ``aud`` values accepted: login/test hosts, and this sim by any loopback name."""
        out = {"https://login.salesforce.com", "https://test.salesforce.com", base}
        scheme, _, rest = base.partition("://")
        port = rest.rsplit(":", 1)[1] if ":" in rest else ""
        for host in ("127.0.0.1", "localhost", "[::1]"):
            out.add(f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}")
        return frozenset(out)

    # ---------------------------------------------------------------- the API

    def _authorized(self, scope: Scope) -> bool:
        auth = _header(scope, b"authorization")
        if not auth:
            return False
        scheme, _, token = auth.partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            return False
        return self.org.tokens.check(token.strip()) is not None

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        org = self.org
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        uri_len = len(raw) + len(scope.get("query_string", b""))
        if uri_len > MAX_URI:
            # Over 16,384 bytes of URI: 414; with the headers over the same: 431 (§2.8, §7.18).
            await _send(send, 414, b"", None)
            return
        if uri_len + sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > MAX_URI:
            await _send(send, 431, b"", None)
            return
        raw_path = bytes(raw).split(b"?", 1)[0].decode("latin-1")
        version, _, tail = raw_path[len("/services/data/v") :].partition("/")
        m = _VERSION_RE.match(version)
        if not self._authorized(scope):
            await _send_json(send, 401, _SESSION_INVALID.rest_body())
            return
        if m is None or int(m.group(1)) > LATEST_VERSION:
            await _send_json(
                send,
                404,
                [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}],
            )
            return
        if int(m.group(1)) < MIN_VERSION:
            # Retired versions answer 410 GONE (§2.1). [U] body text.
            await _send_json(
                send,
                410,
                [
                    {
                        "errorCode": "API_VERSION_RETIRED",
                        "message": f"API version {version} has been retired",
                    }
                ],
            )
            return
        tail_path = "/" + tail
        plugin_kind = None
        for prefix, name in self._plugin_prefixes:
            if tail_path.startswith(prefix) or tail_path + "/" == prefix:
                plugin_kind = name
                break
        segments = [unquote(s) for s in tail.split("/")] if "%" in tail else tail.split("/")
        kind = _kind(segments, plugin_kind)
        usage = org.usage
        if not usage.try_count(kind):
            await _send_json(send, 403, _LIMIT_EXCEEDED.rest_body(), usage.header)
            return
        handled, drop_after = await self._request_faults(kind, send, usage.header)
        if handled:
            return
        if plugin_kind is not None and self._plugin_app is not None:
            await self._plugin(scope, receive, send, drop_after)
            return
        method: str = scope["method"]
        body: Any = NO_BODY
        if method in ("POST", "PATCH", "PUT", "DELETE"):
            try:
                raw_body = await _read_body(receive, MAX_BODY)
            except _TooLarge:
                # [U] no documented JSON-body cap or 413 shape (§2.8): an empty 413.
                await _send(send, 413, b"", b"text/plain", usage.header)
                return
            if raw_body.strip():
                ctype = (_header(scope, b"content-type") or "application/json").lower()
                if "json" not in ctype:
                    await _send_json(
                        send,
                        415,
                        [
                            {
                                "errorCode": "UNSUPPORTED_MEDIA_TYPE",
                                "message": (
                                    f"Content type '{ctype}' not supported for this resource"
                                ),
                            }
                        ],
                        usage.header,
                    )
                    return
                try:
                    body = json.loads(raw_body)
                except (ValueError, UnicodeDecodeError) as exc:
                    await _send_json(
                        send,
                        400,
                        [
                            {
                                "errorCode": "JSON_PARSER_ERROR",
                                "message": f"Unexpected character: {exc}",
                            }
                        ],
                        usage.header,
                    )
                    return
        qs: bytes = scope.get("query_string", b"")
        query = dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True)) if qs else {}
        headers = {}
        for key, value in scope["headers"]:
            if key in _PASSED_HEADERS:
                headers[bytes(key).decode("latin-1")] = bytes(value).decode("latin-1")
        # HEAD is GET without the body (the server drops it).
        reply: Reply = self.rest.dispatch(
            "GET" if method == "HEAD" else method, version, segments, query, body, headers
        )
        if reply.body is None:
            payload = b""
        elif "x-prettyprint" in headers:
            payload = json.dumps(reply.body, indent=4, ensure_ascii=False).encode("utf-8")
        else:
            payload = _dumps(reply.body)
        extra = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
        ]
        if drop_after:
            await _send_truncated(send, payload[: len(payload) // 2] or b"{")
            return
        await _send(send, reply.status, payload, _JSON_CT if payload else None, usage.header, extra)

    async def _request_faults(
        self, kind: str, send: Send, limit_info: str | None
    ) -> tuple[bool, bool]:
        """Latency, injected 5xx and dropped connections; returns (answered, drop_after)."""
        faults = self.org.faults
        if not (faults.active and faults.applies_to(kind)):
            return False, False
        delay = faults.latency_s()
        if delay > 0:
            await asyncio.sleep(delay)
        status = faults.take_error()
        if status is not None:
            retry_after = faults.settings.retry_after_s
            await _send(
                send,
                status,
                _dumps(_ERROR_BODIES[status].rest_body()),
                _JSON_CT,
                self.org.usage.header if limit_info else None,
                [(b"retry-after", str(retry_after).encode())] if retry_after is not None else None,
            )
            return True, False
        if faults.take_drop():
            if not faults.settings.drop_after_processing:
                await _send_truncated(send, b"[")
                return True, False
            return False, True
        return False, False

    async def _plugin(self, scope: Scope, receive: Receive, send: Send, drop_after: bool) -> None:
        usage = self.org.usage
        assert self._plugin_app is not None

        async def send_with_limit(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"sforce-limit-info", usage.header.encode("latin-1")))
                message = {**message, "headers": headers}
                if drop_after:
                    await send(message)
                    raise _Dropped
            await send(message)

        try:
            await self._plugin_app(scope, receive, send_with_limit)
        except _Dropped:
            await send({"type": "http.response.body", "body": b"", "more_body": True})


class _TooLarge(Exception):
    """Internal: the request body is over the limit (the rest is drained, not kept)."""


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; raises _TooLarge past ``limit`` bytes (reading on, keeping none)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > limit:
        raise _TooLarge
    return b"".join(chunks)


async def _send(
    send: Send,
    status: int,
    payload: bytes,
    content_type: bytes | None,
    limit_info: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers: list[tuple[bytes, bytes]] = []
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if limit_info is not None:
        headers.append((b"sforce-limit-info", limit_info.encode("latin-1")))
    if extra:
        headers.extend(extra)
    headers.append((b"content-length", str(len(payload)).encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _send_json(send: Send, status: int, value: Any, limit_info: str | None = None) -> None:
    await _send(send, status, _dumps(value), _JSON_CT, limit_info)


async def _send_truncated(send: Send, partial: bytes) -> None:
    """Start a response and stop mid-body: the server then closes the connection."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", _JSON_CT),
                (b"content-length", str(len(partial) + 64).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": partial, "more_body": True})
