"""Unit tests for Bulk 2.0 job state and the create-request checks (sfsim.bulk_jobs)."""

from __future__ import annotations

import pytest

from sfsim.bulk_jobs import (
    BulkApiError,
    Job,
    JobState,
    RowOutcomes,
    format_timestamp,
    parse_create_request,
)


def _spec(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {"object": "Task", "operation": "insert"}
    body.update(overrides)
    return body


def _job(state: JobState = JobState.OPEN, **spec: object) -> Job:
    job = Job(
        id="7508d0000004C92AAE",
        spec=parse_create_request(_spec(**spec), api_version="62.0"),
        created_by_id="0058d0000000001AAA",
        created_at=1_700_000_000.25,
    )
    job.state = state
    return job


def test_defaults_are_csv_lf_comma() -> None:
    """A minimal create body gets CSV, LF and COMMA."""
    spec = parse_create_request(_spec(), api_version="62.0")
    assert (spec.line_ending, spec.column_delimiter, spec.delimiter) == ("LF", "COMMA", ",")


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        (_spec(operation="Insert"), "API_ERROR", "for property: 'operation'"),
        (
            _spec(operation=None),
            "API_ERROR",
            "Invalid value: '' supplied for property: 'operation'",
        ),
        (_spec(contentType="JSON"), "API_ERROR", "property: 'contentType'"),
        (_spec(lineEnding="CR"), "API_ERROR", "property: 'lineEnding'"),
        (_spec(columnDelimiter="SPACE"), "API_ERROR", "property: 'columnDelimiter'"),
        (_spec(object=""), "INVALIDJOB", "InvalidJob : Unable to find object: "),
        (_spec(operation="upsert"), "INVALIDJOB", "does not match an External ID for Task"),
        (_spec(externalIdFieldName="Call_Id__c"), "INVALIDJOB", "only for an upsert job"),
        (_spec(bogus=1), "INVALIDJOB", "Unrecognized property: bogus"),
    ],
)
def test_bad_create_requests_name_the_property(body: object, code: str, text: str) -> None:
    """Each bad create body is a 400 whose errorCode and message name what was wrong."""
    with pytest.raises(BulkApiError) as info:
        parse_create_request(body, api_version="62.0")
    assert info.value.status == 400
    assert info.value.error_code == code
    assert text in info.value.message


def test_non_object_body_is_rejected() -> None:
    """A JSON array as the body is a 400."""
    with pytest.raises(BulkApiError):
        parse_create_request([], api_version="62.0")


def test_timestamp_format() -> None:
    """Timestamps carry milliseconds and +0000 with no colon."""
    assert format_timestamp(1_700_000_000.25) == "2023-11-14T22:13:20.250+0000"


def test_summary_shape_while_open() -> None:
    """The create response has the documented keys, numeric apiVersion, relative contentUrl."""
    job = _job(operation="upsert", externalIdFieldName="Call_Id__c")
    info = job.summary()
    assert info["state"] == "Open"
    assert info["apiVersion"] == 62.0
    assert info["contentUrl"] == "services/data/v62.0/jobs/ingest/7508d0000004C92AAE/batches"
    assert info["externalIdFieldName"] == "Call_Id__c"
    assert info["concurrencyMode"] == "Parallel" and info["jobType"] == "V2Ingest"
    assert "assignmentRuleId" not in info and "numberRecordsProcessed" not in info


def test_info_has_counters_and_no_content_url_after_close() -> None:
    """Job info adds counters and times; contentUrl disappears once the job is no longer Open."""
    job = _job(JobState.JOB_COMPLETE)
    job.records_processed, job.records_failed, job.retries = 10, 2, 1
    job.started_at, job.finished_at, job.active_s = 100.0, 101.5, 1.2
    info = job.info(now=200.0)
    assert "contentUrl" not in info
    assert info["numberRecordsProcessed"] == 10 and info["numberRecordsFailed"] == 2
    assert info["retries"] == 1
    assert info["totalProcessingTime"] == 1500 and info["apiActiveProcessingTime"] == 1200
    assert info["apexProcessingTime"] == 0
    assert "errorMessage" not in info


def test_second_upload_is_refused_with_salesforce_text() -> None:
    """Once data is uploaded, another PUT gets BULK_API_ERROR 'Found multipe contents'."""
    job = _job()
    job.check_upload()
    job.upload_path = "/tmp/x"
    with pytest.raises(BulkApiError) as info:
        job.check_upload()
    assert info.value.error_code == "BULK_API_ERROR"
    assert info.value.message.startswith("Found multipe contents for job: <7508d0000004C92>")


@pytest.mark.parametrize("state", [s for s in JobState if s is not JobState.OPEN])
def test_only_open_jobs_can_be_closed(state: JobState) -> None:
    """Closing a job that is not Open is INVALIDJOBSTATE."""
    with pytest.raises(BulkApiError) as info:
        _job(state).check_close()
    assert info.value.error_code == "INVALIDJOBSTATE"


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        (JobState.OPEN, True),
        (JobState.UPLOAD_COMPLETE, True),
        (JobState.IN_PROGRESS, True),
        (JobState.JOB_COMPLETE, False),
        (JobState.FAILED, False),
        (JobState.ABORTED, False),
    ],
)
def test_abort_allowed_states(state: JobState, allowed: bool) -> None:
    """Abort works from Open/UploadComplete/InProgress, never from a final state."""
    job = _job(state)
    if allowed:
        job.check_abort()
    else:
        with pytest.raises(BulkApiError, match="Aborting already"):
            job.check_abort()


def test_abort_completed_message_matches_doc() -> None:
    """Aborting a JobComplete job uses the doc's own wording."""
    with pytest.raises(BulkApiError) as info:
        _job(JobState.JOB_COMPLETE).check_abort()
    assert info.value.message == "Aborting already Completed Job not allowed"


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        (JobState.OPEN, False),
        (JobState.UPLOAD_COMPLETE, True),
        (JobState.IN_PROGRESS, False),
        (JobState.JOB_COMPLETE, True),
        (JobState.FAILED, True),
        (JobState.ABORTED, True),
    ],
)
def test_delete_allowed_states(state: JobState, allowed: bool) -> None:
    """Delete works only in UploadComplete, JobComplete, Aborted or Failed."""
    job = _job(state)
    if allowed:
        job.check_delete()
    else:
        with pytest.raises(BulkApiError, match=r"not allowed"):
            job.check_delete()


def test_row_outcomes_are_compact() -> None:
    """Outcomes reserve rows as unprocessed and record ids and errors per row."""
    out = RowOutcomes()
    assert out.reserve(3) == 0
    out.succeed(0, "00T1", created=True)
    out.fail(2, "X:y:--")
    assert list(out.status) == [RowOutcomes.CREATED, RowOutcomes.UNPROCESSED, RowOutcomes.FAILED]
    assert out.ids == ["00T1", None, None] and out.errors == {2: "X:y:--"}
    assert out.reserve(2) == 3 and len(out) == 5
