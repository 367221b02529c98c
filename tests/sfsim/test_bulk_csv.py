"""Unit tests for the pure Bulk 2.0 CSV rules (sfsim.bulk_csv)."""

from __future__ import annotations

import csv
import io

import pytest

from sfsim.bulk_csv import (
    BadRow,
    BulkFileError,
    UploadScanner,
    base64_size,
    format_sf_error,
    iter_data_rows,
    result_header,
    write_rows,
)


def _scan(data: bytes, line_ending: str, *, chunk: int = 7) -> BulkFileError | None:
    scanner = UploadScanner()
    for i in range(0, len(data), chunk):
        scanner.feed(data[i : i + chunk])
    assert scanner.size == len(data)
    return scanner.finish(line_ending)


def _read(data: bytes, delimiter: str, plain: bool) -> tuple[list[str], list[list[str] | BadRow]]:
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
    header, rows = iter_data_rows(text, delimiter, plain=plain)
    return header, list(rows)


def _rows(data: bytes, delimiter: str = ",") -> tuple[list[str], list[list[str] | BadRow]]:
    """The rows as the CSV reader reads them; for a plain upload, also read line by line (the
    engine's way for those), which must give the same rows and the same errors."""
    scanner = UploadScanner()
    scanner.feed(data)
    try:
        read = _read(data, delimiter, plain=False)
    except BulkFileError as exc:
        if scanner.plain:
            with pytest.raises(BulkFileError) as plain_exc:
                _read(data, delimiter, plain=True)
            assert plain_exc.value.error_message == exc.error_message
        raise
    if scanner.plain and (scanner.finish("LF") is None or scanner.finish("CRLF") is None):
        assert _read(data, delimiter, plain=True) == read
    return read


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("delimiter", [",", "\t", "|"])
def test_plain_lines_read_as_the_csv_reader_reads_them(newline: str, delimiter: str) -> None:
    """Blank lines, short and long rows, empty cells, a cell past the field limit, spaces and
    a last line without a line end: line by line gives the reader's rows."""
    big = "z" * (csv.field_size_limit() + 1)
    lines = [
        "A,B,C",
        "1,2,3",
        "",
        "",
        "4,,",
        ",,",
        "5,6",
        "7,8,9,10",
        f"x,{big},y",
        " a , b ,c ",
        "",
        "#N/A,é,ü",
        "last,line,here",
    ]
    text = newline.join(line.replace(",", delimiter) for line in lines)
    for data in (text, text + newline):
        header, rows = _rows(data.encode(), delimiter)
        assert header == ["A", "B", "C"]
        assert len(rows) == 9
        assert isinstance(rows[5], BadRow) and rows[5].unparsed


def test_lf_job_accepts_lf_data() -> None:
    """An LF job with LF line breaks is accepted."""
    assert _scan(b"Name,Phone\na,1\nb,2\n", "LF") is None


def test_lf_job_rejects_crlf_data_with_documented_message() -> None:
    """CRLF data in an LF job fails the job with the documented ClientInputError text."""
    err = _scan(b"Name,Phone\r\na,1\r\n", "LF")
    assert err is not None
    assert err.error_message == (
        "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is LF"
    )


def test_crlf_split_across_chunks_is_still_seen() -> None:
    """A CR at the end of one chunk and LF at the start of the next still count as CRLF."""
    data = b"Name\r\nabc\r\n"
    for chunk in range(1, len(data) + 1):
        assert _scan(data, "CRLF", chunk=chunk) is None
        assert _scan(data, "LF", chunk=chunk) is not None


def test_crlf_job_rejects_bare_lf() -> None:
    """A CRLF job whose data has a bare LF fails with the CRLF wording."""
    err = _scan(b"Name\r\na\nb\r\n", "CRLF")
    assert err is not None and err.error_message.endswith("Current LineEnding setting is CRLF")


def test_embedded_crlf_in_quoted_value_fails_lf_job() -> None:
    """[U] stricter reading: a CRLF inside a quoted value also trips the LF check."""
    assert _scan(b'Name,Description\na,"x\r\ny"\n', "LF") is not None


def test_invalid_utf8_fails_the_file() -> None:
    """Bytes that are not UTF-8 fail the job with a ClientInputError."""
    err = _scan(b"Name\n\xff\xfe\n", "LF")
    assert err is not None and err.error_message.startswith("ClientInputError : ")


def test_truncated_utf8_at_end_fails_the_file() -> None:
    """A multi-byte character cut off at the end of the upload is invalid UTF-8."""
    assert _scan("Name\né".encode()[:-1], "LF") is not None


def test_bom_is_kept_in_first_header() -> None:
    """A UTF-8 BOM is not stripped: it stays glued to the first column name."""
    header, rows = _rows("\ufeffName,Phone\na,1\n".encode())
    assert header == ["\ufeffName", "Phone"]
    assert rows == [["a", "1"]]


def test_values_are_not_trimmed_and_quotes_work() -> None:
    """Leading spaces survive, doubled quotes unescape, and quoted delimiters/newlines stay."""
    data = b'A,B,C\nJohn, Smith,"say ""hi"", ok"\n"multi\nline",x,\n'
    _, rows = _rows(data)
    assert rows == [["John", " Smith", 'say "hi", ok'], ["multi\nline", "x", ""]]


def test_space_between_quote_and_delimiter_fails_only_that_row() -> None:
    """`"John", "Smith"` and `"John" ,x` fail their row; the rows after them still parse."""
    data = b'A,B\n"John", "Smith"\n"John" ,x\nok,1\n'
    _, rows = _rows(data)
    assert isinstance(rows[0], BadRow)
    assert isinstance(rows[1], BadRow)
    assert rows[2] == ["ok", "1"]


def test_wrong_column_count_is_a_bad_row() -> None:
    """A row with more or fewer values than the header fails alone, keeping its values."""
    _, rows = _rows(b"A,B\n1\n1,2,3\n1,2\n")
    assert isinstance(rows[0], BadRow) and rows[0].values == ["1"]
    assert isinstance(rows[1], BadRow)
    assert rows[2] == ["1", "2"]


def test_blank_lines_are_skipped() -> None:
    """Blank lines (e.g. a trailing empty line) are not rows."""
    _, rows = _rows(b"A\n1\n\n2\n\n")
    assert rows == [["1"], ["2"]]


@pytest.mark.parametrize("delimiter", [",", "`", "^", "|", ";", "\t"])
def test_every_documented_delimiter(delimiter: str) -> None:
    """Each documented columnDelimiter splits columns."""
    data = f"A{delimiter}B\n1{delimiter}2\n".encode()
    header, rows = _rows(data, delimiter)
    assert header == ["A", "B"] and rows == [["1", "2"]]


def test_empty_file_has_no_header() -> None:
    """An empty upload is a file-level InvalidBatch failure."""
    with pytest.raises(BulkFileError, match=r"InvalidBatch : InvalidBatch : .*no header"):
        _rows(b"")


def test_base64_size_matches_encoding() -> None:
    """The 150 MB limit is measured on base64 size."""
    import base64

    for n in (0, 1, 2, 3, 4, 100, 101):
        assert base64_size(n) == len(base64.b64encode(b"x" * n))


def test_sf_error_format() -> None:
    """sf__Error is CODE:message:fields -- with ':--' when no field is named."""
    assert (
        format_sf_error("REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ["Name"])
        == "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --"
    )
    assert (
        format_sf_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        == "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--"
    )


def test_result_files_are_fully_quoted_comma_lf() -> None:
    """Result CSVs quote every value, use commas and LF, and round-trip through csv."""
    text = write_rows([result_header("successful", ["Name"]), ["001", "true", 'a,"b"\nc']])
    assert text.startswith('"sf__Id","sf__Created","Name"\n')
    assert "\r" not in text
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[1] == ["001", "true", 'a,"b"\nc']
    assert result_header("failed", ["A"]) == ["sf__Id", "sf__Error", "A"]
    assert result_header("unprocessed", ["A"]) == ["A"]


def test_bare_cr_is_a_line_ending_error() -> None:
    """A lone CR fails an LF job and a CRLF job alike (it would split a row)."""
    assert _scan(b"Name\na\rb\n", "LF") is not None
    assert _scan(b"Name\r\na\rb\r\n", "CRLF") is not None
    assert _scan(b"Name\r\nab\r\n", "CRLF") is None
