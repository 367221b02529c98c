"""Check a mapping against the org's describe results (what ``check-config`` prints).

Reported, one line each: unknown objects and fields (FLS hides fields from
describe, reference §7.12), read-only fields, create-only fields mapped on
updates, values of the wrong type (a date where Salesforce wants a date and time,
§4.9), picklist values the org does not have (active values only, §7.13), text
longer than its field (every value a literal or a finite template such as
``{disposition}`` can take; STRING_TOO_LONG, §2.8), values of reference fields that
are not ids (MALFORMED_ID) or are ids of an object the field does not reference
(its ``referenceTo``, told by the id's key prefix), and external id fields that
cannot be used as upsert keys. With no Task external ID field
(``task.external_id_field = ""``), Task.CallObject must instead be filterable: Tasks
are found again by it.

Field names are matched case-insensitively, as Salesforce does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from collections.abc import Mapping as AbcMapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Final

from ._template import CLEAR_LITERAL, TYPES, finite_values, max_text_length, placeholders
from .model import _SF_ID, CALL_KEY_FIELD

if TYPE_CHECKING:
    from .model import Mapping

__all__ = ["check_mapping", "cut_lengths", "key_field_notes", "length_notes"]

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
# Free text: a value over the field's length is cut to fit at send time (Mapping.cut_to_fit)
# rather than refused. Not url/email/phone (a cut one is wrong data) nor picklists.
_CUT_TYPES = frozenset({"string", "textarea", "combobox", "encryptedstring"})

_SUFFIX_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
# Key prefixes (an id's first 3 characters) of standard objects: the same in every org.
# Custom objects' prefixes differ per org; the describes at hand add theirs.
_STANDARD_PREFIXES: Final = {
    "001": "Account",
    "002": "Note",
    "003": "Contact",
    "005": "User",
    "006": "Opportunity",
    "00D": "Organization",
    "00G": "Group",
    "00P": "Attachment",
    "00Q": "Lead",
    "00T": "Task",
    "00U": "Event",
    "00e": "Profile",
    "012": "RecordType",
    "01t": "Product2",
    "02i": "Asset",
    "0Q0": "Quote",
    "500": "Case",
    "501": "Solution",
    "701": "Campaign",
    "800": "Contract",
    "801": "Order",
}


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
        # Not datetime: Salesforce wants yyyy-MM-ddTHH:mm:ss there (§4.9) and refuses a
        # bare date, on REST and Bulk alike.
        return sf_type == "date" or sf_type in _TEXT_TYPES
    if kind == "datetime":
        return sf_type == "datetime" or sf_type in _TEXT_TYPES
    if kind == "id":
        return sf_type in _ID_TYPES
    # text
    return sf_type in _TEXT_TYPES or sf_type in _ID_TYPES


def _canonical_id(value: str) -> str | None:
    """The id Salesforce reads ``value`` as, or None: not an id (MALFORMED_ID).

    An 18-character id's last 3 characters give, 5 bits each, which of the first 15 are
    upper-case letters: they decide, so a lower-cased copy still names its record (and
    ``00Q...AAA`` reads as ``00q...AAA``, another key prefix). One marking a digit as
    upper-case, or outside their alphabet, makes the id malformed.
    """
    if not _SF_ID.match(value):
        return None
    if len(value) == 15:
        return value
    body = list(value[:15])
    for chunk, flag in enumerate(value[15:].upper()):
        mask = _SUFFIX_ALPHABET.find(flag)
        if mask < 0:
            return None
        for bit in range(5):
            pos = chunk * 5 + bit
            if mask & (1 << bit):
                if not body[pos].isalpha():
                    return None
                body[pos] = body[pos].upper()
            else:
                body[pos] = body[pos].lower()
    return "".join(body) + value[15:].upper()


def _reference_problem(
    value: str, info: AbcMapping[str, Any], prefixes: AbcMapping[str, str]
) -> str | None:
    """Why the id ``value`` cannot go into the reference field ``info``, or None.

    The id's key prefix (case-sensitive: 00e is Profile, 00E UserRole) names its object
    (``prefixes``: key prefix -> object); it must be one of the field's ``referenceTo``.
    An unknown prefix passes unless every target's prefix is known (a custom object not
    described here may own it).
    """
    if not _SF_ID.match(value):
        return "not a 15- or 18-character Salesforce id"
    canonical = _canonical_id(value)
    if canonical is None:
        return "not a Salesforce id (its last 3 characters do not fit its first 15)"
    targets = [str(t) for t in info.get("referenceTo") or []]
    if not targets:
        return None  # a describe without referenceTo: nothing to compare with
    read_as = (
        f" (read as {canonical!r}: the last 3 characters give the case of the first 15)"
        if canonical[:15] != value[:15]
        else ""
    )
    folded = {t.lower() for t in targets}
    prefix = canonical[:3]
    owner = prefixes.get(prefix)
    if owner is not None:
        if owner.lower() in folded:
            return None
        return f"a {owner} id (key prefix {prefix}){read_as}; the field references " + ", ".join(
            targets
        )
    known = {o.lower(): p for p, o in prefixes.items()}
    if all(t in known for t in folded):
        return f"an id of key prefix {prefix}{read_as}, not of " + ", ".join(
            f"{t} ({known[t.lower()]})" for t in targets
        )
    return None


def _key_prefixes(describes: AbcMapping[str, AbcMapping[str, Any]]) -> dict[str, str]:
    """Key prefix -> object name: the standard ones, and those of the describes at hand."""
    out = dict(_STANDARD_PREFIXES)
    for name, body in describes.items():
        prefix = body.get("keyPrefix")
        if isinstance(prefix, str) and len(prefix) == 3:
            out[prefix] = str(body.get("name") or name)
    return out


def _by_name(describe: AbcMapping[str, Any]) -> dict[str, AbcMapping[str, Any]]:
    """Folded field name -> describe field (Salesforce field names are not case-sensitive)."""
    return {
        str(f.get("name")).lower(): f
        for f in describe.get("fields", [])
        if isinstance(f, dict) and f.get("name")
    }


def _check_fields(
    obj: str,
    fields: AbcMapping[str, Any],
    describe: AbcMapping[str, Any],
    *,
    where: str,
    on_create: bool,
    on_update: bool,
    create_only: frozenset[str] = frozenset(),
    agents: AbcMapping[str, str],
    prefixes: AbcMapping[str, str],
    problems: list[str],
) -> None:
    by_name = _by_name(describe)
    for name, value in fields.items():
        key = f"{where}.{name}"
        info = by_name.get(name.lower())
        if info is None:
            problems.append(
                f"{key}: {obj}.{name} does not exist or is not visible to the integration user "
                "(field-level security)"
            )
            continue
        if on_create and not info.get("createable", False):
            problems.append(f"{key}: {obj}.{name} is read-only (not createable)")
            continue
        if (
            on_update
            and name not in create_only  # (in every spelling task.fields uses)
            and not info.get("updateable", False)
        ):
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
            hint = " (it takes a date and time: use {ended_at})" if kind == "date" else ""
            problems.append(
                f"{key}: a {kind} value does not fit {obj}.{name} of type {sf_type}{hint}"
            )
            continue
        if kind == "clear" and not info.get("nillable", True) and sf_type != "boolean":
            problems.append(f"{key}: {obj}.{name} cannot be cleared (not nillable)")
            continue
        if sf_type in _ID_TYPES:
            _check_ids(obj, name, key, value, info, agents, prefixes, problems)
            continue
        possible = finite_values(value) if kind == "text" else None
        if sf_type in {"picklist", "multipicklist"}:
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
        length = info.get("length")
        if sf_type in _TEXT_TYPES and possible is not None and isinstance(length, int) and length:
            # Every value is known: one that does not fit is refused (STRING_TOO_LONG) each
            # time it comes up, so it is a problem now, not a cut at send time.
            longest = max(possible, key=lambda v: (len(v), v))
            if len(longest) > length:
                if not placeholders(value):
                    problems.append(
                        f"{key}: {len(value)} characters exceed {obj}.{name} length {length}"
                    )
                else:
                    problems.append(
                        f"{key}: {value!r} can be {len(longest)} characters ({longest!r}), "
                        f"over {obj}.{name} length {length} (Salesforce refuses it: "
                        "STRING_TOO_LONG)"
                    )


def _check_ids(
    obj: str,
    name: str,
    key: str,
    value: Any,
    info: AbcMapping[str, Any],
    agents: AbcMapping[str, str],
    prefixes: AbcMapping[str, str],
    problems: list[str],
) -> None:
    """A reference field's literal id, or the agents' ids ``{owner_id}`` yields."""
    if not isinstance(value, str) or value == CLEAR_LITERAL:
        return
    if not placeholders(value):
        why = _reference_problem(value, info, prefixes)
        if why is not None:
            problems.append(f"{key}: {value!r} is {why} (Salesforce refuses it: {obj}.{name})")
    elif value == "{owner_id}":
        for agent, user in agents.items():
            why = _reference_problem(user, info, prefixes)
            if why is not None:
                problems.append(
                    f"{key}: agents.{agent} = {user!r} is {why} "
                    f"(Salesforce refuses {obj}.{name} for that agent's calls)"
                )


def obj_is_task(where: str) -> bool:
    return where.startswith("task")


def _key_field(describe: AbcMapping[str, Any], name: str) -> AbcMapping[str, Any] | None:
    return _by_name(describe).get(name.lower())


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
        mapped = {n.lower() for n in mapping.task_fields}
        if CALL_KEY_FIELD.lower() not in mapped:  # else _check_fields reports it
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
    prefixes = _key_prefixes(describes)
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
            agents=mapping.agents,
            prefixes=prefixes,
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
    if _key_field(lead, mapping.lead_phone_field) is None:
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
        agents=mapping.agents,
        prefixes=prefixes,
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
            agents=mapping.agents,
            prefixes=prefixes,
            problems=problems,
        )
    return problems


def _cut_length(value: Any, info: AbcMapping[str, Any]) -> tuple[int, bool] | None:
    """(field length, cut?) for a template whose text may not fit the field: its values
    are unbounded (``{notes}``), so no check can say in advance that they fit. Free-text
    fields are cut to fit at send time (True); url, email and phone fields are not (a cut
    value is a wrong one): Salesforce refuses a longer value (False). None: always fits,
    or checked as a problem instead (literals and finite templates)."""
    if not isinstance(value, str) or not placeholders(value) or _value_kind(value) != "text":
        return None
    if finite_values(value) is not None:
        return None
    sf_type = str(info.get("type", "string"))
    if sf_type not in _TEXT_TYPES or sf_type in {"picklist", "multipicklist"}:
        return None
    length = info.get("length")
    if not isinstance(length, int) or length <= 0 or max_text_length(value) <= length:
        return None
    return length, sf_type in _CUT_TYPES


def _lead_tables(mapping: Mapping) -> Iterable[tuple[str, AbcMapping[str, Any]]]:
    yield "lead.fields", mapping.lead_fields
    for disposition, fields in mapping.lead_dispositions.items():
        yield f"lead.dispositions.{disposition.value}", fields


def _text_lengths(
    mapping: Mapping, describes: AbcMapping[str, AbcMapping[str, Any]]
) -> Iterator[tuple[str, str, str, Any, int, bool]]:
    """``(where, object, field, template, field length, cut when sent)`` for each template
    whose text may be longer than its field (see :func:`_cut_length`), in every table."""
    tables: list[tuple[str, str, AbcMapping[str, Any]]] = [
        ("task.fields", mapping.task_object, mapping.task_fields)
    ]
    tables += [(where, mapping.lead_object, f) for where, f in _lead_tables(mapping)]
    for where, obj, fields in tables:
        describe = describes.get(obj)
        if describe is None:
            continue
        by_name = _by_name(describe)
        for name, value in fields.items():
            info = by_name.get(name.lower())
            cut = None if info is None else _cut_length(value, info)
            if cut is not None:
                yield where, obj, name, value, *cut


def cut_lengths(
    mapping: Mapping, describes: AbcMapping[str, AbcMapping[str, Any]]
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Where text is cut to fit at send time: (Task field -> length, lead table -> Lead
    field -> length), lead tables named by disposition value ("" for ``lead.fields``)."""
    task: dict[str, int] = {}
    lead: dict[str, dict[str, int]] = {}
    for where, _, name, _, length, cuts in _text_lengths(mapping, describes):
        if not cuts:
            continue
        if where == "task.fields":
            task[name] = length
        else:
            table = where.removeprefix("lead.fields").removeprefix("lead.dispositions.")
            lead.setdefault(table, {})[name] = length
    return task, lead


def length_notes(mapping: Mapping, describes: AbcMapping[str, AbcMapping[str, Any]]) -> list[str]:
    """One warning per template whose text may be longer than its field: what happens then."""
    notes: list[str] = []
    for where, obj, name, value, length, cuts in _text_lengths(mapping, describes):
        head = (
            f"{where}.{name}: {value!r} can be up to {max_text_length(value)} characters, "
            f"{obj}.{name} holds {length}"
        )
        if cuts:
            notes.append(f"{head}: a longer value is cut to {length} characters when sent")
        else:
            notes.append(
                f"{head}: Salesforce refuses a longer value (STRING_TOO_LONG) and that "
                "outcome is dead-lettered; map a longer field"
            )
    return notes
