"""Error classification from documented Salesforce error bodies."""

from __future__ import annotations

import json

import httpx
import pytest

from daemon.salesforce import map_salesforce_errors
from daemon.salesforce.errors import (
    AuthError,
    ConfigurationError,
    Kind,
    LockError,
    PermanentError,
    RecordError,
    RequestLimitError,
    RetryableError,
    ServerError,
    SessionExpired,
    TransportError,
    classify_code,
    error_from_oauth_response,
    error_from_response,
    parse_error_body,
    parse_sf_error_column,
)


def body(code: str, message: str = "m", fields: list[str] | None = None) -> bytes:
    return json.dumps([{"errorCode": code, "message": message, "fields": fields or []}]).encode()


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "INVALID_SESSION_ID", SessionExpired),
        (403, "REQUEST_LIMIT_EXCEEDED", RequestLimitError),
        (400, "UNABLE_TO_LOCK_ROW", LockError),
        (503, "SERVER_UNAVAILABLE", ServerError),
        (500, "UNKNOWN_EXCEPTION", ServerError),
        (400, "INVALID_FIELD", ConfigurationError),
        (400, "INVALID_FIELD_FOR_INSERT_UPDATE", ConfigurationError),
        (403, "INSUFFICIENT_ACCESS", ConfigurationError),
        (404, "NOT_FOUND", ConfigurationError),
        (400, "REQUIRED_FIELD_MISSING", PermanentError),
        (400, "STRING_TOO_LONG", PermanentError),
        (400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", PermanentError),
        (400, "DUPLICATES_DETECTED", PermanentError),
        (400, "DUPLICATE_VALUE", RetryableError),
    ],
)
def test_error_classes_follow_the_documented_codes(status: int, code: str, cls: type) -> None:
    """Each documented error code maps to the behaviour the rails need (retry/dead/pause)."""
    err = error_from_response(status, body(code, "some text", ["F"]))
    assert type(err) is cls
    assert err.error_code == code
    assert err.status_code == status
    assert err.fields == ("F",)


def test_missing_api_scope_is_not_an_expired_session() -> None:
    """A 401 saying the session is not valid for REST is a scope problem: no refresh loop."""
    err = error_from_response(
        401, body("INVALID_SESSION_ID", "This session is not valid for use with the REST API")
    )
    assert isinstance(err, AuthError)
    assert "api" in str(err)


def test_html_5xx_without_json_is_retryable_and_readable() -> None:
    """An edge 502 with an HTML body still yields a retryable error with a message."""
    err = error_from_response(502, b"<html>Bad gateway</html>")
    assert isinstance(err, ServerError)
    assert "Bad gateway" in err.message


def test_retry_after_header_is_kept_as_a_hint() -> None:
    """A Retry-After on a 503 becomes the error's retry_after_s."""
    err = error_from_response(503, b"", retry_after="7")
    assert isinstance(err, RetryableError)
    assert err.retry_after_s == 7.0


def test_collection_items_use_statusCode() -> None:
    """Collection item errors carry statusCode instead of errorCode; both parse."""
    errors = parse_error_body([{"statusCode": "MALFORMED_ID", "message": "bad", "fields": ["Id"]}])
    assert errors == (RecordError("MALFORMED_ID", "bad", ("Id",)),)
    assert errors[0].kind is Kind.PERMANENT


@pytest.mark.parametrize(
    ("description", "hint"),
    [
        ("authentication failure", "client_credentials"),
        ("request not supported on this domain", "My Domain"),
        ("user hasn't approved this consumer", "pre-authorize"),
    ],
)
def test_token_errors_say_what_to_fix(description: str, hint: str) -> None:
    """A refused token request is an AuthError whose message names the fix."""
    err = error_from_oauth_response(
        400, json.dumps({"error": "invalid_grant", "error_description": description}).encode()
    )
    assert isinstance(err, AuthError)
    assert hint in str(err)


def test_token_endpoint_outage_is_retryable() -> None:
    """A 503 from the token endpoint is transient, not a credentials problem."""
    assert isinstance(error_from_oauth_response(503, b"down"), RetryableError)


def test_bulk_sf_error_column_parses_code_message_and_fields() -> None:
    """Bulk failedResults' sf__Error splits into code, message and fields."""
    err = parse_sf_error_column(
        "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --"
    )
    assert err == RecordError(
        "REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ("Name",)
    )
    err2 = parse_sf_error_column("INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--")
    assert err2 == RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ())
    assert (
        parse_sf_error_column("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access:--").kind
        is Kind.RETRY
    )


def test_unknown_code_on_5xx_is_retried_and_on_400_is_permanent() -> None:
    """classify_code falls back on the HTTP status for unknown codes."""
    assert classify_code("WHATEVER", status_code=500) is Kind.RETRY
    assert classify_code("WHATEVER", status_code=400) is Kind.PERMANENT


def test_bulk_records_without_a_result_are_retried_not_dead() -> None:
    """Our codes for Bulk rows never attempted (unprocessedrecords) or missing from every
    result file: nothing says the record is bad, so it is sent again."""
    assert classify_code("UNPROCESSED") is Kind.RETRY
    assert classify_code("NO_RESULT") is Kind.RETRY


def test_sharing_refusal_is_the_records_own_on_a_record_and_config_on_a_request() -> None:
    """INSUFFICIENT_ACCESS_OR_READONLY on one record's result (collections item, composite
    subresponse, Bulk row: the user may not edit that Lead) dead-letters that record; the
    same code answering the whole request is our setup and pauses the rail."""
    message = "insufficient access rights on object id"
    assert RecordError("INSUFFICIENT_ACCESS_OR_READONLY", message).kind is Kind.PERMANENT
    row = parse_sf_error_column(f"INSUFFICIENT_ACCESS_OR_READONLY:{message}:--")
    assert row.kind is Kind.PERMANENT
    [item] = parse_error_body([{"statusCode": "INSUFFICIENT_ACCESS_OR_READONLY", "message": "m"}])
    assert item.kind is Kind.PERMANENT
    assert classify_code("INSUFFICIENT_ACCESS_OR_READONLY") is Kind.CONFIG
    assert classify_code("INSUFFICIENT_ACCESS_OR_READONLY", record=True) is Kind.PERMANENT
    for status in (403, 400):
        err = error_from_response(status, body("INSUFFICIENT_ACCESS_OR_READONLY", message))
        assert type(err) is ConfigurationError
    # Other configuration codes stay configuration errors on a record too.
    assert RecordError("INVALID_FIELD", "No such column").kind is Kind.CONFIG


def test_retired_api_version_is_configuration_naming_the_setting() -> None:
    """410 GONE (a retired API version) is the same for every record: a ConfigurationError
    (pause) naming [salesforce] api_version, not a PermanentError (dead letters)."""
    for content in (b"", body("API_VERSION_RETIRED", "API version 30.0 has been retired")):
        err = error_from_response(410, content)
        assert type(err) is ConfigurationError
        assert "retired" in str(err) and "[salesforce] api_version" in str(err)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.DecodingError("Error -3 while decompressing data: incorrect header check"),
        httpx.TooManyRedirects("Exceeded maximum allowed redirects."),
    ],
)
def test_every_httpx_error_leaves_the_boundary_as_a_retryable_transport_error(
    exc: httpx.HTTPError,
) -> None:
    """A body that cannot be decoded (a corrupt gzip download), or any other httpx error
    not already translated, becomes a retryable TransportError: the rails catch only ours."""
    with pytest.raises(TransportError) as info, map_salesforce_errors():
        raise exc
    assert info.value.__cause__ is exc
