"""The spool view the daemon hands to adapters and rails: counts in, counts out, wakes rails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from daemon.metrics import Metrics
from daemon.wiring import CountingSpool
from spool import CallOutcome, Disposition, open_spool


def outcome(n: int, disposition: Disposition) -> CallOutcome:
    return CallOutcome(
        source="vicidial",
        call_id=f"c{n}",
        disposition=disposition,
        ended_at=datetime(2026, 11, 24, 12, 0, n, tzinfo=UTC),
    )


async def test_counts_stored_outcomes_and_confirmed_sends_by_rail(tmp_path: Path) -> None:
    """Stored puts count as received; acks by Claim or by pair count as sent per rail."""
    metrics = Metrics()
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    async with open_spool(tmp_path / "s.db") as raw:
        spool = CountingSpool(raw, metrics)
        spool.on_stored = wake
        await spool.put(outcome(1, Disposition.DO_NOT_CALL))
        await spool.put(outcome(1, Disposition.DO_NOT_CALL))  # a re-delivery: not counted
        await spool.put_many([outcome(2, Disposition.BUSY), outcome(3, Disposition.BUSY)])
        assert wakes == 2

        live = await spool.claim("live", 10, urgent=True)
        bulk = await spool.claim("bulk", 10, urgent=False)
        await spool.ack(live)  # Claim objects
        await spool.ack([c.pair for c in bulk[:1]])  # (record_id, rev) pairs, as Bulk does
        await spool.retry_later(bulk[1:], delay_s=60)
        assert (await spool.stats()).done == 2  # forwarded to the real spool

    text = metrics.render().decode()
    assert 'dispo_outcomes_received_total{disposition="do_not_call",source="vicidial"} 1.0' in text
    assert 'dispo_outcomes_received_total{disposition="busy",source="vicidial"} 2.0' in text
    assert 'dispo_outcomes_sent_total{disposition="do_not_call",rail="live"} 1.0' in text
    assert 'dispo_outcomes_sent_total{disposition="busy",rail="bulk"} 1.0' in text
    assert "dispo_live_latency_seconds_count 1.0" in text
