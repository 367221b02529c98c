"""Regressions found by the bad-input campaign (issue 7): real sfsim, real spool file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.mapping import load_mapping
from daemon.rails import Rails
from daemon.salesforce import Backoff, SalesforceClient
from daemon.salesforce.wire import CarriageReturnError, LiteralNullError, csv_value
from spool import CallOutcome, Disposition, open_spool

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    from sfsim import SimOrg

    async with SimOrg(port=0) as org:
        yield org


def test_a_value_with_a_cr_is_not_bulk_csv() -> None:
    with pytest.raises(CarriageReturnError):
        csv_value("line one\rline two")
    assert issubclass(CarriageReturnError, LiteralNullError)  # the record goes by REST
    assert csv_value("line one\nline two") == "line one\nline two"


async def test_notes_with_a_cr_do_not_fail_the_bulk_job(sim: Any, tmp_path: Path) -> None:
    """One outcome whose notes hold a CR among many: every Task lands with its exact text.

    Before: the CR went into the Bulk CSV (quoted); an LF job with a CR anywhere fails
    whole (``ClientInputError : LineEnding is invalid on user data``), which paused the
    Bulk rail with every record of the batch pending.
    """
    notes = {n: f"note {n}" for n in range(40)}
    notes[7] = "=1+2\r\nsecond line"
    notes[21] = 'a "quoted"\rvalue'
    outs = [
        CallOutcome(
            source="fuzz",
            call_id=f"c{n}",
            disposition=Disposition.VOICEMAIL,
            ended_at=T0 + timedelta(seconds=n),
            notes=text,
        )
        for n, text in notes.items()
    ]
    async with open_spool(tmp_path / "spool.db", synchronous="NORMAL") as spool:
        await spool.put_many(outs)
        info = sim.info
        async with SalesforceClient(
            login_url=info["instance_url"],
            client_id=info["client_id"],
            client_secret=info["client_secret"],
            allow_http=True,
        ) as client:
            rails = Rails(
                spool=spool,
                client=client,
                mapping=load_mapping(None),
                bulk_min_records=1,
                retry_backoff=Backoff(initial=0.001, factor=2.0, cap=0.02, jitter=0.0),
                bulk_poll=Backoff(initial=0.005, factor=1.5, cap=0.05, jitter=0.0),
                idle_poll_s=0.005,
            )
            await rails.drain(timeout_s=30)
            assert not rails.paused
        stats = await spool.stats()
        assert stats.done == 40 and stats.dead == 0
        jobs = await spool.jobs()
        assert jobs and all(j.state == "JobComplete" for j in jobs)
    tasks = {t["CallObject"]: t for t in sim.org.store.records("Task")}
    for n, text in notes.items():
        assert tasks[f"c{n}"]["Description"] == text
