"""The field mapping: TOML in, Task and Lead field dicts out (pure).

The built-in default is ``default.toml`` next to this module; a file given in
``[mapping] file`` replaces it as a whole. Loading checks the shape and refuses
anything that could silently misbehave (unknown placeholders, a sticky field set
to false, one field mapped twice in two spellings); :meth:`Mapping.check_against_describe`
checks it against the org.

Salesforce field names are not case-sensitive (``donotcall`` writes Lead.DoNotCall), so
every guard on a field name (sticky, create-only, the fields the daemon fills itself)
compares names case-insensitively.
"""

from __future__ import annotations

import codecs
import re
import tomllib
from collections.abc import Iterable as AbcIterable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spool.record import Disposition, OutcomeFields

from ._template import ValueFn, compile_value, placeholders

__all__ = [
    "ALWAYS_STICKY",
    "CALL_KEY_FIELD",
    "LeadNotFound",
    "Mapping",
    "MappingError",
    "load_mapping",
    "parse_mapping",
]

#: The Task field that holds ``source:call_id`` when the org has no external ID field.
CALL_KEY_FIELD = "CallObject"
#: Sticky whatever ``lead.sticky`` says (the list adds to it): "DoNotCall is sticky: no
#: later outcome of ours clears it". A list that replaced it would drop that protection.
ALWAYS_STICKY: Final = frozenset({"DoNotCall"})
_SF_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class MappingError(ValueError):
    """The mapping file is invalid; ``problems`` names each bad key."""

    def __init__(self, problems: list[str], *, source: str) -> None:
        self.problems = problems
        self.source = source
        lines = [f"invalid mapping {source}:"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


class LeadNotFound(StrEnum):
    """What to do with an outcome whose Lead cannot be found."""

    TASK_WITHOUT_WHO = "task_without_who"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Mapping:
    """A parsed, validated mapping. Build it with :func:`load_mapping`."""

    task_object: str
    task_external_id: str
    task_fields: dict[str, Any]  # field -> raw TOML value (for describe checks)
    create_only: frozenset[str]  # as listed, plus their spellings in task_fields
    agents: dict[str, str]
    lead_object: str
    lead_external_id: str
    lead_phone_field: str
    lead_not_found: LeadNotFound
    #: Sticky field names: ALWAYS_STICKY, lead.sticky, and every other spelling of them
    #: the lead tables use (so ``name in sticky`` holds for each name this mapping sends).
    sticky: frozenset[str]
    lead_fields: dict[str, Any]
    lead_dispositions: dict[Disposition, dict[str, Any]]
    #: IANA zone ``{ended_date}`` is taken in; None: ended_at's own offset (the site's).
    ended_date_tz: str | None = None
    source: str = "built-in"
    _task_fns: tuple[tuple[str, ValueFn], ...] = field(default=(), repr=False)
    _lead_fns: dict[Disposition, tuple[tuple[str, ValueFn], ...]] = field(
        default_factory=dict, repr=False
    )

    @property
    def upserts_tasks(self) -> bool:
        """True: Tasks are upserted on ``task_external_id`` (the normal case). False (the
        org has no such field, ``task.external_id_field = ""``): a Task is inserted, its Id
        remembered and updated by Id after; a record that may have been sent before is
        first looked up by its key in ``CallObject`` (:data:`CALL_KEY_FIELD`)."""
        return bool(self.task_external_id)

    # -- building records ------------------------------------------------------
    def task_record(
        self, outcome: OutcomeFields, *, who_id: str | None = None, include_create_only: bool = True
    ) -> dict[str, Any]:
        """Task fields for this outcome (without the external id field).

        Values are Python values (str, int, bool, date, datetime) or ``CLEAR``;
        fields whose template has no value are left out.
        """
        out: dict[str, Any] = {}
        agents = self.agents
        for name, fn in self._task_fns:
            if not include_create_only and name in self.create_only:
                continue
            value = fn(outcome, agents)
            if value is not None:
                out[name] = value
        if who_id is not None:
            out["WhoId"] = who_id
        return out

    def lead_update(self, outcome: OutcomeFields) -> dict[str, Any]:
        """Lead fields this outcome sets (without Id). Sticky fields appear only as true."""
        out: dict[str, Any] = {}
        for name, fn in self._lead_fns[outcome.disposition]:
            value = fn(outcome, self.agents)
            if value is not None:
                out[name] = value
        return out

    def sets_sticky(self, disposition: Disposition) -> bool:
        """Whether outcomes with this disposition may set a sticky field (e.g. DoNotCall)."""
        return any(name in self.sticky for name, _ in self._lead_fns[disposition])

    def sticky_update(self, outcome: OutcomeFields) -> dict[str, Any]:
        """Only the sticky fields this outcome sets: sent even when a newer outcome won."""
        return {k: v for k, v in self.lead_update(outcome).items() if k in self.sticky}

    def task_value_fns(self) -> tuple[tuple[str, ValueFn], ...]:
        """(field, compiled value function) per Task field, in :meth:`task_columns` order."""
        return self._task_fns

    def task_field_inputs(self) -> dict[str, frozenset[str]]:
        """Task field -> the placeholders its value depends on (empty: a constant).

        Lets the Bulk rail compute fields that depend only on, say, the disposition
        once per distinct value instead of once per row.
        """
        out: dict[str, frozenset[str]] = {}
        for name, _ in self._task_fns:
            raw = self.task_fields.get(name)
            out[name] = frozenset(placeholders(raw)) if isinstance(raw, str) else frozenset()
        return out

    def task_columns(self) -> list[str]:
        """Every Task field this mapping can produce, in a stable order (for CSV headers)."""
        return [name for name, _ in self._task_fns]

    def lead_columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for fns in self._lead_fns.values():
            for name, _ in fns:
                seen.setdefault(name, None)
        return list(seen)

    # -- checks against the org -----------------------------------------------
    def check_against_describe(self, describes: AbcMapping[str, AbcMapping[str, Any]]) -> list[str]:
        """Every problem of this mapping against the org's describe results, one line each.

        ``describes`` maps an sObject name to its ``/sobjects/<name>/describe`` body.
        """
        from .describe_check import check_mapping

        return check_mapping(self, describes)

    def notes_against_describe(self, describes: AbcMapping[str, AbcMapping[str, Any]]) -> list[str]:
        """Warnings against the org's describe results that do not stop the daemon (e.g. a
        Task key field that is not case-sensitive, text that is cut to fit), one line each."""
        from .describe_check import key_field_notes, length_notes

        return key_field_notes(self, describes) + length_notes(self, describes)

    def cut_to_fit(self, describes: AbcMapping[str, AbcMapping[str, Any]]) -> Mapping:
        """This mapping with the text of unbounded templates (``Subject = "{notes}"``) cut
        to the length of their free-text field, or ``self`` when nothing needs it.

        Salesforce refuses a longer value (STRING_TOO_LONG, reference §2.8) and that would
        dead-letter the whole outcome, its Lead update (DoNotCall...) with it; a Salesforce
        admin expects the call logged with the start of the text, as Data Loader's "allow
        field truncation" does. Literals and finite templates are not cut: the describe
        check reports those that do not fit. The rails apply it after each describe check.
        """
        from .describe_check import cut_lengths

        task_cut, lead_cut = cut_lengths(self, describes)
        if not task_cut and not lead_cut:
            return self
        task_fns = tuple(
            (n, _cut(fn, task_cut[n]) if n in task_cut else fn) for n, fn in self._task_fns
        )
        lead_fns: dict[Disposition, tuple[tuple[str, ValueFn], ...]] = {}
        common = lead_cut.get("", {})
        for disposition, fns in self._lead_fns.items():
            own = self.lead_dispositions.get(disposition, {})
            specific = lead_cut.get(disposition.value, {})
            wrapped: list[tuple[str, ValueFn]] = []
            for n, fn in fns:
                # The disposition's own value overrides lead.fields (see parse_mapping).
                length = specific.get(n) if n in own else common.get(n)
                wrapped.append((n, _cut(fn, length) if length is not None else fn))
            lead_fns[disposition] = tuple(wrapped)
        return replace(self, _task_fns=task_fns, _lead_fns=lead_fns)


def _cut(fn: ValueFn, length: int) -> ValueFn:
    def cut(o: OutcomeFields, agents: AbcMapping[str, str]) -> Any:
        value = fn(o, agents)
        return _cut_text(value, length) if isinstance(value, str) else value

    return cut


def _cut_text(text: str, length: int) -> str:
    """``text`` cut to ``length`` UTF-16 code units: what Salesforce (Java) counts as a
    text field's characters; a character beyond U+FFFF counts two. Never more code
    points than ``length`` either, so the cut fits whichever way the org counts."""
    if len(text) <= length and (text.isascii() or len(text.encode("utf-16-le")) <= 2 * length):
        return text
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > length:
            return text[:i]
    return text


def _problems_for_values(
    where: str, table: Any, problems: list[str], sticky: frozenset[str]
) -> dict[str, Any]:
    """The valid ``field = value`` pairs of one table; every bad one is added to ``problems``.

    ``sticky`` holds lower-case names: Salesforce field names are not case-sensitive
    (``donotcall`` writes Lead.DoNotCall), so every guard compares them folded.
    """
    out: dict[str, Any] = {}
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table of field = value")
        return out
    seen: dict[str, str] = {}  # folded name -> the spelling met first
    for name, value in table.items():
        key = f"{where}.{name}"
        if not _FIELD_NAME.match(name):
            problems.append(f"{key}: not a Salesforce field API name")
            continue
        first = seen.setdefault(name.lower(), name)
        if first != name:
            # TOML keys are case-sensitive, Salesforce field names are not: both would
            # write the same field in one request.
            problems.append(
                f"{key}: the same Salesforce field as {where}.{first} (field names are not "
                "case-sensitive); map it once"
            )
            continue
        try:
            compile_value(value)
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
            continue
        if name.lower() in sticky and value is not True:
            problems.append(
                f"{key}: {name} is sticky (never cleared by this daemon); "
                "it may only be set to true"
            )
            continue
        out[name] = value
    return out


def _spellings(names: frozenset[str], used: AbcIterable[str]) -> frozenset[str]:
    """``names`` plus every spelling of them in ``used`` (compared case-insensitively), so
    that the rails' ``name in mapping.sticky`` holds for the names the mapping sends."""
    folded = {n.lower() for n in names}
    return names | frozenset(n for n in used if n.lower() in folded)


def _check_zone(value: Any, problems: list[str]) -> tzinfo | None:
    if value is None:
        return None
    if isinstance(value, str) and value:
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):  # ValueError: e.g. "../etc"
            pass
    problems.append(
        f"ended_date_tz: expected an IANA time zone name such as 'America/Chicago', got {value!r}"
    )
    return None


def parse_mapping(data: dict[str, Any], *, source: str = "built-in") -> Mapping:
    """A TOML document (as a dict) -> Mapping, or MappingError listing every problem."""
    problems: list[str] = []
    known_top = {"task", "agents", "lead", "ended_date_tz"}
    for key in data:
        if key not in known_top:
            problems.append(
                f"{key}: unknown section (expected [task], [agents], [lead], or the key "
                "ended_date_tz before them)"
            )
    date_tz = _check_zone(data.get("ended_date_tz"), problems)
    task = data.get("task", {})
    lead = data.get("lead", {})
    agents_raw = data.get("agents", {})
    if not isinstance(task, dict):
        problems.append("task: expected a table")
        task = {}
    if not isinstance(lead, dict):
        problems.append("lead: expected a table")
        lead = {}

    def text(table: dict[str, Any], key: str, where: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not _FIELD_NAME.match(value):
            problems.append(f"{where}.{key}: expected an API name, got {value!r}")
            return default
        return value

    for key in task:
        if key not in {"object", "external_id_field", "create_only", "fields"}:
            problems.append(f"task.{key}: unknown key")
    for key in lead:
        if key not in {
            "object",
            "external_id_field",
            "phone_field",
            "not_found",
            "sticky",
            "fields",
            "dispositions",
        }:
            problems.append(f"lead.{key}: unknown key")

    task_object = text(task, "object", "task", "Task")
    # "" : the org has no Task external ID field; Tasks are inserted and found again by
    # CallObject (see Mapping.upserts_tasks).
    task_ext = (
        ""
        if task.get("external_id_field") == ""
        else text(task, "external_id_field", "task", "Call_Id__c")
    )
    # Read before the "raise if problems" below: a bad value must be reported, not
    # silently replaced by the default.
    lead_object = text(lead, "object", "lead", "Lead")
    lead_ext = text(lead, "external_id_field", "lead", "Dialer_Lead_Id__c")
    lead_phone = text(lead, "phone_field", "lead", "Phone")
    create_only_raw = task.get("create_only", ["TaskSubtype"])
    if not isinstance(create_only_raw, list) or not all(
        isinstance(x, str) for x in create_only_raw
    ):
        problems.append("task.create_only: expected a list of field names")
        create_only_raw = []
    sticky_raw = lead.get("sticky", [])
    if not isinstance(sticky_raw, list) or not all(isinstance(x, str) for x in sticky_raw):
        problems.append("lead.sticky: expected a list of field names")
        sticky_raw = []
    # lead.sticky adds to ALWAYS_STICKY: replacing the list must not drop DoNotCall.
    sticky_listed = ALWAYS_STICKY | frozenset(sticky_raw)
    sticky_folded = frozenset(n.lower() for n in sticky_listed)
    task_fields = _problems_for_values("task.fields", task.get("fields", {}), problems, frozenset())
    task_folded = {n.lower(): n for n in task_fields}
    call_key = task_folded.get(CALL_KEY_FIELD.lower(), CALL_KEY_FIELD)
    if not task_ext and task_fields.get(call_key) != "{external_key}":
        problems.append(
            f'task.fields.{CALL_KEY_FIELD}: must be "{{external_key}}" when '
            'task.external_id_field is "" (no external ID field): it is how the daemon finds '
            f"a Task again instead of inserting it twice; got {task_fields.get(call_key)!r}"
        )
    if task_ext and task_ext.lower() in task_folded:
        problems.append(
            f"task.fields.{task_folded[task_ext.lower()]}: the external id field is filled with "
            "source:call_id by the daemon; do not map it"
        )
    for name in ("WhoId",):
        if name.lower() in task_folded:
            problems.append(
                f"task.fields.{task_folded[name.lower()]}: set by lead resolution; do not map it"
            )

    agents: dict[str, str] = {}
    if not isinstance(agents_raw, dict):
        problems.append('agents: expected a table of agent_id = "005..." user ids')
    else:
        for agent, user in agents_raw.items():
            if not isinstance(user, str) or not _SF_ID.match(user):
                problems.append(f"agents.{agent}: expected a 15/18-character User Id, got {user!r}")
            else:
                agents[str(agent)] = user

    not_found_raw = lead.get("not_found", LeadNotFound.TASK_WITHOUT_WHO.value)
    try:
        not_found = LeadNotFound(not_found_raw)
    except ValueError:
        problems.append(
            f"lead.not_found: expected 'task_without_who' or 'dead_letter', got {not_found_raw!r}"
        )
        not_found = LeadNotFound.TASK_WITHOUT_WHO
    lead_fields = _problems_for_values(
        "lead.fields", lead.get("fields", {}), problems, sticky_folded
    )
    dispositions: dict[Disposition, dict[str, Any]] = {}
    raw_disp = lead.get("dispositions", {})
    if not isinstance(raw_disp, dict):
        problems.append("lead.dispositions: expected tables named after dispositions")
        raw_disp = {}
    # One spelling per Lead field across lead.fields and every disposition: they merge into
    # one request, and the Bulk rail's CSV has one column per spelling (two for one field).
    spelled: dict[str, str] = {n.lower(): f"lead.fields.{n}" for n in lead_fields}
    for name, table in raw_disp.items():
        try:
            disposition = Disposition(name)
        except ValueError:
            valid = ", ".join(d.value for d in Disposition)
            problems.append(f"lead.dispositions.{name}: unknown disposition; known: {valid}")
            continue
        where = f"lead.dispositions.{name}"
        fields = _problems_for_values(where, table, problems, sticky_folded)
        for field_name in list(fields):
            first = spelled.setdefault(field_name.lower(), f"{where}.{field_name}")
            if first.rsplit(".", 1)[1] != field_name:
                problems.append(
                    f"{where}.{field_name}: the same Salesforce field as {first} (field names "
                    "are not case-sensitive); spell it the same way"
                )
                del fields[field_name]
        dispositions[disposition] = fields
    for name in lead_fields:
        if name.lower() in sticky_folded:
            problems.append(f"lead.fields.{name}: a sticky field belongs under a disposition")
    if problems:
        raise MappingError(problems, source=source)

    task_fns = tuple(
        (name, compile_value(value, date_tz=date_tz)) for name, value in task_fields.items()
    )
    lead_fns: dict[Disposition, tuple[tuple[str, ValueFn], ...]] = {}
    lead_names: set[str] = set(lead_fields)
    for disposition in Disposition:
        merged = dict(lead_fields)
        merged.update(dispositions.get(disposition, {}))
        lead_names.update(merged)
        lead_fns[disposition] = tuple(
            (n, compile_value(v, date_tz=date_tz)) for n, v in merged.items()
        )
    return Mapping(
        task_object=task_object,
        task_external_id=task_ext,
        task_fields=task_fields,
        create_only=_spellings(frozenset(create_only_raw), task_fields),
        agents=agents,
        lead_object=lead_object,
        lead_external_id=lead_ext,
        lead_phone_field=lead_phone,
        lead_not_found=not_found,
        sticky=_spellings(sticky_listed, lead_names),
        lead_fields=lead_fields,
        lead_dispositions=dispositions,
        ended_date_tz=data.get("ended_date_tz") if date_tz is not None else None,
        source=source,
        _task_fns=task_fns,
        _lead_fns=lead_fns,
    )


def load_mapping(path: Path | str | None = None) -> Mapping:
    """Load the mapping from ``path``, or the built-in default when None."""
    if path is None:
        text = resources.files(__package__).joinpath("default.toml").read_text(encoding="utf-8")
        source = "built-in"
    else:
        p = Path(path)
        source = str(p)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise MappingError(
                [f"cannot read the file: {exc.strerror or exc}"], source=source
            ) from exc
        # A byte order mark (Notepad's "UTF-8 with BOM") is not TOML: skipped, not an error.
        bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            # TOML files are UTF-8 (TOML 1.0); an editor's Latin-1/Windows-1252 save of an
            # accented literal lands here. A MappingError, so that check-config prints FAIL
            # and run exits 78 instead of a traceback.
            at = bom + exc.start
            line = raw.count(b"\n", 0, at) + 1
            raise MappingError(
                [
                    f"not UTF-8 text: the byte at offset {at} (line {line}) is "
                    f"0x{raw[at]:02x}; save the file as UTF-8"
                ],
                source=source,
            ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError([f"not valid TOML: {exc}"], source=source) from exc
    return parse_mapping(data, source=source)
