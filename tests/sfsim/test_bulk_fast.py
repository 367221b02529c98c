"""The column-at-a-time bulk path saves exactly what the row-by-row store path saves."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sfsim.bulk import BulkPlugin
from sfsim.bulk_engine import BulkEngine
from sfsim.bulk_jobs import Job
from sfsim.ids import _BASE62, IdGenerator, to18
from sfsim.org import Org
from sfsim.rules import group_rules, parse_rules

_VOLATILE = {
    "Id",
    "CreatedDate",
    "LastModifiedDate",
    "SystemModstamp",
    "CompletedDateTime",
    "WhoId",
}


def _engine(org: Org) -> BulkEngine:
    plugin = next(p for p in org.plugins if p.name == "bulk")
    assert isinstance(plugin, BulkPlugin)
    return plugin.engine


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


@contextlib.asynccontextmanager
async def _running(org: Org, *, fast: bool = True) -> AsyncIterator[BulkEngine]:
    """The org's bulk engine, running (fast path on or off) for the block."""
    engine = _engine(org)
    engine.settings.fast_path = fast
    task = asyncio.create_task(engine.run())
    await engine.started()
    try:
        yield engine
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _finish(engine: BulkEngine, user_id: str, body: dict[str, Any], data: bytes) -> Job:
    """Create a job, upload ``data``, close it and wait until it ends."""
    job = engine.create_job(body, api_version="62.0", user_id=user_id)
    await engine.upload(job.id, _body(data))
    engine.close(job.id)
    await asyncio.wait_for(engine.wait(job.id), 60)
    return job


def _seed(org: Org) -> None:
    # Same leads (same keys) in both orgs; ids differ, so WhoId is compared through the key.
    for i in range(5):
        org.store.insert(
            "Lead", {"LastName": f"L{i}", "Company": "C", "Dialer_Lead_Id__c": f"L-{i}"}
        )


async def _load(fast: bool, jobs: list[tuple[dict[str, Any], bytes]]) -> tuple[list[Any], Any]:
    org = Org()
    _seed(org)
    results = []
    async with _running(org, fast=fast) as engine:
        for body, data in jobs:
            job = await _finish(engine, org.user_id, body, data)
            files = {}
            for kind in ("successful", "failed", "unprocessed"):
                text = "".join(engine.result_chunks(job.id, kind))
                rows = list(csv.DictReader(io.StringIO(text)))
                for row in rows:
                    row.pop("sf__Id", None)  # ids differ between the two orgs
                files[kind] = rows
            results.append((job.state.value, job.records_processed, job.records_failed, files))
    leads = {r["Id"]: r["Dialer_Lead_Id__c"] for r in org.store.records("Lead")}
    tasks = sorted(
        (
            {k: v for k, v in r.items() if k not in _VOLATILE} | {"Who": leads.get(r["WhoId"])}
            for r in org.store.records("Task")
        ),
        key=lambda r: str(r["Call_Id__c"]),
    )
    people = sorted(
        ({k: v for k, v in r.items() if k not in _VOLATILE} for r in org.store.records("Lead")),
        key=lambda r: (str(r["Dialer_Lead_Id__c"]), str(r["Title"]), str(r["LastName"])),
    )
    return results, (tasks, people)


_HEADER = [
    "Call_Id__c",
    "Subject",
    "Status",
    "Priority",
    "CallType",
    "CallDurationInSeconds",
    "ActivityDate",
    "TaskSubtype",
    "Description",
    "Lead:Who.Dialer_Lead_Id__c",
]
_CELLS: dict[str, list[str]] = {
    "Subject": ["Call", "", "#N/A", "x" * 256],
    "Status": ["Completed", "Not Started", "", "#N/A", "Bogus"],
    "Priority": ["High", "Normal", "", "#N/A"],
    "CallType": ["Outbound", "Inbound", "", "#N/A", "Sideways"],
    "CallDurationInSeconds": ["12", "0", "", "#N/A", "1.5", "abc", "123456789"],
    "ActivityDate": ["2026-01-02", "", "2026-13-40", "02/01/2026", "#N/A"],
    "TaskSubtype": ["", "Call", "Email", "Nope"],
    "Description": ["", "note", "#N/A", "y" * 40],
    "Lead:Who.Dialer_Lead_Id__c": ["", "L-1", "L-2", "L-404", "#N/A"],
}


def _random_file(rng: random.Random, rows: int, keys: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_HEADER)
    for _ in range(rows):
        key = rng.choice([f"k:{rng.randrange(keys)}", f"K:{rng.randrange(keys)}", ""])
        writer.writerow([key] + [rng.choice(_CELLS[h]) for h in _HEADER[1:]])
    return out.getvalue().encode()


async def test_fast_path_matches_row_path_on_mixed_good_and_bad_rows() -> None:
    """Random insert/upsert files with every kind of bad cell give identical results and records."""
    rng = random.Random(20261124)
    jobs = [
        (
            {"object": "Task", "operation": "insert"},
            _random_file(rng, 300, 1000).replace(b"Call_Id__c", b"CallObject", 1),
        ),
        (
            {"object": "Task", "operation": "upsert", "externalIdFieldName": "Call_Id__c"},
            _random_file(rng, 600, 150),
        ),
        (
            {"object": "Task", "operation": "upsert", "externalIdFieldName": "Call_Id__c"},
            _random_file(rng, 600, 150),
        ),
    ]
    lead_rows = ["Dialer_Lead_Id__c,LastName,Company,Email,DoNotCall,Status"]
    for _ in range(300):
        lead_rows.append(
            ",".join(
                [
                    rng.choice([f"N-{rng.randrange(120)}", ""]),
                    rng.choice(["Smith", "", "#N/A"]),
                    rng.choice(["Acme", "", "#N/A", "z" * 300]),
                    rng.choice(["a@b.co", "", "bad-email"]),
                    rng.choice(["true", "false", "", "maybe", "1"]),
                    rng.choice(["Working - Contacted", "", "Anything"]),
                ]
            )
        )
    lead_file = ("\n".join(lead_rows) + "\n").encode()
    jobs += [
        (
            {"object": "Lead", "operation": "insert"},
            lead_file.replace(b"Dialer_Lead_Id__c", b"Title", 1),
        ),
        (
            {"object": "Lead", "operation": "upsert", "externalIdFieldName": "Dialer_Lead_Id__c"},
            lead_file,
        ),
        (
            {"object": "Lead", "operation": "upsert", "externalIdFieldName": "Dialer_Lead_Id__c"},
            lead_file,
        ),
    ]
    fast = await _load(True, jobs)
    slow = await _load(False, jobs)
    for (f_state, f_proc, f_fail, f_files), (s_state, s_proc, s_fail, s_files) in zip(
        fast[0], slow[0], strict=True
    ):
        assert (f_state, f_proc, f_fail) == (s_state, s_proc, s_fail)
        assert f_files == s_files
    assert fast[1] == slow[1]
    # The file exercised both outcomes.
    assert any(r[2] for r in fast[0]) and any(r[3]["successful"] for r in fast[0])


@pytest.mark.parametrize(
    ("faults", "operation"),
    [({"lock_next": 3}, "insert"), ({"upsert_race_next": 3}, "upsert")],
)
async def test_fast_path_honours_row_faults_like_the_row_path(
    faults: dict[str, int], operation: str
) -> None:
    """With lock or upsert-race faults set, the same rows fail the same way on both paths."""
    outcomes = []
    for fast in (True, False):
        org = Org()
        org.faults.configure(faults)
        async with _running(org, fast=fast) as engine:
            body = {"object": "Task", "operation": operation}
            if operation == "upsert":
                body["externalIdFieldName"] = "Call_Id__c"
            data = b"Call_Id__c,Subject\n" + b"".join(f"k{i},s{i}\n".encode() for i in range(10))
            job = await _finish(engine, org.user_id, body, data)
            failed = list(
                csv.DictReader(io.StringIO("".join(engine.result_chunks(job.id, "failed"))))
            )
            outcomes.append([(r["Subject"], r["sf__Error"][:18]) for r in failed])
            # A locked row saves nothing; a lost race leaves the winner's record.
            assert len(org.store.records("Task")) == (10 if operation == "upsert" else 7)
    assert outcomes[0] == outcomes[1] and len(outcomes[0]) == 3


def test_id_generator_matches_the_plain_algorithm() -> None:
    """The cached id minting gives the same ids as prefix + base-62 counter + checksum."""

    def plain(prefix: str, n: int) -> str:
        digits = []
        for _ in range(9):
            n, rem = divmod(n, 62)
            digits.append(_BASE62[rem])
        return to18(prefix + "8d0" + "".join(reversed(digits)))

    rng = random.Random(7)
    for start in (0, 1_000_000, 62**5 - 2, 62**7 + 5, 62**9 - 3):
        gen = IdGenerator(start)
        for k in range(200):
            prefix = rng.choice(["00T", "00Q", "750", "001"])
            assert gen.new(prefix) == plain(prefix, start + k)
    # Counters anywhere in the range: every upper/lower-case pattern of the last chunk's suffix.
    for _ in range(5000):
        n = rng.randrange(62**9)
        assert IdGenerator(n).new("00T") == plain("00T", n)


def test_id_blocks_continue_the_sequence_across_the_high_digits() -> None:
    """new_block mints what as many new() calls would, also across a change of the first 10."""
    for start in (5, 62**5 - 40, 3 * 62**5 - 1):
        one_by_one = IdGenerator(start)
        blocks = IdGenerator(start)
        expected = [one_by_one.new("00T") for _ in range(300)]
        got = blocks.new_block("00T", 100) + blocks.new_block("00T", 0)
        got += [blocks.new("00T"), *blocks.new_block("00T", 199)]
        assert got == expected


async def _run_jobs(
    org: Org, fast: bool, jobs: list[tuple[dict[str, Any], bytes]]
) -> list[tuple[str, int, int, dict[str, str]]]:
    """Run each job; its state, counters and result files (read while the engine runs)."""
    out = []
    async with _running(org, fast=fast) as engine:
        for body, data in jobs:
            job = await _finish(engine, org.user_id, body, data)
            files = {
                kind: "".join(engine.result_chunks(job.id, kind))
                for kind in ("successful", "failed", "unprocessed")
            }
            out.append((job.state.value, job.records_processed, job.records_failed, files))
    return out


async def test_fast_path_keeps_indexes_built_on_demand_right() -> None:
    """Lookups by Phone / Email (indexes built on first use) see what both paths saved.

    The fast path updates indexes itself; every lookup must match a scan of the stored rows,
    and the same keys must be found after the row path.
    """
    rng = random.Random(99)
    phones = ["555-0100", "555-0101", "555-0102", "", "#N/A"]
    emails = ["a@b.co", "A@B.CO", "c@d.co", "", "#N/A"]
    lines = ["Dialer_Lead_Id__c,LastName,Company,Phone,Email"]
    for _ in range(400):
        lines.append(f"N-{rng.randrange(60)},Smith,Acme,{rng.choice(phones)},{rng.choice(emails)}")
    data = ("\n".join(lines) + "\n").encode()
    upsert = {"object": "Lead", "operation": "upsert", "externalIdFieldName": "Dialer_Lead_Id__c"}
    seen = []
    for fast in (True, False):
        org = Org()
        _seed(org)
        org.store.find("Lead", "Phone", "555-0100")  # builds the index
        org.store.find("Lead", "Email", "a@b.co")
        await _run_jobs(org, fast, [(upsert, data), (upsert, data)])
        keys = {r["Id"]: r["Dialer_Lead_Id__c"] for r in org.store.records("Lead")}
        found = {}
        for field, values in (("Phone", phones), ("Email", emails)):
            for value in values:
                if value in ("", "#N/A"):
                    continue
                ids = org.store.find("Lead", field, value)
                scan = [
                    r["Id"]
                    for r in org.store.records("Lead")
                    if isinstance(r[field], str) and r[field].lower() == value.lower()
                ]
                assert sorted(ids) == sorted(scan), (field, value)
                found[(field, value)] = sorted(keys[i] for i in ids)
        seen.append(found)
    assert seen[0] == seen[1]
    assert any(len(v) > 1 for v in seen[0].values())  # several records share a value


async def test_fast_path_updates_by_id_like_the_row_path() -> None:
    """Update jobs: ids in every form (15 characters, other case, malformed, deleted, of another
    object, unknown, repeated, empty), bad cells, a converted Lead and a validation rule give the
    same results, ids and records on both paths."""
    outcomes = []
    for fast in (True, False):
        rng = random.Random(5)
        org = Org()
        ids = [
            org.store.insert(
                "Lead", {"LastName": f"L{i}", "Company": "C", "Dialer_Lead_Id__c": f"L-{i}"}
            )
            for i in range(300)
        ]
        converted = org.store.insert(
            "Lead", {"LastName": "C", "Company": "C", "IsConverted": True}, seed=True
        )
        task_id = org.store.insert("Task", {"Subject": "t"})
        org.store.delete("Lead", ids[1])
        org.store.validation_rules = group_rules(
            parse_rules(
                [
                    {
                        "object": "Lead",
                        "field": "Title",
                        "condition": "equals",
                        "value": "t2",
                        "message": "no t2",
                    }
                ],
                org.schema,
            )
        )
        # Rows of these ids have only good cells, so the id decides their outcome.
        special = [
            converted,
            ids[1],
            ids[3][:15],
            ids[4].lower(),
            ids[5][:15].upper(),
            "00Qbad",
            task_id,
            to18("00Q8d0000zzzzzz"),
            "",
        ]
        forms = [*ids[7:], ids[6], ids[6], *special]
        rng.shuffle(forms)
        lines = ["Id,Status,Title,Phone,LastName"]
        for rid in forms:
            if rid in special:
                lines.append(f"{rid},Working - Contacted,t1,555,Smith")
                continue
            lines.append(
                ",".join(
                    [
                        rid,
                        rng.choice(["Working - Contacted", "Nope", "", "#N/A"]),
                        rng.choice(["t1", "t2", "#N/A", "", "x" * 200]),
                        rng.choice(["555", "", "#N/A"]),
                        rng.choice(["Smith", "", "", "#N/A"]),
                    ]
                )
            )
        data = ("\n".join(lines) + "\n").encode()
        (result,) = await _run_jobs(org, fast, [({"object": "Lead", "operation": "update"}, data)])
        records = [
            {k: v for k, v in r.items() if k not in _VOLATILE - {"Id"}}
            for r in org.store.records("Lead")
        ]
        outcomes.append((*result, records))
    assert outcomes[0] == outcomes[1]
    state, processed, failed, files, _ = outcomes[0]
    assert (state, processed) == ("JobComplete", len(forms))
    assert failed and files["successful"].count("\n") > 50
    for code in (
        "CANNOT_UPDATE_CONVERTED_LEAD",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "MALFORMED_ID",
        "ENTITY_IS_DELETED",
        "INVALID_CROSS_REFERENCE_KEY",
        "DUPLICATE_VALUE",
        "MISSING_ARGUMENT",
        "STRING_TOO_LONG",
    ):
        assert code in files["failed"], code


async def test_plain_result_files_match_the_csv_module() -> None:
    """Results of quote-free uploads, written line by line, equal the CSV reader/writer's."""
    rng = random.Random(11)
    rows = []
    for i in range(700):
        key = f"p:{rng.randrange(500)}" if rng.random() < 0.97 else ""
        cells = [
            key,
            rng.choice(["Call", "", "#N/A", "x" * 300]),
            rng.choice(["Completed", "Bogus", ""]),
            rng.choice(["12", "abc", ""]),
            rng.choice(["L-1", "L-404", ""]),
        ]
        if i % 97 == 5:
            cells = cells[:3]  # short row
        elif i % 89 == 7:
            cells.append("extra")  # long row
        rows.append(cells)
    header = [
        "Call_Id__c",
        "Subject",
        "Status",
        "CallDurationInSeconds",
        "Lead:Who.Dialer_Lead_Id__c",
    ]

    def text(delimiter: str, newline: str) -> bytes:
        lines = [delimiter.join(header)]
        for n, cells in enumerate(rows):
            lines.append(delimiter.join(cells))
            if n % 50 == 0:
                lines.append("")  # a blank line
        return (newline.join(lines) + newline).encode()

    upsert = {"object": "Task", "operation": "upsert", "externalIdFieldName": "Call_Id__c"}
    jobs = [
        (upsert, text(",", "\n")),
        ({**upsert, "columnDelimiter": "TAB", "lineEnding": "CRLF"}, text("\t", "\r\n")),
        (
            {"object": "Task", "operation": "insert"},
            text("|", "\n").replace(b"Call_Id__c", b"CallObject", 1),
        ),
    ]
    jobs[2] = ({**jobs[2][0], "columnDelimiter": "PIPE"}, jobs[2][1])
    org = Org()
    _seed(org)
    async with _running(org) as engine:
        for body, data in jobs:
            job = await _finish(engine, org.user_id, body, data)
            assert job.upload_plain and job.state.value == "JobComplete"
            assert job.records_failed and job.records_processed == len(rows)
            for kind in ("successful", "failed", "unprocessed"):
                for size in (7, 5000):
                    plain = "".join(engine.result_chunks(job.id, kind, rows_per_chunk=size))
                    job.upload_plain = False
                    try:
                        parsed = "".join(engine.result_chunks(job.id, kind, rows_per_chunk=size))
                    finally:
                        job.upload_plain = True
                    assert plain == parsed, (body, kind)


async def test_an_unparsable_row_turns_plain_results_off() -> None:
    """A cell over the CSV reader's field limit fails its row; the results are then written
    from the CSV reader's rows, not line by line."""
    org = Org()
    async with _running(org) as engine:
        data = f"Call_Id__c,Subject\nk1,a\nk2,{'y' * (csv.field_size_limit() + 1)}\nk3,b\n"
        upsert = {"object": "Task", "operation": "upsert", "externalIdFieldName": "Call_Id__c"}
        job = await _finish(engine, org.user_id, upsert, data.encode())
        assert job.records_failed == 1 and not job.upload_plain
        failed = list(csv.reader(io.StringIO("".join(engine.result_chunks(job.id, "failed")))))
        assert failed[1][1].startswith("INVALID_FIELD:Unable to parse the row")
        assert failed[1][2:] == ["", ""]
