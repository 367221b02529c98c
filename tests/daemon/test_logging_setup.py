"""Logging: one line per event, the right format for where stdout goes, secrets removed."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from daemon.logging import (
    _TEXT_PATTERNS,
    REDACTED,
    configure_logging,
    redact,
    redact_event,
    reset_logging,
    resolve_format,
)

TOKEN = "00D5g000004Xyz1!AQ0AQHbwQc2nSjI2VYbkV2AbcdefGhijkLmnop"
# Loggers these tests write through; their stdlib state is reset around each test.
LOGGER = "tests.logging_setup"
_TOUCHED = ("", "uvicorn", "uvicorn.error", "tests", LOGGER)


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    """Each test starts from clean logging state and leaves none behind, whatever ran
    before it: levels, handlers, propagate and disabled flags of the loggers used here
    (a dictConfig elsewhere disables existing loggers; a handler left on "uvicorn" or a
    level left on a parent would change what reaches the output), logging.disable(),
    and structlog's configuration and context variables."""
    saved = {
        name: (lg.level, list(lg.handlers), lg.propagate, lg.disabled)
        for name in _TOUCHED
        for lg in [logging.getLogger(name or None)]
    }
    disabled_at = logging.root.manager.disable
    reset_logging()
    logging.disable(logging.NOTSET)
    for name in _TOUCHED[1:]:
        lg = logging.getLogger(name)
        lg.setLevel(logging.NOTSET)
        lg.handlers.clear()
        lg.propagate, lg.disabled = True, False
    try:
        yield
    finally:
        reset_logging()
        for name, (level, handlers, propagate, disabled) in saved.items():
            lg = logging.getLogger(name or None)
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, disabled
        logging.disable(disabled_at)


def _lines(out: io.StringIO, *loggers: str) -> list[str]:
    """The logfmt lines these loggers wrote (a stray line from a thread another test left
    running must not count)."""
    wanted = tuple(f"logger={name} " for name in loggers or (LOGGER,))
    return [ln for ln in out.getvalue().splitlines() if any(w in ln + " " for w in wanted)]


def test_redaction_removes_secrets_from_keys_nested_values_and_text() -> None:
    """Tokens, passwords, Authorization headers and bearer strings never reach the output."""
    out = io.StringIO()
    configure_logging("logfmt", stream=out, environ={})
    structlog.get_logger(LOGGER).info(
        "token obtained",
        access_token=TOKEN,
        client_secret=SecretStr("cs-123456"),
        headers={"Authorization": "Bearer abc.def.ghi", "Accept": "application/json"},
        body="grant_type=password&client_id=x&password=hunter2",
        note=f"session {TOKEN} in text",
        call_id="call-1",
        call_sid="CA0123",
    )
    for secret in (TOKEN, "cs-123456", "abc.def.ghi", "hunter2"):
        assert secret not in out.getvalue()
    [line] = _lines(out)
    assert "call_id=call-1" in line and "call_sid=CA0123" in line
    assert "application/json" in line and "client_id=x" in line


def test_stdlib_loggers_and_exceptions_are_formatted_and_redacted() -> None:
    """httpx-style stdlib records and tracebacks go through the same format and redaction."""
    out = io.StringIO()
    configure_logging("logfmt", stream=out, environ={})
    logging.getLogger("uvicorn.error").warning("client sent Authorization: Bearer tok-999")
    try:
        raise RuntimeError("refresh failed: refresh_token=rt-777 rejected")
    except RuntimeError:
        structlog.get_logger(LOGGER).exception("auth failed", rail="live")
    text = out.getvalue()
    assert "tok-999" not in text and "rt-777" not in text
    [stdlib] = _lines(out, "uvicorn.error")
    assert "level=warning" in stdlib
    [ours] = _lines(out)
    assert "rail=live" in ours and "RuntimeError" in ours


def test_json_format_is_one_object_per_line() -> None:
    """--log-format json prints one parseable JSON object per event."""
    out = io.StringIO()
    configure_logging("json", stream=out, environ={})
    log = structlog.get_logger(LOGGER)
    log.info("outcome received", call_id="c1", disposition="busy")
    log.warning("quota low", used=90, max=100)
    parsed = [json.loads(x) for x in out.getvalue().splitlines()]
    lines = [x for x in parsed if x.get("logger") == LOGGER]
    assert [x["event"] for x in lines] == ["outcome received", "quota low"]
    assert lines[0]["call_id"] == "c1" and lines[1]["level"] == "warning"


def test_level_filters_debug() -> None:
    """At level info, debug events are not printed."""
    out = io.StringIO()
    configure_logging("logfmt", "info", stream=out, environ={})
    structlog.get_logger(LOGGER).debug("noise")
    structlog.get_logger(LOGGER).info("signal")
    [line] = _lines(out)
    assert "event=signal" in line and "noise" not in out.getvalue()


def test_auto_picks_logfmt_for_pipes_and_journal_console_for_tty(tmp_path: Path) -> None:
    """auto: logfmt in a pipe, logfmt without timestamps on journald, colors on a TTY."""
    assert resolve_format("auto", io.StringIO(), {}) == ("logfmt", True)
    with (tmp_path / "journal").open("w") as fh:
        stat = os.fstat(fh.fileno())
        env = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
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


def _redact_every_pass(value: str) -> str:
    """The reference: every text pattern applied, no pre-check."""
    for pattern, replacement in _TEXT_PATTERNS:
        value = pattern.sub(replacement, value)
    return value


_FRAGMENTS = st.sampled_from(
    [
        "token", "access_token", "Refresh_Token", "client_secret", "PASSWORD", "assertion",
        "Secret", "Bearer", "basic", "OAuth", "=", ": ", '"', " ", "&", "!", "00D5g000004Xyz1",
        "AQ0AQHbwQc2nSjI2VYbkV2AbcdefGhijkLmnop", "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----", "\n", "abc.def", "call-1", "\u017fecret", "\u00e9",
        "basic x", "BEARER y", "oauth z", "Token=v", "\u017fecret=w", "password: u",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAGMENTS | st.text(max_size=6), max_size=12).map("".join))
def test_redact_pre_check_never_skips_a_match(value: str) -> None:
    """redact() skips the regex passes only for text none of them would change."""
    assert redact(value) == _redact_every_pass(value)


def test_each_value_is_redacted_once_and_plain_values_pass_through() -> None:
    """Numbers, None and ordinary strings come out as they went in; secrets in any case
    and under secret keys do not (the pre-check must not let them through)."""
    event = {
        "event": "x",
        "count": 3,
        "ratio": 0.5,
        "ok": True,
        "none": None,
        "call_id": "c-1",
        "api_key": 12345,
        "token": "t-1",
        "note": "AUTHORIZATION: BEARER abc.def.ghi and PassWord=hunter2",
        "_record": "internal",
    }
    out = dict(redact_event(None, "info", dict(event)))
    assert {k: out[k] for k in ("count", "ratio", "ok", "none", "call_id", "_record")} == {
        k: event[k] for k in ("count", "ratio", "ok", "none", "call_id", "_record")
    }
    assert out["api_key"] == out["token"] == REDACTED
    assert "abc.def.ghi" not in out["note"] and "hunter2" not in out["note"]
