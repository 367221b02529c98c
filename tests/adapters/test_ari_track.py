"""The ARI channel-lifecycle state machine (adapters._ari_track)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adapters._ari_track import (
    AriEventError,
    AriTracker,
    DroppedCall,
    FinishedCall,
    TrackerConfig,
    parse_ari_time,
)
from tests.adapters.ari_frames import channel, ev, originate_call


def run(tracker: AriTracker, events: list[dict[str, Any]], now: float = 0.0) -> list[Any]:
    out = []
    for e in events:
        got = tracker.feed(e, now)
        if got is not None:
            out.append(got)
    return out


def test_originate_with_amd_machine_yields_one_call() -> None:
    """An originated call answered by a machine ends as one finished call with its facts."""
    t = AriTracker()
    [done] = run(t, originate_call("att-1", amd="MACHINE"))
    assert isinstance(done, FinishedCall)
    assert done.call_id == "att-1"
    assert done.facts.amd_status == "MACHINE" and done.facts.cause == 16
    assert done.facts.ever_up
    assert done.vars["LEAD_ID"] == "48213"
    assert done.ended_at == datetime(2025, 3, 14, 10, 2, 20, tzinfo=UTC)
    assert done.source_seq == int(done.ended_at.timestamp()) * 1_000_000
    assert done.answered_at == datetime(2025, 3, 14, 10, 2, tzinfo=UTC)
    assert t.open_calls == 0


def test_unanswered_originate_is_not_up() -> None:
    """A channel that only rang has ever_up False (cause 16 then means no answer)."""
    [done] = run(AriTracker(), originate_call("att-2", amd=None, answered=False))
    assert not done.facts.ever_up and done.answered_at is None


def test_dial_legs_are_one_call_and_leg_cause_wins() -> None:
    """A Dial caller and its peer are one call; the dialed leg's status and cause describe it."""
    agent = channel("agent-1", "Up", name="PJSIP/agent7-00000001")
    peer = channel("cust-1", "Down", name="PJSIP/carrier-00000002")
    events = [
        ev("StasisStart", 1.0, args=[], channel=agent),
        ev("ChannelVarset", 1.1, variable="__LEAD_ID", value="00Q5e000001AbCdEAF", channel=agent),
        ev("Dial", 2.0, caller=agent, peer=peer, dialstatus="", dialstring="carrier/+15125550199"),
        ev("Dial", 9.0, caller=agent, peer={**peer, "state": "Busy"}, dialstatus="BUSY"),
        ev("ChannelDestroyed", 9.1, cause=17, cause_txt="User busy", tech_cause=486, channel=peer),
        ev("ChannelDestroyed", 10.0, cause=16, cause_txt="Normal Clearing", channel=agent),
    ]
    t = AriTracker()
    [done] = run(t, events)
    assert done.call_id == "agent-1"
    assert done.facts.dialstatus == "BUSY"
    assert (done.facts.cause, done.facts.tech_cause) == (17, 486)
    assert done.dialed == "+15125550199"
    assert done.vars["LEAD_ID"] == "00Q5e000001AbCdEAF"
    assert t.open_calls == 0


def test_late_leg_event_does_not_start_a_new_call() -> None:
    """Events for a leg after its call ended are ignored, not taken for a new call."""
    agent = channel("a-2", "Up")
    peer = channel("p-2", "Up")
    t = AriTracker()
    run(t, [ev("Dial", 1.0, caller=agent, peer=peer, dialstatus="ANSWER")])
    [done] = run(t, [ev("ChannelDestroyed", 5.0, cause=16, cause_txt="x", channel=agent)])
    assert done.facts.ever_up and done.facts.dialstatus == "ANSWER"
    assert run(t, [ev("ChannelDestroyed", 5.1, cause=16, cause_txt="x", channel=peer)]) == []
    assert t.open_calls == 0


def test_redelivered_destroy_is_ignored() -> None:
    """A repeated ChannelDestroyed does not produce a second call."""
    t = AriTracker()
    events = originate_call("att-3")
    assert len(run(t, events)) == 1
    assert run(t, events[-1:]) == []


def test_soft_hangup_before_answer_marks_cancel() -> None:
    """A local (soft) hangup before answer is recorded as our cancel."""
    ringing = channel("att-4", "Ringing")
    t = AriTracker()
    [done] = run(
        t,
        [
            ev("ChannelStateChange", 1.0, channel=ringing),
            ev("ChannelHangupRequest", 30.0, soft=True, cause=32, channel=ringing),
            ev("ChannelDestroyed", 30.1, cause=127, cause_txt="Interworking", channel=ringing),
        ],
    )
    assert done.facts.cancelled_by_us and done.facts.cause == 127


def test_channelvars_snapshot_and_agent_disposition() -> None:
    """Variables from channelvars snapshots and ChannelVarset both reach the call."""
    events = originate_call("att-5", lead=None, disposition="SALE", agent="agent7")
    events[-1]["channel"]["channelvars"] = {"LEAD_ID": "99", "UNRELATED": "x"}
    [done] = run(AriTracker(), events)
    assert done.facts.disposition_var == "SALE"
    assert dict(done.vars) == {
        "LEAD_ID": "99",
        "AGENT_ID": "agent7",
        "DISPOSITION": "SALE",
        "AMDSTATUS": "MACHINE",
        "AMDCAUSE": "INITIALSILENCE-2500-2500",
    }


def test_helper_channels_are_ignored() -> None:
    """Snoop/Announcer-style helper channels never become calls."""
    snoop = channel("snoop-1", "Up", name="Snoop/att-1-00000003")
    t = AriTracker()
    events = [
        ev("StasisStart", 1.0, args=[], channel=snoop),
        ev("ChannelDestroyed", 2.0, cause=16, cause_txt="x", channel=snoop),
    ]
    assert run(t, events) == [] and t.open_calls == 0


def test_require_var_drops_non_dialer_channels() -> None:
    """With require_var, a channel that never carried it ends without an outcome."""
    t = AriTracker(TrackerConfig(require_var="LEAD_ID"))
    [got] = run(t, originate_call("agent-login", lead=None))
    assert isinstance(got, DroppedCall) and got.reason == "not_a_call"
    [kept] = run(t, originate_call("att-6", lead="1"))
    assert isinstance(kept, FinishedCall)


def test_memory_is_bounded_by_capacity_and_ttl() -> None:
    """Open channels are capped; the least recently active are dropped, idle ones expire."""
    t = AriTracker(TrackerConfig(max_calls=3, ttl_s=60.0))
    for i in range(5):
        t.feed(ev("ChannelCreated", 1.0 + i, channel=channel(f"c{i}")), now=float(i))
    assert t.open_calls == 3
    dropped = t.expire(now=10.0)
    assert [(d.call_id, d.reason) for d in dropped] == [("c0", "capacity"), ("c1", "capacity")]
    t.feed(ev("ChannelStateChange", 9.0, channel=channel("c2", "Ringing")), now=40.0)
    dropped = t.expire(now=64.5)
    assert [(d.call_id, d.reason) for d in dropped] == [("c3", "ttl"), ("c4", "ttl")]
    assert t.open_calls == 1
    # A dropped channel's late destroy is not a new call.
    late = ev("ChannelDestroyed", 99.0, cause=16, cause_txt="x", channel=channel("c3"))
    assert t.feed(late, 65.0) is None


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"timestamp": "x"}, "type is missing"),
        (ev("ChannelDestroyed", 1.0, cause_txt="x", channel=channel("z")), "cause is missing"),
        (
            {**ev("ChannelDestroyed", 1.0, cause=16, channel=channel("z")), "timestamp": "soon"},
            "not ISO 8601",
        ),
        (ev("Dial", 1.0, dialstatus="BUSY"), "peer is missing"),
        (ev("ChannelVarset", 1.0, value="1", channel=channel("z")), "variable is missing"),
        (ev("StasisStart", 1.0, channel={"name": "PJSIP/x"}), "channel.id is missing"),
    ],
)
def test_malformed_events_are_named(event: dict[str, Any], reason: str) -> None:
    """Malformed events are refused with a reason naming the field."""
    with pytest.raises(AriEventError, match=reason):
        AriTracker().feed(event, 0.0)


def test_ari_time_format() -> None:
    """ARI's %FT%T.%q%z timestamps parse with their offset."""
    assert parse_ari_time("2025-03-14T10:02:11.512+0000") == datetime(
        2025, 3, 14, 10, 2, 11, 512000, tzinfo=UTC
    )
    with pytest.raises(AriEventError, match="no UTC offset"):
        parse_ari_time("2025-03-14T10:02:11.512")


def test_global_varset_and_unknown_events_are_harmless() -> None:
    """Global ChannelVarset (no channel) and unrelated event types change nothing."""
    t = AriTracker()
    assert t.feed(ev("ChannelVarset", 1.0, variable="X", value="1"), 0.0) is None
    assert t.feed(ev("BridgeCreated", 1.0, bridge={"id": "b"}), 0.0) is None
    assert t.open_calls == 0


def test_local_pair_is_one_call_and_companion_state_is_ignored() -> None:
    """A Local ;1/;2 pair dialing a customer who never answers is one no-answer call."""
    one = channel("loc-1", "Up", name="Local/5125550142@dialer-00000007;1")
    two = channel("loc-2", "Up", name="Local/5125550142@dialer-00000007;2")
    cust = channel("cust-7", "Ringing")
    events = [
        ev("StasisStart", 1.0, args=[], channel=one),
        ev("ChannelCreated", 1.1, channel=two),
        ev("ChannelVarset", 1.2, variable="LEAD_ID", value="77", channel=two),
        ev("Dial", 1.3, caller=two, peer=cust, dialstatus="", dialstring="PJSIP/5125550142@c"),
        ev("Dial", 31.0, caller=two, peer=cust, dialstatus="NOANSWER"),
        ev("ChannelDestroyed", 31.1, cause=19, cause_txt="User alerting, no answer", channel=cust),
        ev("ChannelDestroyed", 31.2, cause=16, cause_txt="Normal Clearing", channel=two),
        ev("ChannelDestroyed", 31.3, cause=16, cause_txt="Normal Clearing", channel=one),
    ]
    t = AriTracker()
    [done] = run(t, events)
    assert done.call_id == "loc-1" and done.vars["LEAD_ID"] == "77"
    assert done.facts.dialstatus == "NOANSWER" and done.facts.cause == 19
    assert not done.facts.ever_up  # the Local halves were Up; the customer never was
    assert t.open_calls == 0


def test_stasis_args_are_named_by_config() -> None:
    """StasisStart args become the configured variables; a non-AMD first arg is ignored."""
    up = channel("att-a", "Up")
    t = AriTracker(TrackerConfig(stasis_args=("AMDSTATUS", "AMDCAUSE", "LEAD_ID")))
    t.feed(ev("StasisStart", 1.0, args=["HUMAN", "HUMAN-300-700", "L-5"], channel=up), 0.0)
    [done] = run(t, [ev("ChannelDestroyed", 9.0, cause=16, cause_txt="x", channel=up)])
    assert done.vars["LEAD_ID"] == "L-5" and done.facts.amd_status == "HUMAN"
    other = channel("att-b", "Up")
    t.feed(ev("StasisStart", 1.0, args=["campaign-7", "x"], channel=other), 0.0)
    [done] = run(t, [ev("ChannelDestroyed", 9.0, cause=16, cause_txt="x", channel=other)])
    assert done.facts.amd_status is None and "AMDCAUSE" not in done.vars


def test_subscribe_all_peer_seen_before_dial_is_still_a_leg() -> None:
    """With subscribeAll the dialed channel is created before the Dial: still one call."""
    caller = channel("in-1", "Up", name="PJSIP/trunk-00000010")
    agent = channel("ag-1", "Down", name="PJSIP/agent7-00000011")
    events = [
        ev("StasisStart", 1.0, args=[], channel=caller),
        ev("ChannelCreated", 1.5, channel=agent),
        ev("ChannelVarset", 1.6, variable="AGENT_ID", value="agent7", channel=agent),
        ev("Dial", 1.7, caller=caller, peer=agent, dialstatus=""),
        ev("ChannelStateChange", 5.0, channel={**agent, "state": "Up"}),
        ev("Dial", 5.0, caller=caller, peer={**agent, "state": "Up"}, dialstatus="ANSWER"),
        ev("ChannelDestroyed", 65.0, cause=16, cause_txt="Normal Clearing", channel=agent),
        ev("ChannelDestroyed", 65.1, cause=16, cause_txt="Normal Clearing", channel=caller),
    ]
    t = AriTracker()
    [done] = run(t, events)
    assert done.call_id == "in-1" and done.vars["AGENT_ID"] == "agent7"
    assert done.facts.dialstatus == "ANSWER" and done.facts.ever_up
    assert t.open_calls == 0
