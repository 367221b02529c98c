"""Store-then-ack helper against a real spool file: counters, refusal, quarantine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters._base import AdapterHealth
from adapters._ingest import Intake, Refused, log_reason
from spool import CallOutcome, Disposition, PutStatus, Spool, open_spool


def outcome(call_id: str, seq: int = 1, disposition: str = "busy") -> CallOutcome:
    return CallOutcome(
        source="hook",
        call_id=call_id,
        source_seq=seq,
        disposition=Disposition(disposition),
        ended_at=datetime(2025, 3, 14, 10, 2, 20, tzinfo=UTC),
    )


async def test_store_counts_new_duplicate_and_stale(spool: Spool) -> None:
    """Accepted, duplicate and stale re-deliveries are counted apart; stale never overwrites."""
    health = AdapterHealth(name="hook", type="webhook")
    intake = Intake(spool, health, source="hook")
    assert [r.status for r in await intake.store([outcome("c1", 2)])] == [PutStatus.INSERTED]
    assert [r.status for r in await intake.store([outcome("c1", 2)])] == [PutStatus.DUPLICATE]
    assert [r.status for r in await intake.store([outcome("c1", 1)])] == [PutStatus.STALE]
    assert (health.accepted, health.duplicates) == (1, 2)


async def test_store_logs_one_event_per_outcome_without_body(spool: Spool) -> None:
    """With log_each, each stored outcome logs call_id, source and disposition."""
    intake = Intake(spool, AdapterHealth(name="hook", type="webhook"), source="hook", log_each=True)
    with capture_logs() as logs:
        await intake.store([outcome("a"), outcome("b", disposition="voicemail")])
    stored = [e for e in logs if e["event"] == "outcome_stored"]
    assert [(e["call_id"], e["disposition"]) for e in stored] == [("a", "busy"), ("b", "voicemail")]


async def test_full_spool_is_a_retryable_refusal(tmp_path: Path) -> None:
    """Over max_pending the intake raises Refused with a Retry-After and counts it."""
    health = AdapterHealth(name="hook", type="webhook")
    async with open_spool(tmp_path / "s.db", max_pending=1) as spool:
        intake = Intake(spool, health, source="hook")
        await intake.store([outcome("a")])
        with pytest.raises(Refused) as info:
            await intake.store([outcome("b")])
    assert info.value.reason == "spool full"
    assert int(info.value.retry_after_header) >= 1
    assert health.refused == 1


async def test_reject_quarantines_raw_input(spool: Spool) -> None:
    """Bad input is kept in the quarantine table with the reason, and counted."""
    health = AdapterHealth(name="hook", type="webhook")
    intake = Intake(spool, health, source="hook")
    await intake.reject(b"{not json", "body: not valid JSON")
    rows = await spool.list_quarantine()
    assert len(rows) == 1 and rows[0].reason == "body: not valid JSON"
    assert health.rejected == 1


def test_validate_names_the_bad_field() -> None:
    """A dict that is not a CallOutcome yields a readable reason, not an exception."""
    reason = Intake.validate({"source": "hook", "call_id": "x", "disposition": "bogus"})
    assert isinstance(reason, str)
    assert "disposition" in reason and "ended_at: field required" in reason


def test_log_reason_hides_values() -> None:
    """Rejection log lines name the field but not the (possibly personal) value."""
    assert log_reason("phone: not a phone number: '+1 555 CALL-NOW'") == (
        "phone: not a phone number: '…'"
    )
