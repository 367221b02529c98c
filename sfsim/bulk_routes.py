"""HTTP shell of Bulk API 2.0 ingest: Starlette routes over :class:`~sfsim.bulk_engine.BulkEngine`.

Mounted by the app under ``/services/data/v{version}``; the app has already checked the version
and the token, counted the call and applied request faults (``sfsim.plugin``). Paths and shapes:
shared/reference/salesforce-api.md §4.1-§4.8. Errors are ``[{"errorCode", "message"}]`` (§4.11).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Final

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from sfsim.bulk_engine import RESULT_KINDS, BulkEngine
from sfsim.bulk_jobs import BulkApiError
from sfsim.faults import Faults

__all__ = ["bulk_routes"]

_log = structlog.get_logger("sfsim.bulk")

_JSON: Final = "application/json;charset=UTF-8"
#: §4.1: multipart create accepts at most 100,000 characters of CSV.
_MULTIPART_MAX_CHARS: Final = 100_000
# Bodies read into memory: a job description, and a multipart create (its CSV is at most
# 100,000 characters, up to 4 bytes each in UTF-8, plus the job part and boundaries).
_JSON_MAX_BYTES: Final = 1 << 20
_MULTIPART_MAX_BYTES: Final = 4 * _MULTIPART_MAX_CHARS + (1 << 20)

Handler = Callable[[Request], Awaitable[Response]]


def _error(exc: BulkApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, media_type=_JSON)


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=_JSON)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _unsupported(media: str, wanted: str) -> BulkApiError:
    # [U] code; the REST table gives 415 for an unsupported body media type (§2.1).
    return BulkApiError(
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        f"Content-Type '{media or 'none'}' is not supported: use {wanted}",
    )


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes rather than buffered whole."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            # [U] status and wording for an oversized job description.
            raise BulkApiError(413, "BULK_API_ERROR", f"The request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_json(request: Request) -> Any:
    media = _media_type(request)
    if media != "application/json":
        raise _unsupported(media, "application/json")
    raw = await _read_limited(request, _JSON_MAX_BYTES)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BulkApiError(
            400, "JSON_PARSER_ERROR", f"Unable to parse the request body: {exc}"
        ) from None


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def bulk_routes(
    engine: BulkEngine, user_id: Callable[[], str], faults: Faults | None = None
) -> list[BaseRoute]:
    """The ingest routes, relative to ``/services/data/v{version}``; ``faults`` steers the
    result downloads (``bulk_empty_results_204``, ``corrupt_results_next``)."""

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except BulkApiError as exc:
                return _error(exc)

        return endpoint

    async def create(request: Request) -> Response:
        version = request.path_params["version"]
        if _media_type(request) == "multipart/form-data":
            return await _create_multipart(request, version)
        body = await _read_json(request)
        job = engine.create_job(body, api_version=version, user_id=user_id())
        return _json(job.summary())

    async def _create_multipart(request: Request, version: str) -> Response:
        # §4.1: part "job" is the JSON, part "content" the CSV; the job comes back UploadComplete.
        raw = await _read_limited(request, _MULTIPART_MAX_BYTES)
        header = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode("latin-1")
        message = BytesParser(policy=HTTP).parsebytes(header + raw)
        parts: dict[str, bytes] = {}
        if message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if isinstance(name, str) and isinstance(payload, bytes):
                    parts[name] = payload
        if "job" not in parts or "content" not in parts:
            raise BulkApiError(
                400,
                "INVALIDJOB",
                "InvalidJob : A multipart request needs a 'job' and a 'content' part",
            )
        try:
            body = json.loads(parts["job"])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BulkApiError(
                400, "JSON_PARSER_ERROR", f"Unable to parse the job part: {exc}"
            ) from None
        content = parts["content"]
        if len(content.decode("utf-8", errors="replace")) > _MULTIPART_MAX_CHARS:
            raise BulkApiError(
                400,
                "INVALIDJOB",
                f"InvalidJob : A multipart request may carry at most {_MULTIPART_MAX_CHARS} "
                "characters of CSV; upload larger data with PUT",
            )
        job = engine.create_job(body, api_version=version, user_id=user_id())
        await engine.upload(job.id, _one_chunk(content))
        engine.close(job.id)
        return _json(job.summary())

    async def list_jobs(request: Request) -> Response:
        params = request.query_params
        filters = {k: params[k] for k in ("jobType", "concurrencyMode") if k in params}
        page = engine.list_page(
            params.get("queryLocator"), api_version=request.path_params["version"], filters=filters
        )
        return _json(page)

    async def info(request: Request) -> Response:
        job = engine.job(request.path_params["job_id"])
        return _json(job.info(now=engine.now()))

    async def patch(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        engine.job(job_id)  # 404 before body errors
        body = await _read_json(request)
        state = body.get("state") if isinstance(body, dict) else None
        if state == "UploadComplete":
            job = engine.close(job_id)
        elif state == "Aborted":
            job = engine.abort(job_id)
        elif state in ("Open", "InProgress", "JobComplete", "Failed"):
            # [U] wording; only the two client transitions are allowed (§4.3).
            raise BulkApiError(
                400, "INVALIDJOBSTATE", f"Changing the state of a Job to {state} is not allowed"
            )
        else:
            shown = state if isinstance(state, str) else ""
            raise BulkApiError(
                400, "API_ERROR", f"Invalid value: '{shown}' supplied for property: 'state'"
            )
        return _json(job.summary())

    async def delete(request: Request) -> Response:
        engine.delete(request.path_params["job_id"])
        return Response(status_code=204)

    async def upload(request: Request) -> Response:
        job = engine.job(request.path_params["job_id"])
        media = _media_type(request)
        if media != "text/csv":
            raise _unsupported(media, "text/csv")
        job.check_upload()
        try:
            await engine.upload(job.id, request.stream())
        except ClientDisconnect:
            # The client went away mid-upload (it crashed, its connection was cut): nothing was
            # kept and the job stays Open for another PUT. No one is left to read an answer.
            _log.info("bulk_upload_cut", job_id=job.id)
            return Response(status_code=400)
        # §4.2: 201 Created with no body.
        return Response(status_code=201)

    async def results(request: Request) -> Response:
        job = engine.job(request.path_params["job_id"])
        kind = RESULT_KINDS.get(request.path_params["kind"].lower())
        if kind is None:
            raise BulkApiError(404, "NOT_FOUND", "The requested resource does not exist")
        chunks = engine.result_chunks(job.id, kind)  # checks the job's state first
        if faults is not None:
            if faults.take_corrupt_result():
                # Announced as gzip, and not gzip: a compressed download corrupted on the way.
                return Response(
                    b"this is not gzip data",
                    media_type="text/csv",
                    headers={"Content-Encoding": "gzip"},
                )
            if faults.settings.bulk_empty_results_204 and engine.nothing_of_kind(job.id, kind):
                return Response(status_code=204)
        # A sync iterator: Starlette drains it in a worker thread, off the event loop. The job is
        # final, so nothing mutates what it reads.
        return StreamingResponse(chunks, media_type="text/csv")

    routes: list[BaseRoute] = []

    def add(path: str, handler: Handler, methods: list[str]) -> None:
        endpoint = guarded(handler)
        routes.append(Route(path, endpoint, methods=methods))
        # The documented URIs end in "/" (e.g. ``.../successfulResults/``); clients drop it.
        # Both forms are served directly: a redirect would lose a PUT body.
        routes.append(Route(path + "/", endpoint, methods=methods))

    add("/jobs/ingest", create, ["POST"])
    add("/jobs/ingest", list_jobs, ["GET"])
    add("/jobs/ingest/{job_id}", info, ["GET"])
    add("/jobs/ingest/{job_id}", patch, ["PATCH"])
    add("/jobs/ingest/{job_id}", delete, ["DELETE"])
    add("/jobs/ingest/{job_id}/batches", upload, ["PUT"])
    add("/jobs/ingest/{job_id}/{kind}", results, ["GET"])
    return routes
