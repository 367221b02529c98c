"""The field mapping: TOML in, Task and Lead field dicts out (pure).

The built-in default is ``default.toml`` next to this module; a file given in
``[mapping] file`` replaces it as a whole. Loading checks the shape and refuses
anything that could silently misbehave (unknown placeholders, a sticky field set
to false); :meth:`Mapping.check_against_describe` checks it against the org.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from spool.record import Disposition, OutcomeFields

from ._template import ValueFn, compile_value, placeholders

__all__ = [
    "CALL_KEY_FIELD",
    "LeadNotFound",
    "Mapping",
    "MappingError",
    "load_mapping",
    "parse_mapping",
]

#: The Task field that holds ``source:call_id`` when the org has no external ID field.
CALL_KEY_FIELD = "CallObject"
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
    create_only: frozenset[str]
    agents: dict[str, str]
    lead_object: str
    lead_external_id: str
    lead_phone_field: str
    lead_not_found: LeadNotFound
    sticky: frozenset[str]
    lead_fields: dict[str, Any]
    lead_dispositions: dict[Disposition, dict[str, Any]]
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
        Task key field that is not case-sensitive), one line each."""
        from .describe_check import key_field_notes

        return key_field_notes(self, describes)


def _problems_for_values(
    where: str, table: Any, problems: list[str], sticky: frozenset[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table of field = value")
        return out
    for name, value in table.items():
        key = f"{where}.{name}"
        if not _FIELD_NAME.match(name):
            problems.append(f"{key}: not a Salesforce field API name")
            continue
        try:
            compile_value(value)
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
            continue
        if name in sticky and value is not True:
            problems.append(
                f"{key}: {name} is sticky (never cleared by this daemon); "
                "it may only be set to true"
            )
            continue
        out[name] = value
    return out


def parse_mapping(data: dict[str, Any], *, source: str = "built-in") -> Mapping:
    """A TOML document (as a dict) -> Mapping, or MappingError listing every problem."""
    problems: list[str] = []
    known_top = {"task", "agents", "lead"}
    for key in data:
        if key not in known_top:
            problems.append(f"{key}: unknown section (expected task, agents, lead)")
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
    create_only_raw = task.get("create_only", ["TaskSubtype"])
    if not isinstance(create_only_raw, list) or not all(
        isinstance(x, str) for x in create_only_raw
    ):
        problems.append("task.create_only: expected a list of field names")
        create_only_raw = []
    sticky_raw = lead.get("sticky", ["DoNotCall"])
    if not isinstance(sticky_raw, list) or not all(isinstance(x, str) for x in sticky_raw):
        problems.append("lead.sticky: expected a list of field names")
        sticky_raw = []
    sticky = frozenset(sticky_raw)
    task_fields = _problems_for_values("task.fields", task.get("fields", {}), problems, frozenset())
    if not task_ext and task_fields.get(CALL_KEY_FIELD) != "{external_key}":
        problems.append(
            f'task.fields.{CALL_KEY_FIELD}: must be "{{external_key}}" when '
            'task.external_id_field is "" (no external ID field): it is how the daemon finds '
            f"a Task again instead of inserting it twice; got {task_fields.get(CALL_KEY_FIELD)!r}"
        )
    if task_ext and task_ext in task_fields:
        problems.append(
            f"task.fields.{task_ext}: the external id field is filled with source:call_id by "
            "the daemon; do not map it"
        )
    for name in ("WhoId",):
        if name in task_fields:
            problems.append(f"task.fields.{name}: set by lead resolution; do not map it")

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
    lead_fields = _problems_for_values("lead.fields", lead.get("fields", {}), problems, sticky)
    dispositions: dict[Disposition, dict[str, Any]] = {}
    raw_disp = lead.get("dispositions", {})
    if not isinstance(raw_disp, dict):
        problems.append("lead.dispositions: expected tables named after dispositions")
        raw_disp = {}
    for name, table in raw_disp.items():
        try:
            disposition = Disposition(name)
        except ValueError:
            valid = ", ".join(d.value for d in Disposition)
            problems.append(f"lead.dispositions.{name}: unknown disposition; known: {valid}")
            continue
        dispositions[disposition] = _problems_for_values(
            f"lead.dispositions.{name}", table, problems, sticky
        )
    for name in sticky:
        if name in lead_fields:
            problems.append(f"lead.fields.{name}: a sticky field belongs under a disposition")
    if problems:
        raise MappingError(problems, source=source)

    task_fns = tuple((name, compile_value(value)) for name, value in task_fields.items())
    lead_fns: dict[Disposition, tuple[tuple[str, ValueFn], ...]] = {}
    for disposition in Disposition:
        merged = dict(lead_fields)
        merged.update(dispositions.get(disposition, {}))
        lead_fns[disposition] = tuple((n, compile_value(v)) for n, v in merged.items())
    return Mapping(
        task_object=task_object,
        task_external_id=task_ext,
        task_fields=task_fields,
        create_only=frozenset(create_only_raw),
        agents=agents,
        lead_object=text(lead, "object", "lead", "Lead"),
        lead_external_id=text(lead, "external_id_field", "lead", "Dialer_Lead_Id__c"),
        lead_phone_field=text(lead, "phone_field", "lead", "Phone"),
        lead_not_found=not_found,
        sticky=sticky,
        lead_fields=lead_fields,
        lead_dispositions=dispositions,
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
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise MappingError(
                [f"cannot read the file: {exc.strerror or exc}"], source=source
            ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError([f"not valid TOML: {exc}"], source=source) from exc
    return parse_mapping(data, source=source)
