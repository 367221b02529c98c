"""Value types the spool hands back: put results, claims, job rows, dead letters, stats."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from spool.record import CallOutcome, StoredOutcome

__all__ = [
    "UNREADABLE_PAYLOAD",
    "AckResult",
    "Claim",
    "DeadLetter",
    "JobRow",
    "PutResult",
    "PutStatus",
    "QuarantineRow",
    "RecordRef",
    "SpoolStats",
    "StoredClaim",
]

#: error_code of a dead letter whose stored payload this version cannot read
UNREADABLE_PAYLOAD = "SPOOL_UNREADABLE_PAYLOAD"


class PutStatus(StrEnum):
    """What ``put`` did with an outcome (identity is ``(source, call_id)``)."""

    #: first time this call was seen; stored as pending
    INSERTED = "inserted"
    #: same version as the stored one (same ``order_key``); nothing changed
    DUPLICATE = "duplicate"
    #: older than the stored version; ignored, the stored one is kept
    STALE = "stale"
    #: newer version of a call not yet sent (pending, in flight or dead); payload replaced
    REPLACED = "replaced"
    #: newer version of a call already sent; queued again as an update
    REQUEUED = "requeued"


@dataclass(frozen=True, slots=True)
class PutResult:
    status: PutStatus
    record_id: int
    #: payload revision after the put (1 for a new record, +1 on every replacement)
    rev: int

    @property
    def stored(self) -> bool:
        """True when this put changed what will be sent (not a duplicate or stale copy)."""
        return self.status in (PutStatus.INSERTED, PutStatus.REPLACED, PutStatus.REQUEUED)


@dataclass(frozen=True, slots=True)
class Claim:
    """A record leased to one rail until ``lease_until`` (unix seconds)."""

    record_id: int
    #: payload revision that was claimed; ``ack`` marks done only if it is still current
    rev: int
    outcome: CallOutcome
    #: 1 for the first delivery attempt
    attempt: int
    rail: str
    lease_until: float
    lead_key: str | None
    #: False only when no rail ever claimed this record before this claim, so no Task of
    #: it can exist unless this claim writes one (for orgs whose Tasks are inserted, not
    #: upserted by an external key: a Task is looked up before it is inserted again)
    maybe_sent: bool = True
    #: Salesforce Id of this record's Task, once an insert of it was answered
    task_id: str | None = None
    #: Which claim of the record this is (1 for its first, never reused, unlike
    #: ``attempt``, which a release or a requeue gives back): a transition under this
    #: claim does nothing once a later claim holds the record. None: not checked.
    claim_no: int | None = None

    @property
    def pair(self) -> tuple[int, int]:
        return (self.record_id, self.rev)


@dataclass(frozen=True, slots=True)
class StoredClaim:
    """A Claim whose outcome is read from its stored JSON only as far as it is used
    (:meth:`spool.Spool.claim_stored`, for the Bulk rail). :meth:`claim` decodes it in
    full."""

    record_id: int
    rev: int
    outcome: StoredOutcome
    attempt: int
    rail: str
    lease_until: float
    lead_key: str | None
    #: ``outcome.ended_at`` as unix seconds (the spool's order column)
    ord_ts: float
    maybe_sent: bool = True
    task_id: str | None = None
    claim_no: int | None = None

    @property
    def pair(self) -> tuple[int, int]:
        return (self.record_id, self.rev)

    def claim(self) -> Claim:
        """The same claim with its outcome validated in full (raises ValidationError)."""
        return Claim(
            record_id=self.record_id,
            rev=self.rev,
            outcome=CallOutcome.from_stored_json(self.outcome.to_json()),
            attempt=self.attempt,
            rail=self.rail,
            lease_until=self.lease_until,
            lead_key=self.lead_key,
            maybe_sent=self.maybe_sent,
            task_id=self.task_id,
            claim_no=self.claim_no,
        )


#: What the transition methods accept: a Claim, or a ``(record_id, rev)`` pair.
RecordRef = Claim | StoredClaim | tuple[int, int]


@dataclass(frozen=True, slots=True)
class AckResult:
    #: marked done
    done: list[int] = field(default_factory=list)
    #: a newer version arrived while in flight: back to pending, to be sent again
    requeued: list[int] = field(default_factory=list)
    #: nothing to do (already done, dead, unknown, or not this revision)
    skipped: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobRow:
    """A Bulk API job this daemon created (committed before its data was uploaded)."""

    sf_job_id: str
    object: str
    operation: str
    state: str
    finished: bool
    record_count: int
    counters: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record_id: int
    source: str
    call_id: str
    #: None only if the stored payload cannot be read by this version (error_code
    #: SPOOL_UNREADABLE_PAYLOAD); ``payload`` always has the stored JSON
    outcome: CallOutcome | None
    payload: str
    rail: str
    error_code: str | None
    error_message: str | None
    attempt: int
    created_at: float
    #: when it was declared dead
    failed_at: float


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """Input an adapter could not turn into a CallOutcome, kept for inspection."""

    id: int
    source: str
    raw: bytes
    reason: str
    created_at: float


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A cheap snapshot of the spool (O(1) in the number of records)."""

    pending: int
    inflight: int
    done: int
    dead: int
    #: state name -> count (pending, inflight, done, dead)
    by_state: dict[str, int]
    #: state name -> rail -> count (pending records have rail "")
    by_rail: dict[str, dict[str, int]]
    #: seconds since the oldest pending record was queued; None when nothing is pending
    oldest_pending_age_s: float | None
    #: Salesforce error code -> dead letters with it ("" when there was no code)
    dead_by_error: dict[str, int]
    #: bulk jobs not finished yet
    jobs_in_flight: int
    #: job state -> count, for jobs not finished yet
    jobs_by_state: dict[str, int]
    quarantined: int
    #: bytes on disk: database file plus its write-ahead log
    file_bytes: int
    schema_version: int

    @property
    def dead_letters(self) -> int:
        return self.dead

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "inflight": self.inflight,
            "done": self.done,
            "dead": self.dead,
            "by_state": dict(self.by_state),
            "by_rail": {k: dict(v) for k, v in self.by_rail.items()},
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "dead_by_error": dict(self.dead_by_error),
            "jobs_in_flight": self.jobs_in_flight,
            "jobs_by_state": dict(self.jobs_by_state),
            "quarantined": self.quarantined,
            "file_bytes": self.file_bytes,
            "schema_version": self.schema_version,
        }
