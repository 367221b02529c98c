"""The spool's SQLite schema and its forward migrations.

``PRAGMA user_version`` holds the schema version. Opening a file runs every migration
above its version in one transaction; a file from a *newer* dispo-sync is refused
(never downgraded). Migrations are append-only: never edit a released one.

Design notes:

- ``outcomes`` keeps the record's JSON in ``payload`` plus the columns the queries need.
  Every index that only serves one state is *partial* (``WHERE state = ...``), so done rows
  cost nothing to the claim, lease and stats queries, and the index stays small.
- ``counts`` holds the number of records per (state, rail), kept exact in the same
  transaction as every change, so ``stats()`` and the ``max_pending`` check are O(1):
  triggers handle every update of ``state``/``rail`` and every delete, whatever code path
  (or process) made it. Inserts are counted by a trigger that fires once per INSERT
  statement (v2: the statement's last row carries ``batch_rows``; see ``Store.put_batch``,
  the only code that inserts into ``outcomes``): a plain per-row insert trigger doubled the
  cost of ingest (measured: 44 vs 19 us/row).
- v3: a state change rewrites as few index entries as it can, since the Bulk rail moves
  every record through two of them (claim, done): ``outcomes_lead`` names no state (it
  was partial on ``state <> 3``, so SQLite rewrote it on every change of ``state``; the
  queries that use it skip dead rows themselves), and ``outcomes.job_id`` is no longer
  written (a Bulk job's records are in ``job_records`` only; setting and clearing
  ``job_id`` rewrote every record of a job twice more). Measured on 1M rows: a claim
  plus an ack went from about 17 to 8.5 us per record in SQLite.
- v4: for orgs without a Task external ID field (Tasks inserted, then updated by Id):
  ``task_id`` remembers the Salesforce Id of a record's Task once an insert answered it,
  and ``claims`` counts every claim of a record, never reset (``attempt`` is), so that a
  rail knows whether an earlier claim may have inserted a Task whose answer was lost. Both
  are added without rewriting the table: rows written before read ``claims`` = 1 (may
  have been sent: looked up before any insert), new rows are inserted with 0.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

__all__ = [
    "DEAD",
    "DONE",
    "INFLIGHT",
    "MIGRATIONS",
    "PENDING",
    "QUARANTINE_STATE",
    "SCHEMA_VERSION",
    "STATE_NAMES",
    "NewerSchemaError",
    "migrate",
]

PENDING = 0
INFLIGHT = 1
DONE = 2
DEAD = 3
# Pseudo-state under which the counts table tracks quarantined inputs.
QUARANTINE_STATE = 9

STATE_NAMES = {PENDING: "pending", INFLIGHT: "inflight", DONE: "done", DEAD: "dead"}

_V1 = """
CREATE TABLE outcomes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    source          TEXT    NOT NULL,
    call_id         TEXT    NOT NULL,
    state           INTEGER NOT NULL,
    rail            TEXT    NOT NULL DEFAULT '',
    urgent          INTEGER NOT NULL,
    lead_key        TEXT,
    ord_version     INTEGER NOT NULL,
    ord_seq         INTEGER NOT NULL,
    ord_ts          REAL    NOT NULL,
    rev             INTEGER NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    lease_until     REAL,
    queued_at       REAL    NOT NULL,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    error_code      TEXT,
    error_message   TEXT,
    job_id          TEXT,
    payload         TEXT    NOT NULL,
    UNIQUE (source, call_id)
);
CREATE INDEX outcomes_claim  ON outcomes (urgent, next_attempt_at, id) WHERE state = 0;
CREATE INDEX outcomes_queued ON outcomes (queued_at) WHERE state = 0;
CREATE INDEX outcomes_lease  ON outcomes (lease_until) WHERE state = 1;
CREATE INDEX outcomes_lead   ON outcomes (lead_key, ord_ts, id)
    WHERE lead_key IS NOT NULL AND state <> 3;
CREATE INDEX outcomes_done   ON outcomes (updated_at) WHERE state = 2;
CREATE INDEX outcomes_dead   ON outcomes (error_code, updated_at) WHERE state = 3;
CREATE INDEX outcomes_dead_t ON outcomes (updated_at) WHERE state = 3;

CREATE TABLE counts (
    state INTEGER NOT NULL,
    rail  TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (state, rail)
) WITHOUT ROWID;

CREATE TRIGGER outcomes_count_delete AFTER DELETE ON outcomes BEGIN
    UPDATE counts SET n = n - 1 WHERE state = OLD.state AND rail = OLD.rail;
END;
CREATE TRIGGER outcomes_count_update AFTER UPDATE OF state, rail ON outcomes
    WHEN OLD.state <> NEW.state OR OLD.rail <> NEW.rail BEGIN
    UPDATE counts SET n = n - 1 WHERE state = OLD.state AND rail = OLD.rail;
    INSERT INTO counts (state, rail, n) VALUES (NEW.state, NEW.rail, 1)
        ON CONFLICT (state, rail) DO UPDATE SET n = n + 1;
END;

CREATE TABLE kv (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE quarantine (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    source     TEXT NOT NULL,
    raw        BLOB NOT NULL,
    reason     TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX quarantine_created ON quarantine (created_at);
CREATE TRIGGER quarantine_count_insert AFTER INSERT ON quarantine BEGIN
    INSERT INTO counts (state, rail, n) VALUES (9, '', 1)
        ON CONFLICT (state, rail) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER quarantine_count_delete AFTER DELETE ON quarantine BEGIN
    UPDATE counts SET n = n - 1 WHERE state = 9 AND rail = '';
END;

CREATE TABLE jobs (
    sf_job_id    TEXT PRIMARY KEY,
    object       TEXT    NOT NULL,
    operation    TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    finished     INTEGER NOT NULL DEFAULT 0,
    record_count INTEGER NOT NULL,
    counters     TEXT    NOT NULL DEFAULT '{}',
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL
) WITHOUT ROWID;
CREATE INDEX jobs_open ON jobs (finished, updated_at);

CREATE TABLE job_records (
    sf_job_id TEXT    NOT NULL,
    record_id INTEGER NOT NULL,
    rev       INTEGER NOT NULL,
    PRIMARY KEY (sf_job_id, record_id)
) WITHOUT ROWID;
"""


_V2 = """
DROP TRIGGER IF EXISTS outcomes_count_insert;
ALTER TABLE outcomes ADD COLUMN batch_rows INTEGER;
CREATE TRIGGER outcomes_count_new AFTER INSERT ON outcomes WHEN NEW.batch_rows IS NOT NULL
BEGIN
    INSERT INTO counts (state, rail, n) VALUES (0, '', NEW.batch_rows)
        ON CONFLICT (state, rail) DO UPDATE SET n = n + excluded.n;
END;
DELETE FROM counts WHERE state <> 9;
INSERT INTO counts (state, rail, n) SELECT state, rail, count(*) FROM outcomes GROUP BY state, rail;
"""


_V3 = """
DROP INDEX outcomes_lead;
CREATE INDEX outcomes_lead ON outcomes (lead_key, ord_ts, id) WHERE lead_key IS NOT NULL;
UPDATE outcomes SET job_id = NULL WHERE job_id IS NOT NULL;
"""


_V4 = """
ALTER TABLE outcomes ADD COLUMN task_id TEXT;
ALTER TABLE outcomes ADD COLUMN claims INTEGER NOT NULL DEFAULT 1;
"""


def _migrate_v1(conn: sqlite3.Connection) -> None:
    for statement in _split(_V1):
        conn.execute(statement)


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """Count new rows with one trigger firing per INSERT statement, not per row: the
    statement's last row carries ``batch_rows`` (how many rows that statement added) and
    only that row fires the trigger. Recounts ``counts`` exactly (one scan, once)."""
    for statement in _split(_V2):
        conn.execute(statement)


def _migrate_v3(conn: sqlite3.Connection) -> None:
    """``outcomes_lead`` without the state condition; ``outcomes.job_id`` retired (always
    NULL from now on: ``job_records`` says which unfinished job holds a record)."""
    for statement in _split(_V3):
        conn.execute(statement)


def _migrate_v4(conn: sqlite3.Connection) -> None:
    """``task_id`` and ``claims`` (see the module notes); O(1): no row is rewritten."""
    for statement in _split(_V4):
        conn.execute(statement)


def _split(script: str) -> list[str]:
    """Split a DDL script into statements (``executescript`` would COMMIT on its own)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    assert not buf.strip(), f"incomplete DDL statement: {buf!r}"
    return statements


#: MIGRATIONS[i] brings the schema from version i to version i + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migrate_v1,
    _migrate_v2,
    _migrate_v3,
    _migrate_v4,
]
SCHEMA_VERSION = len(MIGRATIONS)


class NewerSchemaError(Exception):
    def __init__(self, found: int) -> None:
        super().__init__(
            f"spool schema version {found} is newer than this dispo-sync understands "
            f"({SCHEMA_VERSION}); upgrade dispo-sync or use another spool file"
        )
        self.found = found


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to ``SCHEMA_VERSION`` in one transaction; return the old version."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise NewerSchemaError(found)
    if found == SCHEMA_VERSION:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if found > SCHEMA_VERSION:
            raise NewerSchemaError(found)
        for step in MIGRATIONS[found:]:
            step(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found
