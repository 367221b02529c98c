"""CDR / CSV backfill from real files into a real spool: idempotent, resumable, bad rows kept."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters import build_adapters, ingest_file
from adapters.file import FileAdapter
from spool import Disposition, Spool

# dialers.md 1.5: the documented example row (16 columns, empty unquoted answer)
BUSY_ROW = (
    '"","+15125550100","+15125550199","dialer-out","""Dialer"" <+15125550100>",'
    '"PJSIP/carrier-0000021a","","Dial","carrier/+15125550199,30","2025-03-14 10:01:52",,'
    '"2025-03-14 10:02:20",28,0,"BUSY","DOCUMENTATION"\n'
)
# loguniqueid=yes + loguserfield=yes: 18 columns
ANSWERED_ROW = (
    '"acct1","+15125550100","+15125550142","dialer-out","""Dialer"" <+15125550100>",'
    '"PJSIP/carrier-0000021b","PJSIP/agent-00000003","Dial","carrier/+15125550142,30",'
    '"2025-03-14 10:05:00","2025-03-14 10:05:09","2025-03-14 10:09:40",280,271,"ANSWERED",'
    '"DOCUMENTATION","1710410700.901","campaign=SALES1"\n'
)
NOANSWER_ROW = (
    '"","+15125550100","+15125550177","dialer-out","","PJSIP/carrier-0000021c","","Dial",'
    '"carrier/+15125550177,30","2025-03-14 11:00:00",,"2025-03-14 11:00:30",30,0,'
    '"NO ANSWER","DOCUMENTATION"\n'
)


async def stored(spool: Spool) -> dict[str, object]:
    claims = await spool.claim("t", 1000)
    await spool.release(claims)
    return {c.outcome.call_id: c.outcome for c in claims}


async def test_master_csv_rows_become_outcomes(spool: Spool, tmp_path: Path) -> None:
    """Each Master.csv row is one outcome; wall-clock times read in the configured zone."""
    f = tmp_path / "Master.csv"
    f.write_text(BUSY_ROW + ANSWERED_ROW + NOANSWER_ROW)
    s = await ingest_file(f, spool, tz="America/Chicago", progress=False)
    assert (s.rows, s.accepted, s.duplicates, s.rejected) == (3, 3, 0, 0)
    got = await stored(spool)
    answered = got["1710410700.901"]
    assert answered.disposition is Disposition.CONNECTED and answered.ambiguous  # type: ignore[attr-defined]
    assert answered.talk_s == 271 and answered.duration_s == 280  # type: ignore[attr-defined]
    # 10:09:40 CDT (UTC-5) is 15:09:40 UTC
    assert answered.ended_at == datetime(2025, 3, 14, 15, 9, 40, tzinfo=UTC)  # type: ignore[attr-defined]
    assert answered.extra["userfield"] == "campaign=SALES1"  # type: ignore[attr-defined]
    by_disp = {o.disposition for o in got.values()}  # type: ignore[attr-defined]
    assert by_disp == {Disposition.BUSY, Disposition.CONNECTED, Disposition.NO_ANSWER}
    busy = next(o for o in got.values() if o.disposition is Disposition.BUSY)  # type: ignore[attr-defined]
    assert busy.call_id.startswith("cdr-") and busy.lead.phone == "+15125550199"  # type: ignore[attr-defined]


async def test_rerunning_a_file_adds_nothing(spool: Spool, tmp_path: Path) -> None:
    """A second run of the same file stores nothing new, even when the cursor is lost."""
    f = tmp_path / "Master.csv"
    f.write_text(BUSY_ROW + NOANSWER_ROW)
    await ingest_file(f, spool, progress=False)
    again = await ingest_file(f, spool, progress=False)
    assert (again.rows, again.accepted) == (0, 0)
    # the resume cursor lost: every row is read again and recognised as a duplicate
    await spool.set_cursor(f"file:cdr:{f.resolve()}", "")
    reread = await ingest_file(f, spool, progress=False)
    assert (reread.rows, reread.accepted, reread.duplicates) == (2, 0, 2)
    assert len(await stored(spool)) == 2


async def test_appended_rows_are_picked_up_from_the_offset(spool: Spool, tmp_path: Path) -> None:
    """Resumable: a later run reads only the rows appended since the last commit."""
    f = tmp_path / "Master.csv"
    f.write_text(BUSY_ROW)
    first = await ingest_file(f, spool, progress=False)
    with f.open("a") as fh:
        fh.write(ANSWERED_ROW + NOANSWER_ROW)
    second = await ingest_file(f, spool, progress=False)
    assert (first.rows, second.rows, second.accepted) == (1, 2, 2)
    assert second.resumed_from == len(BUSY_ROW.encode())


async def test_replaced_file_is_read_again_and_duplicates_counted(
    spool: Spool, tmp_path: Path
) -> None:
    """A rotated or replaced file is read from the start; known rows count as duplicates."""
    f = tmp_path / "Master.csv"
    f.write_text(BUSY_ROW + NOANSWER_ROW)
    await ingest_file(f, spool, progress=False)
    f.write_text(ANSWERED_ROW + BUSY_ROW + NOANSWER_ROW)
    s = await ingest_file(f, spool, progress=False)
    assert (s.rows, s.accepted, s.duplicates, s.resumed_from) == (3, 1, 2, 0)


async def test_bad_rows_are_quarantined_with_reasons(spool: Spool, tmp_path: Path) -> None:
    """Short rows and bad dates are rejected with a reason and kept; good rows go on."""
    f = tmp_path / "Master.csv"
    bad_date = BUSY_ROW.replace('"2025-03-14 10:02:20"', '"14/03/2025"')
    f.write_text('"only","three","cols"\n' + bad_date + NOANSWER_ROW)
    s = await ingest_file(f, spool, progress=False)
    assert (s.accepted, s.rejected) == (1, 2)
    assert s.reasons == {"row": 1, "end": 1}
    reasons = sorted(r.reason for r in await spool.list_quarantine())
    assert reasons[0].startswith("end: expected 'YYYY-MM-DD HH:MM:SS'")
    assert reasons[1] == "row: expected at least 16 columns (Master.csv layout), got 3"


async def test_generic_csv_with_header_mapping(spool: Spool, tmp_path: Path) -> None:
    """A CRM/dialer export with its own headers maps through `mapping` and `dispositions`."""
    f = tmp_path / "export.csv"
    f.write_text(
        "Call ID,Result,Ended,Agent,Lead,Notes\n"
        'A-1,SALE,2025-03-14 10:02:20,jdoe,00Q5e00000AbCdEFGH,"said ""yes""\non two lines"\n'
        "A-2,voicemail,2025-03-14T10:03:00+01:00,jdoe,48213,\n"
    )
    s = await ingest_file(
        f,
        spool,
        format="csv",
        source="crm",
        mapping={
            "call_id": "Call ID",
            "disposition": "Result",
            "ended_at": "Ended",
            "agent_id": "Agent",
            "lead_id": "Lead",
            "notes": "Notes",
        },
        dispositions={"SALE": "connected"},
        tz="Europe/Paris",
        progress=False,
    )
    assert (s.rows, s.accepted, s.rejected) == (2, 2, 0)
    got = await stored(spool)
    a1, a2 = got["A-1"], got["A-2"]
    assert a1.disposition is Disposition.CONNECTED and a1.lead.id == "00Q5e00000AbCdEFGH"  # type: ignore[attr-defined]
    assert a1.notes == 'said "yes"\non two lines'  # type: ignore[attr-defined]
    assert a1.ended_at == datetime(2025, 3, 14, 9, 2, 20, tzinfo=UTC)  # type: ignore[attr-defined]
    assert a2.lead.external_key == "48213"  # type: ignore[attr-defined]
    assert a2.ended_at == datetime(2025, 3, 14, 9, 3, tzinfo=UTC)  # type: ignore[attr-defined]


async def test_progress_bar_runs(
    spool: Spool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """progress=True draws a bar on stderr and still returns the summary."""
    f = tmp_path / "Master.csv"
    f.write_text(BUSY_ROW)
    s = await ingest_file(f, spool, progress=True)
    assert s.accepted == 1
    assert "Master.csv" in capsys.readouterr().err


async def test_unknown_format_is_refused(spool: Spool, tmp_path: Path) -> None:
    """An unknown format fails loudly, naming the known ones."""
    with pytest.raises(ValueError, match="asterisk-cdr, csv"):
        await ingest_file(tmp_path / "x", spool, format="xls")


async def test_file_adapter_watches_for_appended_rows(spool: Spool, tmp_path: Path) -> None:
    """type = "file" with watch_interval_s ingests on start and picks up new rows."""
    f = tmp_path / "Master.csv"
    f.write_text(BUSY_ROW)
    [adapter] = build_adapters([{"type": "file", "path": str(f), "watch_interval_s": 0.05}], spool)
    assert isinstance(adapter, FileAdapter)
    await adapter.start()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(adapter.run())
        await asyncio.wait_for(adapter.wait_pass(1), 10)
        with f.open("a") as fh:
            fh.write(NOANSWER_ROW)
        await asyncio.wait_for(adapter.wait_pass(3), 10)
        await adapter.stop()
    assert adapter.health().accepted == 2
    assert adapter.health().state.value == "stopped"
    assert len(await stored(spool)) == 2


async def test_file_of_only_bad_rows_still_advances(spool: Spool, tmp_path: Path) -> None:
    """A file with no usable row quarantines each once; a re-run does not quarantine again."""
    f = tmp_path / "Master.csv"
    f.write_text('"a","b"\n"c","d"\n')
    first = await ingest_file(f, spool, progress=False)
    again = await ingest_file(f, spool, progress=False)
    assert (first.rejected, again.rows) == (2, 0)
    assert len(await spool.list_quarantine()) == 2
