"""The field mapping: CallOutcome -> Task and Lead fields, TOML loading, describe checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from bench.api_efficiency import no_task_key_mapping
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


# ------------------------------------------- orgs without a Task external ID field


def sfsim_describes(*, drop: str | None = None) -> dict[str, Any]:
    """sfsim's built-in Task and Lead describes (the Task without ``drop``, when given)."""
    from sfsim.schema import default_schema

    schema = default_schema()
    out: dict[str, Any] = {}
    for name in ("Task", "Lead"):
        obj = schema.get(name)
        assert obj is not None
        out[name] = obj.describe("62.0")
    if drop is not None:
        task = dict(out["Task"])
        task["fields"] = [f for f in task["fields"] if f["name"] != drop]
        out["Task"] = task
    return out


def test_default_mapping_upserts_tasks() -> None:
    """The built-in mapping upserts Tasks on Call_Id__c; CallObject holds the call id."""
    m = load_mapping(None)
    assert m.upserts_tasks is True
    assert m.task_external_id == "Call_Id__c"
    assert m.task_fields["CallObject"] == "{call_id}"


def test_an_empty_task_key_field_turns_the_insert_fallback_on() -> None:
    """task.external_id_field = "" with CallObject = "{external_key}": Tasks are inserted
    (upserts_tasks False), and CallObject carries source:call_id."""
    m = no_task_key_mapping()
    assert m.upserts_tasks is False
    assert m.task_external_id == ""
    assert m.task_record(outcome())["CallObject"] == "vici:c-1"


@pytest.mark.parametrize(
    "fields",
    [
        {"Subject": "x", "CallObject": "{call_id}"},
        {"Subject": "x"},
        {"Subject": "x", "CallObject": "vici:{call_id}"},
    ],
    ids=["call-id", "missing", "hand-made-key"],
)
def test_the_fallback_needs_call_object_to_be_the_external_key(fields: dict[str, Any]) -> None:
    """Without an external ID field, a CallObject other than "{external_key}" is refused,
    naming task.fields.CallObject (the daemon could not find its Tasks again)."""
    with pytest.raises(MappingError) as info:
        parse_mapping({"task": {"external_id_field": "", "fields": fields}})
    assert any(p.startswith("task.fields.CallObject:") for p in info.value.problems)
    assert "{external_key}" in str(info.value)


def test_the_fallback_passes_sfsim_with_or_without_a_task_key_field() -> None:
    """The fallback mapping checks clean against sfsim's describe, which has Call_Id__c, and
    against one without it: no Task key field is required."""
    m = no_task_key_mapping()
    with_key = sfsim_describes()
    assert any(f["name"] == "Call_Id__c" for f in with_key["Task"]["fields"])
    assert m.check_against_describe(with_key) == []
    without_key = sfsim_describes(drop="Call_Id__c")
    assert not any(f["name"] == "Call_Id__c" for f in without_key["Task"]["fields"])
    assert m.check_against_describe(without_key) == []
    # The same org fails the default (upserting) mapping: the key field is required there.
    problems = load_mapping(None).check_against_describe(without_key)
    assert [p.split(":")[0] for p in problems] == ["task.external_id_field"]


def test_the_fallback_needs_a_filterable_call_object() -> None:
    """Tasks are looked up by CallObject: a CallObject that cannot be filtered is a problem
    naming task.fields.CallObject; a describe without the property counts as filterable."""
    m = no_task_key_mapping()
    d = sfsim_describes()
    [call_object] = [f for f in d["Task"]["fields"] if f["name"] == "CallObject"]
    assert call_object["filterable"] is True
    call_object["filterable"] = False
    assert m.check_against_describe(d) == [
        "task.fields.CallObject: Task.CallObject is not filterable; with task.external_id_field"
        ' = "" the daemon looks Tasks up by it before sending one again (a query would fail)'
    ]
    del call_object["filterable"]
    assert m.check_against_describe(d) == []
    # Only the fallback cares: the upserting default mapping does not look Tasks up by it.
    call_object["filterable"] = False
    assert load_mapping(None).check_against_describe(d) == []


def test_the_fallback_reports_a_missing_call_object_once() -> None:
    """A CallObject hidden from the integration user is one problem line, not two."""
    m = no_task_key_mapping()
    problems = m.check_against_describe(sfsim_describes(drop="CallObject"))
    assert len(problems) == 1
    assert problems[0].startswith("task.fields.CallObject: Task.CallObject does not exist")


def test_the_fallback_note_says_what_it_costs() -> None:
    """One WARN-style line: no key field, insert + Id + CallObject lookup, sObject
    Collections instead of Bulk, and how to get the Bulk rail back."""
    m = no_task_key_mapping()
    for describes in (sfsim_describes(), sfsim_describes(drop="Call_Id__c"), {}):
        [note] = m.notes_against_describe(describes)
        assert "\n" not in note
        assert note.startswith("task.external_id_field: no Task external ID field configured")
        for needle in (
            "inserted, then updated by their Id (remembered in the spool)",
            "looked up by CallObject",
            "sObject Collections (one API call per up to 200 outcomes)",
            "instead of Bulk jobs",
            "(Unique, case-sensitive)",
        ):
            assert needle in note, needle
    # The upserting default says nothing of it (sfsim's Call_Id__c only gets the case note).
    [case_note] = load_mapping(None).notes_against_describe(sfsim_describes())
    assert "not case-sensitive" in case_note and "Collections" not in case_note


def test_a_missing_task_key_field_says_how_to_run_without_one() -> None:
    """The FAIL line for a Task key field the org lacks names both ways out: create the
    field, or the mapping settings of the insert fallback."""
    problems = load_mapping(None).check_against_describe(sfsim_describes(drop="Call_Id__c"))
    [line] = problems
    assert line.startswith(
        "task.external_id_field: Task.Call_Id__c does not exist or is not visible to the "
        "integration user; create it (text, External ID, Unique, case-sensitive)"
    )
    assert 'set task.external_id_field = "" and task.fields.CallObject = "{external_key}"' in line
    assert "in a mapping file" in line
    # A Lead key field the org lacks is not given the Task fallback's hint.
    d = sfsim_describes()
    lead = dict(d["Lead"])
    lead["fields"] = [f for f in lead["fields"] if f["name"] != "Dialer_Lead_Id__c"]
    d["Lead"] = lead
    [lead_line] = load_mapping(None).check_against_describe(d)
    assert lead_line.startswith("lead.external_id_field: Lead.Dialer_Lead_Id__c does not exist")
    assert "CallObject" not in lead_line
