"""Errors raised by the spool.

::

    SpoolError                      base of everything the spool raises on purpose
    ├── SpoolFull                   retryable: over max_pending / max_bytes, or the disk is full
    ├── SpoolUnavailable            retryable: SQLite busy/locked, I/O error
    ├── SpoolCorrupt                permanent: the file is not a usable spool
    │                               (corrupt, or written by a newer schema)
    └── SpoolClosed (RuntimeError)  misuse: the spool was closed (or never opened)

``SpoolFull`` and ``SpoolUnavailable`` carry ``retryable = True`` and a suggested
``retry_after_s``: callers (adapters) answer the dialer with "try again later" (HTTP 503 +
Retry-After, no websocket ack, file offset not advanced) and never drop the outcome.
"""

from __future__ import annotations

__all__ = [
    "SpoolClosed",
    "SpoolCorrupt",
    "SpoolError",
    "SpoolFull",
    "SpoolUnavailable",
]


class SpoolError(Exception):
    """Base class of the spool's own errors."""

    retryable: bool = False
    retry_after_s: float | None = None


class SpoolFull(SpoolError):
    """The spool refuses new records for now (a cap was reached or the disk is full)."""

    retryable = True
    retry_after_s = 5.0

    def __init__(self, message: str, *, reason: str, limit: int | None = None) -> None:
        super().__init__(message)
        #: ``"max_pending"``, ``"max_bytes"`` or ``"disk_full"``
        self.reason = reason
        self.limit = limit


class SpoolUnavailable(SpoolError):
    """SQLite could not complete the operation (busy, locked, I/O error); try again."""

    retryable = True
    retry_after_s = 1.0

    def __init__(self, message: str, *, sqlite_error: str | None = None) -> None:
        super().__init__(message)
        #: SQLite's error name, e.g. ``"SQLITE_IOERR_FSYNC"``, when known
        self.sqlite_error = sqlite_error


class SpoolCorrupt(SpoolError):
    """The file cannot be used as a spool (corrupt, not a database, newer schema)."""


class SpoolClosed(SpoolError, RuntimeError):
    """The spool is closed (or closing); no operation is possible."""
