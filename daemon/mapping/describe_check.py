"""Check a mapping against the org's describe results (what ``check-config`` prints).

Reported, one line each: unknown objects and fields (FLS hides fields from
describe, reference §7.12), read-only fields, create-only fields mapped on
updates, values of the wrong type, picklist values the org does not have (active
values only, §7.13), and external id fields that cannot be used as upsert keys.
With no Task external ID field (``task.external_id_field = ""``), Task.CallObject
must instead be filterable: Tasks are found again by it.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from ._template import CLEAR_LITERAL, DOMAINS, TYPES, placeholders
from .model import CALL_KEY_FIELD

if TYPE_CHECKING:
    from .model import Mapping

__all__ = ["check_mapping", "key_field_notes"]

_TEXT_TYPES = frozenset(
    {
        "string",
        "textarea",
        "picklist",
        "combobox",
        "phone",
        "url",
        "email",
        "multipicklist",
        "encryptedstring",
    }
)
_ID_TYPES = frozenset({"reference", "id"})
_NUMBER_TYPES = frozenset({"int", "double", "currency", "percent", "long"})


def _value_kind(value: Any) -> str:
    """'bool' | 'number' | 'date' | 'datetime' | 'text' | 'clear' for a TOML value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value == CLEAR_LITERAL:
        return "clear"
    names = placeholders(value)
    if len(names) == 1 and value == "{" + names[0] + "}":
        kind = TYPES.get(names[0])
        if kind is datetime:
            return "datetime"
        if kind is date:
            return "date"
        if kind is int:
            return "number"
        if names[0] == "owner_id":
            return "id"
    return "text"


def _compatible(kind: str, sf_type: str) -> bool:
    if kind == "clear":
        return True
    if kind == "bool":
        return sf_type == "boolean"
    if kind == "number":
        return sf_type in _NUMBER_TYPES or sf_type in _TEXT_TYPES
    if kind == "date":
        return sf_type in {"date", "datetime"} or sf_type in _TEXT_TYPES
    if kind == "datetime":
        return sf_type == "datetime" or sf_type in _TEXT_TYPES
    if kind == "id":
        return sf_type in _ID_TYPES
    # text
    return sf_type in _TEXT_TYPES or sf_type in _ID_TYPES


def _possible_values(value: Any) -> frozenset[str] | None:
    """Every string this value can produce, when that set is finite."""
    if not isinstance(value, str) or value == CLEAR_LITERAL:
        return None
    names = placeholders(value)
    if not names:
        return frozenset({value})
    if len(names) == 1 and value == "{" + names[0] + "}" and names[0] in DOMAINS:
        return DOMAINS[names[0]]
    return None


def _check_fields(
    obj: str,
    fields: AbcMapping[str, Any],
    describe: AbcMapping[str, Any],
    *,
    where: str,
    on_create: bool,
    on_update: bool,
    create_only: frozenset[str] = frozenset(),
    problems: list[str],
) -> None:
    by_name = {f.get("name"): f for f in describe.get("fields", []) if isinstance(f, dict)}
    by_lower = {str(k).lower(): v for k, v in by_name.items()}
    for name, value in fields.items():
        key = f"{where}.{name}"
        info = by_name.get(name) or by_lower.get(name.lower())
        if info is None:
            problems.append(
                f"{key}: {obj}.{name} does not exist or is not visible to the integration user "
                "(field-level security)"
            )
            continue
        if on_create and not info.get("createable", False):
            problems.append(f"{key}: {obj}.{name} is read-only (not createable)")
            continue
        if on_update and name not in create_only and not info.get("updateable", False):
            problems.append(
                f"{key}: {obj}.{name} is not updateable; list it in task.create_only "
                "if it may be set on create only"
                if obj_is_task(where)
                else f"{key}: {obj}.{name} is read-only (not updateable)"
            )
            continue
        sf_type = str(info.get("type", "string"))
        kind = _value_kind(value)
        if not _compatible(kind, sf_type):
            problems.append(f"{key}: a {kind} value does not fit {obj}.{name} of type {sf_type}")
            continue
        if kind == "clear" and not info.get("nillable", True) and sf_type != "boolean":
            problems.append(f"{key}: {obj}.{name} cannot be cleared (not nillable)")
            continue
        if sf_type in {"picklist", "multipicklist"}:
            possible = _possible_values(value)
            active = {
                str(p.get("value"))
                for p in info.get("picklistValues", [])
                if isinstance(p, dict) and p.get("active", True)
            }
            restricted = bool(info.get("restrictedPicklist", False))
            if possible is not None and active:
                missing = sorted(possible - active)
                if missing:
                    level = "restricted picklist" if restricted else "picklist"
                    problems.append(
                        f"{key}: {obj}.{name} ({level}) has no active value "
                        + ", ".join(repr(m) for m in missing)
                        + "; active values: "
                        + ", ".join(sorted(active))
                    )
        if sf_type in _TEXT_TYPES and isinstance(value, str) and not placeholders(value):
            length = info.get("length")
            if isinstance(length, int) and length > 0 and len(value) > length:
                problems.append(
                    f"{key}: {len(value)} characters exceed {obj}.{name} length {length}"
                )


def obj_is_task(where: str) -> bool:
    return where.startswith("task")


def _key_field(describe: AbcMapping[str, Any], name: str) -> AbcMapping[str, Any] | None:
    for info in describe.get("fields", []):
        if isinstance(info, dict) and info.get("name") == name:
            return info
    return None


#: How to run without a Task external ID field (added to "the key field does not exist").
_NO_TASK_KEY_HINT = (
    "; create it (text, External ID, Unique, case-sensitive) and let the integration user "
    'see it, or run without one: set task.external_id_field = "" and '
    f'task.fields.{CALL_KEY_FIELD} = "{{external_key}}" in a mapping file (Tasks are then '
    f"inserted and found again by {CALL_KEY_FIELD}, and the Bulk rail is not used)"
)


def _check_key_field(
    obj: str,
    name: str,
    describe: AbcMapping[str, Any],
    *,
    where: str,
    problems: list[str],
    missing_hint: str = "",
) -> None:
    info = _key_field(describe, name)
    if info is None:
        problems.append(
            f"{where}: {obj}.{name} does not exist or is not visible to the integration user"
            + missing_hint
        )
    elif not (info.get("externalId") or info.get("idLookup")):
        problems.append(
            f"{where}: {obj}.{name} is not an External ID (or idLookup) field; "
            "upserts and lookups by it will fail"
        )
    elif info.get("externalId") and not info.get("unique"):
        # §7.6: without Unique, two upserts of a new key at once can both insert; every
        # later upsert of that key then fails (300, more than one record matches).
        problems.append(
            f"{where}: {obj}.{name} is an External ID but not Unique; two writes of the same "
            "key at once can create two records, and every later write of it then fails; "
            "tick Unique on the field"
        )


def _check_call_key_field(
    mapping: Mapping, describe: AbcMapping[str, Any], *, problems: list[str]
) -> None:
    """No Task external ID field: Tasks are looked up by CallObject (``WHERE CallObject IN
    (...)``) before one that may have been sent is inserted again, so it must be filterable."""
    obj = mapping.task_object
    where = f"task.fields.{CALL_KEY_FIELD}"
    info = _key_field(describe, CALL_KEY_FIELD)
    if info is None:
        if CALL_KEY_FIELD not in mapping.task_fields:  # else _check_fields reports it
            problems.append(
                f"{where}: {obj}.{CALL_KEY_FIELD} does not exist or is not visible to the "
                'integration user; with task.external_id_field = "" Tasks are found again by it'
            )
    elif not info.get("filterable", True):
        problems.append(
            f'{where}: {obj}.{CALL_KEY_FIELD} is not filterable; with task.external_id_field = ""'
            " the daemon looks Tasks up by it before sending one again (a query would fail)"
        )


def key_field_notes(
    mapping: Mapping, describes: AbcMapping[str, AbcMapping[str, Any]]
) -> list[str]:
    """Warnings about the Task key field that do not stop the daemon: one line each.

    A Unique text field treats "ABC" and "abc" as the same value unless it was created
    case-sensitive (Salesforce's default is case-insensitive). The spool keeps two call
    ids that differ only in case apart, but they would share one Task: the later call's
    Task would overwrite the earlier one's.

    Without a Task external ID field (``task.external_id_field = ""``): one note on what
    that costs, whatever the describes say.
    """
    if not mapping.upserts_tasks:
        return [
            f"task.external_id_field: no {mapping.task_object} external ID field configured; "
            "Tasks are inserted, then updated by their Id (remembered in the spool), and one "
            f"that may have been sent before is first looked up by {CALL_KEY_FIELD}; "
            "non-urgent work goes by sObject Collections (one API call per up to 200 outcomes) "
            "instead of Bulk jobs. To use the Bulk rail, create a text External ID field on "
            "Activity (Unique, case-sensitive) and set task.external_id_field to it"
        ]
    task = describes.get(mapping.task_object)
    info = None if task is None else _key_field(task, mapping.task_external_id)
    if info is None or not info.get("unique") or info.get("caseSensitive"):
        return []
    return [
        f"task.external_id_field: {mapping.task_object}.{mapping.task_external_id} is not "
        "case-sensitive: two call ids that differ only in upper/lower case would share one "
        "Task (the later call's Task overwrites the earlier one). Harmless if your dialers' "
        "call ids never differ only in case; else make the field's Unique setting treat "
        '"ABC" and "abc" as different values'
    ]


def check_mapping(mapping: Mapping, describes: AbcMapping[str, AbcMapping[str, Any]]) -> list[str]:
    """Every problem of ``mapping`` against ``describes`` (sObject name -> describe body)."""
    problems: list[str] = []
    task = describes.get(mapping.task_object)
    if task is None:
        problems.append(f"task.object: sObject {mapping.task_object} is not available to this user")
    else:
        if mapping.upserts_tasks:
            _check_key_field(
                mapping.task_object,
                mapping.task_external_id,
                task,
                where="task.external_id_field",
                problems=problems,
                missing_hint=_NO_TASK_KEY_HINT,
            )
        else:
            _check_call_key_field(mapping, task, problems=problems)
        _check_fields(
            mapping.task_object,
            mapping.task_fields,
            task,
            where="task.fields",
            on_create=True,
            on_update=True,
            create_only=mapping.create_only,
            problems=problems,
        )
    lead = describes.get(mapping.lead_object)
    if lead is None:
        problems.append(f"lead.object: sObject {mapping.lead_object} is not available to this user")
        return problems
    _check_key_field(
        mapping.lead_object,
        mapping.lead_external_id,
        lead,
        where="lead.external_id_field",
        problems=problems,
    )
    phone_known = any(
        isinstance(f, dict) and f.get("name") == mapping.lead_phone_field
        for f in lead.get("fields", [])
    )
    if not phone_known:
        problems.append(
            f"lead.phone_field: {mapping.lead_object}.{mapping.lead_phone_field} does not exist "
            "or is not visible"
        )
    _check_fields(
        mapping.lead_object,
        mapping.lead_fields,
        lead,
        where="lead.fields",
        on_create=False,
        on_update=True,
        problems=problems,
    )
    for disposition, fields in mapping.lead_dispositions.items():
        _check_fields(
            mapping.lead_object,
            fields,
            lead,
            where=f"lead.dispositions.{disposition.value}",
            on_create=False,
            on_update=True,
            problems=problems,
        )
    return problems
