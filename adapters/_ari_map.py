"""Asterisk call facts -> normalized disposition (reference/dialers.md sections 1 and 7.3).

Pure: no sockets, no clock. :func:`classify` evaluates in the documented order

1. the agent's or app's disposition (a channel variable set by the dialplan or agent app);
2. the AMD result (``AMDSTATUS``, from ``ChannelVarset`` or the ``StasisStart`` args);
3. the final ``Dial.dialstatus``;
4. the ``ChannelDestroyed`` cause together with whether the call was ever ``Up``.

Each step produces a raw token (``AMDSTATUS=MACHINE``, ``DIALSTATUS=BUSY``,
``CAUSE=17``) kept as ``raw_disposition``; a site override for that token (or, for
step 1, for the variable's value) wins over the built-in row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from spool.record import Disposition

__all__ = ["BUILTIN_TOKENS", "CallFacts", "Decision", "classify"]

D = Disposition

# Q.850 causes (include/asterisk/causes.h), section 7.3 rows. 16/31/0/127 and the
# NOANSWER fallback depend on context and are handled in code.
_CAUSES: dict[int, tuple[Disposition, bool]] = {
    1: (D.INVALID_NUMBER, False),  # UNALLOCATED (SIP 404/485/604)
    22: (D.INVALID_NUMBER, False),  # NUMBER_CHANGED (SIP 410)
    28: (D.INVALID_NUMBER, False),  # INVALID_NUMBER_FORMAT (SIP 484)
    17: (D.BUSY, False),  # USER_BUSY (SIP 486/600)
    18: (D.NO_ANSWER, False),  # NO_USER_RESPONSE (SIP 408)
    19: (D.NO_ANSWER, False),  # NO_ANSWER (SIP 480/483); also the dial timeout
    # CALL_REJECTED: callee decline, carrier block, or auth failure (SIP 603/401/403/407),
    # section 7.4 item 4, so it is flagged ambiguous.
    21: (D.REJECTED, True),
    20: (D.FAILED, False),  # SUBSCRIBER_ABSENT
    3: (D.FAILED, False),  # NO_ROUTE_DESTINATION
    44: (D.FAILED, False),  # REQUESTED_CHAN_UNAVAIL
    27: (D.FAILED, False),  # DESTINATION_OUT_OF_ORDER
    34: (D.FAILED, False),  # NORMAL_CIRCUIT_CONGESTION
    42: (D.FAILED, False),  # SWITCH_CONGESTION
    41: (D.FAILED, False),  # NORMAL_TEMPORARY_FAILURE
    38: (D.FAILED, False),  # NETWORK_OUT_OF_ORDER
    29: (D.FAILED, False),  # FACILITY_REJECTED (SIP 501)
    58: (D.FAILED, False),  # BEARERCAPABILITY_NOTAVAIL (SIP 488/606)
    102: (D.FAILED, False),  # RECOVERY_ON_TIMER_EXPIRE (SIP 504)
    # ANSWERED_ELSEWHERE: another device took the call; this attempt was cancelled.
    26: (D.CANCELED, False),
}
_NORMAL = frozenset({16, 31})  # NORMAL_CLEARING, NORMAL_UNSPECIFIED: say nothing alone
_INVALID_WITH_CHANUNAVAIL = frozenset({1, 28, 22})  # VICIdial's ADC rule, section 7.3

# Final Dial statuses (apps/app_dial.c, main/dial.c). NOANSWER and CHANUNAVAIL are
# refined by the cause in code.
_DIALSTATUS: dict[str, tuple[Disposition, bool]] = {
    "ANSWER": (D.CONNECTED, False),
    "BUSY": (D.BUSY, False),
    "NOANSWER": (D.NO_ANSWER, False),
    "CANCEL": (D.CANCELED, False),
    "ABORT": (D.CANCELED, False),
    "CONGESTION": (D.FAILED, False),
    "CHANUNAVAIL": (D.FAILED, False),
    "DONTCALL": (D.DO_NOT_CALL, False),  # privacy screening: the callee refused
    "TORTURE": (D.REJECTED, False),
    "INVALIDARGS": (D.FAILED, False),  # a dialplan/config error
}
# Progress values and the ones that only say "the dialplan went on".
DIALSTATUS_PROGRESS = frozenset({"", "RINGING", "PROGRESS", "PROCEEDING"})
_DIALSTATUS_PASS = frozenset({"CONTINUE", "GOTO"})

_AMD: dict[str, tuple[Disposition, bool, str | None]] = {
    "MACHINE": (D.VOICEMAIL, False, None),
    "HUMAN": (D.CONNECTED, False, None),
    # NOTSURE (AMDCAUSE TOOLONG / NOAUDIODATA): answered, answerer unknown.
    "NOTSURE": (D.CONNECTED, True, None),
    # HANGUP: the callee hung up during analysis.
    "HANGUP": (D.ABANDONED, False, "callee"),
}

BUILTIN_TOKENS: frozenset[str] = frozenset(
    {f"AMDSTATUS={k}" for k in _AMD}
    | {f"DIALSTATUS={k}" for k in _DIALSTATUS}
    | {f"CAUSE={k}" for k in (*_CAUSES, *_NORMAL, 0, 127)}
)


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the event stream told us about one call."""

    disposition_var: str | None = None
    amd_status: str | None = None
    amd_cause: str | None = None
    dialstatus: str | None = None  # last final Dial status of the call's leg
    cause: int | None = None  # ChannelDestroyed.cause of the call's leg
    cause_txt: str | None = None
    tech_cause: int | None = None  # SIP response code for PJSIP, when present
    ever_up: bool = False
    # A local (soft) hangup was requested before the call was answered: we
    # cancelled it (ARI DELETE, dialplan timeout), section 7.4 item 3.
    cancelled_by_us: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    disposition: Disposition
    raw: str
    ambiguous: bool = False
    detail: str | None = None
    from_agent: bool = False  # step 1: an agent or the app dispositioned it


# Site overrides: token or disposition-variable value -> (disposition, ambiguous).
Overrides = Mapping[str, Disposition]
VarMapper = Callable[[str], tuple[Disposition, bool]]


def classify(facts: CallFacts, *, overrides: Overrides, map_var: VarMapper) -> Decision:
    """The one normalized disposition for a finished call (section 7.3 order)."""
    if facts.disposition_var:
        value = facts.disposition_var.strip()
        disposition, ambiguous = map_var(value)
        return Decision(disposition, value, ambiguous, None, from_agent=True)

    if facts.amd_status:
        status = facts.amd_status.strip().upper()
        token = f"AMDSTATUS={status}"
        if token in overrides:
            return Decision(overrides[token], token, False, _amd_detail(facts))
        if status in _AMD:
            disposition, ambiguous, detail = _AMD[status]
            return Decision(disposition, token, ambiguous, detail or _amd_detail(facts))
        # An AMDSTATUS we do not know: fall through to signalling, but say so.

    cause_decision = _from_cause(facts, overrides)
    if facts.dialstatus and facts.dialstatus not in DIALSTATUS_PROGRESS:
        status = facts.dialstatus.strip().upper()
        token = f"DIALSTATUS={status}"
        if token in overrides:
            return Decision(overrides[token], _with_cause(token, facts), False, None)
        # NOANSWER is also the fallback for any unmapped cause (section 7.4 item 2:
        # "prefer ChannelDestroyed.cause/tech_cause"): a cause with a meaning of its
        # own wins, 127 included (canceled on our cancel / SIP 487, else failed, 7.3).
        # A cause that says nothing alone (16, 31, 0) or one the table does not know
        # leaves NOANSWER's no_answer standing.
        if status == "NOANSWER" and cause_decision is not None and _specific(facts.cause):
            return cause_decision
        if status == "CHANUNAVAIL" and facts.cause in _INVALID_WITH_CHANUNAVAIL:
            return Decision(D.INVALID_NUMBER, _with_cause(token, facts))
        if status in _DIALSTATUS:
            disposition, ambiguous = _DIALSTATUS[status]
            return Decision(disposition, _with_cause(token, facts), ambiguous)
        # CONTINUE / GOTO / unknown: the cause decides.
    if cause_decision is not None:
        return cause_decision
    # Nothing usable arrived (e.g. the socket dropped before ChannelDestroyed).
    return Decision(D.UNKNOWN, "NO_CAUSE", ambiguous=True)


def _specific(cause: int | None) -> bool:
    """A cause that names a reason of its own (not normal clearing, not unknown to us)."""
    if cause == 127:
        return True
    return cause in _CAUSES and _CAUSES[cause][0] is not D.NO_ANSWER


def _amd_detail(facts: CallFacts) -> str | None:
    if facts.amd_cause:
        return facts.amd_cause.split("-", 1)[0].lower()[:255] or None
    return None


def _with_cause(token: str, facts: CallFacts) -> str:
    return token if facts.cause is None else f"{token};CAUSE={facts.cause}"


def _from_cause(facts: CallFacts, overrides: Overrides) -> Decision | None:
    cause = facts.cause
    if cause is None:
        return None
    token = f"CAUSE={cause}"
    raw = token if facts.tech_cause is None else f"{token};SIP={facts.tech_cause}"
    if token in overrides:
        return Decision(overrides[token], raw, False)
    if cause in _NORMAL or cause == 0:
        if facts.cancelled_by_us and not facts.ever_up:
            return Decision(D.CANCELED, raw)
        if facts.ever_up:
            # Answered and no AMD / disposition said otherwise: connected. Cause 0
            # ("Unknown") after answer is the same, but flagged.
            return Decision(D.CONNECTED, raw, ambiguous=cause == 0)
        if cause == 0:
            return Decision(D.UNKNOWN, raw, ambiguous=True)
        # Normal clearing on a channel that never went Up: Asterisk's CDR calls it
        # NO ANSWER; the cause alone says nothing about who ended it (section 7.4 item 1).
        return Decision(D.NO_ANSWER, raw, ambiguous=True)
    if cause == 127:
        # SIP 487 Request Terminated maps to 127 in PJSIP: our own cancel shows up as
        # "interworking" (section 1.2 / 7.4 item 3).
        if facts.cancelled_by_us or facts.tech_cause == 487:
            return Decision(D.CANCELED, raw)
        return Decision(D.FAILED, raw)
    if cause in _CAUSES:
        disposition, ambiguous = _CAUSES[cause]
        return Decision(disposition, raw, ambiguous)
    # A cause the table does not know: kept raw, normalized to unknown.
    return Decision(D.UNKNOWN, raw)
