"""Error classification from documented Salesforce error bodies."""

from __future__ import annotations

import json

import pytest

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
