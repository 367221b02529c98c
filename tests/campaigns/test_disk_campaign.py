"""The disk campaign (bench/campaign_disk.py), short: each storage fault for ~2 s under load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bench import campaign_disk as disk


def _check(r: dict[str, Any]) -> None:
    assert r["lost_acked"] == 0 and r["duplicates"] == 0, r
    assert r["daemon_alive"], r
    assert r["refused_window"] and r["webhook_refused_during_fault"], r
    assert r["webhook_503_without_retry_after"] == 0, r
    assert set(r["webhook_statuses"]) <= {"200", "503"}, r
    assert r["ws_acked"] == r["ws_events"], r
    assert "1013" in r["ws_close_codes"], r
    assert r["spool_states_at_end"] == {"done": r["tasks_in_org"]}, r
    assert r["ok"], r


async def test_write_errors_refuse_ingest_and_lose_nothing(tmp_path: Path) -> None:
    r = await disk.run_mode("write_error", tmp_path, seconds=2.0, drain_s=60, lease_s=2.0)
    assert r["refusal_log_lines"].keys() == {"SpoolUnavailable"}, r
    _check(r)


@pytest.mark.skipif(not disk.can_mount_tmpfs(), reason="mounting a tmpfs needs root")
async def test_a_full_disk_refuses_ingest_and_recovers(tmp_path: Path) -> None:
    r = await disk.run_mode("tmpfs_full", tmp_path, seconds=2.0, drain_s=60, lease_s=2.0)
    assert r["refusal_log_lines"].keys() == {"SpoolFull"}, r
    _check(r)


@pytest.mark.slow
async def test_full_disk_campaign(tmp_path: Path) -> None:
    r = await disk.run_disk(tmp_path, seconds=20.0)
    assert r["ok"], r


@pytest.mark.skipif(os.geteuid() != 0, reason="running the daemon as nobody needs root")
async def test_a_read_only_spool_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    r = await disk.check_unwritable_at_start(tmp_path)
    assert r["exit_status"] not in (None, 0) and "spool.db" in r["message"], r
    assert r["ok"], r
