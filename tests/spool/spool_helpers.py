"""Helpers shared by the spool tests (a module name no other test folder uses)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from spool import CallOutcome, LeadRef

BASE = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class FakeClock:
    """Unix-seconds clock the test moves by hand (lease expiry, backoff, retention)."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_ids = itertools.count(1)


def outcome(
    call_id: str | None = None,
    *,
    source: str = "vici",
    disposition: str = "connected",
    ended: float = 0.0,
    version: int = 0,
    seq: int | None = None,
    lead: str | None = None,
    live: bool = False,
    notes: str | None = None,
) -> CallOutcome:
    """A valid CallOutcome; ``ended`` is seconds after BASE, ``lead`` an external key."""
    return CallOutcome(
        source=source,
        call_id=call_id if call_id is not None else f"call-{next(_ids)}",
        disposition=disposition,  # type: ignore[arg-type]
        ended_at=BASE + timedelta(seconds=ended),
        version=version,
        source_seq=seq,
        lead=LeadRef(external_key=lead) if lead else None,
        live=live,
        notes=notes,
    )
