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
from spool.record import CallOutcome, Disposition, StoredOutcome
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


@pytest.mark.parametrize("value", [False, "@clear"])
def test_a_case_variant_of_do_not_call_cannot_clear_it(value: Any) -> None:
    """Salesforce field names are not case-sensitive: ``donotcall = false`` under a
    disposition would write Lead.DoNotCall = false on every such call. The sticky guard
    compares names case-insensitively, so the mapping is refused at load."""
    raw = {"lead": {"dispositions": {"connected": {"donotcall": value}}}}
    with pytest.raises(MappingError) as info:
        parse_mapping(raw)
    assert info.value.problems == [
        "lead.dispositions.connected.donotcall: donotcall is sticky (never cleared by this "
        "daemon); it may only be set to true"
    ]


def test_a_sticky_field_in_another_spelling_is_still_sticky() -> None:
    """``donotcall = true`` sets DoNotCall: the rails must treat it as sticky (sent even
    when a newer outcome won the Lead), whatever its spelling; in lead.fields it is
    refused like DoNotCall."""
    m = parse_mapping({"lead": {"dispositions": {"do_not_call": {"donotcall": True}}}})
    assert m.sets_sticky(Disposition.DO_NOT_CALL)
    assert m.sticky_update(outcome(disposition="do_not_call")) == {"donotcall": True}
    with pytest.raises(MappingError, match=r"lead\.fields\.DONOTCALL: a sticky field belongs"):
        parse_mapping({"lead": {"fields": {"DONOTCALL": True}}})


def test_do_not_call_stays_sticky_when_lead_sticky_lists_other_fields() -> None:
    """lead.sticky adds to DoNotCall instead of replacing it: a list naming another field
    (or an empty one) does not let a mapping clear DoNotCall."""
    for sticky in (["Consent_Given__c"], []):
        with pytest.raises(MappingError, match="DoNotCall is sticky"):
            parse_mapping(
                {
                    "lead": {
                        "sticky": sticky,
                        "dispositions": {"connected": {"DoNotCall": False}},
                    }
                }
            )
    m = parse_mapping(
        {
            "lead": {
                "sticky": ["Consent_Given__c"],
                "dispositions": {"do_not_call": {"DoNotCall": True, "Consent_Given__c": True}},
            }
        }
    )
    assert m.sticky_update(outcome(disposition="do_not_call")) == {
        "DoNotCall": True,
        "Consent_Given__c": True,
    }


def test_one_field_mapped_in_two_spellings_is_refused() -> None:
    """Subject and subject are one Salesforce field: mapped both ways, one request would
    carry it twice (and a Bulk CSV two columns for it). Refused within a table, and
    between lead.fields and a disposition or two dispositions (one Bulk job's columns)."""
    with pytest.raises(MappingError) as info:
        parse_mapping(
            {
                "task": {"fields": {"Subject": "a", "subject": "b"}},
                "lead": {
                    "fields": {"Status": "Open"},
                    "dispositions": {
                        "connected": {"status": "Working - Contacted"},
                        "busy": {"Title__c": "x"},
                        "voicemail": {"title__c": "y"},
                    },
                },
            }
        )
    assert info.value.problems == [
        "task.fields.subject: the same Salesforce field as task.fields.Subject (field names "
        "are not case-sensitive); map it once",
        "lead.dispositions.connected.status: the same Salesforce field as lead.fields.Status "
        "(field names are not case-sensitive); spell it the same way",
        "lead.dispositions.voicemail.title__c: the same Salesforce field as "
        "lead.dispositions.busy.Title__c (field names are not case-sensitive); spell it the "
        "same way",
    ]
    # The same spelling in lead.fields and a disposition is the documented override.
    m = parse_mapping(
        {"lead": {"fields": {"Status": "Open"}, "dispositions": {"busy": {"Status": "B"}}}}
    )
    assert m.lead_update(outcome(disposition="busy"))["Status"] == "B"


def test_fields_the_daemon_fills_are_refused_in_any_spelling() -> None:
    """WhoId (lead resolution) and the Task key field (source:call_id) may not be mapped,
    however spelled; create_only and CallObject (the insert fallback) match any spelling."""
    with pytest.raises(MappingError) as info:
        parse_mapping({"task": {"fields": {"whoid": "x", "CALL_ID__C": "y"}}})
    assert info.value.problems == [
        "task.fields.CALL_ID__C: the external id field is filled with source:call_id by the "
        "daemon; do not map it",
        "task.fields.whoid: set by lead resolution; do not map it",
    ]
    m = parse_mapping({"task": {"create_only": ["tasksubtype"], "fields": {"TaskSubtype": "C"}}})
    assert "TaskSubtype" not in m.task_record(outcome(), include_create_only=False)
    fallback = parse_mapping(
        {"task": {"external_id_field": "", "fields": {"callobject": "{external_key}"}}}
    )
    assert fallback.task_record(outcome())["callobject"] == "vici:c-1"


@pytest.mark.parametrize(
    ("lead", "key"),
    [
        ({"external_id_field": "Dialer Lead Id"}, "lead.external_id_field"),
        ({"phone_field": 5}, "lead.phone_field"),
        ({"object": ""}, "lead.object"),
    ],
    ids=["external_id_field", "phone_field", "object"],
)
def test_a_bad_lead_key_setting_is_reported_naming_the_key(lead: dict[str, Any], key: str) -> None:
    """lead.object / lead.external_id_field / lead.phone_field are checked before the
    mapping is refused or built: a bad value is reported naming its key, never silently
    replaced by the built-in default."""
    with pytest.raises(MappingError) as info:
        m = parse_mapping({"lead": lead})
        pytest.fail(
            f"no MappingError; silently used lead_object={m.lead_object!r}, "
            f"lead_external_id={m.lead_external_id!r}, lead_phone_field={m.lead_phone_field!r}"
        )
    assert [p.split(":")[0] for p in info.value.problems] == [key]


def test_ended_date_is_the_outcome_s_own_date_or_taken_in_ended_date_tz() -> None:
    """{ended_date} is ended_at's date at its own offset (the site's, as the adapters keep
    it). For dialers that report UTC only, ``ended_date_tz`` names the zone to take it in;
    datetimes are sent as the same instant either way. A zone that does not exist is
    reported naming the key."""
    evening = datetime(2026, 3, 2, 2, 30, tzinfo=UTC)  # 20:30 on 1 March in Chicago
    assert load_mapping(None).task_record(outcome(ended_at=evening))["ActivityDate"] == date(
        2026, 3, 2
    )
    chicago = parse_mapping(
        {
            "ended_date_tz": "America/Chicago",
            "task": {"fields": {"ActivityDate": "{ended_date}", "Day__c": "on {ended_date}"}},
            "lead": {"fields": {"Last_Call_At__c": "{ended_at}"}},
        }
    )
    assert chicago.ended_date_tz == "America/Chicago"
    task = chicago.task_record(outcome(ended_at=evening))
    assert task == {"ActivityDate": date(2026, 3, 1), "Day__c": "on 2026-03-01"}
    assert chicago.lead_update(outcome(ended_at=evening))["Last_Call_At__c"] == evening
    for bad in ("Mars/Olympus", "", 5):
        with pytest.raises(MappingError) as info:
            parse_mapping({"ended_date_tz": bad})
        assert info.value.problems[0].startswith("ended_date_tz: expected an IANA time zone")


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


def _latin1_mapping(tmp_path: Path) -> Path:
    """A mapping file saved in Windows-1252/Latin-1 (an accented literal), not UTF-8."""
    path = tmp_path / "mapping.toml"
    text = '[task.fields]\nSubject = "Appel : {disposition_label} (résultat)"\n'
    path.write_bytes(text.encode("latin-1"))
    return path


def test_a_mapping_file_not_in_utf8_is_a_mapping_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 (TOML is UTF-8) is a MappingError naming the file and where
    the first bad byte is, like unreadable files and bad TOML: check-config and run
    report mapping errors, not a UnicodeDecodeError."""
    path = _latin1_mapping(tmp_path)
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert info.value.source == str(path)
    assert info.value.problems == [
        "not UTF-8 text: the byte at offset 55 (line 2) is 0xe9; save the file as UTF-8"
    ]
    assert path.read_bytes()[55] == 0xE9


def test_a_mapping_file_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """Windows Notepad saves "UTF-8 with BOM" (EF BB BF first): the same mapping as without
    it, not "not valid TOML: Invalid statement (at line 1, column 1)"."""
    text = '[task.fields]\nSubject = "Appel : {disposition_label} (résultat)"\n'
    plain, marked = tmp_path / "plain.toml", tmp_path / "bom.toml"
    plain.write_text(text, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    o = CallOutcome.model_validate(
        {"source": "vici", "call_id": "c1", "disposition": "busy", "ended_at": "2026-05-04T10:00Z"}
    )
    assert load_mapping(marked).task_record(o)["Subject"] == "Appel : Busy (résultat)"
    assert load_mapping(marked).task_record(o) == load_mapping(plain).task_record(o)
    # A bad byte further on is still placed by its offset in the file as saved.
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode("latin-1"))
    with pytest.raises(MappingError, match=r"offset 58 \(line 2\) is 0xe9"):
        load_mapping(marked)


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


# ----------------------------------------- describe checks: values Salesforce refuses


def _field_of(describes: dict[str, Any], obj: str, name: str) -> dict[str, Any]:
    [info] = [f for f in describes[obj]["fields"] if f["name"] == name]
    return info  # type: ignore[no-any-return]


def test_key_and_phone_fields_are_found_in_any_spelling() -> None:
    """Salesforce field names are not case-sensitive: key and phone fields named in
    another case are found in describe (and still checked: Unique, External ID)."""
    m = parse_mapping(
        {
            "task": {"external_id_field": "call_id__c"},
            "lead": {"external_id_field": "DIALER_LEAD_ID__C", "phone_field": "phone"},
        }
    )
    d = sfsim_describes()
    assert m.check_against_describe(d) == []
    _field_of(d, "Lead", "Dialer_Lead_Id__c")["unique"] = False
    [problem] = m.check_against_describe(d)
    assert problem.startswith("lead.external_id_field: Lead.DIALER_LEAD_ID__C is an External ID")


def test_a_date_into_a_datetime_field_is_reported() -> None:
    """'{ended_date}' yields a date ('2026-03-01'); Salesforce (reference 4.9; sfsim alike,
    REST and Bulk) wants 'yyyy-MM-ddTHH:mm:ss...' in a datetime field and refuses every
    write of it. A date into a date field still passes."""
    m = parse_mapping({"lead": {"fields": {"Last_Call_At__c": "{ended_date}"}}})
    d = sfsim_describes()
    assert _field_of(d, "Lead", "Last_Call_At__c")["type"] == "datetime"
    assert m.check_against_describe(d) == [
        "lead.fields.Last_Call_At__c: a date value does not fit Lead.Last_Call_At__c of type "
        "datetime (it takes a date and time: use {ended_at})"
    ]
    assert load_mapping(None).task_fields["ActivityDate"] == "{ended_date}"
    assert load_mapping(None).check_against_describe(d) == []


def test_a_template_longer_than_the_text_field_is_reported() -> None:
    """Last_Call_Outcome__c as Text(10): '{disposition}' yields up to 18 characters
    ('callback_requested'), which Salesforce refuses (STRING_TOO_LONG). Every value a
    finite template can take is checked, and the longest that does not fit is named;
    the same holds for text around the placeholder."""
    d = sfsim_describes()
    _field_of(d, "Lead", "Last_Call_Outcome__c")["length"] = 10
    assert load_mapping(None).check_against_describe(d) == [
        "lead.fields.Last_Call_Outcome__c: '{disposition}' can be 18 characters "
        "('callback_requested'), over Lead.Last_Call_Outcome__c length 10 (Salesforce "
        "refuses it: STRING_TOO_LONG)"
    ]
    _field_of(d, "Lead", "Last_Call_Outcome__c")["length"] = 18
    assert load_mapping(None).check_against_describe(d) == []
    _field_of(d, "Task", "Subject")["length"] = 20  # "Call: Callback requested" is 24
    [problem] = load_mapping(None).check_against_describe(d)
    assert problem.startswith("task.fields.Subject: 'Call: {disposition_label}' can be 24 ")
    assert "('Call: Callback requested')" in problem


def test_an_unbounded_template_is_cut_to_fit_its_text_field() -> None:
    """'{notes}' (up to 32000 characters) into Task.Subject (255): no check can say it
    fits, and Salesforce would refuse a longer value and dead-letter the outcome. The
    rails cut it to the field's length when sent (counting a character beyond U+FFFF as
    two, as Salesforce does) and check-config says so in a WARN line. A url field is not
    cut (a cut URL is wrong): its note says a longer value is refused. Templates that
    always fit (the built-in ones) give no note and are not cut."""
    m = parse_mapping(
        {
            "task": {"fields": {"Subject": "{notes}", "CallObject": "{call_id}"}},
            "lead": {
                "fields": {"Description": "{notes}"},
                "dispositions": {"busy": {"Website": "{recording_url}", "Title": "re {notes}"}},
            },
        }
    )
    d = sfsim_describes()
    d["Lead"]["fields"].append(dict(_field_of(d, "Lead", "Company"), name="Website", type="url"))
    assert m.check_against_describe(d) == []
    notes = m.notes_against_describe(d)
    assert "not case-sensitive" in notes[0]
    assert notes[1:] == [
        "task.fields.Subject: '{notes}' can be up to 32000 characters, Task.Subject holds 255: "
        "a longer value is cut to 255 characters when sent",
        "lead.dispositions.busy.Website: '{recording_url}' can be up to 2000 characters, "
        "Lead.Website holds 255: Salesforce refuses a longer value (STRING_TOO_LONG) and that "
        "outcome is dead-lettered; map a longer field",
        "lead.dispositions.busy.Title: 're {notes}' can be up to 32003 characters, Lead.Title "
        "holds 128: a longer value is cut to 128 characters when sent",
    ]
    # U+260E counts one, U+1F60A two (a UTF-16 surrogate pair).
    long_notes = "n" * 120 + "\N{BLACK TELEPHONE}\N{SMILING FACE WITH SMILING EYES}" + "x" * 300
    url = "https://rec.example/" + "r" * 300
    o = outcome(disposition="busy", notes=long_notes, recording_url=url)
    assert m.task_record(o)["Subject"] == long_notes  # not cut before the describe check
    fitted = m.cut_to_fit(d)
    task = fitted.task_record(o)
    # 122 characters are 123 units; 132 x make 255: 254 characters.
    assert task["Subject"] == long_notes[:254] and task["CallObject"] == "c-1"
    lead_fields = fitted.lead_update(o)
    # "re " + 122 characters are 126 units; 2 x make 128: 127 characters.
    assert lead_fields["Title"] == ("re " + long_notes)[:127]
    assert lead_fields["Website"] == url  # refused by Salesforce, not silently cut
    assert lead_fields["Description"] == long_notes  # textarea 32000: fits
    assert fitted.lead_update(outcome(disposition="connected", notes="short")) == {
        "Description": "short"
    }
    default = load_mapping(None)
    assert default.cut_to_fit(d) is default
    assert [n for n in default.notes_against_describe(d) if "characters" in n] == []


def test_owner_id_into_a_reference_to_another_object_is_reported() -> None:
    """'{owner_id}' yields the agents' User ids; mapped to a reference field whose
    referenceTo does not include User (Task.WhatId -> Account here) Salesforce refuses
    it: each agent's id is checked by its key prefix against the field's referenceTo."""
    m = parse_mapping(
        {
            "task": {"fields": {"WhatId": "{owner_id}"}},
            "agents": {"a7": "005000000000001AAA"},
        }
    )
    d = sfsim_describes()
    assert _field_of(d, "Task", "WhatId")["referenceTo"] == ["Account"]
    assert m.check_against_describe(d) == [
        "task.fields.WhatId: agents.a7 = '005000000000001AAA' is a User id (key prefix 005); "
        "the field references Account (Salesforce refuses Task.WhatId for that agent's calls)"
    ]


def test_an_agent_mapped_to_a_non_user_id_is_reported() -> None:
    """agents values go to Task.OwnerId (referenceTo User here; User and Group in a real
    org). A Lead id (00Q...) pasted there is a 15/18-character id, so it loads; the
    describe check names the agent: Salesforce would refuse every Task of that agent. An
    18-character id is read as Salesforce reads it (its last 3 characters give the case
    of the first 15: '00Q...AAA' is '00q...'). An unknown prefix passes when a target's
    prefix is unknown (a custom object's), and a describe without referenceTo passes."""
    raw: dict[str, Any] = {
        "task": {"fields": {"OwnerId": "{owner_id}"}},
        "agents": {
            "a7": "00Q000000000001EAA",
            "a8": "005000000000002",
            "a9": "a0B000000000003",
            "a10": "00Q000000000001AAA",
        },
    }
    d = sfsim_describes()
    assert parse_mapping(raw).check_against_describe(d) == [
        "task.fields.OwnerId: agents.a7 = '00Q000000000001EAA' is a Lead id (key prefix 00Q); "
        "the field references User (Salesforce refuses Task.OwnerId for that agent's calls)",
        "task.fields.OwnerId: agents.a9 = 'a0B000000000003' is an id of key prefix a0B, not of "
        "User (005) (Salesforce refuses Task.OwnerId for that agent's calls)",
        "task.fields.OwnerId: agents.a10 = '00Q000000000001AAA' is an id of key prefix 00q "
        "(read as '00q000000000001AAA': the last 3 characters give the case of the first 15), "
        "not of User (005) (Salesforce refuses Task.OwnerId for that agent's calls)",
    ]
    _field_of(d, "Task", "OwnerId")["referenceTo"] = ["User", "Queue_Like__c"]
    assert [p.split(" = ")[0] for p in parse_mapping(raw).check_against_describe(d)] == [
        "task.fields.OwnerId: agents.a7"
    ]
    assert parse_mapping(raw).check_against_describe(good_describes()) == []


def test_a_literal_that_is_not_an_id_in_a_reference_field_is_reported() -> None:
    """A literal mapped to a reference field must be a 15/18-character id whose 3-character
    suffix fits it (Salesforce: MALFORMED_ID otherwise), of an object the field references;
    'Acme' passed before. A real Account id passes, lower-cased too."""
    d = sfsim_describes()
    for literal, why in (
        ("Acme", "is not a 15- or 18-character Salesforce id"),
        (
            "001000000000001AAB",
            "is not a Salesforce id (its last 3 characters do not fit its first 15)",
        ),
        ("003000000000001", "is a Contact id (key prefix 003); the field references Account"),
    ):
        m = parse_mapping({"task": {"fields": {"WhatId": literal}}})
        assert m.check_against_describe(d) == [
            f"task.fields.WhatId: {literal!r} {why} (Salesforce refuses it: Task.WhatId)"
        ]
    for good in ("001000000000001AAA", "001000000000001", "001000000000001aaa", "@clear"):
        assert parse_mapping({"task": {"fields": {"WhatId": good}}}).check_against_describe(d) == []
