"""Regressions found by the disk campaign (issue 7): real sfsim, real spool file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.mapping import load_mapping
from daemon.rails import Rails
from daemon.salesforce import Backoff, SalesforceClient
from spool import CallOutcome, Disposition, Spool, SpoolUnavailable, open_spool

ENDED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class FailingOnce:
    """The real spool, except that one ``update_job`` fails as a full disk's write does."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spool, name)

    async def update_job(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed += 1
            raise SpoolUnavailable("disk I/O error", sqlite_error="SQLITE_IOERR_WRITE")
        return await self._spool.update_job(*args, **kwargs)


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    from sfsim import SimOrg

    async with SimOrg(port=0) as org:
        yield org


async def test_a_spool_write_error_mid_bulk_job_does_not_strand_the_batch(
    sim: Any, tmp_path: Path
) -> None:
    """The job's state cannot be recorded once; the job is reconciled in this process.

    Before: the batch loop logged the error and went on; the job stayed unfinished in
    the spool and its records stayed leased (in flight) for the whole bulk lease (15
    minutes), until a restart or the lease ran out, although Salesforce had them all.
    """
    outs = [
        CallOutcome(
            source="disk", call_id=f"c{n}", disposition=Disposition.VOICEMAIL, ended_at=ENDED
        )
        for n in range(30)
    ]
    async with open_spool(tmp_path / "spool.db", synchronous="NORMAL") as real:
        await real.put_many(outs)
        spool = FailingOnce(real)
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
    assert len(sim.org.store.records("Task")) == 30
