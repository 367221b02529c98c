"""The Salesforce client: one pooled httpx client, shared token, every call timed out.

Thin I/O shell over :mod:`.auth`, :mod:`.wire` and :mod:`.errors`:

- the token is obtained once and shared; a 401 ``INVALID_SESSION_ID`` triggers
  exactly one refresh however many requests saw it (single flight, keyed by how
  many token requests had settled when the request went out), then the request
  is replayed once. A refresh that fails is raised to every request that waited
  for it, not tried again by each. A second 401 right after a fresh token is a
  configuration problem (e.g. missing ``api`` scope), not a reason to spin, on
  every kind of call (REST, Bulk upload, result download);
- TLS verification is always on (plus an optional extra CA file); ``http://`` is
  refused unless ``allow_http`` is set (local sfsim only);
- every API response's ``Sforce-Limit-Info`` feeds the :class:`QuotaView`;
- httpx exceptions are translated once, in :func:`map_salesforce_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
import types
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx
import structlog

from .auth import AuthFlow, Credentials, PrivateKeyError, RefreshTokenStore, token_form
from .errors import (
    AuthError,
    ClientClosed,
    ConfigurationError,
    RequestLimitError,
    SalesforceError,
    SessionExpired,
    TlsUntrustedError,
    TransportError,
    error_from_oauth_response,
    error_from_response,
)
from .limits import QuotaView, usage_from_limits
from .wire import (
    ItemResult,
    collection_records,
    composite_body,
    parse_collection_results,
    parse_composite_results,
)

__all__ = ["CallHook", "SalesforceClient", "SendHook", "map_salesforce_errors"]

log = structlog.get_logger("dispo_sync.salesforce")

# (rail, method, path_kind, status or 0, seconds): after each API call (metrics).
CallHook = Callable[[str, str, str, int, float], None]
# (rail, method, path_kind): just before a request leaves (latency measurement).
SendHook = Callable[[str, str, str], None]


@contextlib.contextmanager
def map_salesforce_errors() -> Iterator[None]:
    """Translate httpx exceptions into ours, once, at the boundary.

    Every ``httpx.HTTPError`` leaves as one of ours: code above the client (the rails)
    catches only :class:`SalesforceError`. Besides timeouts and connection errors, a body
    that cannot be decoded (``httpx.DecodingError``: a gzip result file cut or corrupted
    on the way) and any other ``httpx.HTTPError`` is a retryable :class:`TransportError`:
    the response was not usable, and fetching it again may well be.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransportError(f"timeout: {type(exc).__name__}") from exc
    except httpx.HTTPStatusError as exc:
        raise error_from_response(
            exc.response.status_code,
            exc.response.content,
            retry_after=exc.response.headers.get("Retry-After"),
        ) from exc
    except httpx.TransportError as exc:
        message = f"connection error: {type(exc).__name__}: {exc}"
        if _cert_rejected(exc):
            raise TlsUntrustedError(message) from exc
        raise TransportError(message) from exc
    except httpx.HTTPError as exc:  # DecodingError (a corrupt gzip body) among others
        raise TransportError(f"HTTP error: {type(exc).__name__}: {exc}") from exc


def _cert_rejected(exc: BaseException) -> bool:
    """Whether the TLS handshake refused the peer's certificate (anywhere in the chain)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _fresh_token_refused(err: SessionExpired) -> AuthError:
    """A 401 INVALID_SESSION_ID again right after a fresh token: refreshing once more would
    only loop (every rail backing off and logging in again, forever), so it is a
    configuration problem that pauses the rail, whichever call met it."""
    return AuthError(
        "Salesforce refused a freshly issued token (INVALID_SESSION_ID right after "
        "login): check the connected app's scopes (api) and the user's API access",
        status_code=err.status_code,
        error_code=err.error_code,
    )


# httpx errors raised before any byte of a request left: no connection could be made
# (refused, unreachable, TLS handshake failed or timed out), or none came free in the
# pool. Salesforce cannot have counted such a request; any other way a request ends
# (a read or write timeout, a dropped connection, a protocol error, cancellation) it may
# have, so it counts against our share.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _State(Enum):
    UNOPENED = 1
    OPEN = 2
    CLOSED = 3


def _path_kind(path: str) -> str:
    """A low-cardinality label for metrics: 'composite', 'collections', 'bulk', ..."""
    if "/jobs/ingest" in path:
        return "bulk"
    if "/composite/sobjects" in path:
        return "collections"
    if path.rstrip("/").endswith("/composite"):
        return "composite"
    if "/query" in path:
        return "query"
    if "/limits" in path:
        return "limits"
    if "/describe" in path:
        return "describe"
    return "sobject"


class SalesforceClient:
    """Async Salesforce REST, Composite, Collections and Bulk 2.0 ingest client.

    ``async with SalesforceClient(login_url=..., auth="client_credentials", client_id=...,
    client_secret=...) as sf: await sf.limits()``

    ``refresh_token_store`` (``auth = "refresh_token"`` only): where a refresh token the
    connected app rotated to is kept for the next start (:class:`.auth.RefreshTokenStore`);
    without one a rotated token lives in memory only.
    """

    def __init__(
        self,
        *,
        login_url: str,
        auth: str | AuthFlow = AuthFlow.CLIENT_CREDENTIALS,
        client_id: str,
        client_secret: str | None = None,
        username: str | None = None,
        password: str | None = None,
        refresh_token: str | None = None,
        refresh_token_store: RefreshTokenStore | None = None,
        private_key: str | None = None,
        private_key_file: Path | str | None = None,
        jwt_audience: str | None = None,
        ca_file: Path | str | None = None,
        api_version: str = "62.0",
        allow_http: bool = False,
        quota: QuotaView | None = None,
        on_call: CallHook | None = None,
        on_send: SendHook | None = None,
        # Timeouts
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 120.0,
        write_timeout_s: float = 120.0,
        pool_timeout_s: float = 30.0,
        # Limits
        max_connections: int = 20,
    ) -> None:
        self._creds = Credentials(
            flow=AuthFlow(auth),
            login_url=login_url.rstrip("/"),
            client_id=client_id,
            client_secret=client_secret,
            username=username,
            password=password,
            refresh_token=refresh_token,
            private_key=private_key,
            private_key_file=Path(private_key_file) if private_key_file else None,
            jwt_audience=jwt_audience,
        )
        problems = self._creds.problems()
        if problems:
            raise ConfigurationError("; ".join(problems))
        self.allow_http = allow_http
        self._check_scheme(login_url, "login_url")
        self.api_version = api_version
        self.quota = quota if quota is not None else QuotaView()
        self._on_call = on_call
        self._on_send = on_send
        self._timeout = httpx.Timeout(
            connect=connect_timeout_s,
            read=read_timeout_s,
            write=write_timeout_s,
            pool=pool_timeout_s,
        )
        self._ca_file = Path(ca_file) if ca_file else None
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http: httpx.AsyncClient | None = None
        self._state = _State.UNOPENED
        self._token: str | None = None
        self._instance_url: str | None = None
        self._auth_lock = asyncio.Lock()
        # Token requests that have finished (either way) and how the last one ended: the
        # single flight shares a failure with everyone who waited for it (authenticate).
        self._auth_settled = 0
        self._auth_failure: Exception | None = None
        self._auth_failure_tb: types.TracebackType | None = None
        self.token_requests = 0  # for tests and metrics: how many times we hit the token endpoint
        self._rotation_seen = False  # refresh token rotation noticed (logged once)
        # Where rotated refresh tokens are kept between runs; read before the first refresh.
        self._refresh_tokens = (
            refresh_token_store if self._creds.flow is AuthFlow.REFRESH_TOKEN else None
        )
        self._kept_token_read = False

    # -- lifecycle ---------------------------------------------------------------
    def _check_scheme(self, url: str, what: str) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "https":
            return
        if scheme == "http" and self.allow_http:
            return
        raise ConfigurationError(
            f"{what} {url!r} is not https://; plain http:// is only allowed with allow_http "
            "(a local sfsim)"
        )

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=certifi.where())
        if self._ca_file is not None:
            try:
                ctx.load_verify_locations(cafile=str(self._ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(f"ca_file {self._ca_file}: cannot load: {exc}") from exc
        return ctx

    async def __aenter__(self) -> SalesforceClient:
        if self._state is not _State.UNOPENED:
            raise ClientClosed("a SalesforceClient can be opened once")
        self._http = httpx.AsyncClient(
            timeout=self._timeout,
            limits=self._limits,
            verify=self._ssl_context(),
            headers={"Accept": "application/json", "User-Agent": "dispo-sync"},
            follow_redirects=False,
        )
        self._state = _State.OPEN
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Safe to call twice."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._http is not None:
            await self._http.aclose()

    def __del__(self) -> None:
        if getattr(self, "_state", None) is _State.OPEN:
            warnings.warn("SalesforceClient was never closed", ResourceWarning, stacklevel=1)

    def _client(self) -> httpx.AsyncClient:
        if self._state is not _State.OPEN or self._http is None:
            raise ClientClosed("the Salesforce client is not open (use `async with`)")
        return self._http

    # -- auth ----------------------------------------------------------------------
    @property
    def instance_url(self) -> str | None:
        return self._instance_url

    async def authenticate(self) -> None:
        """Get a token unless there is one (single flight, see :meth:`_authenticate`)."""
        await self._authenticate(since=self._auth_settled, refresh=False)

    async def _authenticate(self, *, since: int, refresh: bool) -> None:
        """Single flight: one token request at a time, its outcome shared.

        ``since`` is how many token requests had settled when the caller's evidence was
        gathered (when it sent the request that came back 401, or when it began to wait
        for a first token). One that settled after that is the caller's answer: a new
        token (nothing to do), or a failure (refresh token revoked, secret wrong, endpoint
        down), raised to everyone whose 401 it was meant to heal instead of being tried
        again by each of them in turn, a storm of doomed token requests (prior-art:
        COE-402979). A request sent after the failure, meeting a 401, tries again.
        ``refresh``: the caller's token was refused (else it only needs one).
        """
        async with self._auth_lock:
            if self._auth_settled != since:
                failure = self._auth_failure
                if failure is not None:
                    # The same exception for every waiter, with the traceback of the
                    # request that failed, as an asyncio.Future gives to every awaiter.
                    raise failure.with_traceback(self._auth_failure_tb)
                return  # a new token arrived while we waited
            if not refresh and self._token is not None:
                return
            try:
                await self._fetch_token()
            except Exception as exc:
                # Not CancelledError (a BaseException): a cancelled request settles
                # nothing, and the next waiter makes its own.
                self._auth_failure, self._auth_failure_tb = exc, exc.__traceback__
                self._auth_settled += 1
                raise
            self._auth_failure = self._auth_failure_tb = None
            self._auth_settled += 1

    async def _fetch_token(self) -> None:
        if self._refresh_tokens is not None and not self._kept_token_read:
            self._kept_token_read = True
            if await self._use_kept_refresh_token():
                log.info("salesforce_refresh_token_restored", where=self._refresh_tokens.where)
        response = await self._post_token_request()
        if response.status_code != 200 and await self._kept_token_is_newer(response):
            response = await self._post_token_request()
        if response.status_code != 200:
            err = error_from_oauth_response(response.status_code, response.content)
            log.error(
                "salesforce_auth_failed",
                flow=self._creds.flow.value,
                status=response.status_code,
                error_code=err.error_code,
                reason=err.message,
            )
            raise err
        try:
            body = response.json()
            token = str(body["access_token"])
            instance_url = str(body["instance_url"]).rstrip("/")
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthError("token response lacks access_token/instance_url") from exc
        self._check_scheme(instance_url, "instance_url")
        rotated = body.get("refresh_token") if isinstance(body, dict) else None
        if (
            self._creds.flow is AuthFlow.REFRESH_TOKEN
            and isinstance(rotated, str)
            and rotated
            and rotated != self._creds.refresh_token
        ):
            # Refresh token rotation (§1.4 [U]; Salesforce Help, "OAuth 2.0 Refresh Token
            # Flow"): the response carries a new refresh token and the one just used is
            # invalidated, so the next refresh, and the next start, must send the new one.
            # Kept before the new access token is used: a crash right after still has it.
            self._creds = dataclasses.replace(self._creds, refresh_token=rotated)
            store = self._refresh_tokens
            if store is None:
                if not self._rotation_seen:
                    self._rotation_seen = True
                    log.warning(
                        "salesforce_refresh_token_rotated",
                        fix=(
                            "the connected app rotates refresh tokens: the configured one is "
                            "now spent and the new one is kept in memory only, so the next "
                            "start needs a new refresh token; turn rotation off for this "
                            "app, or use auth = 'jwt' or 'client_credentials'"
                        ),
                    )
            elif await self._keep_refresh_token(rotated) and not self._rotation_seen:
                self._rotation_seen = True
                log.info(
                    "salesforce_refresh_token_rotated",
                    kept=store.where,
                    note=(
                        "the connected app rotates refresh tokens: Salesforce sent a new one "
                        f"and spent the one used; the new one is kept in {store.where} and "
                        "the next start uses it (a refresh token configured anew replaces it)"
                    ),
                )
        self._token = token
        self._instance_url = instance_url
        log.info("salesforce_authenticated", flow=self._creds.flow.value, instance_url=instance_url)

    async def _post_token_request(self) -> httpx.Response:
        http = self._client()
        url = self._creds.login_url + "/services/oauth2/token"
        try:
            form = token_form(self._creds)
        except PrivateKeyError as exc:
            raise AuthError(f"cannot sign the JWT bearer assertion: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise AuthError(
                f"cannot build the {self._creds.flow.value} token request: {exc}"
            ) from exc
        self.token_requests += 1
        with map_salesforce_errors():
            return await http.post(url, data=form)

    async def _use_kept_refresh_token(self) -> bool:
        """Switch to the refresh token the store keeps, if it has one other than ours.

        A store that cannot be read is logged and the token in hand is used: the client
        keeps working (a spent one fails as any refused refresh does).
        """
        store = self._refresh_tokens
        if store is None:
            return False
        try:
            kept = await store.load()
        except Exception as exc:
            log.error(
                "salesforce_refresh_token_unreadable",
                where=store.where,
                error=_error_text(exc),
                fix=(
                    "the refresh token kept from the last rotation cannot be read, so the "
                    "one in hand is used; if Salesforce refuses it (invalid_grant), fix "
                    "what the error names, or put a new refresh token in place"
                ),
            )
            return False
        if not kept or kept == self._creds.refresh_token:
            return False
        self._creds = dataclasses.replace(self._creds, refresh_token=kept)
        return True

    async def _kept_token_is_newer(self, response: httpx.Response) -> bool:
        """After a refresh refused ``invalid_grant``: whether the store keeps a refresh token
        other than the one just sent (another process, e.g. ``check-config``, rotated it and
        kept the new one), now in hand to try once more."""
        if self._refresh_tokens is None:
            return False
        err = error_from_oauth_response(response.status_code, response.content)
        if err.error_code != "invalid_grant" or not await self._use_kept_refresh_token():
            return False
        log.warning(
            "salesforce_refresh_token_reloaded",
            where=self._refresh_tokens.where,
            note=(
                "Salesforce refused the refresh token in hand, and another one was kept "
                "since (a check-config or another process using the same token rotated it): "
                "trying that one"
            ),
        )
        return True

    async def _keep_refresh_token(self, token: str) -> bool:
        """Hand a rotated refresh token to the store; False (logged) if it could not be kept.

        A failure does not stop the client: this run has the token in memory.
        """
        store = self._refresh_tokens
        assert store is not None
        try:
            await store.save(token)
        except Exception as exc:
            log.error(
                "salesforce_refresh_token_not_kept",
                where=store.where,
                error=_error_text(exc).replace(token, "[redacted]"),
                fix=(
                    "the connected app rotated the refresh token and spent the previous one; "
                    "the new one works for this run but could not be kept, so a restart "
                    "would fail with invalid_grant: fix what the error names before the next "
                    "restart (each later rotation tries again), or put a new refresh token "
                    "in place"
                ),
            )
            return False
        return True

    # -- requests ------------------------------------------------------------------
    def _url(self, path: str) -> str:
        if path.startswith(("https://", "http://")):
            return path
        assert self._instance_url is not None
        if not path.startswith("/"):
            path = "/" + path
        return self._instance_url + path

    def data_path(self, tail: str) -> str:
        return f"/services/data/v{self.api_version}/{tail.lstrip('/')}"

    async def _send_once(
        self,
        method: str,
        path: str,
        *,
        rail: str,
        json: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> tuple[httpx.Response, int, float]:
        """The response, how many token requests had settled when it was sent (what a
        refresh after its 401 is measured from), and when it was sent (``quota.now()``:
        what its quota readings are ordered by).

        Counted as one of our API calls however it ends, unless it certainly never left
        (see :data:`_NEVER_SENT`): one that timed out or lost its connection may well
        have been counted by Salesforce, and so is every retry of it."""
        http = self._client()
        if self._token is None:
            await self.authenticate()
        seen = self._auth_settled
        hdrs = {"Authorization": f"Bearer {self._token}"}
        if headers:
            hdrs.update(headers)
        request = http.build_request(
            method, self._url(path), json=json, content=content, headers=hdrs, params=params
        )
        started = time.perf_counter()
        status = 0
        if self._on_send is not None:
            self._on_send(rail, method, _path_kind(path))
        sent_at = self.quota.now()
        reached = True  # whether Salesforce may have seen (and counted) it
        try:
            with map_salesforce_errors():
                try:
                    response = await http.send(request, stream=stream)
                except _NEVER_SENT:
                    reached = False
                    raise
            status = response.status_code
        finally:
            if reached:
                self.quota.count_call(rail)
            if self._on_call is not None:
                self._on_call(rail, method, _path_kind(path), status, time.perf_counter() - started)
        self.quota.observe_header(response.headers.get("Sforce-Limit-Info"), sent_at=sent_at)
        return response, seen, sent_at

    async def request(
        self,
        method: str,
        path: str,
        *,
        rail: str = "other",
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        ok: Sequence[int] = (200, 201, 204),
    ) -> httpx.Response:
        """Send one API request; refresh + replay once on an expired session; raise ours."""
        response, _ = await self._request(
            method,
            path,
            rail=rail,
            json=json,
            content=content,
            headers=headers,
            params=params,
            ok=ok,
        )
        return response

    async def _request(
        self,
        method: str,
        path: str,
        *,
        rail: str,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        ok: Sequence[int] = (200, 201, 204),
    ) -> tuple[httpx.Response, float]:
        """:meth:`request`, and when the answered request was sent (``quota.now()``)."""
        for replay in (False, True):
            response, seen, sent_at = await self._send_once(
                method, path, rail=rail, json=json, content=content, headers=headers, params=params
            )
            if response.status_code in ok:
                return response, sent_at
            err, refreshed = await self._refused(response, seen, replay=replay)
            if refreshed:
                continue
            raise err
        raise AssertionError("unreachable")  # pragma: no cover

    async def _refused(
        self, response: httpx.Response, seen: int, *, replay: bool
    ) -> tuple[SalesforceError, bool]:
        """The error a refused answer (its body read) is, and whether it was an expired
        session for which the token is refreshed now (the caller may send once more). An
        expired session again on that replay (a fresh token refused) is an
        :class:`AuthError`, whatever the call."""
        err = error_from_response(
            response.status_code,
            response.content,
            retry_after=response.headers.get("Retry-After"),
        )
        if isinstance(err, SessionExpired):
            if replay:
                raise _fresh_token_refused(err) from err
            await self._authenticate(since=seen, refresh=True)
            return err, True
        if isinstance(err, RequestLimitError):
            self.quota.limit_exceeded()
        return err, False

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        rail: str = "other",
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streamed download (Bulk results). Refresh + replay once like :meth:`request`.

        A 204 reads as an empty body: real orgs answer ``failedResults`` of a job with no
        failures that way (prior-art: OpenFn/adaptors#886), and no content is no rows.
        """
        for replay in (False, True):
            response, seen, _ = await self._send_once(
                method, path, rail=rail, headers=headers, stream=True
            )
            try:
                if response.status_code in (200, 204):

                    async def body(resp: httpx.Response = response) -> AsyncIterator[bytes]:
                        with map_salesforce_errors():
                            async for chunk in resp.aiter_bytes():
                                yield chunk

                    yield body()
                    return
                with map_salesforce_errors():
                    await response.aread()  # (kept as response.content)
            finally:
                await response.aclose()
            err, refreshed = await self._refused(response, seen, replay=replay)
            if refreshed:
                continue
            raise err

    # -- REST, composite, collections -------------------------------------------------
    async def composite(
        self,
        subrequests: Sequence[dict[str, Any]],
        *,
        rail: str = "live",
        all_or_none: bool = False,
    ) -> dict[str, ItemResult]:
        """One ``/composite`` call (1 API call); results by referenceId, each status checked."""
        response = await self._composite(subrequests, rail=rail, all_or_none=all_or_none)
        return parse_composite_results(response.json())

    async def composite_entries(
        self,
        subrequests: Sequence[dict[str, Any]],
        *,
        rail: str = "live",
        all_or_none: bool = False,
    ) -> dict[str, dict[str, Any]]:
        """One ``/composite`` call; the raw subresponses by referenceId (nested collections)."""
        response = await self._composite(subrequests, rail=rail, all_or_none=all_or_none)
        body = response.json()
        entries = body.get("compositeResponse", []) if isinstance(body, dict) else []
        return {str(e.get("referenceId")): e for e in entries if isinstance(e, dict)}

    async def _composite(
        self, subrequests: Sequence[dict[str, Any]], *, rail: str, all_or_none: bool
    ) -> httpx.Response:
        # Sforce-Auto-Assign: FALSE on the whole request too, so Lead updates inside it
        # never re-run assignment rules (reference §2.10).
        return await self.request(
            "POST",
            self.data_path("composite"),
            rail=rail,
            json=composite_body(subrequests, all_or_none=all_or_none),
            headers={"Sforce-Auto-Assign": "FALSE"},
        )

    async def upsert_collection(
        self,
        sobject: str,
        external_id_field: str,
        records: Sequence[dict[str, Any]],
        *,
        rail: str = "collections",
        headers: Mapping[str, str] | None = None,
    ) -> list[ItemResult]:
        """``PATCH /composite/sobjects/<sobject>/<ext>`` (≤200 records, allOrNone false)."""
        path = f"composite/sobjects/{sobject}/{external_id_field}"
        return await self.collection("PATCH", path, sobject, records, rail=rail, headers=headers)

    async def update_collection(
        self,
        sobject: str,
        records: Sequence[dict[str, Any]],
        *,
        rail: str = "collections",
        headers: Mapping[str, str] | None = None,
    ) -> list[ItemResult]:
        """``PATCH /composite/sobjects`` by Id (≤200 records, allOrNone false)."""
        return await self.collection(
            "PATCH", "composite/sobjects", sobject, records, rail=rail, headers=headers
        )

    async def collection(
        self,
        method: str,
        path: str,
        sobject: str,
        records: Sequence[dict[str, Any]],
        *,
        rail: str = "collections",
        headers: Mapping[str, str] | None = None,
    ) -> list[ItemResult]:
        """One sObject Collections call, ``method`` on ``path`` under the data path:
        ``POST composite/sobjects`` inserts (each success carries the new Id), ``PATCH``
        updates by Id, ``PATCH composite/sobjects/<sobject>/<ext>`` upserts. At most 200
        records, allOrNone false; a result per record, in order."""
        body = {"allOrNone": False, "records": collection_records(sobject, records)}
        response = await self.request(
            method, self.data_path(path), rail=rail, json=body, headers=headers
        )
        return parse_collection_results(response.json(), len(records))

    async def query(self, soql: str, *, rail: str = "other") -> list[dict[str, Any]]:
        """Run a SOQL query and follow ``nextRecordsUrl``."""
        response = await self.request("GET", self.data_path("query"), rail=rail, params={"q": soql})
        body = response.json()
        records: list[dict[str, Any]] = list(body.get("records", []))
        while not body.get("done", True) and body.get("nextRecordsUrl"):
            response = await self.request("GET", str(body["nextRecordsUrl"]), rail=rail)
            body = response.json()
            records.extend(body.get("records", []))
        return records

    async def describe(self, sobject: str) -> dict[str, Any]:
        response = await self.request(
            "GET", self.data_path(f"sobjects/{sobject}/describe"), rail="admin"
        )
        result: dict[str, Any] = response.json()
        return result

    async def limits(self) -> dict[str, Any]:
        """``GET /limits``; also refreshes the quota view."""
        response, sent_at = await self._request("GET", self.data_path("limits"), rail="admin")
        body: dict[str, Any] = response.json()
        self.quota.observe(usage_from_limits(body), sent_at=sent_at)
        return body

    # -- Bulk API 2.0 ingest ---------------------------------------------------------
    async def create_ingest_job(
        self,
        sobject: str,
        operation: str,
        *,
        external_id_field: str | None = None,
        rail: str = "bulk",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "object": sobject,
            "operation": operation,
            "contentType": "CSV",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        if external_id_field is not None:
            body["externalIdFieldName"] = external_id_field
        response = await self.request("POST", self.data_path("jobs/ingest"), rail=rail, json=body)
        result: dict[str, Any] = response.json()
        return result

    async def upload_job_data(
        self,
        job_id: str,
        data: bytes | AsyncIterable[bytes] | Callable[[], AsyncIterable[bytes]],
        *,
        size: int | None = None,
        rail: str = "bulk",
    ) -> None:
        """The one PUT of a job's CSV (§4.2).

        ``data`` may be a stream; give ``size`` to send a Content-Length instead of
        chunked transfer encoding. Only a 401 ``INVALID_SESSION_ID`` is replayed (once,
        after the single-flight refresh): the upload was refused before it touched the
        job, so the job's one PUT is still unused. That needs ``data`` as bytes or as a
        factory of fresh streams (a consumed stream cannot be sent again: then the
        SessionExpired is raised after the refresh, and the caller's retry finds the new
        token). A 401 again with the fresh token is an :class:`AuthError`, as in
        :meth:`request`.
        """
        headers = {"Content-Type": "text/csv; charset=UTF-8"}
        if size is not None:
            headers["Content-Length"] = str(size)
        replayable = not isinstance(data, AsyncIterable)
        for replay in (False, True):
            body = data() if callable(data) else data
            response, seen, _ = await self._send_once(
                "PUT",
                self.data_path(f"jobs/ingest/{job_id}/batches"),
                rail=rail,
                content=body,
                headers=headers,
            )
            if response.status_code in (200, 201):
                return
            err, refreshed = await self._refused(response, seen, replay=replay)
            if refreshed and replayable:
                continue
            # (refreshed, a consumed stream cannot go again: the caller's retry sends it
            # with the new token)
            raise err

    async def set_job_state(self, job_id: str, state: str, *, rail: str = "bulk") -> dict[str, Any]:
        response = await self.request(
            "PATCH", self.data_path(f"jobs/ingest/{job_id}"), rail=rail, json={"state": state}
        )
        result: dict[str, Any] = response.json()
        return result

    async def job_info(self, job_id: str, *, rail: str = "bulk") -> dict[str, Any]:
        response = await self.request("GET", self.data_path(f"jobs/ingest/{job_id}"), rail=rail)
        result: dict[str, Any] = response.json()
        return result

    def job_results(
        self, job_id: str, which: str, *, rail: str = "bulk"
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream ``successfulResults`` / ``failedResults`` / ``unprocessedrecords``."""
        if which not in ("successfulResults", "failedResults", "unprocessedrecords"):
            raise ValueError(f"unknown result set {which!r}")
        return self.stream(
            "GET",
            self.data_path(f"jobs/ingest/{job_id}/{which}/"),
            rail=rail,
            headers={"Accept": "text/csv"},
        )
