"""Disposition tables: per-platform built-ins, site overrides, unknown values logged once."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from adapters.dispositions import (
    BUILTIN_TABLES,
    DispositionMap,
    Mapped,
    parse_overrides,
)
from spool.record import Disposition as D


@pytest.mark.parametrize(
    ("raw", "expected", "ambiguous"),
    [
        ("SALE", D.CONNECTED, False),
        ("CALLBK", D.CALLBACK_REQUESTED, False),
        ("DNC", D.DO_NOT_CALL, False),
        ("AA", D.VOICEMAIL, False),
        ("UNKAM", D.VOICEMAIL, True),
        ("B", D.BUSY, False),
        ("NA", D.NO_ANSWER, True),
        ("DC", D.INVALID_NUMBER, False),
        ("ADCT", D.FAILED, False),
        ("DROP", D.ABANDONED, False),
        ("PDROP", D.ABANDONED, False),
        ("AFAX", D.FAX, False),
        ("HUC18", D.FAILED, False),
        ("xfer", D.CONNECTED, False),
    ],
)
def test_vicidial_standard_statuses(raw: str, expected: D, ambiguous: bool) -> None:
    """VICIdial's standard statuses map as in dialers.md 7.3 (case-insensitive)."""
    mapped = DispositionMap("vicidial", "vicidial").lookup(raw)
    assert (mapped.disposition, mapped.ambiguous) == (expected, ambiguous)


def test_vicidial_drop_kinds_are_told_apart() -> None:
    """DROP (dialer's fault) and PDROP (callee) are both abandoned but carry a different detail."""
    m = DispositionMap("vicidial", "v")
    assert m.lookup("DROP").detail == "system"
    assert m.lookup("PDROP").detail == "callee"


def test_progress_statuses_are_not_final() -> None:
    """INCALL / ringing are progress values, not outcomes."""
    assert not DispositionMap("vicidial", "v").lookup("INCALL").final
    assert not DispositionMap("twilio", "t").lookup("ringing").final


def test_twilio_answered_by_table() -> None:
    """Twilio completed + machine is voicemail with the AnsweredBy detail; unknown is ambiguous."""
    m = DispositionMap("twilio", "t")
    assert m.lookup("completed/machine_end_beep") == Mapped(D.VOICEMAIL, "machine_end_beep")
    assert m.lookup("completed/unknown").ambiguous
    assert m.lookup("no-answer").disposition is D.NO_ANSWER


def test_cdr_table() -> None:
    """Asterisk CDR dispositions map; ANSWERED is connected but flagged ambiguous."""
    m = DispositionMap("asterisk-cdr", "cdr")
    assert m.lookup("NO ANSWER").disposition is D.NO_ANSWER
    assert m.lookup("ANSWERED") == Mapped(D.CONNECTED, "answered", True)
    assert m.lookup("CONGESTION").disposition is D.FAILED


def test_site_override_wins_over_builtin() -> None:
    """A site's table adds custom statuses and can redefine standard ones."""
    overrides, problems = parse_overrides(
        {"WN": "wrong_number", "NI": {"disposition": "rejected", "detail": "not_interested"}}
    )
    assert problems == []
    m = DispositionMap("vicidial", "v", overrides)
    assert m.lookup("wn").disposition is D.WRONG_NUMBER
    assert m.lookup("NI") == Mapped(D.REJECTED, "not_interested")


def test_unknown_value_is_unknown_and_logged_once() -> None:
    """An unknown raw value becomes unknown (never dropped) and is logged once per value."""
    m = DispositionMap("vicidial", "v")
    with capture_logs() as logs:
        first = m.lookup("ZZTOP")
        m.lookup("ZZTOP")
        m.lookup("OTHER")
    assert first.disposition is D.UNKNOWN and first.final
    events = [e for e in logs if e["event"] == "unknown_disposition"]
    assert [e["raw_disposition"] for e in events] == ["ZZTOP", "OTHER"]


def test_bad_overrides_are_all_named() -> None:
    """Every bad entry in a dispositions table is reported with its key."""
    _, problems = parse_overrides(
        {"A": "nope", "B": {"disposition": "busy", "colour": "red"}, "C": 3}
    )
    assert len(problems) == 3
    assert problems[0].startswith("dispositions.A: 'nope' is not one of")
    assert "dispositions.B" in problems[1] and "colour" in problems[1]


def test_unknown_platform_is_refused() -> None:
    """Asking for a table that does not exist fails loudly, listing the known ones."""
    with pytest.raises(ValueError, match="known:"):
        DispositionMap("genesys-x", "g")
    assert {"vicidial", "twilio", "asterisk-cdr", "vocabulary"} <= set(BUILTIN_TABLES)
