"""Logging: one line per event, the right format for where stdout goes, secrets removed."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import structlog
from pydantic import SecretStr

from daemon.logging import configure_logging, redact, resolve_format

TOKEN = "00D5g000004Xyz1!AQ0AQHbwQc2nSjI2VYbkV2AbcdefGhijkLmnop"


def test_redaction_removes_secrets_from_keys_nested_values_and_text() -> None:
    """Tokens, passwords, Authorization headers and bearer strings never reach the output."""
    out = io.StringIO()
    configure_logging("logfmt", stream=out, environ={})
    structlog.get_logger("t").info(
        "token obtained",
        access_token=TOKEN,
        client_secret=SecretStr("cs-123456"),
        headers={"Authorization": "Bearer abc.def.ghi", "Accept": "application/json"},
        body="grant_type=password&client_id=x&password=hunter2",
        note=f"session {TOKEN} in text",
        call_id="call-1",
        call_sid="CA0123",
    )
    line = out.getvalue()
    for secret in (TOKEN, "cs-123456", "abc.def.ghi", "hunter2"):
        assert secret not in line
    assert "call_id=call-1" in line and "call_sid=CA0123" in line
    assert "application/json" in line and "client_id=x" in line
    assert line.count("\n") == 1


def test_stdlib_loggers_and_exceptions_are_formatted_and_redacted() -> None:
    """httpx-style stdlib records and tracebacks go through the same format and redaction."""
    out = io.StringIO()
    configure_logging("logfmt", stream=out, environ={})
    logging.getLogger("uvicorn.error").warning("client sent Authorization: Bearer tok-999")
    try:
        raise RuntimeError("refresh failed: refresh_token=rt-777 rejected")
    except RuntimeError:
        structlog.get_logger("t").exception("auth failed", rail="live")
    text = out.getvalue()
    assert "tok-999" not in text and "rt-777" not in text
    assert "level=warning" in text and "logger=uvicorn.error" in text
    assert "rail=live" in text and "RuntimeError" in text


def test_json_format_is_one_object_per_line() -> None:
    """--log-format json prints one parseable JSON object per event."""
    out = io.StringIO()
    configure_logging("json", stream=out, environ={})
    log = structlog.get_logger("t")
    log.info("outcome received", call_id="c1", disposition="busy")
    log.warning("quota low", used=90, max=100)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["event"] for x in lines] == ["outcome received", "quota low"]
    assert lines[0]["call_id"] == "c1" and lines[1]["level"] == "warning"


def test_level_filters_debug() -> None:
    """At level info, debug events are not printed."""
    out = io.StringIO()
    configure_logging("logfmt", "info", stream=out, environ={})
    structlog.get_logger("t").debug("noise")
    assert out.getvalue() == ""


def test_auto_picks_logfmt_for_pipes_and_journal_console_for_tty(tmp_path: Path) -> None:
    """auto: logfmt in a pipe, logfmt without timestamps on journald, colors on a TTY."""
    assert resolve_format("auto", io.StringIO(), {}) == ("logfmt", True)
    with (tmp_path / "journal").open("w") as fh:
        st = os.fstat(fh.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert resolve_format("auto", fh, env) == ("logfmt", False)
        assert resolve_format("json", fh, env) == ("json", False)
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as tty:
            assert resolve_format("auto", tty, {}) == ("console", True)
            # JOURNAL_STREAM inherited from a parent but not naming this stream: ignored.
            assert resolve_format("auto", tty, {"JOURNAL_STREAM": "1:2"}) == ("console", True)
    finally:
        os.close(leader)


def test_redact_leaves_ordinary_text_alone() -> None:
    """Redaction does not mangle normal messages such as error codes and ids."""
    text = "error_code=UNABLE_TO_LOCK_ROW job_id=750xx0000001 status code: 503"
    assert redact(text) == text
