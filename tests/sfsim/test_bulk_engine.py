"""Bulk 2.0 processing against a real org state (sfsim.bulk_engine), without HTTP."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sfsim.bulk import BulkPlugin
from sfsim.bulk_engine import BulkEngine
from sfsim.bulk_jobs import BulkApiError, JobState
from sfsim.ids import to18
from sfsim.org import Org


@pytest.fixture
async def org() -> AsyncIterator[Org]:
    org = Org()
    task = asyncio.create_task(_engine(org).run())
    await _engine(org).started()
    try:
        yield org
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _engine(org: Org) -> BulkEngine:
    plugin = next(p for p in org.plugins if p.name == "bulk")
    assert isinstance(plugin, BulkPlugin)
    return plugin.engine


async def _chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _run(org: Org, body: dict[str, Any], data: bytes) -> Any:
    engine = _engine(org)
    job = engine.create_job(body, api_version="62.0", user_id=org.user_id)
    await engine.upload(job.id, _chunks(data))
    engine.close(job.id)
    return await asyncio.wait_for(engine.wait(job.id), 30)


def _results(org: Org, job_id: str, kind: str) -> list[dict[str, str]]:
    text = "".join(_engine(org).result_chunks(job_id, kind))
    return list(csv.DictReader(io.StringIO(text)))


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


async def test_insert_job_completes_with_created_results(org: Org) -> None:
    """An insert job ends JobComplete; successfulResults lists each new id with sf__Created true."""
    data = _csv(
        [
            ["Subject", "Status", "CallType"],
            ["Call 1", "Completed", "Outbound"],
            ["Call 2", "Not Started", "Inbound"],
        ]
    )
    job = await _run(org, {"object": "Task", "operation": "insert"}, data)
    assert job.state is JobState.JOB_COMPLETE
    assert (job.records_processed, job.records_failed) == (2, 0)
    ok = _results(org, job.id, "successful")
    assert [r["Subject"] for r in ok] == ["Call 1", "Call 2"]
    assert all(r["sf__Created"] == "true" and r["sf__Id"].startswith("00T") for r in ok)
    stored = org.store.get("Task", ok[0]["sf__Id"])
    assert stored is not None and stored["IsClosed"] is True and stored["CallType"] == "Outbound"
    assert _results(org, job.id, "failed") == []


async def test_row_failures_use_store_validation_and_documented_format(org: Org) -> None:
    """Bad rows fail one by one with the same codes REST gives, formatted CODE:message:fields --."""
    data = _csv(
        [
            ["LastName", "Company", "Status", "Email", "Description"],
            ["Ok", "Acme", "Working - Contacted", "ok@example.com", ""],
            ["", "Acme", "", "", ""],  # required LastName missing
            ["Long", "x" * 256, "", "", ""],  # Company > 255
            ["Bad", "Acme", "", "not-an-email", ""],  # invalid email
        ]
    )
    job = await _run(org, {"object": "Lead", "operation": "insert"}, data)
    assert job.state is JobState.JOB_COMPLETE
    assert (job.records_processed, job.records_failed) == (4, 3)
    failed = {r["LastName"]: r["sf__Error"] for r in _results(org, job.id, "failed")}
    assert (
        failed[""] == "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --"
    )
    assert failed["Long"].startswith("STRING_TOO_LONG:Company: data value too large: ")
    assert failed["Long"].endswith("(max length=255):Company --")
    assert failed["Bad"].startswith("INVALID_EMAIL_ADDRESS:")
    assert all(r["sf__Id"] == "" for r in _results(org, job.id, "failed"))


async def test_task_rules_readonly_restricted_picklist_and_references(org: Org) -> None:
    """IsClosed is read-only, CallType restricted, WhoId must exist, Ids must be well formed."""
    data = _csv(
        [
            ["Subject", "CallType", "WhoId", "IsClosed"],
            ["a", "Sideways", "", ""],
            ["b", "", to18("00Q8d0000000zzz"), ""],
            ["c", "", "not-an-id", ""],
            ["d", "", "", "true"],
        ]
    )
    job = await _run(org, {"object": "Task", "operation": "insert"}, data)
    errors = {r["Subject"]: r["sf__Error"] for r in _results(org, job.id, "failed")}
    assert errors["a"] == (
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:Call Type: bad value for restricted picklist "
        "field: Sideways:CallType --"
    )
    assert errors["b"].startswith("INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:")
    assert errors["c"].startswith("MALFORMED_ID:")
    assert errors["d"].startswith(
        "INVALID_FIELD_FOR_INSERT_UPDATE:Unable to create/update fields: IsClosed."
    )


async def test_upsert_creates_then_updates_and_empty_cells_leave_fields(org: Org) -> None:
    """Upsert by external id creates, then updates; an empty cell keeps the value, #N/A clears."""
    body = {"object": "Task", "operation": "upsert", "externalIdFieldName": "Call_Id__c"}
    first = await _run(
        org,
        body,
        _csv(
            [
                ["Call_Id__c", "Subject", "CallDisposition", "TaskSubtype"],
                ["d1:1", "Call", "Answered", "Call"],
            ]
        ),
    )
    created = _results(org, first.id, "successful")
    assert created[0]["sf__Created"] == "true"
    second = await _run(
        org,
        body,
        _csv(
            [
                ["Call_Id__c", "Subject", "CallDisposition"],
                ["d1:1", "", "#N/A"],
            ]
        ),
    )
    updated = _results(org, second.id, "successful")
    assert updated[0]["sf__Created"] == "false"
    assert updated[0]["sf__Id"] == created[0]["sf__Id"]
    rec = org.store.get("Task", created[0]["sf__Id"])
    assert rec is not None
    assert rec["Subject"] == "Call" and rec["CallDisposition"] is None


async def test_create_only_field_on_update_fails_the_row(org: Org) -> None:
    """TaskSubtype can be set on insert but an update that carries it fails the row."""
    body = {"object": "Task", "operation": "upsert", "externalIdFieldName": "Call_Id__c"}
    await _run(org, body, _csv([["Call_Id__c", "TaskSubtype"], ["x:1", "Call"]]))
    job = await _run(org, body, _csv([["Call_Id__c", "TaskSubtype"], ["x:1", "Call"]]))
    failed = _results(org, job.id, "failed")
    assert failed[0]["sf__Error"].startswith("INVALID_FIELD_FOR_INSERT_UPDATE:")
    assert "TaskSubtype" in failed[0]["sf__Error"]


async def test_upsert_without_key_value_and_duplicate_keys(org: Org) -> None:
    """An empty key is MISSING_ARGUMENT; the same key twice in one chunk fails both rows."""
    body = {"object": "Task", "operation": "upsert", "externalIdFieldName": "Call_Id__c"}
    job = await _run(
        org,
        body,
        _csv(
            [
                ["Call_Id__c", "Subject"],
                ["", "none"],
                ["k:1", "one"],
                ["K:1", "two"],
                ["k:2", "ok"],
            ]
        ),
    )
    errors = {r["Subject"]: r["sf__Error"] for r in _results(org, job.id, "failed")}
    assert errors["none"] == "MISSING_ARGUMENT:Call_Id__c not specified:--"
    assert errors["one"].startswith("DUPLICATE_VALUE:Duplicate external id specified: k:1")
    assert errors["two"].startswith("DUPLICATE_VALUE:")
    assert [r["Subject"] for r in _results(org, job.id, "successful")] == ["ok"]


async def test_duplicate_value_on_unique_field(org: Org) -> None:
    """A second record with the same unique external id gets DUPLICATE_VALUE naming the first."""
    data = _csv([["LastName", "Company", "Dialer_Lead_Id__c"], ["A", "Acme", "L-1"]])
    first = await _run(org, {"object": "Lead", "operation": "insert"}, data)
    lead_id = _results(org, first.id, "successful")[0]["sf__Id"]
    second = await _run(org, {"object": "Lead", "operation": "insert"}, data)
    err = _results(org, second.id, "failed")[0]["sf__Error"]
    assert err.startswith("DUPLICATE_VALUE:duplicate value found: Dialer_Lead_Id__c")
    assert lead_id in err


async def test_polymorphic_relationship_column_links_by_external_id(org: Org) -> None:
    """`Lead:Who.Dialer_Lead_Id__c` sets WhoId to the Lead with that key; an unknown key fails."""
    lead_id = org.store.insert(
        "Lead", {"LastName": "L", "Company": "C", "Dialer_Lead_Id__c": "L-9"}
    )
    job = await _run(
        org,
        {"object": "Task", "operation": "insert"},
        _csv(
            [
                ["Subject", "Lead:Who.Dialer_Lead_Id__c"],
                ["linked", "L-9"],
                ["orphan", "L-404"],
            ]
        ),
    )
    ok = _results(org, job.id, "successful")
    rec = org.store.get("Task", ok[0]["sf__Id"])
    assert rec is not None and rec["WhoId"] == lead_id
    err = _results(org, job.id, "failed")[0]["sf__Error"]
    assert err.startswith("INVALID_FIELD:Foreign key external ID: L-404 not found")


async def test_owner_id_relationship_column(org: Org) -> None:
    """`Owner.Id` is accepted and sets OwnerId."""
    job = await _run(
        org,
        {"object": "Lead", "operation": "insert"},
        _csv(
            [
                ["LastName", "Company", "Owner.Id"],
                ["A", "B", org.user_id],
            ]
        ),
    )
    ok = _results(org, job.id, "successful")
    rec = org.store.get("Lead", ok[0]["sf__Id"])
    assert rec is not None and rec["OwnerId"] == org.user_id


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["Subject", "Nope__c"], "Field name not found : Nope__c"),
        (["Subject", "Who.Dialer_Lead_Id__c"], "Who"),
        (["Subject", "Lead:What.Id"], "Field name not found : Lead:What.Id"),
        (["Subject", "Lead:Who.LastName"], "Lead:Who.LastName"),
    ],
)
async def test_bad_header_fails_the_job_and_leaves_rows_unprocessed(
    org: Org, header: list[str], message: str
) -> None:
    """An unknown or misused column fails the whole job with InvalidBatch; no row is processed."""
    job = await _run(org, {"object": "Task", "operation": "insert"}, _csv([header, ["a", "b"]]))
    assert job.state is JobState.FAILED
    assert job.error_message.startswith("InvalidBatch : InvalidBatch : ")
    assert job.error_message.endswith(". Batch will not be retried.")
    assert message in job.error_message
    assert job.records_processed == 0
    assert _results(org, job.id, "unprocessed") == [dict(zip(header, ["a", "b"], strict=True))]


async def test_bom_fails_the_job(org: Org) -> None:
    """A UTF-8 BOM makes the first header unknown, failing the job (§7.3)."""
    job = await _run(org, {"object": "Task", "operation": "insert"}, b"\xef\xbb\xbfSubject\nx\n")
    assert job.state is JobState.FAILED
    assert "Field name not found : \ufeffSubject" in job.error_message


async def test_wrong_line_ending_fails_the_job(org: Org) -> None:
    """CRLF data in an LF job fails with the documented ClientInputError."""
    job = await _run(org, {"object": "Task", "operation": "insert"}, b"Subject\r\nx\r\n")
    assert job.state is JobState.FAILED
    assert job.error_message == (
        "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is LF"
    )
    crlf = await _run(
        org, {"object": "Task", "operation": "insert", "lineEnding": "CRLF"}, b"Subject\r\nx\r\n"
    )
    assert crlf.state is JobState.JOB_COMPLETE and crlf.records_processed == 1


async def test_other_delimiters_and_results_stay_comma(org: Org) -> None:
    """A PIPE job parses with '|' and its results still come back comma-separated."""
    job = await _run(
        org,
        {"object": "Task", "operation": "insert", "columnDelimiter": "PIPE"},
        b"Subject|Description\na,b|c\n",
    )
    ok = _results(org, job.id, "successful")
    assert ok[0]["Subject"] == "a,b" and ok[0]["Description"] == "c"


async def test_bad_external_id_field(org: Org) -> None:
    """A key that is not an External ID is refused at create; a missing key column fails the job."""
    engine = _engine(org)
    with pytest.raises(BulkApiError) as info:
        engine.create_job(
            {"object": "Task", "operation": "upsert", "externalIdFieldName": "Subject"},
            api_version="62.0",
            user_id=org.user_id,
        )
    assert info.value.error_code == "INVALIDJOB"
    assert "does not match an External ID for Task" in info.value.message
    job = await _run(
        org,
        {"object": "Task", "operation": "upsert", "externalIdFieldName": "Call_Id__c"},
        b"Subject\nx\n",
    )
    assert job.state is JobState.FAILED and "Call_Id__c" in job.error_message


async def test_unknown_object_is_refused(org: Org) -> None:
    """An object the org does not have is INVALIDJOB 'Unable to find object'."""
    with pytest.raises(BulkApiError, match="Unable to find object: Widget__c"):
        _engine(org).create_job(
            {"object": "Widget__c", "operation": "insert"}, api_version="62.0", user_id=org.user_id
        )


async def test_update_and_delete_by_id(org: Org) -> None:
    """Update changes only given cells; delete removes; unknown ids fail the row."""
    lead = org.store.insert("Lead", {"LastName": "A", "Company": "C", "Phone": "1"})
    job = await _run(
        org,
        {"object": "Lead", "operation": "update"},
        _csv(
            [
                ["Id", "Phone", "Company"],
                [lead, "2", ""],
                [to18("00Q8d0000000zzz"), "3", ""],
                ["", "4", ""],
            ]
        ),
    )
    rec = org.store.get("Lead", lead)
    assert rec is not None and rec["Phone"] == "2" and rec["Company"] == "C"
    errors = [r["sf__Error"] for r in _results(org, job.id, "failed")]
    assert errors[0].startswith("INVALID_CROSS_REFERENCE_KEY:")
    assert errors[1] == "MISSING_ARGUMENT:Id not specified:--"
    deleted = await _run(org, {"object": "Lead", "operation": "delete"}, _csv([["Id"], [lead]]))
    assert _results(org, deleted.id, "successful")[0]["sf__Created"] == "false"
    assert org.store.get("Lead", lead) is None


async def test_delete_job_needs_id_only(org: Org) -> None:
    """A delete job whose file has more than an Id column fails."""
    job = await _run(org, {"object": "Lead", "operation": "delete"}, b"Id,Phone\nx,1\n")
    assert job.state is JobState.FAILED and "only 'Id'" in job.error_message


async def test_internal_batches_count_daily_bulk_batches(org: Org) -> None:
    """25,000 rows are 3 internal batches of 10,000, charged to DailyBulkApiBatches."""
    rows = [["Subject"]] + [[f"s{i}"] for i in range(25_000)]
    job = await _run(org, {"object": "Task", "operation": "insert"}, _csv(rows))
    assert job.state is JobState.JOB_COMPLETE and job.records_processed == 25_000
    assert org.usage.bulk_batches == 3
    assert org.usage.limits_body()["DailyBulkApiBatches"]["Remaining"] == 15_000 - 3


async def test_exhausted_batch_allocation_fails_the_job(org: Org) -> None:
    """With no DailyBulkApiBatches left, the job fails ExceededQuota and nothing is processed."""
    org.usage.bulk_batches = org.usage.bulk_batch_limit
    job = await _run(org, {"object": "Task", "operation": "insert"}, b"Subject\nx\n")
    assert job.state is JobState.FAILED and job.error_message.startswith("ExceededQuota")
    assert len(_results(org, job.id, "unprocessed")) == 1


async def test_whole_job_failure_on_demand(org: Org) -> None:
    """fail_next_jobs makes the next job Failed with the configured message, rows unprocessed."""
    org.faults.configure({"fail_next_jobs": 1, "job_failure_message": "TooManyLockFailure : boom"})
    job = await _run(org, {"object": "Task", "operation": "insert"}, b"Subject\nx\ny\n")
    assert job.state is JobState.FAILED and job.error_message == "TooManyLockFailure : boom"
    assert [r["Subject"] for r in _results(org, job.id, "unprocessed")] == ["x", "y"]
    again = await _run(org, {"object": "Task", "operation": "insert"}, b"Subject\nz\n")
    assert again.state is JobState.JOB_COMPLETE


async def test_lock_rate_fault_fails_rows_and_counts_retries(org: Org) -> None:
    """lock_next makes rows fail UNABLE_TO_LOCK_ROW; the job counts retries."""
    org.faults.configure({"lock_next": 2})
    job = await _run(
        org,
        {"object": "Task", "operation": "insert"},
        _csv([["Subject"]] + [[f"s{i}"] for i in range(5)]),
    )
    failed = _results(org, job.id, "failed")
    assert len(failed) == 2
    assert all(
        r["sf__Error"].startswith("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access")
        for r in failed
    )
    assert job.retries >= 1 and job.records_failed == 2


async def test_shared_parent_in_concurrent_batches_is_lock_contention(org: Org) -> None:
    """A row whose parent is also locked by another concurrent batch fails UNABLE_TO_LOCK_ROW."""
    engine = _engine(org)
    engine.settings.lock_contention = True
    engine.settings.batch_size = 3
    shared = org.store.insert("Lead", {"LastName": "S", "Company": "C"})
    other = org.store.insert("Lead", {"LastName": "O", "Company": "C"})
    rows = [
        ["Subject", "WhoId"],
        ["b0-shared", shared],
        ["b0-a", ""],
        ["b0-b", ""],
        ["b1-shared", shared],
        ["b1-other", other],
        ["b1-c", ""],
    ]
    job = await _run(org, {"object": "Task", "operation": "insert"}, _csv(rows))
    failed = {r["Subject"]: r["sf__Error"] for r in _results(org, job.id, "failed")}
    assert list(failed) == ["b1-shared"]
    assert failed["b1-shared"] == (
        f"UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 1 records: "
        f"{shared}:--"
    )
    assert job.retries >= 1
    # Sorted so that each parent's rows share one batch, the same data loads cleanly.
    rows2 = [
        ["Subject", "WhoId"],
        ["x1", shared],
        ["x2", shared],
        ["x3", other],
        ["y1", ""],
        ["y2", ""],
        ["y3", ""],
    ]
    clean = await _run(org, {"object": "Task", "operation": "insert"}, _csv(rows2))
    assert clean.records_failed == 0


async def test_abort_while_in_progress_leaves_rest_unprocessed(org: Org) -> None:
    """Aborting an InProgress job keeps saved rows and leaves the rest unprocessed."""
    engine = _engine(org)
    engine.settings.rate = 2000.0
    rows = [["Subject"]] + [[f"s{i}"] for i in range(3000)]
    job = engine.create_job(
        {"object": "Task", "operation": "insert"}, api_version="62.0", user_id=org.user_id
    )
    await engine.upload(job.id, _chunks(_csv(rows)))
    engine.close(job.id)
    async with asyncio.timeout(10):
        while job.records_processed < 400:  # noqa: ASYNC110 - poll with a deadline
            await asyncio.sleep(0.01)
    engine.abort(job.id)
    await asyncio.wait_for(engine.wait(job.id), 10)
    assert job.state is JobState.ABORTED
    saved = len(_results(org, job.id, "successful"))
    left = len(_results(org, job.id, "unprocessed"))
    assert saved >= 400 and left > 0 and saved + left == 3000
    assert org.store.counts()["Task"] == saved


async def test_second_upload_and_oversized_upload_are_refused(org: Org) -> None:
    """A second PUT is BULK_API_ERROR; an upload over the base64 limit is 413 and not kept."""
    engine = _engine(org)
    job = engine.create_job(
        {"object": "Task", "operation": "insert"}, api_version="62.0", user_id=org.user_id
    )
    await engine.upload(job.id, _chunks(b"Subject\nx\n"))
    with pytest.raises(BulkApiError, match="Found multipe contents"):
        await engine.upload(job.id, _chunks(b"Subject\ny\n"))
    engine.settings.max_upload_base64 = 100
    big = engine.create_job(
        {"object": "Task", "operation": "insert"}, api_version="62.0", user_id=org.user_id
    )
    with pytest.raises(BulkApiError) as info:
        await engine.upload(big.id, _chunks(b"Subject\n" + b"x\n" * 100, size=16))
    assert info.value.status == 413
    assert big.upload_path is None  # nothing kept; the job is still Open
    await engine.upload(big.id, _chunks(b"Subject\nx\n"))


async def test_close_without_upload_fails(org: Org) -> None:
    """Closing a job that never got data ends Failed rather than an empty success."""
    engine = _engine(org)
    job = engine.create_job(
        {"object": "Task", "operation": "insert"}, api_version="62.0", user_id=org.user_id
    )
    engine.close(job.id)
    await asyncio.wait_for(engine.wait(job.id), 10)
    assert job.state is JobState.FAILED and "No data" in (job.error_message or "")


async def test_list_pages_and_delete(org: Org) -> None:
    """Listing pages through jobs with nextRecordsUrl; a deleted job is gone (404)."""
    engine = _engine(org)
    engine.settings.page_size = 2
    ids = [
        engine.create_job(
            {"object": "Task", "operation": "insert"}, api_version="62.0", user_id=org.user_id
        ).id
        for _ in range(5)
    ]
    seen: list[str] = []
    page = engine.list_page(None, api_version="62.0", filters={})
    while True:
        seen += [r["id"] for r in page["records"]]
        if page["done"]:
            assert page["nextRecordsUrl"] is None
            break
        locator = page["nextRecordsUrl"].split("queryLocator=")[1]
        page = engine.list_page(locator, api_version="62.0", filters={})
    assert seen == ids
    with pytest.raises(BulkApiError, match="Deleting"):
        engine.delete(ids[0])
    engine.abort(ids[0])
    engine.delete(ids[0])
    with pytest.raises(BulkApiError) as info:
        engine.job(ids[0])
    assert info.value.status == 404


async def test_state_survives_dump_and_load(org: Org, tmp_path: Any) -> None:
    """A finished job's info and results survive dump_state/load_state (--state-dir)."""
    job = await _run(org, {"object": "Task", "operation": "insert"}, b"Subject\nx\n")
    before = _results(org, job.id, "successful")
    state = _engine(org).dump_state()
    engine2 = BulkEngine(org.store)
    engine2.load_state(state)
    restored = engine2.job(job.id)
    assert restored.info(now=0)["numberRecordsProcessed"] == 1
    text = "".join(engine2.result_chunks(job.id, "successful"))
    assert list(csv.DictReader(io.StringIO(text))) == before


async def test_assignment_rule_id_is_for_lead_and_case(org: Org) -> None:
    """assignmentRuleId is echoed on a Lead job and refused on a Task job."""
    engine = _engine(org)
    rule = to18("01Q8d0000000001")
    job = engine.create_job(
        {"object": "Lead", "operation": "insert", "assignmentRuleId": rule},
        api_version="62.0",
        user_id=org.user_id,
    )
    assert job.summary()["assignmentRuleId"] == rule
    with pytest.raises(BulkApiError, match="assignmentRuleId"):
        engine.create_job(
            {"object": "Task", "operation": "insert", "assignmentRuleId": rule},
            api_version="62.0",
            user_id=org.user_id,
        )


async def test_finished_jobs_are_forgotten_after_seven_days() -> None:
    """A job that ended more than 7 days ago is gone (404) once another job is created."""
    org = Org()
    now = [1_000_000.0]
    engine = BulkEngine(org.store, clock=lambda: now[0])
    task = asyncio.create_task(engine.run())
    await engine.started()
    try:
        old = engine.create_job(
            {"object": "Task", "operation": "insert"}, api_version="62.0", user_id=org.user_id
        )
        await engine.upload(old.id, _chunks(b"Subject\nx\n"))
        engine.close(old.id)
        await asyncio.wait_for(engine.wait(old.id), 10)
        recent = engine.create_job(
            {"object": "Task", "operation": "insert"}, api_version="62.0", user_id=org.user_id
        )
        now[0] += 7 * 86400 + 1
        engine.create_job(
            {"object": "Task", "operation": "insert"}, api_version="62.0", user_id=org.user_id
        )
        with pytest.raises(BulkApiError):
            engine.job(old.id)
        assert engine.job(recent.id).state is JobState.OPEN  # Open jobs are not expired
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_abort_a_queued_job_before_processing(org: Org) -> None:
    """A job aborted while UploadComplete is never processed; every row stays unprocessed."""
    engine = _engine(org)
    job = engine.create_job(
        {"object": "Task", "operation": "insert"}, api_version="62.0", user_id=org.user_id
    )
    await engine.upload(job.id, _chunks(b"Subject\na\nb\n"))
    engine.close(job.id)
    state: JobState = job.state  # (the abort below changes it)
    assert state is JobState.UPLOAD_COMPLETE
    engine.abort(job.id)  # before the processing task got a turn
    await asyncio.wait_for(engine.wait(job.id), 10)
    await asyncio.sleep(0)  # let the queued task see the abort and exit
    assert job.state is JobState.ABORTED and job.records_processed == 0
    assert [r["Subject"] for r in _results(org, job.id, "unprocessed")] == ["a", "b"]
    assert org.store.counts()["Task"] == 0


async def test_assignment_rule_runs_only_when_the_job_names_one(org: Org) -> None:
    """With the org's Lead rule active, a job naming assignmentRuleId reassigns; others do not."""
    queue = org.set_lead_assignment(True)
    data = _csv([["LastName", "Company"], ["A", "C"]])
    plain = await _run(org, {"object": "Lead", "operation": "insert"}, data)
    ruled = await _run(
        org,
        {"object": "Lead", "operation": "insert", "assignmentRuleId": to18("01Q8d0000000001")},
        data,
    )
    (plain_row,) = _results(org, plain.id, "successful")
    (ruled_row,) = _results(org, ruled.id, "successful")
    plain_rec = org.store.get("Lead", plain_row["sf__Id"])
    ruled_rec = org.store.get("Lead", ruled_row["sf__Id"])
    assert plain_rec is not None and plain_rec["OwnerId"] == org.user_id
    assert ruled_rec is not None and ruled_rec["OwnerId"] == queue
