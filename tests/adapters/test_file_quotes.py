"""A stray double quote in a CDR / CSV line costs that line only.

A line with an unbalanced ``"`` (a caller-id name written ``O"Brien`` without doubling, a
line cut short inside a quoted field) used to open a quoted field that ran on into the
next lines: those calls were merged into one record, quarantined with it, silently
dropped or (when watching the file) held back until a closing quote or 1 MiB came. Now
the bad line alone is quarantined, naming its line number, and the rows around it are
delivered, in order, once. Quoted fields that do hold newlines (RFC 4180; Master.csv
writes any newline in a string as is) are still read as one row.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters import ingest_file
from adapters.file import FileAdapter
from spool import Spool
from tests.adapters.lifecycle import running
from tests.adapters.test_file_ingest import CSV_MAPPING, cdr_row, watched

CSV_HEADER = "Call ID,Result,Ended,Agent,Lead,Notes\n"


def csv_row(call_id: str, notes: str = "") -> str:
    return f"{call_id},busy,2025-03-14 10:02:20,jdoe,48213,{notes}\n"


# Master.csv rows whose quotes do not balance (cdr_row's clid is """Dialer"" <+1512...>")
UNDOUBLED = cdr_row("bad-1").replace('"""Dialer""', '"""O"Brien""')
CUT_SHORT = cdr_row("bad-1")[: cdr_row("bad-1").index("carrier-0000021b") + 7] + "\n"


async def delivered(spool: Spool) -> list[str]:
    """The call ids in the spool, in the order they were stored."""
    claims = await spool.claim("t", 10_000)
    await spool.release(claims)
    return [c.outcome.call_id for c in claims]


async def settle(adapter: FileAdapter) -> None:
    """Two passes more: at least one of them began after the caller's last write."""
    await asyncio.wait_for(adapter.wait_pass(adapter.passes + 2), 10)


@pytest.mark.parametrize("bad", [UNDOUBLED, CUT_SHORT], ids=["undoubled-quote", "cut-short"])
async def test_master_csv_bad_quote_line_alone_is_quarantined(
    spool: Spool, tmp_path: Path, bad: str
) -> None:
    """The calls after the bad line are delivered (they were merged into it: with the
    undoubled quote silently dropped, with the cut line quarantined with it)."""
    assert bad.count('"') % 2 == 1
    f = tmp_path / "Master.csv"
    f.write_text(cdr_row("call-1") + bad + cdr_row("call-2") + cdr_row("call-3"))
    s = await ingest_file(f, spool, progress=False)
    assert await delivered(spool) == ["call-1", "call-2", "call-3"]
    [q] = await spool.list_quarantine()
    assert q.raw == bad.encode()
    assert q.reason.startswith("row: unbalanced double quote on line 2")
    assert (s.rows, s.accepted, s.rejected) == (4, 3, 1)
    again = await ingest_file(f, spool, progress=False)
    assert (again.rows, again.accepted) == (0, 0)


async def test_generic_csv_stray_quote_does_not_merge_calls(spool: Spool, tmp_path: Path) -> None:
    """A quote opening a field (A-2) joined A-3 and A-4 into A-2's notes, closed by A-4's
    inch mark: one call delivered for three. A quote inside an unquoted field (A-4's ``5"``)
    is a character of that field (as the csv reader reads it), not a bad line."""
    f = tmp_path / "export.csv"
    f.write_text(
        CSV_HEADER
        + csv_row("A-1", '"said ""yes""\non two lines"')  # lines 2-3: a legitimate newline
        + csv_row("A-2", '"left a message')  # line 4: the quote never closes
        + csv_row("A-3")
        + csv_row("A-4", '5" screen')
        + csv_row("A-5")
    )
    s = await ingest_file(f, spool, format="csv", mapping=CSV_MAPPING, progress=False)
    claims = await spool.claim("t", 100)
    assert [c.outcome.call_id for c in claims] == ["A-1", "A-3", "A-4", "A-5"]
    notes = {c.outcome.call_id: c.outcome.notes for c in claims}
    assert notes["A-1"] == 'said "yes"\non two lines'
    assert notes["A-4"] == '5" screen' and notes["A-3"] is None
    [q] = await spool.list_quarantine()
    assert q.raw == csv_row("A-2", '"left a message').encode()
    assert q.reason.startswith("row: unbalanced double quote on line 4")
    assert (s.rows, s.accepted, s.rejected) == (5, 4, 1)


async def test_stray_quote_before_a_row_whose_notes_begin_with_a_newline(
    spool: Spool, tmp_path: Path
) -> None:
    """A-2's notes open with a newline: its first line ends with the opening quote, which
    closed A-1's stray one (A-1 was delivered with A-2's first line in its notes, the rest
    of A-2 was quarantined and A-3 dropped)."""
    f = tmp_path / "export.csv"
    f.write_text(
        CSV_HEADER
        + csv_row("A-1", '"left a message')
        + csv_row("A-2", '"\ncall back Monday"')
        + csv_row("A-3")
    )
    s = await ingest_file(f, spool, format="csv", mapping=CSV_MAPPING, progress=False)
    claims = await spool.claim("t", 100)
    assert [c.outcome.call_id for c in claims] == ["A-2", "A-3"]
    assert claims[0].outcome.notes == "call back Monday"  # (notes are stripped)
    [q] = await spool.list_quarantine()
    assert q.raw == csv_row("A-1", '"left a message').encode()
    assert q.reason.startswith("row: unbalanced double quote on line 2")
    assert (s.rows, s.accepted, s.rejected) == (3, 2, 1)


async def test_field_with_newlines_before_the_last_column_is_one_row(
    spool: Spool, tmp_path: Path
) -> None:
    """Notes in the second column, over two lines: the second line read alone has six
    fields (said no| thanks"|busy|...), but its quote closes the notes, so it is no row of
    its own (a csv reader would take it for one: call id 'said no')."""
    f = tmp_path / "export.csv"
    f.write_text(
        "Call ID,Notes,Result,Ended,Agent,Lead\n"
        'A-1,"Called back,\nsaid no, thanks",busy,2025-03-14 10:02:20,jdoe,48213\n'
        "A-2,,busy,2025-03-14 10:02:20,jdoe,48213\n"
    )
    s = await ingest_file(f, spool, format="csv", mapping=CSV_MAPPING, progress=False)
    claims = await spool.claim("t", 100)
    assert [c.outcome.call_id for c in claims] == ["A-1", "A-2"]
    assert claims[0].outcome.notes == "Called back,\nsaid no, thanks"
    assert (s.rows, s.rejected) == (2, 0)


async def test_stray_quote_before_a_mebibyte_of_rows(spool: Spool, tmp_path: Path) -> None:
    """The rows after a bad line are not joined up to the 1 MiB record limit and quarantined
    as one overlong row."""
    rows = [cdr_row(f"call-{i}") for i in range(4000)]
    assert sum(map(len, rows)) > 1_048_576
    f = tmp_path / "Master.csv"
    f.write_text(cdr_row("first") + UNDOUBLED + "".join(rows))
    s = await ingest_file(f, spool, progress=False)
    assert (s.accepted, s.rejected) == (4001, 1), s.reasons
    assert await delivered(spool) == ["first"] + [f"call-{i}" for i in range(4000)]
    [q] = await spool.list_quarantine()
    assert q.raw == UNDOUBLED.encode()


async def test_bad_last_line_is_quarantined(spool: Spool, tmp_path: Path) -> None:
    """A complete file ending in a line cut short: that line is quarantined as such."""
    f = tmp_path / "Master.csv"
    f.write_text(cdr_row("call-1") + CUT_SHORT.rstrip("\n"))
    s = await ingest_file(f, spool, progress=False)
    assert (s.rows, s.accepted, s.rejected) == (2, 1, 1)
    [q] = await spool.list_quarantine()
    assert q.reason.startswith("row: unbalanced double quote on line 2")


async def test_watched_file_stray_quote_does_not_hold_later_calls(
    spool: Spool, tmp_path: Path
) -> None:
    """Following Master.csv: the bad line arrives, then calls; they are delivered as they
    come (they used to wait for a closing quote that never came), exactly once across a
    restart, and each bad line is quarantined once, named by its line in the file."""
    f = tmp_path / "Master.csv"
    f.write_text(cdr_row("call-1") + UNDOUBLED)
    async with running(watched(f, spool)) as adapter:
        await settle(adapter)
        assert await delivered(spool) == ["call-1"]
        with f.open("a") as fh:
            fh.write(cdr_row("call-2"))
        await settle(adapter)
        assert await delivered(spool) == ["call-1", "call-2"]
        [q] = await spool.list_quarantine()
        assert q.raw == UNDOUBLED.encode()
        assert q.reason.startswith("row: unbalanced double quote on line 2")
        with f.open("a") as fh:
            fh.write(cdr_row("call-3") + CUT_SHORT)
        await settle(adapter)
    assert await delivered(spool) == ["call-1", "call-2", "call-3"]
    # restarted: the cursor is after call-3; the cut line is judged with what follows it
    with f.open("a") as fh:
        fh.write(cdr_row("call-4"))
    async with running(watched(f, spool)) as adapter:
        await settle(adapter)
    assert await delivered(spool) == ["call-1", "call-2", "call-3", "call-4"]
    assert adapter.health().duplicates == 0 and adapter.health().accepted == 1
    quarantined = await spool.list_quarantine()
    assert [q.reason.split(";")[0] for q in quarantined] == [
        "row: unbalanced double quote on line 5",
        "row: unbalanced double quote on line 2",
    ]


def userfield_row(uniqueid: str, userfield: str) -> str:
    """A Master.csv row with loguniqueid=yes and loguserfield=yes (18 columns)."""
    return cdr_row(uniqueid).rstrip("\n") + ',"' + userfield.replace('"', '""') + '"\n'


async def test_quoted_newlines_still_make_one_row(spool: Spool, tmp_path: Path) -> None:
    """cdr_csv writes a newline inside a string as is: such a row is one call, also while
    it is being written to a followed file (its first lines wait for the rest)."""
    row = userfield_row("call-2", 'campaign=SALES1\nnote: "callback"\nsecond line')
    cut = row.index("second line")
    f = tmp_path / "Master.csv"
    f.write_text(cdr_row("call-1") + row[:cut])
    async with running(watched(f, spool)) as adapter:
        await settle(adapter)
        assert await delivered(spool) == ["call-1"]
        with f.open("a") as fh:
            fh.write(row[cut:] + cdr_row("call-3"))
        await settle(adapter)
    claims = await spool.claim("t", 100)
    assert [c.outcome.call_id for c in claims] == ["call-1", "call-2", "call-3"]
    assert claims[1].outcome.extra["userfield"] == 'campaign=SALES1\nnote: "callback"\nsecond line'
    assert await spool.list_quarantine() == []


async def test_multiline_row_with_a_bad_value_is_quarantined_whole(
    spool: Spool, tmp_path: Path
) -> None:
    """A well-formed row spanning lines whose date is bad stays one quarantined row, with
    the reason that names the date."""
    f = tmp_path / "export.csv"
    bad = 'A-2,busy,14/03/2025,jdoe,48213,"two\nlines"\n'
    f.write_text(CSV_HEADER + csv_row("A-1") + bad + csv_row("A-3"))
    s = await ingest_file(f, spool, format="csv", mapping=CSV_MAPPING, progress=False)
    assert await delivered(spool) == ["A-1", "A-3"]
    [q] = await spool.list_quarantine()
    assert q.raw == bad.encode() and q.reason.startswith("Ended:")
    assert (s.rows, s.rejected) == (3, 1)


async def test_balanced_stray_quotes_are_read_as_before(spool: Spool, tmp_path: Path) -> None:
    """A caller-id written "John "Jr" Doe" has balanced quotes: the csv reader takes the
    line as one row (the name reads John Jr" Doe") and no other line is touched."""
    f = tmp_path / "Master.csv"
    odd_name = cdr_row("call-2").replace('"""Dialer"" <+15125550100>"', '"John "Jr" Doe"')
    f.write_text(cdr_row("call-1") + odd_name + cdr_row("call-3"))
    s = await ingest_file(f, spool, progress=False)
    assert (s.rows, s.accepted, s.rejected) == (3, 3, 0)
    assert await delivered(spool) == ["call-1", "call-2", "call-3"]
