"""Salesforce errors, classified once, at the client boundary.

The tree (every class carries fields, not only a message)::

    SalesforceError                      base; status_code, error_code, message, fields
    ├── RetryableError                   back off (jitter, cap) and try again; retry_after_s hint
    │   ├── TransportError               no response: connect/read/write/pool timeout, reset
    │   ├── ServerError                  HTTP 5xx, SERVER_UNAVAILABLE
    │   ├── LockError                    UNABLE_TO_LOCK_ROW (parent record busy)
    │   ├── RequestLimitError            REQUEST_LIMIT_EXCEEDED: spend nothing until quota recovers
    │   └── SessionExpired               401 INVALID_SESSION_ID: refresh once, replay once
    ├── PermanentError                   this record is refused -> dead letter with code and message
    ├── ConfigurationError               our setup is wrong (unknown field, no access, job Failed on
    │   │                                the file, retired API version): pause the rail, log
    │   │                                loudly, keep records pending
    │   └── AuthError                    the token endpoint refused our credentials: will not heal
    └── ClientClosed (+RuntimeError)     the client was used after aclose()

Per-record results (composite subresponses, collection items, bulk ``sf__Error``)
are :class:`RecordError` values, classified by :func:`classify_code` into the
same three behaviours (:class:`Kind`). A few codes mean something else on one
record than on a whole request (``record=True``): a sharing refusal
(``INSUFFICIENT_ACCESS_OR_READONLY``) on one record is that record's, while the
same code answering the request itself is our setup.

Error bodies are the documented ones (reference/salesforce-api.md §2.8): a JSON
array of ``{"message", "errorCode", "fields"}``; collection items use
``statusCode``; OAuth errors are ``{"error", "error_description"}`` (§1.1).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "AuthError",
    "ClientClosed",
    "ConfigurationError",
    "Kind",
    "LockError",
    "PermanentError",
    "RecordError",
    "RequestLimitError",
    "RetryableError",
    "SalesforceError",
    "ServerError",
    "SessionExpired",
    "TransportError",
    "classify_code",
    "error_from_oauth_response",
    "error_from_response",
    "parse_error_body",
    "parse_sf_error_column",
]


class Kind(StrEnum):
    """What the rails do with a failure."""

    RETRY = "retry"  # back off, try again later (same rail or another)
    PERMANENT = "permanent"  # dead letter this record
    CONFIG = "config"  # pause the rail, keep the record pending


# Transient conditions: nothing is wrong with the record or with our setup.
_RETRY_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
        "QUERY_TIMEOUT",
        # A concurrent upsert of the same new key raced us (§7.6): retried, it is an update.
        "DUPLICATE_VALUE",
        # Not this record's fault: another item of the same request failed.
        "PROCESSING_HALTED",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "TOOMANYLOCKFAILURE",
        "TIMEOUT",
        "INVALID_SESSION_ID",
        "INVALIDSESSIONID",
        "UNKNOWN_EXCEPTION",
        "API_CURRENTLY_DISABLED",
        # Ours, for Bulk records without a result row (never attempted, or missing from
        # the result files): nothing says the record is bad, so it is sent again.
        "UNPROCESSED",
        "NO_RESULT",
    }
)
# Our configuration is wrong: every record would fail the same way.
_CONFIG_CODES = frozenset(
    {
        "INVALID_FIELD",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_TYPE",
        "INSUFFICIENT_ACCESS",
        "INSUFFICIENT_ACCESS_OR_READONLY",
        "API_DISABLED_FOR_ORG",
        "FUNCTIONALITY_NOT_ENABLED",
        "FEATURENOTENABLED",
        "INVALID_OPERATION",
        "INVALIDJOB",
        "INVALIDBATCH",
        "CLIENTINPUTERROR",
        "NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "INVALID_OPERATION_WITH_EXPIRED_PASSWORD",
        "INVALIDUSER",
    }
)
# Configuration codes that, on one record's result, are about that record only: the
# integration user may edit Leads but not this one (a private sharing model, a record
# owned by someone else, a locked approval). Pausing a rail for it would hold every other
# record back, and again after each recheck; the record is refused for good instead
# (dead letter with Salesforce's message). Answering a whole request they stay CONFIG.
_RECORD_PERMANENT_CODES = frozenset({"INSUFFICIENT_ACCESS_OR_READONLY"})


def classify_code(
    code: str | None, *, status_code: int | None = None, record: bool = False
) -> Kind:
    """Classify a Salesforce error code (and HTTP status when known).

    Retried: UNABLE_TO_LOCK_ROW, SERVER_UNAVAILABLE, REQUEST_LIMIT_EXCEEDED,
    QUERY_TIMEOUT, DUPLICATE_VALUE (upsert race), PROCESSING_HALTED and
    ALL_OR_NONE_OPERATION_ROLLED_BACK (collateral), any 5xx, 429, and no response.
    Configuration: unknown or read-only fields, missing access, disabled
    features, unknown resources (``NOT_FOUND`` on the request URL) and job-level
    CSV errors. Everything else on a record (validation, picklist, too long,
    unknown reference, duplicates rule) is permanent for that record.

    ``record=True`` classifies one record's result (a composite subresponse, a
    collections item, a Bulk result row) rather than an answer to the whole
    request: a sharing refusal (INSUFFICIENT_ACCESS_OR_READONLY) is then permanent
    for that record instead of a configuration error.
    """
    normalized = (code or "").upper()
    if normalized in _RETRY_CODES:
        return Kind.RETRY
    if record and normalized in _RECORD_PERMANENT_CODES:
        return Kind.PERMANENT
    if normalized in _CONFIG_CODES:
        return Kind.CONFIG
    if status_code is not None and (status_code >= 500 or status_code == 429):
        return Kind.RETRY
    return Kind.PERMANENT


@dataclass(frozen=True, slots=True)
class RecordError:
    """One Salesforce error on one record (composite, collections or bulk)."""

    code: str
    message: str
    fields: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        return classify_code(self.code, record=True)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class SalesforceError(Exception):
    """Base of every error the Salesforce client raises."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        fields: tuple[str, ...] = (),
        errors: tuple[RecordError, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_code = error_code
        self.fields = fields
        self.errors = errors

    kind: Kind = Kind.PERMANENT

    def __str__(self) -> str:
        parts = [self.message]
        if self.error_code:
            parts.insert(0, f"{self.error_code}:")
        if self.status_code is not None:
            parts.append(f"(HTTP {self.status_code})")
        return " ".join(parts)


class RetryableError(SalesforceError):
    """Transient: back off with jitter and try again."""

    kind = Kind.RETRY
    retry_after_s: float | None = None


class TransportError(RetryableError):
    """No usable response (connect/read/write/pool timeout, connection reset)."""


class TlsUntrustedError(TransportError):
    """The org's TLS certificate failed verification (a private CA, a TLS-intercepting
    proxy): retried like any transport error, but retrying alone will not heal it."""


class ServerError(RetryableError):
    """HTTP 5xx or SERVER_UNAVAILABLE."""


class LockError(RetryableError):
    """UNABLE_TO_LOCK_ROW: another transaction holds the parent record."""


class RequestLimitError(RetryableError):
    """REQUEST_LIMIT_EXCEEDED: the org's API allocation is used up (or too many long requests)."""


class SessionExpired(RetryableError):
    """401 INVALID_SESSION_ID: the access token expired or was revoked."""


class PermanentError(SalesforceError):
    """The request or record is refused as is; retrying will not help."""

    kind = Kind.PERMANENT


class ConfigurationError(SalesforceError):
    """Our configuration is wrong for this org; the rail pauses until it is fixed."""

    kind = Kind.CONFIG


class AuthError(ConfigurationError):
    """The token endpoint refused our credentials (bad secret, app not approved, flow blocked)."""


class ClientClosed(SalesforceError, RuntimeError):
    """The client was used after it was closed."""


def parse_error_body(body: Any) -> tuple[RecordError, ...]:
    """Documented error bodies -> RecordErrors.

    Accepts the REST array ``[{"errorCode","message","fields"}]``, a bare object,
    collection items' ``statusCode`` and anything else (as ``UNKNOWN``).
    """
    items: list[Any]
    if isinstance(body, list):
        items = body
    elif isinstance(body, dict):
        items = [body]
    else:
        return ()
    out: list[RecordError] = []
    for item in items:
        if not isinstance(item, dict):
            out.append(RecordError("UNKNOWN", str(item)[:500]))
            continue
        code = item.get("errorCode") or item.get("statusCode") or item.get("error") or "UNKNOWN"
        message = item.get("message") or item.get("error_description") or ""
        fields = item.get("fields") or ()
        out.append(
            RecordError(str(code), str(message), tuple(str(f) for f in fields if f is not None))
        )
    return tuple(out)


def _decode(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def _is_config(status_code: int, code: str | None, errors: tuple[RecordError, ...]) -> bool:
    # 403 is a permission refusal; a 404 without a Salesforce body is a wrong URL.
    if status_code == 403 or classify_code(code) is Kind.CONFIG:
        return True
    return status_code == 404 and not errors


def error_from_response(
    status_code: int, content: bytes, *, retry_after: str | None = None
) -> SalesforceError:
    """A non-2xx REST/Bulk response -> the right error class (pure)."""
    errors = parse_error_body(_decode(content))
    first = errors[0] if errors else None
    code = first.code if first else None
    if first is not None:
        message = first.message
    else:
        message = content[:200].decode("utf-8", "replace").strip() or "no error body"
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "error_code": code,
        "fields": first.fields if first else (),
        "errors": errors,
    }
    normalized = (code or "").upper()
    exc: SalesforceError
    if status_code == 401 or normalized in ("INVALID_SESSION_ID", "INVALIDSESSIONID"):
        # jsforce: "This session is not valid for use with the REST API" is a missing
        # `api` scope, not an expired token; refreshing would loop (§1.2).
        if "not valid for use with the REST API" in message:
            exc = AuthError(message + " (the connected app needs the 'api' scope)", **kwargs)
        else:
            exc = SessionExpired(message, **kwargs)
    elif normalized == "REQUEST_LIMIT_EXCEEDED":
        exc = RequestLimitError(message, **kwargs)
    elif normalized == "UNABLE_TO_LOCK_ROW":
        exc = LockError(message, **kwargs)
    elif status_code >= 500 or status_code == 429 or normalized == "SERVER_UNAVAILABLE":
        exc = ServerError(message, **kwargs)
    elif status_code == 410:
        # 410 GONE answers every request made with a retired API version (§2.8; versions
        # 21.0-30.0 retired in Summer '25): our setup, the same for every record, so the
        # rail pauses instead of dead-lettering a whole batch one record at a time.
        said = f" ({first.message})" if first is not None and first.message else ""
        exc = ConfigurationError(
            f"the REST API version this service calls is retired{said}; set "
            "[salesforce] api_version to a supported version such as 62.0",
            **kwargs,
        )
    elif _is_config(status_code, code, errors):
        exc = ConfigurationError(message, **kwargs)
    elif classify_code(code) is Kind.RETRY:
        exc = RetryableError(message, **kwargs)
    else:
        exc = PermanentError(message, **kwargs)
    if isinstance(exc, RetryableError) and retry_after is not None:
        with contextlib.suppress(ValueError):
            exc.retry_after_s = max(0.0, float(retry_after))
    return exc


# OAuth error codes that are a transient condition on Salesforce's side.
_OAUTH_RETRY = frozenset({"rate_limit_exceeded", "server_error", "temporarily_unavailable"})

_OAUTH_HINTS: dict[str, str] = {
    "authentication failure": (
        "check username/password (+ security token); new orgs block the username-password "
        "flow (prefer auth = 'client_credentials' or 'jwt')"
    ),
    "request not supported on this domain": (
        "client credentials must use the My Domain host as login_url, "
        "not login.salesforce.com or test.salesforce.com"
    ),
    "user hasn't approved this consumer": (
        "pre-authorize the connected app for this user (admin-approved users) or its profile"
    ),
    "audience validation failed": (
        "the JWT audience must be https://login.salesforce.com, https://test.salesforce.com "
        "or the site URL"
    ),
    "expired access/refresh token": (
        "obtain a new refresh token (the old one was revoked or expired)"
    ),
    "no client credentials user enabled": "set a Run As user on the connected app",
}


def error_from_oauth_response(status_code: int, content: bytes) -> SalesforceError:
    """A failed token request -> AuthError (won't heal) or RetryableError (pure)."""
    body = _decode(content)
    code = f"ERROR_HTTP_{status_code}"
    description = ""
    if isinstance(body, dict):
        code = str(body.get("error") or code)
        description = str(body.get("error_description") or "")
    if status_code >= 500 or status_code == 429 or code in _OAUTH_RETRY:
        return ServerError(
            f"token endpoint: {code} {description}".strip(),
            status_code=status_code,
            error_code=code,
        )
    hint = next((h for k, h in _OAUTH_HINTS.items() if k in description.lower()), None)
    message = f"token request refused: {code}" + (f" ({description})" if description else "")
    if hint:
        message += f"; fix: {hint}"
    return AuthError(message, status_code=status_code, error_code=code)


def parse_sf_error_column(value: str) -> RecordError:
    """Bulk 2.0 ``sf__Error`` (``STATUSCODE:message:fields --``) -> RecordError."""
    code, sep, rest = value.partition(":")
    if not sep:
        return RecordError("UNKNOWN", value)
    message, fields = rest, ""
    if rest.endswith("--"):
        head = rest[:-2].rstrip()
        message, sep2, fields = head.rpartition(":")
        if not sep2:
            message, fields = head, ""
    field_names = tuple(f.strip() for f in fields.split(",") if f.strip())
    return RecordError(code.strip(), message.strip(), field_names)
