"""The durable spool: every call outcome is committed here before anyone acks the dialer.

See ``spool.spool`` for threading and lifecycle, ``spool._store`` for the transactions,
``spool._schema`` for the file format.
"""

from spool.errors import SpoolClosed, SpoolCorrupt, SpoolError, SpoolFull, SpoolUnavailable
from spool.record import (
    CallOutcome,
    Direction,
    Disposition,
    LeadRef,
    OutcomeFields,
    StoredOutcome,
    format_validation_error,
)
from spool.results import (
    UNREADABLE_PAYLOAD,
    AckResult,
    Claim,
    DeadLetter,
    JobRow,
    PutResult,
    PutStatus,
    QuarantineRow,
    RecordRef,
    SpoolStats,
    StoredClaim,
)
from spool.spool import DEFAULT_URGENT, Spool, open_spool
from spool.stats import read_stats

__all__ = [
    "DEFAULT_URGENT",
    "UNREADABLE_PAYLOAD",
    "AckResult",
    "CallOutcome",
    "Claim",
    "DeadLetter",
    "Direction",
    "Disposition",
    "JobRow",
    "LeadRef",
    "OutcomeFields",
    "PutResult",
    "PutStatus",
    "QuarantineRow",
    "RecordRef",
    "Spool",
    "SpoolClosed",
    "SpoolCorrupt",
    "SpoolError",
    "SpoolFull",
    "SpoolStats",
    "SpoolUnavailable",
    "StoredClaim",
    "StoredOutcome",
    "format_validation_error",
    "open_spool",
    "read_stats",
]
