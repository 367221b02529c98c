"""Storage: the file's mode, WAL and fsync settings, schema versioning, reopening."""

from __future__ import annotations

import logging
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from spool_helpers import outcome

from spool import SpoolCorrupt, SpoolUnavailable, open_spool
from spool._schema import SCHEMA_VERSION


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _read(path: Path) -> bytes:
    return path.read_bytes()


async def test_new_file_is_private_and_in_wal_mode(
    open_test_spool: Callable[..., Any], spool_path: Path
) -> None:
    """A new spool file (and its WAL) is readable by its owner only, and in WAL mode."""
    async with open_test_spool() as sp:
        await sp.put(outcome())
        assert _mode(spool_path) == 0o600
        assert _mode(Path(f"{spool_path}-wal")) == 0o600
        with sqlite3.connect(spool_path) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


@pytest.mark.parametrize(("setting", "expected"), [("FULL", 2), ("normal", 1), ("EXTRA", 3)])
async def test_synchronous_setting_is_applied(
    open_test_spool: Callable[..., Any], setting: str, expected: int
) -> None:
    """synchronous=FULL is the default and other levels can be configured."""
    async with open_test_spool(synchronous=setting) as sp:
        assert sp._wconn is not None
        cursor = await sp._wconn.execute("PRAGMA synchronous")
        assert (await cursor.fetchone()) == (expected,)


def test_bad_settings_are_refused_by_name(spool_path: Path) -> None:
    """Bad settings are refused with an error naming the setting and the value."""
    from spool import Spool

    with pytest.raises(ValueError, match=r"synchronous.*'SOMETIMES'"):
        Spool(spool_path, synchronous="SOMETIMES")
    with pytest.raises(ValueError, match="max_pending"):
        Spool(spool_path, max_pending=0)
    with pytest.raises(ValueError, match=r"urgent_dispositions.*'hangup'"):
        Spool(spool_path, urgent_dispositions={"hangup"})


async def test_records_survive_reopen(open_test_spool: Callable[..., Any]) -> None:
    """What was stored is there after closing and reopening the file."""
    async with open_test_spool() as sp:
        rec = await sp.put(outcome("keep"))
        await sp.put_many([outcome()], cursor=("feed", "7"))
    async with open_test_spool() as sp:
        [claim] = await sp.claim("bulk", 1)
        assert claim.record_id == rec.record_id and claim.outcome.call_id == "keep"
        assert await sp.get_cursor("feed") == "7"
        assert (await sp.stats()).pending == 1


async def test_newer_schema_is_refused(spool_path: Path) -> None:
    """A file written by a newer dispo-sync is refused, not downgraded or damaged."""
    async with open_spool(spool_path) as sp:
        await sp.put(outcome())
    with sqlite3.connect(spool_path) as other:
        other.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SpoolCorrupt, match="newer"):
        async with open_spool(spool_path):
            pass
    with sqlite3.connect(spool_path) as other:
        assert other.execute("SELECT count(*) FROM outcomes").fetchone()[0] == 1


async def test_not_a_database_is_refused(spool_path: Path) -> None:
    """A file that is not SQLite is refused with SpoolCorrupt and left untouched."""
    _write(spool_path, b"this is not a database" * 100)
    with pytest.raises(SpoolCorrupt):
        async with open_spool(spool_path):
            pass
    assert _read(spool_path).startswith(b"this is not a database")


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    """Opening a spool in a directory that does not exist names the directory."""
    with pytest.raises(SpoolUnavailable, match="does not exist"):
        async with open_spool(tmp_path / "nope" / "spool.db"):
            pass


async def test_open_logs_at_info_without_error(
    open_test_spool: Callable[..., Any], spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With INFO logging on, opening a spool logs one 'spool opened' event with the path."""
    caplog.set_level(logging.INFO, logger="dispo.spool")
    async with open_test_spool():
        pass
    [record] = [r for r in caplog.records if r.getMessage() == "spool opened"]
    assert record.path == str(spool_path)  # type: ignore[attr-defined]
