"""Regressions found by the disk campaign (issue 7): real sfsim, real spool file."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.mapping import load_mapping
from daemon.rails import Rails
from daemon.salesforce import Backoff, SalesforceClient
from sfsim.testing import sim_fixture
from spool import CallOutcome, Disposition, Spool, SpoolUnavailable, open_spool

ENDED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class FailingOnce:
    """The real spool, except that its first ``method`` call fails as a full disk's write does."""

    def __init__(self, spool: Spool, method: str) -> None:
        self._spool = spool
        self._method = method
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._spool, name)
        if name != self._method:
            return real

        async def once(*args: Any, **kwargs: Any) -> Any:
            if not self.failed:
                self.failed += 1
                raise SpoolUnavailable("disk I/O error", sqlite_error="SQLITE_IOERR_WRITE")
            return await real(*args, **kwargs)

        return once


sim = sim_fixture()  # a running SimOrg on a free loopback port, per test


@pytest.mark.parametrize("method", ["update_job", "record_job"])
async def test_a_spool_write_error_mid_bulk_job_does_not_strand_the_batch(
    sim: Any, tmp_path: Path, method: str
) -> None:
    """A Bulk job's bookkeeping cannot be written once; the batch is settled in process.

    Before, with ``update_job`` failing (job recorded, state not): the batch loop logged
    the error and went on; the job stayed unfinished in the spool and its records leased
    (in flight) for the whole bulk lease (15 minutes), until a restart or the lease ran
    out, although Salesforce had them all. With ``record_job`` failing (job created in
    Salesforce, not recorded): the same records stranded, and nothing would reconcile them.
    """
    outs = [
        CallOutcome(
            source="disk", call_id=f"c{n}", disposition=Disposition.VOICEMAIL, ended_at=ENDED
        )
        for n in range(30)
    ]
    async with open_spool(tmp_path / "spool.db", synchronous="NORMAL") as real:
        await real.put_many(outs)
        spool = FailingOnce(real, method)
        info = sim.info
        async with SalesforceClient(
            login_url=info["instance_url"],
            client_id=info["client_id"],
            client_secret=info["client_secret"],
            allow_http=True,
        ) as client:
            rails = Rails(
                spool=spool,  # type: ignore[arg-type]
                client=client,
                mapping=load_mapping(None),
                bulk_min_records=1,
                retry_backoff=Backoff(initial=0.001, factor=2.0, cap=0.02, jitter=0.0),
                bulk_poll=Backoff(initial=0.005, factor=1.5, cap=0.05, jitter=0.0),
                idle_poll_s=0.005,
            )
            await rails.drain(timeout_s=30)
        assert spool.failed == 1
        stats = await real.stats()
        assert stats.done == 30 and stats.inflight == 0 and stats.pending == 0
        jobs = await real.jobs()
        assert jobs and all(j.finished for j in jobs)
        assert all(j.state == "JobComplete" for j in jobs if j.sf_job_id)
    assert len(sim.org.store.records("Task")) == 30


_OPEN = """
import asyncio, sys
from spool import SpoolUnavailable, open_spool

async def main() -> None:
    try:
        async with open_spool(sys.argv[1]):
            print("opened")
    except SpoolUnavailable as exc:
        print(f"refused: {exc}")

asyncio.run(main())
"""


def _open_as_other_user(path: Path) -> str:
    """Open the spool as the unprivileged ``nobody`` (root bypasses file modes)."""
    argv = [sys.executable, "-c", _OPEN, str(path)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot open as another user")
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd="/")
    return done.stdout + done.stderr


async def test_a_read_only_spool_file_is_refused_at_open() -> None:
    """An existing spool file the daemon's user cannot write stops the start.

    Before: SQLite opened it read-only and the daemon reported ready, then refused every
    outcome (503, websocket not acked) and logged only "spool maintenance failed".
    """
    with tempfile.TemporaryDirectory(prefix="dispo-ro-") as name:
        os.chmod(name, 0o777)
        path = Path(name) / "spool.db"
        async with open_spool(path):
            pass
        if os.geteuid() == 0:
            for entry in os.listdir(name):
                os.chown(os.path.join(name, entry), 65534, 65534)
        os.chmod(path, 0o400)
        out = await asyncio.to_thread(_open_as_other_user, path)
        assert "refused: the spool file is not readable and writable" in out, out
        os.chmod(path, 0o600)
        out = await asyncio.to_thread(_open_as_other_user, path)
        assert out.strip() == "opened", out
