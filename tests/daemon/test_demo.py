"""`dispo-sync demo`: the synthetic dialer's plan, the verifier, and the whole chain end to end."""

from __future__ import annotations

import io
import itertools
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from daemon.cli import main
from daemon.demo._dialer import WEBHOOK_SOURCE, WS_SOURCE, DialerCall, plan_calls
from daemon.demo._run import demo
from daemon.demo._verify import expected_from, live_latencies, percentile, verify

_T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _plan(total: int = 2000, seed: int = 1) -> list[DialerCall]:
    return plan_calls(total, leads=300, rate=20, start=_T0, rng=random.Random(seed))


# ----------------------------------------------------------------- end to end


def test_demo_verifies_every_record(capsys: pytest.CaptureFixture[str]) -> None:
    """A short demo over websocket + VICIdial webhook: exit 0, every Task and Lead verified."""
    assert main(["demo", "--seconds", "8", "--rate", "20"]) == 0
    out = capsys.readouterr().out
    assert "all records verified" in out
    assert "reports the daemon acknowledged" in out
    tasks = re.search(r"Tasks: one per call, newest version.*?(\d+)/(\d+)", out, re.S)
    assert tasks is not None and tasks.group(1) == tasks.group(2) and int(tasks.group(1)) > 100
    leads = re.search(r"Leads: newest outcome.*?(\d+)/(\d+)", out, re.S)
    assert leads is not None and leads.group(1) == leads.group(2)
    # Both intake channels and the live rail carried outcomes.
    assert "naive: one call per Task/Lead write" in out
    latency = re.search(r"live latency p50 / p99.*?(\d+) / (\d+) ms \((\d+) calls\)", out, re.S)
    assert latency is not None and int(latency.group(3)) > 0


async def test_demo_fails_when_the_org_refuses_records() -> None:
    """A Task the org refuses for good (validation rule) makes the demo exit 1, naming it."""
    out = io.StringIO()
    rule = {
        "object": "Task",
        "field": "CallDisposition",
        "condition": "equals",
        "value": "connected",
        "message": "demo: connected calls are refused",
    }
    assert await demo(3, 20, out, org_rules=[rule]) == 1
    text = out.getvalue()
    assert "verification FAILED" in text and "all records verified" not in text
    assert re.search(r"Task demo-(ws|vicidial):demo-\d+: missing in the org", text)
    assert "dead-lettered by the daemon (FIELD_CUSTOM_VALIDATION_EXCEPTION" in text


def test_demo_refuses_nonsense_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """--seconds and --rate must be positive."""
    assert main(["demo", "--seconds", "0"]) == 2
    assert "must be positive" in capsys.readouterr().out


# ----------------------------------------------------------------- the plan


def test_plan_is_reproducible_and_paced() -> None:
    """The same seed gives the same plan; slot n ends n/rate seconds after the start."""
    a, b = _plan(300), _plan(300)
    assert a == b
    assert [c.seq for c in a] == list(range(300))
    paced = [c for c in a if c.kind != "duplicate"]
    assert all(c.ended_at == _T0 + timedelta(seconds=c.seq / 20) for c in paced)


def test_plan_has_a_realistic_mix() -> None:
    """No-answer, voicemail and busy dominate; DNC and callbacks occur; agent calls are live."""
    calls = [c for c in _plan() if c.kind == "new"]
    mix = Counter(c.disposition for c in calls)
    common = mix["no_answer"] + mix["voicemail"] + mix["busy"]
    assert common > len(calls) / 2
    assert mix["do_not_call"] > 0 and mix["callback_requested"] > 0 and mix["connected"] > 0
    for c in calls:
        assert c.live == (c.disposition in {"connected", "callback_requested", "do_not_call"})
        assert (c.callback_at is not None) == (c.disposition == "callback_requested")
    channels = Counter(c.channel for c in calls)
    assert abs(channels["ws"] - channels["webhook"]) < len(calls) / 10


def test_plan_repeats_leads_duplicates_and_versions() -> None:
    """Leads get several calls; some reports are re-sent as is; some calls get a newer version."""
    plan = _plan()
    kinds = Counter(c.kind for c in plan)
    assert kinds["duplicate"] > 20 and kinds["update"] > 20
    assert max(Counter(c.lead for c in plan if c.kind == "new").values()) > 1
    first: dict[str, DialerCall] = {}
    for c in plan:
        first.setdefault(c.external_key, c)
        if c.kind == "update":
            original = first[c.external_key]
            assert (c.lead, c.channel) == (original.lead, original.channel)
            assert c.ended_at > original.ended_at and c.live
        if c.kind == "duplicate":
            assert any(
                p.seq < c.seq
                and (p.external_key, p.disposition, p.ended_at)
                == (c.external_key, c.disposition, c.ended_at)
                for p in plan
            )


def test_plan_never_ties_a_leads_newest_outcome() -> None:
    """Distinct reports for one Lead are at least 2 s apart (VICIdial epochs are whole seconds)."""
    by_lead: dict[str, list[datetime]] = {}
    for c in _plan():
        if c.kind != "duplicate":
            by_lead.setdefault(c.lead, []).append(c.ended_at)
    for times in by_lead.values():
        times.sort()
        assert all(b - a >= timedelta(seconds=2) for a, b in itertools.pairwise(times))


def test_plan_refuses_too_few_leads() -> None:
    """A Lead pool too small for the rate is refused with a clear error."""
    with pytest.raises(ValueError, match="too few"):
        plan_calls(200, leads=3, rate=50, start=_T0, rng=random.Random(0))


def test_vicidial_request_uses_the_right_url_and_token() -> None:
    """Agent calls go to the Dispo Call URL with dispo+user, others to No Agent with status."""
    plan = _plan(400)
    live = next(c for c in plan if c.channel == "webhook" and c.disposition == "callback_requested")
    kind, query = live.vicidial_request("tok")
    assert kind == "dispo" and query["dispo"] == "CALLBK" and query["user"] == live.agent_id
    assert query["token"] == "tok" and query["lead_id"] == live.lead
    assert query["epoch"] == str(int(live.ended_at.timestamp()))
    assert "callback_datetime" in query
    quiet = next(c for c in plan if c.channel == "webhook" and c.disposition == "busy")
    kind, query = quiet.vicidial_request("tok")
    assert kind == "no-agent" and query["status"] == "B" and "user" not in query
    assert quiet.external_key == f"{WEBHOOK_SOURCE}:{quiet.call_id}"


# ----------------------------------------------------------------- the verifier


def _call(seq: int, call_id: str, lead: str, disposition: str, kind: str = "new") -> DialerCall:
    return DialerCall(
        seq=seq,
        kind=kind,  # type: ignore[arg-type]
        channel="ws",
        call_id=call_id,
        lead=lead,
        disposition=disposition,
        status="",
        ended_at=_T0 + timedelta(seconds=seq * 3),
        agent_id="a1" if disposition in {"connected", "do_not_call"} else None,
    )


_ACKED = [
    _call(0, "c1", "L1", "voicemail"),
    _call(1, "c2", "L2", "do_not_call"),
    _call(2, "c1", "L1", "connected", "update"),  # newer version of c1
    _call(3, "c3", "L2", "busy"),  # L2's newest outcome; DNC stays
    _call(3, "c3", "L2", "busy", "duplicate"),
]


def _org() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    tasks: list[dict[str, object]] = [
        {"Call_Id__c": f"{WS_SOURCE}:c1", "CallDisposition": "connected"},
        {"Call_Id__c": f"{WS_SOURCE}:c2", "CallDisposition": "do_not_call"},
        {"Call_Id__c": f"{WS_SOURCE}:c3", "CallDisposition": "busy"},
        {"Call_Id__c": "other:x", "CallDisposition": "busy"},  # not the demo's
    ]
    leads: list[dict[str, object]] = [
        {"Dialer_Lead_Id__c": "L1", "Last_Call_Outcome__c": "connected", "DoNotCall": False},
        {"Dialer_Lead_Id__c": "L2", "Last_Call_Outcome__c": "busy", "DoNotCall": True},
        {"Dialer_Lead_Id__c": "L3", "Last_Call_Outcome__c": None, "DoNotCall": False},
    ]
    return tasks, leads


def _verify(tasks: list[dict[str, object]], leads: list[dict[str, object]]) -> list[str]:
    result = verify(expected_from(_ACKED), tasks, leads, sources=(WS_SOURCE, WEBHOOK_SOURCE))
    assert result.ok == (not result.failures)
    return result.failures


def test_verifier_accepts_a_correct_org() -> None:
    """Newest version per call and per Lead, one Task each, DNC kept: no failures."""
    tasks, leads = _org()
    result = verify(expected_from(_ACKED), tasks, leads, sources=(WS_SOURCE,))
    assert result.ok, result.failures
    assert (result.tasks_ok, result.leads_ok, result.dnc_ok) == (3, 2, 1)


def test_verifier_names_each_kind_of_failure() -> None:
    """Missing, duplicated or stale Tasks, stale Leads and wrong DoNotCall are each reported."""
    tasks, leads = _org()
    assert _verify(tasks[1:], leads) == [f"Task {WS_SOURCE}:c1: missing in the org"]
    assert _verify([*tasks, tasks[2]], leads) == [f"Task {WS_SOURCE}:c3: 2 Tasks (duplicates)"]
    stale = [{**tasks[0], "CallDisposition": "voicemail"}, *tasks[1:]]
    assert "newest version says 'connected'" in _verify(stale, leads)[0]
    old_lead = [{**leads[0], "Last_Call_Outcome__c": "voicemail"}, *leads[1:]]
    assert "Lead L1: Last_Call_Outcome__c 'voicemail'" in _verify(tasks, old_lead)[0]
    unflagged: list[dict[str, object]] = [leads[0], {**leads[1], "DoNotCall": False}, leads[2]]
    assert _verify(tasks, unflagged) == ["Lead L2: asked not to be called, DoNotCall not set"]
    wrong = [*leads[:2], {**leads[2], "DoNotCall": True}]
    assert _verify(tasks, wrong) == ["Lead L3: DoNotCall set but no call asked for it"]
    extra: list[dict[str, object]] = [
        *tasks,
        {"Call_Id__c": f"{WS_SOURCE}:zz", "CallDisposition": "busy"},
    ]
    assert "never acknowledged" in _verify(extra, leads)[0]


def test_verifier_fails_on_unacknowledged_reports() -> None:
    """A report the daemon never acknowledged fails the run, naming it and why."""
    tasks, leads = _org()
    result = verify(
        expected_from(_ACKED),
        tasks,
        leads,
        sources=(WS_SOURCE,),
        not_acknowledged={"evt-9": "HTTP 503"},
    )
    assert not result.ok
    assert result.failures == ["report evt-9 was not acknowledged by the daemon: HTTP 503"]


def test_live_latency_is_measured_from_report_to_task() -> None:
    """Each live call's newest version: the Task's LastModifiedDate minus when it was reported."""
    expected = expected_from(_ACKED)
    assert expected.live_calls == {f"{WS_SOURCE}:c1": "evt-2", f"{WS_SOURCE}:c2": "evt-1"}
    tasks, _ = _org()
    tasks[0]["LastModifiedDate"] = "2026-11-24T12:00:06.250+0000"
    tasks[1]["LastModifiedDate"] = "2026-11-24T12:00:03.040+0000"
    reported = {"evt-2": _T0 + timedelta(seconds=6), "evt-1": _T0 + timedelta(seconds=3)}
    assert sorted(live_latencies(expected, tasks, reported)) == pytest.approx([0.04, 0.25])


def test_percentile_is_nearest_rank() -> None:
    """p50/p99 of the live latencies are real observations (nearest rank), None when empty."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([0.3], 0.99) == 0.3
    assert percentile([], 0.5) is None
