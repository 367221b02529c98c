"""``read_stats``: the spool's counters from another process (the admin CLI).

Opens the file read-only (``mode=ro``) with the stdlib ``sqlite3`` module, so it works
while the daemon writes (WAL readers never block the writer) and never changes the file.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from spool._schema import SCHEMA_VERSION
from spool._store import query_stats, translate_sqlite_error
from spool.errors import SpoolCorrupt
from spool.results import SpoolStats

__all__ = ["read_stats"]


def read_stats(path: str | os.PathLike[str], *, now: float | None = None) -> SpoolStats:
    """A ``SpoolStats`` snapshot of the spool at ``path``, read-only; O(1) in its size."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no spool file at {p}")
    conn = sqlite3.connect(
        p.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None, timeout=5.0
    )
    try:
        conn.execute("PRAGMA query_only = 1")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            raise SpoolCorrupt(f"{p} is not a dispo-sync spool (no schema)")
        if version > SCHEMA_VERSION:
            raise SpoolCorrupt(
                f"{p} has spool schema {version}, newer than this dispo-sync ({SCHEMA_VERSION})"
            )
        return query_stats(conn, str(p), time.time() if now is None else now)
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc) from exc
    finally:
        conn.close()
