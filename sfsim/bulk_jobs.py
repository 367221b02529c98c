"""Bulk API 2.0 ingest jobs as pure state: the create request, the state machine, job info.

Wire facts: shared/reference/salesforce-api.md §4.1-§4.7 and §4.11. Nothing here does I/O; the
engine (``sfsim.bulk_engine``) drives processing and the routes (``sfsim.bulk_routes``) speak HTTP.

Errors go out in the REST shape ``[{"errorCode": ..., "message": ...}]`` (§4.11), raised here as
:class:`BulkApiError` carrying the HTTP status.
"""

from __future__ import annotations

import base64
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final

from sfsim.bulk_csv import COLUMN_DELIMITERS, LINE_ENDINGS

__all__ = [
    "DELETABLE_STATES",
    "OPERATIONS",
    "TERMINAL_STATES",
    "BulkApiError",
    "Job",
    "JobSpec",
    "JobState",
    "RowOutcomes",
    "format_timestamp",
    "invalid_job",
    "not_found",
    "parse_create_request",
]


class JobState(StrEnum):
    """Ingest job states (§4.5)."""

    OPEN = "Open"
    UPLOAD_COMPLETE = "UploadComplete"
    IN_PROGRESS = "InProgress"
    JOB_COMPLETE = "JobComplete"
    FAILED = "Failed"
    ABORTED = "Aborted"


TERMINAL_STATES: Final = frozenset({JobState.JOB_COMPLETE, JobState.FAILED, JobState.ABORTED})
#: §4.6: "To be deleted, a job must have a state of UploadComplete, JobComplete, Aborted, or
#: Failed."
DELETABLE_STATES: Final = frozenset({JobState.UPLOAD_COMPLETE, *TERMINAL_STATES})
#: §4.1, case-sensitive.
OPERATIONS: Final = ("insert", "delete", "hardDelete", "update", "upsert")

# Words used in INVALIDJOBSTATE messages, after the doc's own example
# "Aborting already Completed Job not allowed" (§4.3).
_STATE_WORDS: Final = {
    JobState.OPEN: "Open",
    JobState.UPLOAD_COMPLETE: "Closed",
    JobState.IN_PROGRESS: "InProgress",
    JobState.JOB_COMPLETE: "Completed",
    JobState.FAILED: "Failed",
    JobState.ABORTED: "Aborted",
}


class BulkApiError(Exception):
    """An HTTP error from a Bulk endpoint: ``status`` and one ``{errorCode, message}`` entry."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message

    def body(self) -> list[dict[str, str]]:
        """The JSON error body (§4.11)."""
        return [{"errorCode": self.error_code, "message": self.message}]


def not_found() -> BulkApiError:
    """Unknown or deleted job (§4.4)."""
    return BulkApiError(404, "NOT_FOUND", "The requested resource does not exist")


def _invalid_value(prop: str, value: object) -> BulkApiError:
    # Observed on real orgs for a bad operation/contentType: API_ERROR "Invalid value: '' supplied
    # for property: 'operation'". [U] We use the same text for lineEnding and columnDelimiter.
    shown = value if isinstance(value, str) else ("" if value is None else str(value))
    return BulkApiError(
        400, "API_ERROR", f"Invalid value: '{shown}' supplied for property: '{prop}'"
    )


def invalid_job(message: str) -> BulkApiError:
    """``INVALIDJOB`` (observed: ``InvalidJob : Unable to find object: Foo``)."""
    return BulkApiError(400, "INVALIDJOB", f"InvalidJob : {message}")


def format_timestamp(epoch_s: float) -> str:
    """Job timestamps: ``2022-01-02T21:33:43.000+0000`` (millis, ``+0000`` with no colon; §4.1)."""
    whole = int(epoch_s)
    millis = int((epoch_s - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}+0000"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a client asked for in ``POST /jobs/ingest`` (§4.1), values checked, names not yet."""

    object: str
    operation: str
    external_id_field: str | None
    line_ending: str
    column_delimiter: str
    assignment_rule_id: str | None
    api_version: str

    @property
    def delimiter(self) -> str:
        """The column delimiter character."""
        return COLUMN_DELIMITERS[self.column_delimiter]


_KNOWN_PROPERTIES: Final = frozenset(
    {
        "object",
        "operation",
        "externalIdFieldName",
        "contentType",
        "lineEnding",
        "columnDelimiter",
        "assignmentRuleId",
    }
)


def parse_create_request(body: object, *, api_version: str) -> JobSpec:
    """Check a create-job body's values (§4.1). Object and field names are checked by the engine.

    Raises :class:`BulkApiError` naming the property at fault.
    """
    if not isinstance(body, dict):
        raise BulkApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
    for key in body:
        if key not in _KNOWN_PROPERTIES and key != "query":
            # [U] Real orgs reject unknown JobInfo properties; wording is ours.
            raise BulkApiError(400, "INVALIDJOB", f"InvalidJob : Unrecognized property: {key}")
    operation = body.get("operation")
    if not isinstance(operation, str) or operation not in OPERATIONS:
        raise _invalid_value("operation", operation)
    obj = body.get("object")
    if not isinstance(obj, str) or not obj:
        raise invalid_job(f"Unable to find object: {obj if isinstance(obj, str) else ''}")
    content_type = body.get("contentType", "CSV")
    if content_type != "CSV":
        raise _invalid_value("contentType", content_type)
    line_ending = body.get("lineEnding", "LF")
    if not isinstance(line_ending, str) or line_ending not in LINE_ENDINGS:
        raise _invalid_value("lineEnding", line_ending)
    delimiter = body.get("columnDelimiter", "COMMA")
    if not isinstance(delimiter, str) or delimiter not in COLUMN_DELIMITERS:
        raise _invalid_value("columnDelimiter", delimiter)
    ext = body.get("externalIdFieldName")
    if ext is not None and not isinstance(ext, str):
        raise _invalid_value("externalIdFieldName", ext)
    if operation == "upsert" and not ext:
        # Observed text for an empty externalIdFieldName on an upsert job.
        raise invalid_job(
            f"Field name provided, {ext or ''} does not match an External ID for {obj}"
        )
    if operation != "upsert" and ext:
        # [S-BULK limits] "When specifying an external ID, the operation must be upsert. If you try
        # to use it with create or update, an error is generated." [U] wording is ours.
        raise invalid_job("An External ID field can be specified only for an upsert job")
    rule = body.get("assignmentRuleId")
    if rule is not None and not isinstance(rule, str):
        raise _invalid_value("assignmentRuleId", rule)
    return JobSpec(
        object=obj,
        operation=operation,
        external_id_field=ext or None,
        line_ending=line_ending,
        column_delimiter=delimiter,
        assignment_rule_id=rule or None,
        api_version=api_version,
    )


class RowOutcomes:
    """Per-row results, kept compact so result files can be regenerated on demand.

    One status byte and one id reference per row (the id string is the store's own object), plus
    the ``sf__Error`` text of failed rows only. The original values are re-read from the upload.
    """

    UNPROCESSED: Final = 0
    CREATED: Final = 1
    UPDATED: Final = 2
    FAILED: Final = 3

    __slots__ = ("errors", "ids", "status")

    def __init__(self) -> None:
        self.status = bytearray()
        self.ids: list[str | None] = []
        self.errors: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.status)

    def reserve(self, count: int) -> int:
        """Make room for ``count`` more rows (all unprocessed); return the first new index."""
        start = len(self.status)
        self.status.extend(bytes(count))
        self.ids.extend([None] * count)
        return start

    def succeed(self, row: int, record_id: str, created: bool) -> None:
        """Row ``row`` was saved as ``record_id``."""
        self.status[row] = self.CREATED if created else self.UPDATED
        self.ids[row] = record_id

    def fail(self, row: int, sf_error: str, record_id: str | None = None) -> None:
        """Row ``row`` failed; ``sf_error`` is the formatted ``sf__Error`` text."""
        self.status[row] = self.FAILED
        self.ids[row] = record_id
        self.errors[row] = sf_error


@dataclass(eq=False)
class Job:
    """One ingest job and its counters. Mutated only by the engine, on the event loop."""

    id: str
    spec: JobSpec
    created_by_id: str
    created_at: float
    state: JobState = JobState.OPEN
    modified_at: float = 0.0
    # The upload, spilled to disk by the engine; None until the one PUT arrives.
    upload_path: str | None = None
    upload_size: int = 0
    upload_error: str | None = None
    # The upload holds no quote and no NUL (UploadScanner.plain).
    upload_plain: bool = False
    header: list[str] | None = None
    outcomes: RowOutcomes = field(default_factory=RowOutcomes)
    records_processed: int = 0
    records_failed: int = 0
    retries: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    active_s: float = 0.0
    error_message: str | None = None

    def __post_init__(self) -> None:
        if not self.modified_at:
            self.modified_at = self.created_at

    # -- transitions (§4.2, §4.3, §4.5, §4.6) --------------------------------------------------

    def check_upload(self) -> None:
        """Refuse an upload unless this is the first one and the job is Open."""
        if self.upload_path is not None:
            # §4.2 and §7.5: Salesforce's own text, typo included. [U] status 400.
            raise BulkApiError(
                400,
                "BULK_API_ERROR",
                f"Found multipe contents for job: <{self.id[:15]}>, please 'Close' / 'Abort' / "
                "'Delete' the current Job then create a new Job and make sure you only do 'PUT' "
                "once on a given Job.",
            )
        if self.state is not JobState.OPEN:
            # [U] wording; the doc only says uploads are valid while the job is Open.
            raise BulkApiError(
                400,
                "INVALIDJOBSTATE",
                f"Uploading data to an already {_STATE_WORDS[self.state]} Job not allowed",
            )

    def set_state(self, target: JobState, now: float) -> None:
        """Move to ``target`` and stamp ``systemModstamp``; the check_* methods guard the move."""
        self.state = target
        self.modified_at = now

    def check_close(self) -> None:
        """A client may close (UploadComplete) only an Open job."""
        if self.state is not JobState.OPEN:
            raise BulkApiError(
                400,
                "INVALIDJOBSTATE",
                f"Closing already {_STATE_WORDS[self.state]} Job not allowed",
            )

    def check_abort(self) -> None:
        """A client may abort from Open, UploadComplete or InProgress (§4.5)."""
        if self.state in TERMINAL_STATES:
            # §4.3's example: "Aborting already Completed Job not allowed".
            raise BulkApiError(
                400,
                "INVALIDJOBSTATE",
                f"Aborting already {_STATE_WORDS[self.state]} Job not allowed",
            )

    def check_delete(self) -> None:
        """Deleting is allowed only in :data:`DELETABLE_STATES` (§4.6)."""
        if self.state not in DELETABLE_STATES:
            # [U] status and wording; the doc states only the allowed states.
            raise BulkApiError(
                400,
                "INVALIDJOBSTATE",
                f"Deleting a Job in {self.state.value} state not allowed",
            )

    def check_results(self, kind: str) -> None:
        """Result files exist once the job has stopped (§4.8).

        [U] The doc says results are usable once JobComplete or Failed; an aborted job may have
        committed rows (§4.3), so its results are served too. Before that we refuse, the stricter
        reading, rather than return a partial file a client could mistake for the whole.
        """
        if self.state not in TERMINAL_STATES:
            raise BulkApiError(
                400,
                "INVALIDJOBSTATE",
                f"The {kind} of a Job in {self.state.value} state are not available",
            )

    # -- persistence (--state-dir) ---------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state; the upload file itself stays where it is on disk."""
        out = self.outcomes
        return {
            "id": self.id,
            "spec": asdict(self.spec),
            "created_by_id": self.created_by_id,
            "created_at": self.created_at,
            "modified_at": self.modified_at,
            "state": self.state.value,
            "upload_path": self.upload_path,
            "upload_size": self.upload_size,
            "upload_error": self.upload_error,
            "upload_plain": self.upload_plain,
            "header": self.header,
            "status": base64.b64encode(bytes(out.status)).decode("ascii"),
            "ids": out.ids,
            "errors": {str(k): v for k, v in out.errors.items()},
            "records_processed": self.records_processed,
            "records_failed": self.records_failed,
            "retries": self.retries,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "active_s": self.active_s,
            "error_message": self.error_message,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Job:
        """Rebuild a job saved by :meth:`to_state`."""
        outcomes = RowOutcomes()
        outcomes.status = bytearray(base64.b64decode(data["status"]))
        outcomes.ids = list(data["ids"])
        outcomes.errors = {int(k): v for k, v in data["errors"].items()}
        return cls(
            id=data["id"],
            spec=JobSpec(**data["spec"]),
            created_by_id=data["created_by_id"],
            created_at=data["created_at"],
            state=JobState(data["state"]),
            modified_at=data["modified_at"],
            upload_path=data["upload_path"],
            upload_size=data["upload_size"],
            upload_error=data["upload_error"],
            upload_plain=bool(data.get("upload_plain", False)),
            header=data["header"],
            outcomes=outcomes,
            records_processed=data["records_processed"],
            records_failed=data["records_failed"],
            retries=data["retries"],
            started_at=data["started_at"],
            finished_at=data["finished_at"],
            active_s=data["active_s"],
            error_message=data["error_message"],
        )

    # -- views ----------------------------------------------------------------------------------

    def _base(self) -> dict[str, Any]:
        spec = self.spec
        info: dict[str, Any] = {
            "id": self.id,
            "operation": spec.operation,
            "object": spec.object,
            "createdById": self.created_by_id,
            "createdDate": format_timestamp(self.created_at),
            "systemModstamp": format_timestamp(self.modified_at),
            "state": self.state.value,
        }
        if spec.external_id_field is not None:
            info["externalIdFieldName"] = spec.external_id_field
        if spec.assignment_rule_id is not None:
            info["assignmentRuleId"] = spec.assignment_rule_id
        info["concurrencyMode"] = "Parallel"
        info["contentType"] = "CSV"
        # §4.1: documented as a string but a JSON number in every example and client mock.
        info["apiVersion"] = float(spec.api_version)
        info["jobType"] = "V2Ingest"
        if self.state is JobState.OPEN:
            # Relative, no leading slash (§4.1); meaningful only while Open (§4.4).
            info["contentUrl"] = f"services/data/v{spec.api_version}/jobs/ingest/{self.id}/batches"
        info["lineEnding"] = spec.line_ending
        info["columnDelimiter"] = spec.column_delimiter
        return info

    def summary(self) -> dict[str, Any]:
        """The create / PATCH response body (§4.1, §4.3)."""
        return self._base()

    def list_entry(self) -> dict[str, Any]:
        """One record of ``GET /jobs/ingest`` (§4.7)."""
        return self._base()

    def info(self, now: float) -> dict[str, Any]:
        """``GET /jobs/ingest/{id}``: the summary plus counters and processing times (§4.4)."""
        info = self._base()
        info["numberRecordsProcessed"] = self.records_processed
        info["numberRecordsFailed"] = self.records_failed
        info["retries"] = self.retries
        total_ms = 0
        if self.started_at is not None:
            end = self.finished_at if self.finished_at is not None else now
            total_ms = int((end - self.started_at) * 1000)
        active_ms = (
            min(int(self.active_s * 1000), total_ms) if total_ms else int(self.active_s * 1000)
        )
        info["totalProcessingTime"] = total_ms
        info["apiActiveProcessingTime"] = active_ms
        info["apexProcessingTime"] = 0
        if self.error_message is not None:
            info["errorMessage"] = self.error_message
        return info
