"""CDR / CSV backfill from real files into a real spool: idempotent, resumable, bad rows kept."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from adapters import build_adapters, ingest_file
from adapters.file import FileAdapter
from spool import Disposition, Spool
from tests.adapters.lifecycle import running

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


# A CRM export's columns, as the file adapter's [adapter.mapping] names them.
CSV_MAPPING = {
    "call_id": "Call ID",
    "disposition": "Result",
    "ended_at": "Ended",
    "agent_id": "Agent",
    "lead_id": "Lead",
    "notes": "Notes",
}


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
        mapping=CSV_MAPPING,
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


def cdr_row(uniqueid: str, minute: int = 2) -> str:
    """A Master.csv row with loguniqueid=yes (17 columns): `uniqueid` is its call id."""
    return (
        '"acct1","+15125550100","+15125550142","dialer-out","""Dialer"" <+15125550100>",'
        '"PJSIP/carrier-0000021b","PJSIP/agent-00000003","Dial","carrier/+15125550142,30",'
        f'"2025-03-14 10:{minute:02d}:00","2025-03-14 10:{minute:02d}:09",'
        f'"2025-03-14 10:{minute:02d}:40",40,31,"ANSWERED","DOCUMENTATION","{uniqueid}"\n'
    )


def watched(path: Path, spool: Spool, **over: object) -> FileAdapter:
    table = {"type": "file", "path": str(path), "watch_interval_s": 0.02, **over}
    [adapter] = build_adapters([table], spool)
    assert isinstance(adapter, FileAdapter)
    return adapter


async def test_watched_file_row_being_written_is_read_once_complete(
    spool: Spool, tmp_path: Path
) -> None:
    """A watched Master.csv caught while Asterisk is half-way through a row loses nothing:
    the unterminated tail waits for its newline (it used to be taken as a short row, the
    cursor committed past it, and its second half quarantined as another)."""
    f = tmp_path / "Master.csv"
    second = cdr_row("1710410700.901", minute=5)
    cut = second.index('"2025-03-14 10:05:40"')
    f.write_text(cdr_row("1710410512.100") + second[:cut])
    async with running(watched(f, spool)) as adapter:
        await asyncio.wait_for(adapter.wait_pass(1), 10)
        assert adapter.health().accepted == 1
        with f.open("a") as fh:
            fh.write(second[cut:])  # ... and now it is complete
        await asyncio.wait_for(adapter.wait_pass(3), 10)
    assert sorted(await stored(spool)) == ["1710410512.100", "1710410700.901"]
    assert await spool.list_quarantine() == []


async def test_ingest_takes_a_last_row_without_newline(spool: Spool, tmp_path: Path) -> None:
    """`dispo-sync ingest` (and a file adapter without watching) takes a file as complete: a
    last row without its newline is a row."""
    f = tmp_path / "export.csv"
    f.write_text(cdr_row("1710410512.100") + cdr_row("1710410700.901").rstrip("\n"))
    s = await ingest_file(f, spool, progress=False)
    assert (s.rows, s.accepted, s.rejected) == (2, 2, 0)
    again = await ingest_file(f, spool, progress=False)  # the cursor is past it
    assert again.rows == 0


async def test_watched_file_rows_written_just_before_rotation_are_read(
    spool: Spool, tmp_path: Path
) -> None:
    """logrotate renames Master.csv and Asterisk starts a new one: the rows written to the
    old file since the last pass are read before the new file (they used to be lost: each
    pass reopened the path and read the new file from its start)."""
    f = tmp_path / "Master.csv"
    f.write_text(cdr_row("call-1"))
    async with running(watched(f, spool)) as adapter:
        await asyncio.wait_for(adapter.wait_pass(1), 10)
        # no await in between: no pass can run between these three steps
        with f.open("a") as fh:
            fh.write(cdr_row("call-2"))  # Asterisk writes a row after pass 1 ...
        f.rename(tmp_path / "Master.csv.1")  # ... logrotate moves the file away ...
        f.write_text(cdr_row("call-3"))  # ... and the next call starts a new Master.csv
        await asyncio.wait_for(adapter.wait_pass(3), 10)
        with f.open("a") as fh:
            fh.write(cdr_row("call-4"))  # the new file is followed from then on
        await asyncio.wait_for(adapter.wait_pass(5), 10)
    assert sorted(await stored(spool)) == ["call-1", "call-2", "call-3", "call-4"]
    assert adapter.health().duplicates == 0  # neither file was read twice


async def test_watched_file_renamed_away_is_read_until_a_new_one_appears(
    spool: Spool, tmp_path: Path
) -> None:
    """Between the rename and the dialer's first write to a new file, rows a writer adds to
    the renamed file are still read; the path is reported missing meanwhile."""
    f = tmp_path / "Master.csv"
    f.write_text(cdr_row("call-1"))
    async with running(watched(f, spool)) as adapter:
        await asyncio.wait_for(adapter.wait_pass(1), 10)
        rotated = tmp_path / "Master.csv.1"
        f.rename(rotated)
        with rotated.open("a") as fh:
            fh.write(cdr_row("call-2"))  # a writer that still has the old file open
        await asyncio.wait_for(adapter.wait_pass(3), 10)
        assert adapter.health().last_error == "file not found"
        assert adapter.health().accepted == 2
        f.write_text(cdr_row("call-3"))
        await asyncio.wait_for(adapter.wait_pass(5), 10)
        assert adapter.health().last_error is None
    assert sorted(await stored(spool)) == ["call-1", "call-2", "call-3"]


async def test_rotation_while_stopped_reads_the_rotated_file_first(
    spool: Spool, tmp_path: Path
) -> None:
    """After a restart, rows the old file got before logrotate renamed it (while the daemon
    was down) are read from the rotated file, found by its inode, then the new file."""
    f = tmp_path / "Master.csv"
    f.write_text(cdr_row("call-1"))
    async with running(watched(f, spool)) as adapter:
        await asyncio.wait_for(adapter.wait_pass(1), 10)
    with f.open("a") as fh:
        fh.write(cdr_row("call-2"))
    f.rename(tmp_path / "Master.csv.1")
    f.write_text(cdr_row("call-3"))
    async with running(watched(f, spool)) as adapter:
        await asyncio.wait_for(adapter.wait_pass(1), 10)
    assert sorted(await stored(spool)) == ["call-1", "call-2", "call-3"]
    assert adapter.health().duplicates == 0


async def test_call_across_dst_fall_back_is_stored(spool: Spool, tmp_path: Path) -> None:
    """A call spanning the DST fall-back hour is a valid row, not bad input.

    In America/Chicago on 2025-11-02 the clock goes 01:59:59 CDT -> 01:00:00 CST. A
    20-second call from 01:59:50 CDT to 01:00:10 CST is written start "01:59:50", end
    "01:00:10"; both used to be read as CDT, so it ended before it started and was
    quarantined. The row's duration says which reading is right.
    """
    row = (
        '"","+15125550100","+15125550177","dialer-out","","PJSIP/carrier-0000021c","","Dial",'
        '"carrier/+15125550177,30","2025-11-02 01:59:50",,"2025-11-02 01:00:10",20,0,'
        '"NO ANSWER","DOCUMENTATION","1730530790.5"\n'
    )
    f = tmp_path / "Master.csv"
    f.write_text(row)
    s = await ingest_file(f, spool, tz="America/Chicago", progress=False)
    assert (s.accepted, s.rejected) == (1, 0), s.reasons
    got = (await stored(spool))["1730530790.5"]
    assert got.started_at == datetime(2025, 11, 2, 6, 59, 50, tzinfo=UTC)  # type: ignore[attr-defined]
    assert got.ended_at == datetime(2025, 11, 2, 7, 0, 10, tzinfo=UTC)  # type: ignore[attr-defined]


async def test_csv_call_across_dst_fall_back_uses_its_duration(
    spool: Spool, tmp_path: Path
) -> None:
    """A generic CSV row reads its start and end with its duration the same way; without a
    duration the first reading of the repeated hour stays (the row cannot say)."""
    f = tmp_path / "export.csv"
    f.write_text(
        "id,result,start,end,secs\n"
        "A-1,busy,2025-11-02 01:59:50,2025-11-02 01:00:10,20\n"
        "A-2,busy,2025-11-02 01:10:00,2025-11-02 01:20:00,\n"
    )
    mapping = {
        "call_id": "id",
        "disposition": "result",
        "started_at": "start",
        "ended_at": "end",
        "duration_s": "secs",
    }
    s = await ingest_file(
        f, spool, format="csv", mapping=mapping, tz="America/Chicago", progress=False
    )
    assert (s.accepted, s.rejected) == (2, 0), s.reasons
    got = await stored(spool)
    assert got["A-1"].ended_at == datetime(2025, 11, 2, 7, 0, 10, tzinfo=UTC)  # type: ignore[attr-defined]
    assert got["A-2"].ended_at == datetime(2025, 11, 2, 6, 20, tzinfo=UTC)  # type: ignore[attr-defined]


async def test_an_evening_call_keeps_the_site_s_date(spool: Spool, tmp_path: Path) -> None:
    """A CDR row ending 2026-03-01 20:30 in America/Chicago (02:30 UTC the next day) keeps
    the site's offset through the spool, so the Task's ActivityDate ('Due Date Only') is
    2026-03-01, the day the call happened; converted to UTC it was dated 2 March. The
    instant is unchanged: ordering and the spool use it only."""
    from daemon.mapping import load_mapping

    row = (
        '"","100","5551234567","dialer-out","","PJSIP/carrier-1","","Dial","carrier/1",'
        '"2026-03-01 20:29:00","2026-03-01 20:29:05","2026-03-01 20:30:00",60,55,'
        '"ANSWERED","DOCUMENTATION","1772418540.7"\n'
    )
    f = tmp_path / "Master.csv"
    f.write_text(row)
    s = await ingest_file(f, spool, tz="America/Chicago", progress=False)
    assert (s.accepted, s.rejected) == (1, 0), s.reasons
    got = (await stored(spool))["1772418540.7"]
    assert got.ended_at == datetime(2026, 3, 2, 2, 30, tzinfo=UTC)  # type: ignore[attr-defined]
    assert got.ended_at.utcoffset() == timedelta(hours=-6)  # type: ignore[attr-defined]
    task = load_mapping(None).task_record(got)  # type: ignore[arg-type]
    assert task["ActivityDate"] == date(2026, 3, 1)


async def test_date_out_of_range_is_quarantined_not_a_crash(spool: Spool, tmp_path: Path) -> None:
    """An end of 9999-12-31 23:59:59 in a zone west of UTC lies past the last datetime in
    UTC: the row is quarantined naming the column (OverflowError used to stop the adapter),
    and the next row is stored."""
    bad = cdr_row("call-1").replace("2025-03-14 10:02:40", "9999-12-31 23:59:59")
    f = tmp_path / "Master.csv"
    f.write_text(bad + cdr_row("call-2"))
    async with running(watched(f, spool, tz="America/Chicago")) as adapter:
        await asyncio.wait_for(adapter.wait_pass(1), 10)
    assert adapter.health().last_error is None
    [row] = await spool.list_quarantine()
    assert row.reason.startswith("end: out of range")
    assert list(await stored(spool)) == ["call-2"]


async def test_overlong_row_is_quarantined_and_the_next_row_read(
    spool: Spool, tmp_path: Path
) -> None:
    """A line longer than a record may be (1 MiB) is quarantined, cut, without holding the
    whole line in memory; the row after it is stored."""
    f = tmp_path / "Master.csv"
    f.write_bytes(b"x" * 1_500_000 + b"\n" + cdr_row("call-2").encode())
    s = await ingest_file(f, spool, progress=False)
    assert (s.rows, s.accepted, s.rejected) == (2, 1, 1)
    [row] = await spool.list_quarantine()
    assert row.reason.startswith("row: longer than 1048576 bytes")
    assert list(await stored(spool)) == ["call-2"]
