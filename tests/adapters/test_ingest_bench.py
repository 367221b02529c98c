"""The webhook throughput bench still runs end to end (a short CI-sized run)."""

from __future__ import annotations

from pathlib import Path

from bench.ingest_throughput import run_webhook_bench


async def test_webhook_bench_acks_every_request_after_commit(tmp_path: Path) -> None:
    """200 signed outcomes over 4 connections: all 200 OK and all in the spool file."""
    result = await run_webhook_bench(200, 4, tmp_path)
    assert result["webhook_requests"] == 200
    assert result["webhook_per_s"] > 0
    assert 0 < result["webhook_p50_ack_ms"] <= result["webhook_p99_ack_ms"]
    assert (tmp_path / "bench-webhook.db").exists()
