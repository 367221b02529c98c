"""The client's Bulk API 2.0 calls against sfsim over loopback: the upload PUT and the
result downloads, and what their failures become."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sfkit import client_for

from daemon.salesforce import (
    AuthError,
    Kind,
    SalesforceClient,
    ServerError,
    TransportError,
)
from daemon.salesforce.wire import iter_result_errors, iter_result_rows

# A job id of the right shape: requests are refused (401, 503) before it is looked up.
NO_JOB = "7505g000000AAAAAAA"


async def finished_job(
    sf: SalesforceClient, sobject: str, csv: bytes, *, operation: str = "insert"
) -> str:
    """Create, upload and close a job, then poll (with a deadline) until the org is done."""
    created = await sf.create_ingest_job(sobject, operation)
    await sf.upload_job_data(created["id"], csv)
    await sf.set_job_state(created["id"], "UploadComplete")
    async with asyncio.timeout(20):
        while (  # noqa: ASYNC110 - the job's state lives in the org, behind HTTP
            await sf.job_info(created["id"])
        )["state"] not in ("JobComplete", "Failed"):
            await asyncio.sleep(0.005)
    return str(created["id"])


async def read_all(sf: SalesforceClient, job_id: str, which: str) -> bytes:
    async with sf.job_results(job_id, which) as chunks:
        return b"".join([chunk async for chunk in chunks])


# -- a fresh token refused ----------------------------------------------------------------


async def test_upload_refused_with_a_fresh_token_is_an_auth_error() -> None:
    """Every session is refused at once (tokens expire on issue): after one refresh and one
    replay the upload raises AuthError (pause), as request() does, not a retryable
    SessionExpired that would have the Bulk rail log in and upload again forever."""
    from sfsim import SimOrg

    async with SimOrg(port=0, token_ttl=0) as org, client_for(org) as sf:
        with pytest.raises(AuthError, match="freshly issued token"):
            await sf.upload_job_data(NO_JOB, b"Subject\nCall\n")
        assert sf.token_requests == 2


async def test_result_download_refused_with_a_fresh_token_is_an_auth_error() -> None:
    """The same for a result download (stream())."""
    from sfsim import SimOrg

    async with SimOrg(port=0, token_ttl=0) as org, client_for(org) as sf:
        with pytest.raises(AuthError, match="freshly issued token"):
            await read_all(sf, NO_JOB, "successfulResults")
        assert sf.token_requests == 2


# -- Retry-After ----------------------------------------------------------------------------


async def test_retry_after_is_kept_on_the_upload(sim: Any) -> None:
    """A 503 with Retry-After on the upload PUT keeps the hint in retry_after_s, which the
    Bulk rail waits at least (as request() already did)."""
    async with client_for(sim) as sf:
        job = await sf.create_ingest_job("Task", "insert")
        sim.org.faults.configure(
            {"error_next": 1, "error_status": 503, "retry_after_s": 30, "kinds": ["bulk"]}
        )
        with pytest.raises(ServerError) as info:
            await sf.upload_job_data(job["id"], b"Subject\nCall\n")
        assert info.value.retry_after_s == 30.0


async def test_retry_after_is_kept_on_result_downloads(sim: Any) -> None:
    """The same for a result download."""
    async with client_for(sim) as sf:
        job_id = await finished_job(sf, "Task", b"Subject\nCall\n")
        sim.org.faults.configure(
            {"error_next": 1, "error_status": 503, "retry_after_s": 30, "kinds": ["bulk"]}
        )
        with pytest.raises(ServerError) as info:
            await read_all(sf, job_id, "failedResults")
        assert info.value.retry_after_s == 30.0


# -- result files -----------------------------------------------------------------------------


async def test_corrupt_compressed_result_download_is_a_retryable_transport_error(
    sim: Any,
) -> None:
    """A result file announced as gzip that is not (corrupted on the way): a retryable
    TransportError, not a raw httpx.DecodingError the rails would not catch; the download
    asked again is fine."""
    async with client_for(sim) as sf:
        job_id = await finished_job(sf, "Task", b"Subject\nCall\n")
        sim.org.faults.configure({"corrupt_results_next": 1})
        with pytest.raises(TransportError):
            await read_all(sf, job_id, "successfulResults")
        assert b"sf__Id" in await read_all(sf, job_id, "successfulResults")


async def test_no_content_result_file_reads_as_empty(sim: Any) -> None:
    """failedResults of a job without failures answered 204 No Content (seen from real orgs)
    reads as an empty result file, not as an error."""
    async with client_for(sim) as sf:
        job_id = await finished_job(sf, "Task", b"Subject\nCall\n")
        sim.org.faults.configure({"bulk_empty_results_204": True})
        assert await read_all(sf, job_id, "failedResults") == b""
        async with sf.job_results(job_id, "failedResults") as chunks:
            assert [rows async for rows in iter_result_rows(chunks)] == []


async def test_a_bulk_row_the_user_may_not_edit_is_refused_for_that_record(sim: Any) -> None:
    """A sharing refusal (INSUFFICIENT_ACCESS_OR_READONLY) on one row of a Bulk update is
    that record's own, permanent error; the other row is written."""
    st = sim.org.store
    locked, free = (
        st.insert("Lead", {"LastName": n, "Company": "Acme"}) for n in ("Locked", "Free")
    )
    st.read_only_ids = {locked}
    async with client_for(sim) as sf:
        csv = f"Id,Status\n{locked},Working\n{free},Working\n".encode()
        job_id = await finished_job(sf, "Lead", csv, operation="update")
        async with sf.job_results(job_id, "failedResults") as chunks:
            failed = [
                pair
                async for pairs in iter_result_errors(chunks, key_column="Id")
                for pair in pairs
            ]
    [(key, err)] = failed
    assert key == locked and err is not None
    assert err.code == "INSUFFICIENT_ACCESS_OR_READONLY" and err.kind is Kind.PERMANENT
    assert st.get("Lead", free)["Status"] == "Working"
