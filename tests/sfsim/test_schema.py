"""Schema loading: describe JSON from a file drives validation and describe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sfsim.errors import SfError
from sfsim.org import Org
from sfsim.schema import SchemaError, default_schema, load_schema


def _describe(name: str, prefix: str, fields: list[dict[str, object]]) -> dict[str, object]:
    return {
        "name": name,
        "label": name,
        "keyPrefix": prefix,
        "fields": [
            {
                "name": "Id",
                "type": "id",
                "createable": False,
                "updateable": False,
                "nillable": False,
            },
            *fields,
        ],
    }


def test_load_custom_schema_from_file(tmp_path: Path) -> None:
    """A user's exported describe is used for validation, keeping its own rules."""
    path = tmp_path / "describe.json"
    path.write_text(
        json.dumps(
            {
                "sobjects": [
                    _describe(
                        "Task",
                        "00T",
                        [
                            {"name": "Subject", "type": "string", "length": 10, "label": "Subject"},
                            {
                                "name": "Outcome__c",
                                "type": "picklist",
                                "restrictedPicklist": True,
                                "label": "Outcome",
                                "picklistValues": [
                                    {"value": "Sale", "active": True},
                                    {"value": "Old", "active": False},
                                ],
                            },
                        ],
                    )
                ]
            }
        )
    )
    schema = load_schema(path)
    store = Org(schema=schema).store
    store.insert("Task", {"Subject": "short", "Outcome__c": "Sale"})
    with pytest.raises(SfError) as exc:
        store.insert("Task", {"Subject": "much too long"})
    assert exc.value.error_code == "STRING_TOO_LONG"
    with pytest.raises(SfError) as exc:
        store.insert("Task", {"Outcome__c": "Old"})  # inactive values are refused
    assert exc.value.error_code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    with pytest.raises(SfError):
        store.insert("Task", {"CallType": "Inbound"})  # not in this org's describe


def test_list_form_and_errors(tmp_path: Path) -> None:
    """A bare list works; files that are not describe JSON fail naming the problem."""
    good = tmp_path / "list.json"
    good.write_text(json.dumps([_describe("Lead", "00Q", [])]))
    assert load_schema(good).get("lead") is not None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_schema(bad)
    bad.write_text(json.dumps([{"name": "Lead"}]))
    with pytest.raises(SchemaError, match="Lead: missing 'fields'"):
        load_schema(bad)
    with pytest.raises(SchemaError, match="cannot read"):
        load_schema(tmp_path / "missing.json")


def test_default_schema_round_trips_through_describe_json(tmp_path: Path) -> None:
    """The default schema's describe output loads back as an equivalent schema."""
    schema = default_schema()
    path = tmp_path / "export.json"
    path.write_text(json.dumps([o.describe("62.0") for o in schema.objects.values()]))
    again = load_schema(path)
    assert again.objects.keys() == schema.objects.keys()
    assert again.objects["Task"].fields == schema.objects["Task"].fields


def test_default_schema_without_named_fields() -> None:
    """An org without a Task external ID field: the field is gone from the Task (describe
    and lookups), everything else is as in the default; an unknown name is refused."""
    schema = default_schema(without=["Task.Call_Id__c"])
    task = schema.objects["Task"]
    assert task.field("Call_Id__c") is None and task.field("CallObject") is not None
    assert "Call_Id__c" not in {f["name"] for f in task.describe("62.0")["fields"]}
    assert schema.objects["Lead"].fields == default_schema().objects["Lead"].fields
    with pytest.raises(SchemaError, match=r"no field Task\.Nope__c"):
        default_schema(without=["Task.Nope__c"])
