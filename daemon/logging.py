"""Logging: structlog, one event per line, secrets removed. Global state lives here.

This module is the one place that configures logging for the whole process
(STYLE habit 11): :func:`configure_logging` is called once at the edge
(``daemon.cli``); tests call :func:`reset_logging`.

Formats (``[log] format``):

- ``console``: colored, aligned columns for a person at a terminal;
- ``logfmt``: ``key=value`` pairs, one event per line, for ``journalctl`` and pipes;
- ``json``: one JSON object per line, for log shippers;
- ``auto`` (default): ``logfmt`` when stdout is the journal (``$JOURNAL_STREAM``
  names stdout's device and inode) or a pipe/file, ``console`` on a TTY.

Under journald the timestamp is left out: the journal stamps every line itself.

Standard-library loggers (httpx, uvicorn, websockets, aiosqlite) are routed
through :class:`structlog.stdlib.ProcessorFormatter`, so their records get the
same format and the same redaction.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, Literal, TextIO

import structlog
from pydantic import SecretBytes, SecretStr

__all__ = [
    "REDACTED",
    "LogFormat",
    "configure_logging",
    "redact",
    "redact_event",
    "reset_logging",
    "resolve_format",
]

LogFormat = Literal["auto", "console", "logfmt", "json"]
REDACTED = "[redacted]"

# Keys whose values are secrets, wherever they appear in an event.
_SECRET_KEY = re.compile(
    r"(^|_|-)(token|access_token|refresh_token|secret|client_secret|password|passwd|pwd|"
    r"authorization|auth_header|cookie|set_cookie|private_key|api_key|apikey|signature|"
    r"assertion|session_id)$",
    re.IGNORECASE,
)
# Secrets embedded in free text (exception messages, URLs, headers).
_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic|oauth)\s+[A-Za-z0-9._~+/=!\-]+"), r"\1 " + REDACTED),
    (
        re.compile(
            r"(?i)\b(access_token|refresh_token|client_secret|password|assertion|token|secret)"
            r"(\"?\s*[=:]\s*\"?)[^\s&\"',;}]+"
        ),
        r"\1\2" + REDACTED,
    ),
    # A Salesforce session id / access token: "00D" org prefix, "!", long opaque tail.
    (re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._\-]{20,}"), REDACTED),
    # A PEM private key block.
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        REDACTED,
    ),
)

_configured_handler: logging.Handler | None = None
_saved_levels: dict[str, int] | None = None

# Whether a key names a secret, per key (keys come from code: a small, fixed set).
_key_is_secret: dict[str, bool] = {}
_KEY_CACHE_MAX: Final = 4096
# Values returned as they are (no text to scan), unless their key names a secret.
_PLAIN: Final = frozenset({int, float, bool, type(None)})


def _may_hold_secret(value: str) -> bool:
    """False when no pattern of ``_TEXT_PATTERNS`` can match ``value`` (keep in step).

    A cheap pre-check: most log values are ids, codes and names, and the four regex
    passes over each value cost ~8 us each, ~300 us per log line. Each pattern needs
    one of its keywords (ASCII, any case), a "!" (session ids) or "-----BEGIN" (PEM).
    Non-ASCII text always takes the full passes (re's IGNORECASE also folds a few
    non-ASCII letters, such as the long s and the Kelvin sign, to ASCII ones).
    """
    if "!" in value or "-----BEGIN" in value or not value.isascii():
        return True
    low = value.lower()
    return (
        "token" in low
        or "secret" in low
        or "password" in low
        or "assertion" in low
        or "bearer" in low
        or "basic" in low
        or "oauth" in low
    )


def redact(value: str) -> str:
    """Remove tokens, passwords and keys embedded in a string."""
    if not _may_hold_secret(value):
        return value
    for pattern, replacement in _TEXT_PATTERNS:
        value = pattern.sub(replacement, value)
    return value


def _secret_key(key: str) -> bool:
    known = _key_is_secret.get(key)
    if known is None:
        known = _SECRET_KEY.search(key) is not None
        if len(_key_is_secret) < _KEY_CACHE_MAX:
            _key_is_secret[key] = known
    return known


def _redact_value(key: str, value: Any, depth: int = 0) -> Any:
    cls = type(value)
    if cls is str:  # the common case first
        if value and key and _secret_key(key):
            return REDACTED
        return redact(value)
    if cls in _PLAIN:
        if key and value not in (None, False) and _secret_key(key):
            return REDACTED
        return value
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if key and _secret_key(key) and value not in (None, "", False):
        return REDACTED
    if depth > 5:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value("", v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def redact_event(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: remove secrets from every key and value of an event."""
    for key, value in list(event_dict.items()):
        if type(value) is str:  # most values: ids, names, codes (inlined fast path)
            if value and _secret_key(key):
                event_dict[key] = REDACTED
            elif _may_hold_secret(value):
                event_dict[key] = redact(value)
        elif not key.startswith("_"):  # structlog/ProcessorFormatter internals
            redacted = _redact_value(key, value)
            if redacted is not value:
                event_dict[key] = redacted
    return event_dict


def _drop_color_message(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # uvicorn passes an ANSI-colored copy of each message as `color_message`.
    event_dict.pop("color_message", None)
    return event_dict


def _stream_is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when ``$JOURNAL_STREAM`` ("dev:inode") names this stream (sd_journal docs)."""
    value = environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, AttributeError):
        return False


def resolve_format(
    fmt: LogFormat, stream: TextIO, environ: Mapping[str, str] | None = None
) -> tuple[Literal["console", "logfmt", "json"], bool]:
    """Pick the concrete format for ``auto``; also say whether to add timestamps."""
    env = os.environ if environ is None else environ
    journal = _stream_is_journal(stream, env)
    if fmt == "auto":
        fmt = "console" if (_is_tty(stream) and not journal) else "logfmt"
    return fmt, not journal


def configure_logging(
    fmt: LogFormat = "auto",
    level: str = "info",
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Configure structlog and the stdlib root logger; return the format chosen."""
    global _configured_handler, _saved_levels
    out = sys.stdout if stream is None else stream
    if _saved_levels is None:
        _saved_levels = {
            name: logging.getLogger(name or None).level
            for name in ("", "httpx", "httpcore", "uvicorn.error")
        }
    concrete, timestamps = resolve_format(fmt, out, environ)

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        # stdlib `extra={...}` keys become event keys (foreign records only).
        structlog.stdlib.ExtraAdder(),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
    ]
    if timestamps:
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    shared += [
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_event,
    ]
    renderer: Any
    if concrete == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(out))
    elif concrete == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.processors.LogfmtRenderer(
            key_order=["timestamp", "level", "event"], drop_missing=True
        )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,
            # No second redact_event here: structlog events were redacted by the
            # chain above and foreign records by foreign_pre_chain (both end in it).
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _configured_handler is not None:
        root.removeHandler(_configured_handler)
    root.addHandler(handler)
    _configured_handler = handler
    numeric = logging.getLevelNamesMapping()[level.upper()]
    root.setLevel(numeric)
    # httpx logs every request line at INFO; the rails log one line per outcome instead.
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(numeric, logging.WARNING))
    # uvicorn's start/stop chatter duplicates our own "listening" and "stopped" lines.
    logging.getLogger("uvicorn.error").setLevel(max(numeric, logging.WARNING))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return concrete


def reset_logging() -> None:
    """Undo :func:`configure_logging` (tests)."""
    global _configured_handler, _saved_levels
    if _configured_handler is not None:
        logging.getLogger().removeHandler(_configured_handler)
        _configured_handler = None
    if _saved_levels is not None:
        for name, level in _saved_levels.items():
            logging.getLogger(name or None).setLevel(level)
        _saved_levels = None
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
