"""Crash safety: a writer SIGKILLed at random moments never loses a put that returned."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("spool_crash_child.py")


def _kill_at_random(path: Path, run: int, rng: random.Random) -> set[str]:
    """Start the child, SIGKILL it after a random number of committed puts; return them."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), f"r{run}"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    returned: set[str] = set()
    try:
        assert proc.stdout.readline() == "ready\n"
        target = rng.randint(1, 400)
        while len(returned) < target:
            line = proc.stdout.readline()
            assert line.startswith("ok "), f"child failed: {line!r}"
            returned.add(line[3:].strip())
        os.kill(proc.pid, signal.SIGKILL)
        # Everything the child printed before dying also returned from put.
        returned.update(line[3:].strip() for line in proc.stdout if line.startswith("ok "))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return returned


def _check(path: Path, must_have: set[str]) -> int:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {row[0] for row in conn.execute("SELECT call_id FROM outcomes")}
        counted = conn.execute("SELECT coalesce(sum(n), 0) FROM counts WHERE state < 9")
        assert counted.fetchone()[0] == len(stored)
    missing = must_have - stored
    assert not missing, f"{len(missing)} committed puts lost, e.g. {sorted(missing)[:3]}"
    return len(stored)


def _crash_loop(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    returned: set[str] = set()
    for run in range(kills):
        returned |= _kill_at_random(path, run, rng)
        # Checked after every kill, on the file the next child will reopen and recover.
        _check(path, returned)
    assert len(returned) >= kills


def test_sigkill_never_loses_a_committed_put(tmp_path: Path) -> None:
    """20 SIGKILLs at random moments: file intact and every returned put present."""
    _crash_loop(tmp_path, kills=20, seed=20261124)


@pytest.mark.slow
@pytest.mark.timeout(900)  # 200 child processes: well over the default 120 s on a busy machine
def test_sigkill_soak(tmp_path: Path) -> None:
    """200 SIGKILLs at random moments: file intact and every returned put present."""
    _crash_loop(tmp_path, kills=200, seed=random.randrange(1 << 30))
