"""`dispo-sync status` and `dead-letters` on a real spool file, daemon running or not."""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from spool import CallOutcome, Disposition, LeadRef, open_spool

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def outcome(n: int, disposition: Disposition = Disposition.NO_ANSWER, **kw: Any) -> CallOutcome:
    return CallOutcome(
        source="vicidial",
        call_id=f"call-{n}",
        disposition=disposition,
        ended_at=T0 + timedelta(seconds=n),
        lead=LeadRef(external_key=f"L{n}"),
        **kw,
    )


async def populate(path: Path) -> dict[str, int]:
    """5 pending, 1 done (live), 2 dead (two codes), 1 in a bulk job, a quota reading."""
    ids: dict[str, int] = {}
    async with open_spool(path) as spool:
        for n in range(9):
            disposition = Disposition.DO_NOT_CALL if n < 3 else Disposition.BUSY
            ids[f"call-{n}"] = (await spool.put(outcome(n, disposition))).record_id
        live = await spool.claim("live", 3, urgent=True)
        await spool.ack([live[0]])
        await spool.dead(
            [live[1]],
            error_code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            message="bad value for restricted picklist field: =Nope",
        )
        await spool.dead([live[2]], error_code="ENTITY_IS_DELETED", message="entity is deleted")
        bulk = await spool.claim("bulk", 1, urgent=False)
        await spool.record_job("750xx000000001AAA", "Task", "upsert", bulk, state="UploadComplete")
        await spool.update_job(
            "750xx000000001AAA", state="InProgress", numberRecordsProcessed=1, numberRecordsFailed=0
        )
        await spool.set_state(
            "quota", json.dumps({"used": 1200, "max": 15000, "at": time.time() - 30})
        )
    return ids


@asynccontextmanager
async def running_daemon_spool(path: Path) -> AsyncIterator[Any]:
    async with open_spool(path) as spool:
        yield spool


@pytest.fixture
def spool_file(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    path = tmp_path / "spool.db"
    ids = asyncio.run(populate(path))
    return path, ids


def test_status_table_shows_counts_jobs_dead_letters_and_quota(
    spool_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """status prints waiting/sent/dead counts, the bulk job, errors by code and the quota."""
    path, _ = spool_file
    before = path.read_bytes()
    assert main(["status", "--spool", str(path)]) == 0
    out = capsys.readouterr().out
    assert "waiting: 5" in out and "being sent: 1" in out and "dead letters: 2" in out
    assert "750xx000000001AAA" in out and "InProgress" in out
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in out and "ENTITY_IS_DELETED" in out
    assert "API quota: 1200 of 15000 used (92% left" in out
    assert path.read_bytes() == before  # status never writes


def test_status_json_while_the_daemon_holds_the_spool_open(
    spool_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """status --json works while another process has the spool open for writing."""
    path, _ = spool_file

    async def go() -> int:
        async with running_daemon_spool(path) as spool:
            await spool.put(outcome(100))
            return await asyncio.to_thread(main, ["status", "--json", "--spool", str(path)])

    assert asyncio.run(go()) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pending"] == 6 and data["dead"] == 2 and data["inflight"] == 1
    assert data["by_rail"]["done"] == {"live": 1}
    assert data["bulk_jobs"][0]["job_id"] == "750xx000000001AAA"
    assert data["bulk_jobs"][0]["counters"]["numberRecordsProcessed"] == 1
    assert data["quota"]["max"] == 15000
    assert data["dead_by_error"] == {
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": 1,
        "ENTITY_IS_DELETED": 1,
    }


def test_status_without_a_spool_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status on a missing spool explains that the service has not run yet; exit 1."""
    assert main(["status", "--spool", str(tmp_path / "none.db")]) == 1
    assert "has not run yet" in capsys.readouterr().out


def test_dead_letters_list_show_and_filter(
    spool_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """list shows every dead letter with its error; show prints one in full."""
    path, _ = spool_file
    assert main(["dead-letters", "list", "--json", "--spool", str(path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["error_code"] for r in rows} == {
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "ENTITY_IS_DELETED",
    }
    assert (
        main(["dead-letters", "list", "--error-code", "ENTITY_IS_DELETED", "--spool", str(path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "ENTITY_IS_DELETED" in out and "RESTRICTED_PICKLIST" not in out

    dead_id = next(r["id"] for r in rows if r["error_code"] == "ENTITY_IS_DELETED")
    assert main(["dead-letters", "show", str(dead_id), "--spool", str(path)]) == 0
    out = capsys.readouterr().out
    assert "entity is deleted" in out and '"call_id": "call-' in out
    assert main(["dead-letters", "show", "99999", "--spool", str(path)]) == 1
    assert "no dead letter with id 99999" in capsys.readouterr().err


def test_dead_letters_retry_by_code_then_all_and_drop(
    spool_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """retry --error-code re-queues only that error; drop deletes one; counts follow."""
    path, _ = spool_file
    assert (
        main(["dead-letters", "retry", "--error-code", "ENTITY_IS_DELETED", "--spool", str(path)])
        == 0
    )
    assert "1 dead letter queued to be sent again" in capsys.readouterr().out
    assert main(["status", "--json", "--spool", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dead"] == 1 and data["pending"] == 6

    assert main(["dead-letters", "list", "--json", "--spool", str(path)]) == 0
    (left,) = json.loads(capsys.readouterr().out)
    assert main(["dead-letters", "drop", str(left["id"]), "--spool", str(path)]) == 0
    assert main(["dead-letters", "drop", str(left["id"]), "--spool", str(path)]) == 1
    assert main(["dead-letters", "retry", "--all", "--spool", str(path)]) == 0
    assert "0 dead letters queued" in capsys.readouterr().out
    assert main(["status", "--json", "--spool", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dead"] == 0 and data["pending"] == 6


def test_dead_letters_export_csv_is_spreadsheet_safe(
    spool_file: tuple[Path, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export writes every dead letter to CSV; formula-like cells are neutralised."""
    path, _ = spool_file
    target = tmp_path / "dead.csv"
    assert main(["dead-letters", "export", str(target), "--spool", str(path)]) == 0
    assert "2 dead letters written" in capsys.readouterr().out
    with target.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    assert {r["error_code"] for r in rows} == {
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "ENTITY_IS_DELETED",
    }
    for row in rows:
        assert json.loads(row["outcome_json"])["source"] == "vicidial"
    # The message "...field: =Nope" is not a formula; a leading "=" would be.
    assert all(not r["error_message"].startswith("=") for r in rows)
    # Dead letters carry phone numbers and notes: readable by the daemon's user only.
    assert target.stat().st_mode & 0o777 == 0o600


async def dead_letter_this_version_cannot_read(path: Path) -> int:
    """A record whose stored payload no longer parses, dead-lettered by the spool's own claim."""
    async with open_spool(path) as spool:
        record_id = (await spool.put(outcome(500, Disposition.BUSY))).record_id
    # A payload written by another version: it keeps its keys but not our schema.
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "UPDATE outcomes SET payload = ? WHERE id = ?",
            (json.dumps({"call_id": "call-500", "disposition": "busy", "v": 99}), record_id),
        )
    async with open_spool(path) as spool:
        claimed = await spool.claim("bulk", 100, urgent=False)
        assert record_id not in {c.record_id for c in claimed}
        await spool.release(claimed)
        (dead,) = await spool.dead_letters(error_code="SPOOL_UNREADABLE_PAYLOAD")
        assert dead.record_id == record_id and dead.outcome is None
    return record_id


def test_dead_letters_this_version_cannot_read_are_listed_shown_exported_and_retried(
    spool_file: tuple[Path, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreadable dead letter: list, show and export keep the raw payload; retry warns."""
    path, _ = spool_file
    record_id = asyncio.run(dead_letter_this_version_cannot_read(path))

    assert main(["dead-letters", "list", "--json", "--spool", str(path)]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[record_id]["disposition"] == "busy" and rows[record_id]["readable"] is False
    assert rows[record_id]["error_code"] == "SPOOL_UNREADABLE_PAYLOAD"
    assert main(["dead-letters", "list", "--spool", str(path)]) == 0
    table = capsys.readouterr().out
    assert "dead letters (3 shown)" in table and "vicidial:call-500" in table.replace("\n", "")

    assert main(["dead-letters", "show", str(record_id), "--spool", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cannot read it" in out and '"v": 99' in out

    target = tmp_path / "dead.csv"
    assert main(["dead-letters", "export", str(target), "--spool", str(path)]) == 0
    with target.open(newline="") as fh:
        exported = {int(r["id"]): r for r in csv.DictReader(fh)}
    assert len(exported) == 3
    assert json.loads(exported[record_id]["outcome_json"])["v"] == 99
    assert exported[record_id]["readable"] == "False"

    assert main(["dead-letters", "retry", "--all", "--spool", str(path)]) == 0
    captured = capsys.readouterr()
    assert "3 dead letters queued" in captured.out
    assert "1 of them was stored in a form this version cannot read" in captured.err


async def test_dead_letters_never_purges_what_the_service_keeps(tmp_path: Path) -> None:
    """`dead-letters` opened the spool with the library's defaults, 7 days of retention,
    and its spool ran the first maintenance pass a few seconds in: a done call older than
    a week was purged though `[spool] retention_days` keeps it longer (and with it the
    record that recognises the call when the dialer sends it again). The command's spool
    still expires leases, but purges nothing: retention is the service's."""
    from daemon.admin import _open

    path = tmp_path / "spool.db"
    ten_days_ago = time.time() - 10 * 86400
    async with open_spool(path, retention_s=30 * 86400, clock=lambda: ten_days_ago) as spool:
        await spool.put_many([outcome(1), outcome(2)])
        [done] = await spool.claim("bulk", 1)
        await spool.ack([done])
        await spool.claim("bulk", 1, lease_s=1.0)  # its lease ran out ten days ago
    async with _open(path) as spool:
        deadline = time.monotonic() + 20
        while (await spool.stats()).pending != 1:  # the maintenance pass has run
            assert time.monotonic() < deadline, "the expired lease was never reaped"
            await asyncio.sleep(0.05)
        assert (await spool.stats()).done == 1
