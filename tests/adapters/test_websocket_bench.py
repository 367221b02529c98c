"""The websocket throughput bench still runs end to end (a short CI-sized run)."""

from __future__ import annotations

from pathlib import Path

from bench._ws_feed import run_websocket_bench


async def test_bench_commits_every_event(tmp_path: Path) -> None:
    """A small feed is fully committed and acked; the figures are reported."""
    result = await run_websocket_bench(300, workdir=tmp_path, batch_max=100)
    assert result["websocket_events"] == 300
    assert result["websocket_per_s"] > 0 and result["websocket_batches"] >= 3
    assert (tmp_path / "bench-ws.db").exists()
