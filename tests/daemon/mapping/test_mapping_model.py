"""The field mapping: CallOutcome -> Task and Lead fields, TOML loading, describe checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from daemon.mapping import CLEAR, LeadNotFound, MappingError, load_mapping, parse_mapping
from daemon.mapping._template import VARIABLES
from spool.record import CallOutcome, StoredOutcome
from tests.outcome_strategies import outcomes

ENDED = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))


def outcome(**kw: Any) -> CallOutcome:
    base: dict[str, Any] = {
        "source": "vici",
        "call_id": "c-1",
        "disposition": "connected",
        "ended_at": ENDED,
        "lead": {"id": "00Q000000000001AAA"},
    }
    base.update(kw)
    return CallOutcome.model_validate(base)


def test_default_task_fields_follow_the_issue() -> None:
    """The built-in mapping fills the call-logging Task fields from the outcome."""
    m = load_mapping(None)
    o = outcome(
        duration_s=42,
        notes="Asked for pricing",
        recording_url="https://rec/1",
        raw_disposition="SALE",
        agent_id="a7",
        direction="inbound",
    )
    task = m.task_record(o, who_id="00Q000000000001AAA")
    assert task == {
        "Subject": "Call: Connected",
        "Status": "Completed",
        "ActivityDate": date(2026, 3, 1),
        "CallType": "Inbound",
        "CallDisposition": "connected",
        "CallDurationInSeconds": 42,
        "CallObject": "c-1",
        "Description": "Asked for pricing\nRecording: https://rec/1\nDialer disposition: SALE",
        "TaskSubtype": "Call",
        "WhoId": "00Q000000000001AAA",
    }
    assert m.task_external_id == "Call_Id__c"


def test_create_only_fields_are_left_out_on_update() -> None:
    """TaskSubtype is only sent when the Task may be new."""
    m = load_mapping(None)
    assert "TaskSubtype" not in m.task_record(outcome(), include_create_only=False)


def test_owner_comes_from_the_agent_map() -> None:
    """A mapped agent sets OwnerId; an unknown agent leaves it out."""
    m = parse_mapping(
        {"task": {"fields": {"OwnerId": "{owner_id}"}}, "agents": {"a7": "005000000000001AAA"}}
    )
    assert m.task_record(outcome(agent_id="a7"))["OwnerId"] == "005000000000001AAA"
    assert "OwnerId" not in m.task_record(outcome(agent_id="zz"))


def test_lead_update_per_disposition() -> None:
    """Do-not-call sets DoNotCall; callback sets Callback_At__c; all set the last outcome."""
    m = load_mapping(None)
    dnc = m.lead_update(outcome(disposition="do_not_call"))
    assert dnc["DoNotCall"] is True
    assert dnc["Last_Call_Outcome__c"] == "do_not_call"
    assert dnc["Last_Call_At__c"] == ENDED.astimezone(UTC)
    cb_at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    cb = m.lead_update(outcome(disposition="callback_requested", callback_at=cb_at))
    assert cb["Callback_At__c"] == cb_at and cb["Status"] == "Working - Contacted"
    na = m.lead_update(outcome(disposition="no_answer"))
    assert "DoNotCall" not in na and "Status" not in na


def test_do_not_call_is_sticky_no_mapping_can_clear_it() -> None:
    """A mapping that sets DoNotCall to false (or clears it) is refused at load."""
    with pytest.raises(MappingError, match="sticky"):
        parse_mapping({"lead": {"dispositions": {"connected": {"DoNotCall": False}}}})
    with pytest.raises(MappingError, match="sticky"):
        parse_mapping({"lead": {"dispositions": {"connected": {"DoNotCall": "@clear"}}}})
    m = load_mapping(None)
    assert m.sticky_update(outcome(disposition="do_not_call")) == {"DoNotCall": True}
    assert m.sticky_update(outcome(disposition="connected")) == {}


def test_clear_and_typed_templates() -> None:
    """'@clear' clears a field; '{x}' keeps the type; text around makes a string."""
    m = parse_mapping(
        {
            "lead": {
                "fields": {"A__c": "@clear", "B__c": "{duration_s}", "C__c": "took {duration_s}s"},
            }
        }
    )
    fields = m.lead_update(outcome(duration_s=5))
    assert fields == {"A__c": CLEAR, "B__c": 5, "C__c": "took 5s"}
    assert "B__c" not in m.lead_update(outcome())


def test_bad_mapping_lists_every_problem() -> None:
    """Every problem in a mapping file is reported at once, each naming its key."""
    with pytest.raises(MappingError) as info:
        parse_mapping(
            {
                "task": {"fields": {"Subject": "{nope}", "Call_Id__c": "x"}},
                "lead": {"not_found": "ignore", "dispositions": {"sale": {}}},
                "agents": {"a": "not-an-id"},
                "extra": {},
            }
        )
    text = str(info.value)
    for needle in (
        "task.fields.Subject",
        "Call_Id__c",
        "lead.not_found",
        "lead.dispositions.sale",
        "agents.a",
        "extra: unknown section",
    ):
        assert needle in text


def test_load_mapping_from_file_and_bad_toml(tmp_path: Path) -> None:
    """A mapping file replaces the default; invalid TOML names the file."""
    good = tmp_path / "m.toml"
    good.write_text('[lead]\nnot_found = "dead_letter"\n', encoding="utf-8")
    assert load_mapping(good).lead_not_found is LeadNotFound.DEAD_LETTER
    bad = tmp_path / "bad.toml"
    bad.write_text("[lead\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"bad\.toml"):
        load_mapping(bad)
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "missing.toml")


# ------------------------------------------------------------------ describe checks


def field(name: str, type_: str = "string", **kw: Any) -> dict[str, Any]:
    base = {
        "name": name,
        "type": type_,
        "createable": True,
        "updateable": True,
        "nillable": True,
        "externalId": False,
        "idLookup": False,
        "picklistValues": [],
        "length": 255,
    }
    base.update(kw)
    return base


def picklist(name: str, values: list[str], **kw: Any) -> dict[str, Any]:
    return field(
        name, "picklist", picklistValues=[{"value": v, "active": True} for v in values], **kw
    )


def good_describes() -> dict[str, Any]:
    task = {
        "name": "Task",
        "fields": [
            field("Call_Id__c", externalId=True, unique=True, caseSensitive=True),
            field("Subject", "combobox"),
            picklist("Status", ["Completed", "Not Started"]),
            field("ActivityDate", "date"),
            picklist("CallType", ["Inbound", "Outbound", "Internal"], restrictedPicklist=True),
            field("CallDisposition"),
            field("CallDurationInSeconds", "int"),
            field("CallObject"),
            field("Description", "textarea", length=32000),
            field("OwnerId", "reference"),
            picklist("TaskSubtype", ["Task", "Call"], updateable=False, restrictedPicklist=True),
            field("WhoId", "reference"),
        ],
    }
    lead = {
        "name": "Lead",
        "fields": [
            field("Id", "id", idLookup=True),
            field("Dialer_Lead_Id__c", externalId=True, unique=True),
            field("Phone", "phone"),
            picklist(
                "Status", ["Open - Not Contacted", "Working - Contacted", "Closed - Not Converted"]
            ),
            field("DoNotCall", "boolean", nillable=False),
            field("Last_Call_Outcome__c"),
            field("Last_Call_At__c", "datetime"),
            field("Callback_At__c", "datetime"),
        ],
    }
    return {"Task": task, "Lead": lead}


def test_default_mapping_passes_a_matching_org() -> None:
    """The built-in mapping against an org with the documented fields has no problems."""
    assert load_mapping(None).check_against_describe(good_describes()) == []


def test_describe_problems_are_reported_in_one_list() -> None:
    """Unknown fields, read-only fields, wrong types and missing picklist values all show."""
    d = good_describes()
    lead = d["Lead"]
    lead["fields"] = [f for f in lead["fields"] if f["name"] != "Last_Call_Outcome__c"]
    for f in lead["fields"]:
        if f["name"] == "Status":
            f["picklistValues"] = [{"value": "Open", "active": True}]
        if f["name"] == "Callback_At__c":
            f["type"] = "boolean"
        if f["name"] == "Dialer_Lead_Id__c":
            f["externalId"] = False
    task = d["Task"]
    for f in task["fields"]:
        if f["name"] == "CallObject":
            f["updateable"] = False
    problems = load_mapping(None).check_against_describe(d)
    text = "\n".join(problems)
    assert "Last_Call_Outcome__c does not exist" in text
    assert "'Working - Contacted'" in text
    assert "Callback_At__c of type boolean" in text
    assert "Dialer_Lead_Id__c is not an External ID" in text
    assert "Task.CallObject is not updateable" in text
    # TaskSubtype is create-only by configuration: not reported although not updateable.
    assert "TaskSubtype" not in text
    # Status is reported once per disposition that sets it (4), each naming its key.
    assert len(problems) == 8


def test_key_fields_must_be_unique_and_the_task_key_should_be_case_sensitive() -> None:
    """An External ID key without Unique can end up on two records (two writes of a new
    key at once), after which every write of it fails: a problem. A Task key that treats
    "ABC" and "abc" alike is only a note: it matters only for call ids differing in case."""
    mapping = load_mapping(None)
    d = good_describes()
    assert mapping.notes_against_describe(d) == []
    for obj in ("Task", "Lead"):
        for f in d[obj]["fields"]:
            if f["name"] in ("Call_Id__c", "Dialer_Lead_Id__c"):
                f["unique"] = False
    problems = mapping.check_against_describe(d)
    assert len(problems) == 2
    assert "Task.Call_Id__c is an External ID but not Unique" in problems[0]
    assert "Lead.Dialer_Lead_Id__c is an External ID but not Unique" in problems[1]
    d = good_describes()
    for f in d["Task"]["fields"]:
        if f["name"] == "Call_Id__c":
            f["caseSensitive"] = False
    assert mapping.check_against_describe(d) == []
    [note] = mapping.notes_against_describe(d)
    assert "Task.Call_Id__c is not case-sensitive" in note


def test_restricted_picklist_from_a_template_domain() -> None:
    """'{call_type}' against a CallType picklist lacking Inbound is reported."""
    d = good_describes()
    for f in d["Task"]["fields"]:
        if f["name"] == "CallType":
            f["picklistValues"] = [
                {"value": "Outbound", "active": True},
                {"value": "Inbound", "active": False},
            ]
    problems = load_mapping(None).check_against_describe(d)
    assert any("CallType" in p and "'Inbound'" in p and "restricted" in p for p in problems)


def test_missing_sobject_is_reported() -> None:
    """No access to the Task object is a single clear line."""
    problems = load_mapping(None).check_against_describe({"Lead": good_describes()["Lead"]})
    assert problems == ["task.object: sObject Task is not available to this user"]


def test_task_field_inputs_name_what_each_field_depends_on() -> None:
    """Constants depend on nothing; templates on their placeholders (the Bulk rail caches
    fields that depend only on the disposition or direction)."""
    m = load_mapping(None)
    inputs = m.task_field_inputs()
    assert inputs["Status"] == frozenset() and inputs["TaskSubtype"] == frozenset()
    assert inputs["Subject"] == {"disposition_label"}
    assert inputs["CallType"] == {"call_type"}
    assert inputs["ActivityDate"] == {"ended_date"}
    assert [n for n, _ in m.task_value_fns()] == m.task_columns()


# Every placeholder, alone (typed) and inside text, plus an extra key.
_EVERY_PLACEHOLDER = {
    **{f"{name.title().replace('_', '')}__c": f"{{{name}}}" for name in VARIABLES},
    **{f"{name.title().replace('_', '')}_Text__c": f"<{{{name}}}>" for name in VARIABLES},
    "Queue__c": "{extra.queue}",
}


_EVERYTHING = parse_mapping(
    {
        "task": {"fields": _EVERY_PLACEHOLDER},
        "agents": {"agent1": "005000000000001"},
        "lead": {
            "fields": _EVERY_PLACEHOLDER,
            "dispositions": {"do_not_call": {"DoNotCall": True}},
        },
    }
)


@settings(deadline=None)  # a loaded CI machine must not make it flaky
@given(outcomes())
def test_a_stored_outcome_maps_like_the_outcome(o: CallOutcome) -> None:
    """The Bulk rail maps StoredOutcome views of the spool's payloads: every Task and
    Lead value is the one the CallOutcome gives, for every placeholder."""
    m = _EVERYTHING
    view = StoredOutcome.parse(o.to_stored_json())
    assert view is not None
    for include in (True, False):
        assert m.task_record(view, include_create_only=include) == m.task_record(
            o, include_create_only=include
        )
    assert m.lead_update(view) == m.lead_update(o)
    assert m.sticky_update(view) == m.sticky_update(o)
