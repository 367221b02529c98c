"""Wire encoding: JSON values, CSV rows, composite/collections bodies and results, result CSVs."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from daemon.mapping import CLEAR
from daemon.salesforce.errors import Kind, RecordError
from daemon.salesforce.wire import (
    CsvLines,
    CsvRows,
    LiteralNullError,
    collection_records,
    composite_body,
    csv_value,
    iter_result_csv,
    iter_result_errors,
    json_value,
    key_fits_url,
    parse_collection_results,
    parse_composite_results,
    sobject_path,
    utf8_len,
)


def test_json_values_use_salesforce_formats() -> None:
    """Dates as YYYY-MM-DD, datetimes in UTC with milliseconds, CLEAR as null."""
    dt = datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=timezone(timedelta(hours=2)))
    assert json_value(dt) == "2026-01-02T01:04:05.678Z"
    assert json_value(date(2026, 1, 2)) == "2026-01-02"
    assert json_value(CLEAR) is None
    assert json_value(True) is True


def test_csv_values_clear_with_NA_and_refuse_literal_NA() -> None:
    """CLEAR is #N/A in Bulk; a literal '#N/A' is refused instead of clearing data."""
    assert csv_value(CLEAR) == "#N/A"
    assert csv_value(None) == ""
    assert csv_value(True) == "true"
    assert csv_value(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T00:00:00.000Z"
    with pytest.raises(LiteralNullError):
        csv_value("#N/A")


def test_csv_values_are_not_formula_escaped() -> None:
    """Values starting with = + - @ are stored literally (phone numbers start with +)."""
    assert csv_value("+15551234567") == "+15551234567"
    assert csv_value("=1+1") == "=1+1"


def test_csv_rows_lf_no_bom_utf8_and_rfc4180_quoting() -> None:
    """Rows end in LF, have no BOM, are UTF-8, and quote commas, quotes and newlines."""
    rows = CsvRows()
    values = ["plain", "a,b", 'say "hi"', "line1\nline2", " leading", "é€"]
    data = rows.encode(values)
    assert data.endswith(b"\n") and not data.endswith(b"\r\n")
    assert not data.startswith(b"\xef\xbb\xbf")
    assert data.decode("utf-8").count("\n") == 2  # the row end and the embedded newline
    assert next(csv.reader(io.StringIO(data.decode()))) == values


def test_csv_row_with_carriage_return_is_fully_quoted() -> None:
    """A CR inside a value is quoted (Python's csv would leave it bare with an LF terminator)."""
    data = CsvRows().encode(["a\rb", "c"])
    assert data == b'"a\rb","c"\n'


def test_sobject_path_url_encodes_the_external_key() -> None:
    """source:call_id with slashes and spaces is URL-encoded in the upsert path."""
    path = sobject_path("62.0", "Task", "Call_Id__c", "vici:a/b c")
    assert path == "/services/data/v62.0/sobjects/Task/Call_Id__c/vici%3Aa%2Fb%20c"


@pytest.mark.parametrize(
    ("key", "fits"),
    [
        ("vici:abc.inc", False),
        ("vici:x.JSON", False),
        ("vici:a.b.xml", False),
        ("vici:José.café", False),  # any letters, not only ASCII: the body costs no extra call
        ("vici:42", True),
        ("vici:42.5", True),
        ("vici:abc.mp3", True),
        ("vici:abc.", True),
        ("vici:a.b/c", True),
    ],
)
def test_key_fits_url_refuses_a_letters_only_tail_after_the_last_dot(key: str, fits: bool) -> None:
    """A key ending in '.' and letters may read as a format extension in a URL (404)."""
    assert key_fits_url(key) is fits


def test_composite_body_and_limits() -> None:
    """Composite bodies keep order (no collation) and refuse more than 25 subrequests."""
    body = composite_body([{"method": "GET", "url": "/x", "referenceId": "a"}])
    assert body["allOrNone"] is False and body["collateSubrequests"] is False
    with pytest.raises(ValueError):
        composite_body([{}] * 26)


def test_collection_records_add_type_and_json_values() -> None:
    """Collections records carry attributes.type and JSON-encoded values; >200 refused."""
    recs = collection_records("Lead", [{"Id": "00Q1", "Callback_At__c": CLEAR}])
    assert recs == [{"attributes": {"type": "Lead"}, "Id": "00Q1", "Callback_At__c": None}]
    with pytest.raises(ValueError):
        collection_records("Lead", [{}] * 201)


def test_collection_results_read_every_item() -> None:
    """HTTP 200 with failed items: each item's success is read; missing items are retryable."""
    body = [
        {"id": "00T1", "success": True, "errors": [], "created": True},
        {
            "success": False,
            "errors": [{"statusCode": "STRING_TOO_LONG", "message": "x", "fields": []}],
        },
    ]
    results = parse_collection_results(body, 3)
    assert results[0].success and results[0].created is True
    assert results[1].error == RecordError("STRING_TOO_LONG", "x", ())
    assert results[2].error is not None and results[2].error.kind is Kind.RETRY


def test_rolled_back_items_do_not_count_as_created() -> None:
    """A rolled-back item may say created:true; success false wins."""
    body = [
        {
            "id": "00T1",
            "success": False,
            "created": True,
            "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "m"}],
        }
    ]
    [result] = parse_collection_results(body, 1)
    assert not result.success and result.created is None
    assert result.error is not None and result.error.kind is Kind.RETRY


def test_composite_results_check_each_status() -> None:
    """Composite 200 overall: each subresponse's httpStatusCode decides success."""
    body = {
        "compositeResponse": [
            {
                "body": {"id": "00T1", "success": True, "errors": [], "created": False},
                "httpHeaders": {},
                "httpStatusCode": 200,
                "referenceId": "task",
            },
            {
                "body": [{"errorCode": "UNABLE_TO_LOCK_ROW", "message": "busy"}],
                "httpHeaders": {},
                "httpStatusCode": 400,
                "referenceId": "lead",
            },
            {"body": None, "httpHeaders": {}, "httpStatusCode": 204, "referenceId": "lead2"},
            {
                "body": [{"errorCode": "WEIRD", "message": "x"}],
                "httpStatusCode": 500,
                "referenceId": "z",
            },
        ]
    }
    out = parse_composite_results(body)
    assert out["task"].success and out["task"].created is False
    assert out["lead"].error is not None and out["lead"].error.kind is Kind.RETRY
    assert out["lead2"].success
    assert out["z"].error is not None and out["z"].error.kind is Kind.RETRY


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("size", [1, 7, 4096])
async def test_result_csv_streams_across_chunk_boundaries(size: int) -> None:
    """Result files parse by column name, with quoted newlines and multibyte text split anywhere."""
    text = (
        '"sf__Id","sf__Error","Call_Id__c","Description"\n'
        '"","REQUIRED_FIELD_MISSING:Required fields are missing: [Status]:Status --",'
        '"vici:1","two\nlines é"\n'
        '"00T2","UNABLE_TO_LOCK_ROW:unable to obtain exclusive access:--","vici:2","x"\n'
    )
    rows = [
        r
        async for batch in iter_result_csv(
            chunks_of(text.encode(), size), key_column="Call_Id__c", batch=1
        )
        for r in batch
    ]
    assert [r.key for r in rows] == ["vici:1", "vici:2"]
    assert rows[0].sf_id is None and rows[0].error is not None
    assert rows[0].error.code == "REQUIRED_FIELD_MISSING"
    assert (
        rows[1].sf_id == "00T2" and rows[1].error is not None and rows[1].error.kind is Kind.RETRY
    )


async def test_successful_results_created_flag_and_unquoted_header() -> None:
    """successfulResults sf__Created parses; headers may come back unquoted."""
    text = b"sf__Id,sf__Created,Call_Id__c\n00T1,true,a:1\n00T2,false,a:2"
    rows = [
        r async for b in iter_result_csv(chunks_of(text, 5), key_column="Call_Id__c") for r in b
    ]
    assert [(r.key, r.created) for r in rows] == [("a:1", True), ("a:2", False)]


async def test_result_file_without_key_column_is_an_error() -> None:
    """A result file missing our key column is refused, never read as 'no failures'."""
    with pytest.raises(ValueError, match="Call_Id__c"):
        [b async for b in iter_result_csv(chunks_of(b"sf__Id\n1\n", 100), key_column="Call_Id__c")]


@pytest.mark.parametrize("size", [1, 3, 64])
async def test_result_errors_pairs_match_the_row_parser(size: int) -> None:
    """The reconcile hot path gives (key, error) pairs, same as the full parser, with
    quoted newlines, CRLF and a missing trailing newline split anywhere."""
    text = (
        b'"sf__Id","sf__Error","Call_Id__c","Description"\r\n'
        b'"","STRING_TOO_LONG:too long:Subject --","vici:1","a\r\nb"\r\n'
        b'"00T2","UNABLE_TO_LOCK_ROW:busy:--","vici:2",""'
    )
    pairs = [
        p
        async for b in iter_result_errors(chunks_of(text, size), key_column="Call_Id__c")
        for p in b
    ]
    rows = [
        r async for b in iter_result_csv(chunks_of(text, size), key_column="Call_Id__c") for r in b
    ]
    assert [k for k, _ in pairs] == [r.key for r in rows] == ["vici:1", "vici:2"]
    assert [e for _, e in pairs] == [r.error for r in rows]
    assert pairs[0][1] is not None and pairs[0][1].fields == ("Subject",)
    ok = b"sf__Id,sf__Created,Call_Id__c\n00T1,true,a:1\n"
    assert [
        p async for b in iter_result_errors(chunks_of(ok, 4), key_column="Call_Id__c") for p in b
    ] == [("a:1", None)]


def test_csv_lines_match_csv_rows_and_count_utf8_bytes() -> None:
    """The str line writer quotes exactly like CsvRows; sizes count UTF-8 bytes."""
    lines, rows = CsvLines(), CsvRows()
    for row in (["a", "b,c", 'd"e'], ["x\ny", ""], ["a\rb", "c"], ["é", "#"]):
        line = lines.line(row)
        assert line.encode() == rows.encode(row)
        assert utf8_len(line) == len(rows.encode(row))
