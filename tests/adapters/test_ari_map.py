"""Asterisk facts -> disposition, in the order of reference/dialers.md section 7.3."""

from __future__ import annotations

import pytest

from adapters._ari_map import CallFacts, classify
from spool.record import Disposition as D

SITE = {"SALE": (D.CONNECTED, False), "DNC": (D.DO_NOT_CALL, False)}


def var_map(raw: str) -> tuple[D, bool]:
    return SITE.get(raw, (D.UNKNOWN, False))


def decide(overrides: dict[str, D] | None = None, **facts: object) -> tuple[D, str, bool]:
    d = classify(CallFacts(**facts), overrides=overrides or {}, map_var=var_map)  # type: ignore[arg-type]
    return d.disposition, d.raw, d.ambiguous


def test_agent_disposition_wins_over_everything() -> None:
    """A disposition variable set by the agent app beats AMD, dial status and cause."""
    d = classify(
        CallFacts(disposition_var="DNC", amd_status="MACHINE", dialstatus="ANSWER", cause=16),
        overrides={},
        map_var=var_map,
    )
    assert (d.disposition, d.raw, d.from_agent) == (D.DO_NOT_CALL, "DNC", True)


def test_unknown_agent_value_is_unknown_not_dropped() -> None:
    """An agent value the site table lacks becomes unknown with the raw value kept."""
    assert decide(disposition_var="ZZZ", cause=16, ever_up=True)[:2] == (D.UNKNOWN, "ZZZ")


@pytest.mark.parametrize(
    ("amd", "expected", "ambiguous"),
    [
        ("MACHINE", D.VOICEMAIL, False),
        ("HUMAN", D.CONNECTED, False),
        ("NOTSURE", D.CONNECTED, True),
        ("HANGUP", D.ABANDONED, False),
    ],
)
def test_amd_beats_normal_clearing(amd: str, expected: D, ambiguous: bool) -> None:
    """AMDSTATUS decides before the cause: cause 16 after MACHINE is voicemail."""
    got = decide(amd_status=amd, dialstatus="ANSWER", cause=16, ever_up=True)
    assert got == (expected, f"AMDSTATUS={amd}", ambiguous)


def test_amd_detail_from_amdcause() -> None:
    """The AMDCAUSE reason becomes the detail."""
    d = classify(
        CallFacts(amd_status="MACHINE", amd_cause="LONGGREETING-1600-1500", cause=16),
        overrides={},
        map_var=var_map,
    )
    assert d.detail == "longgreeting"


@pytest.mark.parametrize(
    ("dialstatus", "cause", "expected"),
    [
        ("BUSY", 17, D.BUSY),
        ("NOANSWER", 19, D.NO_ANSWER),
        ("CANCEL", 16, D.CANCELED),
        ("CONGESTION", 34, D.FAILED),
        ("CHANUNAVAIL", 20, D.FAILED),
        ("CHANUNAVAIL", 1, D.INVALID_NUMBER),
        ("CHANUNAVAIL", 28, D.INVALID_NUMBER),
        ("DONTCALL", None, D.DO_NOT_CALL),
        ("INVALIDARGS", None, D.FAILED),
        ("ANSWER", 16, D.CONNECTED),
        # NOANSWER is app_dial's fallback for unmapped causes: the cause is preferred.
        ("NOANSWER", 1, D.INVALID_NUMBER),
        ("NOANSWER", 34, D.FAILED),
    ],
)
def test_dialstatus(dialstatus: str, cause: int | None, expected: D) -> None:
    """Final Dial statuses map per the Asterisk table, refined by the cause where documented."""
    assert decide(dialstatus=dialstatus, cause=cause)[0] is expected


@pytest.mark.parametrize(
    ("facts", "expected", "raw"),
    [
        # 127 (interworking): canceled on our cancel, which PJSIP shows as SIP 487 ...
        ({"cause": 127, "tech_cause": 487}, D.CANCELED, "CAUSE=127;SIP=487"),
        ({"cause": 127, "cancelled_by_us": True}, D.CANCELED, "CAUSE=127"),
        # ... else a carrier / interworking failure, not an unanswered ring
        ({"cause": 127}, D.FAILED, "CAUSE=127"),
        # causes that say nothing alone, or one the table does not know: NOANSWER stands
        ({"cause": 16}, D.NO_ANSWER, "DIALSTATUS=NOANSWER;CAUSE=16"),
        ({"cause": 0}, D.NO_ANSWER, "DIALSTATUS=NOANSWER;CAUSE=0"),
        ({"cause": 99}, D.NO_ANSWER, "DIALSTATUS=NOANSWER;CAUSE=99"),
    ],
)
def test_noanswer_fallback_gives_way_to_cause_127(
    facts: dict[str, object], expected: D, raw: str
) -> None:
    """Dial NOANSWER is the fallback for any unmapped cause (dialers.md 1.1, 7.4 item 2:
    "prefer ChannelDestroyed.cause/tech_cause"); cause 127 is canceled if we cancelled
    (SIP 487), else failed (7.3). NOANSWER + 127 used to stay no_answer."""
    d = classify(CallFacts(dialstatus="NOANSWER", **facts), overrides={}, map_var=var_map)  # type: ignore[arg-type]
    assert (d.disposition, d.raw, d.ambiguous) == (expected, raw, False)


@pytest.mark.parametrize(
    ("facts", "expected", "ambiguous"),
    [
        ({"cause": 16, "ever_up": False}, D.NO_ANSWER, True),
        ({"cause": 16, "ever_up": True}, D.CONNECTED, False),
        ({"cause": 17}, D.BUSY, False),
        ({"cause": 18}, D.NO_ANSWER, False),
        ({"cause": 1}, D.INVALID_NUMBER, False),
        ({"cause": 22}, D.INVALID_NUMBER, False),
        ({"cause": 21}, D.REJECTED, True),
        ({"cause": 127}, D.FAILED, False),
        ({"cause": 127, "tech_cause": 487}, D.CANCELED, False),
        ({"cause": 127, "cancelled_by_us": True}, D.CANCELED, False),
        ({"cause": 16, "cancelled_by_us": True}, D.CANCELED, False),
        ({"cause": 38}, D.FAILED, False),
        ({"cause": 0}, D.UNKNOWN, True),
        ({"cause": 99}, D.UNKNOWN, False),
        ({}, D.UNKNOWN, True),
    ],
)
def test_cause_with_answer_state(facts: dict[str, object], expected: D, ambiguous: bool) -> None:
    """Q.850 causes map with the answer state; 16 alone on an unanswered channel is ambiguous."""
    got, _raw, amb = decide(**facts)
    assert (got, amb) == (expected, ambiguous)


def test_raw_keeps_cause_and_sip_code() -> None:
    """The raw disposition keeps the dial status, cause and SIP code."""
    assert decide(dialstatus="BUSY", cause=17)[1] == "DIALSTATUS=BUSY;CAUSE=17"
    assert decide(cause=17, tech_cause=486)[1] == "CAUSE=17;SIP=486"


def test_site_overrides_tokens() -> None:
    """A site can override a built-in row by its token."""
    over = {"AMDSTATUS=NOTSURE": D.UNKNOWN, "CAUSE=21": D.FAILED}
    assert decide(over, amd_status="NOTSURE", cause=16)[0] is D.UNKNOWN
    assert decide(over, cause=21)[:1] == (D.FAILED,)
