"""Bulk API 2.0 ingest over real sockets: every endpoint, transition and error (httpx -> SimOrg)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sfsim.bulk import BulkPlugin
from sfsim.bulk_engine import BulkEngine
from sfsim.server import SimOrg
from sfsim.testing import SimControl, running_sim, sim_client

INGEST = "jobs/ingest"
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")


def _engine(sim: SimOrg) -> BulkEngine:
    plugin = next(p for p in sim.org.plugins if p.name == "bulk")
    assert isinstance(plugin, BulkPlugin)
    return plugin.engine


@pytest.fixture
async def sim() -> AsyncIterator[SimOrg]:
    async with running_sim() as org:
        yield org


@pytest.fixture
async def sf(sim: SimOrg) -> AsyncIterator[httpx.AsyncClient]:
    async with sim_client(sim) as client:
        yield client


async def _create(sf: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await sf.post(INGEST, json={"object": "Task", "operation": "insert", **body})
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


async def _put(sf: httpx.AsyncClient, job_id: str, data: bytes) -> httpx.Response:
    return await sf.put(
        f"{INGEST}/{job_id}/batches", content=data, headers={"Content-Type": "text/csv"}
    )


async def _wait(sf: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            info: dict[str, Any] = (await sf.get(f"{INGEST}/{job_id}")).json()
            if info["state"] in ("JobComplete", "Failed", "Aborted"):
                return info
            await asyncio.sleep(0.02)


async def _run(sf: httpx.AsyncClient, data: bytes, **body: Any) -> dict[str, Any]:
    job = await _create(sf, **body)
    assert (await _put(sf, job["id"], data)).status_code == 201
    r = await sf.patch(f"{INGEST}/{job['id']}", json={"state": "UploadComplete"})
    assert r.status_code == 200, r.text
    return await _wait(sf, job["id"])


async def _csv_rows(sf: httpx.AsyncClient, job_id: str, segment: str) -> list[dict[str, str]]:
    r = await sf.get(f"{INGEST}/{job_id}/{segment}/")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(r.text)))


def _assert_error(r: httpx.Response, status: int, code: str, text: str = "") -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body, list) and set(body[0]) == {"errorCode", "message"}
    assert body[0]["errorCode"] == code
    assert text in body[0]["message"]


async def test_create_response_has_documented_fields(sf: httpx.AsyncClient) -> None:
    """POST /jobs/ingest answers 200 with the documented job fields and an Open state."""
    job = await _create(
        sf,
        object="Task",
        operation="upsert",
        externalIdFieldName="Call_Id__c",
        lineEnding="CRLF",
        columnDelimiter="PIPE",
    )
    assert job["id"].startswith("750") and len(job["id"]) == 18
    assert job["state"] == "Open" and job["operation"] == "upsert" and job["object"] == "Task"
    assert job["externalIdFieldName"] == "Call_Id__c"
    assert job["concurrencyMode"] == "Parallel" and job["contentType"] == "CSV"
    assert job["apiVersion"] == 62.0 and job["jobType"] == "V2Ingest"
    assert job["lineEnding"] == "CRLF" and job["columnDelimiter"] == "PIPE"
    assert job["contentUrl"] == f"services/data/v62.0/jobs/ingest/{job['id']}/batches"
    assert job["createdById"].startswith("005")
    assert _TS.match(job["createdDate"]) and _TS.match(job["systemModstamp"])


async def test_whole_lifecycle_and_result_files(sim: SimOrg, sf: httpx.AsyncClient) -> None:
    """Create, PUT via contentUrl, close, poll to JobComplete, read all three result files."""
    job = await _create(sf)
    r = await sf.put(
        f"{sim.instance_url}/{job['contentUrl']}",
        content=b"Subject,CallType\nok,Outbound\nbad,Sideways\n",
        headers={"Content-Type": "text/csv; charset=UTF-8"},
    )
    assert r.status_code == 201 and r.content == b""
    r = await sf.patch(f"{INGEST}/{job['id']}", json={"state": "UploadComplete"})
    assert r.status_code == 200 and r.json()["state"] == "UploadComplete"
    assert "contentUrl" not in r.json()
    info = await _wait(sf, job["id"])
    assert info["state"] == "JobComplete"
    assert info["numberRecordsProcessed"] == 2 and info["numberRecordsFailed"] == 1
    for key in ("retries", "totalProcessingTime", "apiActiveProcessingTime", "apexProcessingTime"):
        assert isinstance(info[key], int)
    ok = await _csv_rows(sf, job["id"], "successfulResults")
    assert [(r["sf__Created"], r["Subject"]) for r in ok] == [("true", "ok")]
    raw = (await sf.get(f"{INGEST}/{job['id']}/failedResults")).text
    assert raw.startswith('"sf__Id","sf__Error","Subject","CallType"\n')
    failed = list(csv.DictReader(io.StringIO(raw)))
    assert failed[0]["sf__Error"].startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:")
    assert failed[0]["sf__Id"] == ""
    # Documented lowercase 'r' and simple-salesforce's 'unprocessedRecords' both work.
    assert await _csv_rows(sf, job["id"], "unprocessedrecords") == []
    assert await _csv_rows(sf, job["id"], "unprocessedRecords") == []
    tasks = await SimControl(sim, sf).records("Task")
    assert [t["Subject"] for t in tasks] == ["ok"]


async def test_bulk_requests_count_as_api_calls(sim: SimOrg, sf: httpx.AsyncClient) -> None:
    """Each bulk request costs one API call; each internal batch one DailyBulkApiBatches."""
    r = await sf.post(INGEST, json={"object": "Task", "operation": "insert"})
    used = int(r.headers["Sforce-Limit-Info"].split("=")[1].split("/")[0])
    r = await sf.get(f"{INGEST}/{r.json()['id']}")
    assert r.headers["Sforce-Limit-Info"].startswith(f"api-usage={used + 1}/")
    before = (await sf.get("limits")).json()["DailyBulkApiBatches"]["Remaining"]
    await _run(sf, b"Subject\nx\n")
    after = (await sf.get("limits")).json()["DailyBulkApiBatches"]["Remaining"]
    assert before - after == 1


async def test_daily_limit_refuses_bulk_calls() -> None:
    """Past the daily allocation a bulk request gets 403 REQUEST_LIMIT_EXCEEDED."""
    async with running_sim(api_limit=3) as sim, sim_client(sim) as sf:
        for _ in range(3):
            r = await sf.post(INGEST, json={"object": "Task", "operation": "insert"})
            assert r.status_code == 200
        r = await sf.get(f"{INGEST}/{r.json()['id']}")
        assert r.status_code == 403
        assert r.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


async def test_chunked_upload_is_accepted(sf: httpx.AsyncClient) -> None:
    """A PUT with Transfer-Encoding: chunked (no Content-Length) is read whole."""
    job = await _create(sf)
    rows = [b"Subject\n"] + [f"s{i}\n".encode() for i in range(3000)]

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(rows), 100):
            yield b"".join(rows[i : i + 100])

    r = await sf.put(
        f"{INGEST}/{job['id']}/batches/", content=body(), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 201
    assert r.request.headers.get("transfer-encoding") == "chunked"
    await sf.patch(f"{INGEST}/{job['id']}", json={"state": "UploadComplete"})
    info = await _wait(sf, job["id"])
    assert info["numberRecordsProcessed"] == 3000


async def test_second_put_is_refused(sf: httpx.AsyncClient) -> None:
    """Only one upload per job: the second PUT is 400 BULK_API_ERROR 'Found multipe contents'."""
    job = await _create(sf)
    assert (await _put(sf, job["id"], b"Subject\nx\n")).status_code == 201
    r = await _put(sf, job["id"], b"Subject\ny\n")
    _assert_error(r, 400, "BULK_API_ERROR", f"Found multipe contents for job: <{job['id'][:15]}>")


async def test_put_needs_text_csv(sf: httpx.AsyncClient) -> None:
    """A PUT whose Content-Type is not text/csv is refused with 415."""
    job = await _create(sf)
    r = await sf.put(
        f"{INGEST}/{job['id']}/batches",
        content=b"Subject\nx\n",
        headers={"Content-Type": "application/json"},
    )
    _assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_upload_over_the_size_limit_is_refused(sim: SimOrg, sf: httpx.AsyncClient) -> None:
    """Data over the base64 limit is refused (413) and the job stays Open for a proper upload."""
    _engine(sim).settings.max_upload_base64 = 1000
    job = await _create(sf)
    r = await _put(sf, job["id"], b"Subject\n" + b"x" * 2000 + b"\n")
    _assert_error(r, 413, "BULK_API_ERROR", "base64")
    assert (await sf.get(f"{INGEST}/{job['id']}")).json()["state"] == "Open"
    assert (await _put(sf, job["id"], b"Subject\nx\n")).status_code == 201


async def test_invalid_transitions(sf: httpx.AsyncClient) -> None:
    """Closing twice, aborting a finished job and unknown states are refused as documented."""
    info = await _run(sf, b"Subject\nx\n")
    job_id = info["id"]
    r = await sf.patch(f"{INGEST}/{job_id}", json={"state": "Aborted"})
    _assert_error(r, 400, "INVALIDJOBSTATE", "Aborting already Completed Job not allowed")
    r = await sf.patch(f"{INGEST}/{job_id}", json={"state": "UploadComplete"})
    _assert_error(r, 400, "INVALIDJOBSTATE", "Closing already Completed Job not allowed")
    r = await sf.patch(f"{INGEST}/{job_id}", json={"state": "JobComplete"})
    _assert_error(r, 400, "INVALIDJOBSTATE")
    r = await sf.patch(f"{INGEST}/{job_id}", json={"state": "Done"})
    _assert_error(r, 400, "API_ERROR", "Invalid value: 'Done' supplied for property: 'state'")
    other = await _create(sf)
    r = await sf.patch(f"{INGEST}/{other['id']}", json={"state": "Aborted"})
    assert r.status_code == 200 and r.json()["state"] == "Aborted"
    r = await _put(sf, other["id"], b"Subject\nx\n")
    _assert_error(r, 400, "INVALIDJOBSTATE")


async def test_delete_only_in_allowed_states(sf: httpx.AsyncClient) -> None:
    """DELETE is refused for an Open job, works for a finished one, then the job is 404."""
    job = await _create(sf)
    _assert_error(await sf.delete(f"{INGEST}/{job['id']}"), 400, "INVALIDJOBSTATE")
    await sf.patch(f"{INGEST}/{job['id']}", json={"state": "Aborted"})
    r = await sf.delete(f"{INGEST}/{job['id']}")
    assert r.status_code == 204 and r.content == b""
    r = await sf.get(f"{INGEST}/{job['id']}")
    _assert_error(r, 404, "NOT_FOUND", "The requested resource does not exist")
    _assert_error(await sf.get(f"{INGEST}/{job['id']}/successfulResults"), 404, "NOT_FOUND")


async def test_in_progress_job_cannot_be_deleted_but_can_be_aborted() -> None:
    """InProgress: DELETE and results are refused; abort keeps saved rows, rest unprocessed."""
    async with running_sim(bulk_rate=2000) as sim, sim_client(sim) as sf:
        job = await _create(sf)
        data = b"Subject\n" + b"".join(f"s{i}\n".encode() for i in range(4000))
        await _put(sf, job["id"], data)
        await sf.patch(f"{INGEST}/{job['id']}", json={"state": "UploadComplete"})
        async with asyncio.timeout(10):
            while (await sf.get(f"{INGEST}/{job['id']}")).json()[  # noqa: ASYNC110 - polls
                "numberRecordsProcessed"
            ] < 200:
                await asyncio.sleep(0.02)
        _assert_error(await sf.delete(f"{INGEST}/{job['id']}"), 400, "INVALIDJOBSTATE")
        r = await sf.get(f"{INGEST}/{job['id']}/successfulResults")
        _assert_error(r, 400, "INVALIDJOBSTATE")
        r = await sf.patch(f"{INGEST}/{job['id']}", json={"state": "Aborted"})
        assert r.status_code == 200 and r.json()["state"] == "Aborted"
        info = await _wait(sf, job["id"])
        saved = await _csv_rows(sf, job["id"], "successfulResults")
        left = await _csv_rows(sf, job["id"], "unprocessedrecords")
        assert len(saved) + len(left) == 4000 and left
        assert info["numberRecordsProcessed"] == len(saved)


async def test_list_jobs_pages(sim: SimOrg, sf: httpx.AsyncClient) -> None:
    """GET /jobs/ingest pages with nextRecordsUrl until done; records carry the job fields."""
    _engine(sim).settings.page_size = 2
    made = [(await _create(sf))["id"] for _ in range(5)]
    seen: list[str] = []
    r = await sf.get(INGEST)
    while True:
        page = r.json()
        seen += [j["id"] for j in page["records"]]
        assert all(j["jobType"] == "V2Ingest" and "state" in j for j in page["records"])
        if page["done"]:
            assert page["nextRecordsUrl"] is None
            break
        r = await sf.get(f"{sim.instance_url}{page['nextRecordsUrl']}")
    assert seen == made
    r = await sf.get(INGEST, params={"jobType": "Classic"})
    assert r.json() == {"done": True, "records": [], "nextRecordsUrl": None}


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        ({"object": "Nope__c", "operation": "insert"}, "INVALIDJOB", "Unable to find object"),
        ({"object": "Task", "operation": "merge"}, "API_ERROR", "property: 'operation'"),
        ({"object": "Task", "operation": "upsert"}, "INVALIDJOB", "does not match an External ID"),
        (
            {"object": "Task", "operation": "upsert", "externalIdFieldName": "Subject"},
            "INVALIDJOB",
            "Field name provided, Subject does not match an External ID for Task",
        ),
        (
            {"object": "Task", "operation": "insert", "contentType": "JSON"},
            "API_ERROR",
            "contentType",
        ),
        ({"object": "Task", "operation": "hardDelete"}, "FEATURENOTENABLED", "Hard Delete"),
    ],
)
async def test_create_errors(
    sf: httpx.AsyncClient, body: dict[str, Any], code: str, text: str
) -> None:
    """Bad create requests are 400 with the documented error codes."""
    _assert_error(await sf.post(INGEST, json=body), 400, code, text)


async def test_create_needs_json(sf: httpx.AsyncClient) -> None:
    """Unparseable JSON is JSON_PARSER_ERROR; another media type is 415."""
    r = await sf.post(INGEST, content=b"{nope", headers={"Content-Type": "application/json"})
    _assert_error(r, 400, "JSON_PARSER_ERROR")
    r = await sf.post(INGEST, content=b"x", headers={"Content-Type": "text/plain"})
    _assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_file_level_problems_fail_the_job(sf: httpx.AsyncClient) -> None:
    """Unknown column, BOM, wrong line ending: the job Fails with errorMessage, rows unprocessed."""
    info = await _run(sf, b"Subject,Bogus__c\na,b\n")
    assert info["state"] == "Failed" and info["numberRecordsProcessed"] == 0
    assert info["errorMessage"] == (
        "InvalidBatch : InvalidBatch : Field name not found : Bogus__c. Batch will not be retried."
    )
    assert await _csv_rows(sf, info["id"], "unprocessedrecords") == [
        {"Subject": "a", "Bogus__c": "b"}
    ]
    assert await _csv_rows(sf, info["id"], "failedResults") == []
    bom = await _run(sf, b"\xef\xbb\xbfSubject\nx\n")
    assert bom["state"] == "Failed" and "Field name not found" in bom["errorMessage"]
    crlf = await _run(sf, b"Subject\r\nx\r\n")
    assert crlf["errorMessage"].startswith("ClientInputError : LineEnding is invalid on user data")


async def test_upsert_relationships_and_null_marker(sim: SimOrg, sf: httpx.AsyncClient) -> None:
    """Upsert by Call_Id__c linking `Lead:Who.Dialer_Lead_Id__c`; #N/A clears, empty keeps."""
    control = SimControl(sim, sf)
    (lead_id,) = await control.seed(
        "Lead", [{"LastName": "L", "Company": "C", "Dialer_Lead_Id__c": "D-1"}]
    )
    header = b"Call_Id__c,Subject,CallDisposition,Lead:Who.Dialer_Lead_Id__c,Owner.Id\n"
    first = await _run(
        sf,
        header + f"c:1,Call,Busy,D-1,{sim.org.user_id}\n".encode(),
        operation="upsert",
        externalIdFieldName="Call_Id__c",
    )
    assert first["numberRecordsFailed"] == 0
    second = await _run(
        sf, header + b"c:1,,#N/A,,\n", operation="upsert", externalIdFieldName="Call_Id__c"
    )
    assert (await _csv_rows(sf, second["id"], "successfulResults"))[0]["sf__Created"] == "false"
    (task,) = await control.records("Task")
    assert task["WhoId"] == lead_id and task["Subject"] == "Call"
    assert task["CallDisposition"] is None


async def test_multipart_create_comes_back_upload_complete(sf: httpx.AsyncClient) -> None:
    """A multipart create (job + content parts) is already UploadComplete and gets processed."""
    r = await sf.post(
        INGEST,
        files={
            "job": (None, b'{"object":"Task","operation":"insert"}', "application/json"),
            "content": ("content", b"Subject\nfrom multipart\n", "text/csv"),
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "UploadComplete"
    info = await _wait(sf, r.json()["id"])
    assert info["state"] == "JobComplete" and info["numberRecordsProcessed"] == 1


async def test_lock_faults_over_the_control_api(sim: SimOrg, sf: httpx.AsyncClient) -> None:
    """lock_next set through /__sim/faults fails rows with UNABLE_TO_LOCK_ROW and counts retries."""
    await SimControl(sim, sf).faults(lock_next=2)
    info = await _run(sf, b"Subject\na\nb\nc\n")
    assert info["numberRecordsFailed"] == 2 and info["retries"] >= 1
    failed = await _csv_rows(sf, info["id"], "failedResults")
    assert all(r["sf__Error"].startswith("UNABLE_TO_LOCK_ROW:") for r in failed)


async def test_whole_job_failure_on_demand(sim: SimOrg, sf: httpx.AsyncClient) -> None:
    """fail_next_jobs through /__sim/faults fails the next job as a whole."""
    await SimControl(sim, sf).faults(fail_next_jobs=1)
    info = await _run(sf, b"Subject\na\n")
    assert info["state"] == "Failed" and info["errorMessage"]
    assert len(await _csv_rows(sf, info["id"], "unprocessedrecords")) == 1


async def test_stats_report_jobs_by_state(sim: SimOrg, sf: httpx.AsyncClient) -> None:
    """/__sim/stats counts bulk jobs per state."""
    await _run(sf, b"Subject\na\n")
    await _create(sf)
    stats = await SimControl(sim, sf).stats()
    assert stats["bulk_jobs"] == {"JobComplete": 1, "Open": 1}


async def test_shutdown_cancels_processing_cleanly() -> None:
    """Leaving the SimOrg block while a slow job is processing returns promptly."""
    sim = SimOrg(bulk_rate=50)
    async with sim, sim_client(sim) as sf:
        job = await _create(sf)
        await _put(sf, job["id"], b"Subject\n" + b"x\n" * 5000)
        await sf.patch(f"{INGEST}/{job['id']}", json={"state": "UploadComplete"})
        async with asyncio.timeout(10):
            while (await sf.get(f"{INGEST}/{job['id']}")).json()[  # noqa: ASYNC110 - polls
                "state"
            ] != "InProgress":
                await asyncio.sleep(0.02)
        engine = _engine(sim)
        assert engine._tasks  # a processing task exists, owned by the engine's TaskGroup
    assert not engine._tasks


async def test_lock_contention_fault_over_the_control_api(
    sim: SimOrg, sf: httpx.AsyncClient
) -> None:
    """With bulk_lock_contention on, a row sharing its Lead with a concurrent batch cannot lock."""
    control = SimControl(sim, sf)
    (lead,) = await control.seed("Lead", [{"LastName": "P", "Company": "C"}])
    await control.faults(bulk_lock_contention=True)
    _engine(sim).settings.batch_size = 2
    data = f"Subject,WhoId\na,{lead}\nb,\nc,{lead}\nd,\n".encode()
    info = await _run(sf, data)
    failed = await _csv_rows(sf, info["id"], "failedResults")
    assert [r["Subject"] for r in failed] == ["c"]
    assert failed[0]["sf__Error"] == (
        f"UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 1 records: "
        f"{lead}:--"
    )
    assert info["retries"] >= 1
    r = await sf.post(f"{sim.instance_url}/__sim/faults", json={"bulk_lock_contention": "yes"})
    assert r.status_code == 400 and "bulk_lock_contention" in r.text


async def test_jobs_survive_a_restart_with_state_dir(tmp_path: Any) -> None:
    """With --state-dir, finished jobs keep their info and results, and an Open job its upload."""
    async with running_sim(state_dir=tmp_path) as sim, sim_client(sim) as sf:
        done = await _run(sf, b"Subject\nkept\n")
        pending = await _create(sf)
        assert (await _put(sf, pending["id"], b"Subject\nlater\n")).status_code == 201
    async with running_sim(state_dir=tmp_path) as sim, sim_client(sim) as sf:
        info = (await sf.get(f"{INGEST}/{done['id']}")).json()
        assert info["state"] == "JobComplete" and info["numberRecordsProcessed"] == 1
        ok = await _csv_rows(sf, done["id"], "successfulResults")
        assert [r["Subject"] for r in ok] == ["kept"]
        r = await sf.patch(f"{INGEST}/{pending['id']}", json={"state": "UploadComplete"})
        assert r.status_code == 200
        assert (await _wait(sf, pending["id"]))["numberRecordsProcessed"] == 1
        tasks = await SimControl(sim, sf).records("Task")
        assert sorted(t["Subject"] for t in tasks) == ["kept", "later"]


async def test_reset_forgets_jobs(sim: SimOrg, sf: httpx.AsyncClient) -> None:
    """POST /__sim/reset removes every bulk job."""
    info = await _run(sf, b"Subject\nx\n")
    await SimControl(sim, sf).reset()
    _assert_error(await sf.get(f"{INGEST}/{info['id']}"), 404, "NOT_FOUND")
    assert (await sf.get(INGEST)).json()["records"] == []


async def test_oversized_job_description_is_refused(sf: httpx.AsyncClient) -> None:
    """A create body over 1 MB is refused with 413 instead of being buffered."""
    r = await sf.post(
        INGEST,
        content=b'{"object": "' + b"x" * (2 << 20) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    _assert_error(r, 413, "BULK_API_ERROR")


async def test_an_upload_cut_by_the_client_leaves_the_job_open_for_another_put(
    sim: SimOrg, sf: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that dies mid-PUT leaves an Open job with no data (no server error logged);
    the next PUT of the same job is accepted and processed."""
    job = await _create(sf)
    engine = _engine(sim)
    host, port = sim.instance_url.split("//", 1)[1].rsplit(":", 1)
    _reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT /services/data/v62.0/{INGEST}/{job['id']}/batches HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {sf.headers['Authorization']}\r\nContent-Type: text/csv\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    part = b"Subject\n" + b"s\n" * 100
    writer.write(head.encode() + f"{len(part):x}\r\n".encode() + part + b"\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        # The upload is being received (poll with a deadline).
        while engine.job(job["id"]).upload_path is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    writer.transport.abort()
    async with asyncio.timeout(10):
        # And given up once the connection is gone.
        while engine.job(job["id"]).upload_path is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    info = (await sf.get(f"{INGEST}/{job['id']}")).json()
    assert info["state"] == "Open"
    assert (await _put(sf, job["id"], b"Subject\na\nb\n")).status_code == 201
    r = await sf.patch(f"{INGEST}/{job['id']}", json={"state": "UploadComplete"})
    assert r.status_code == 200, r.text
    done = await _wait(sf, job["id"])
    assert (done["state"], done["numberRecordsProcessed"]) == ("JobComplete", 2)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
