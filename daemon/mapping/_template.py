"""Compiled value templates: ``"{name}"`` placeholders over an outcome (pure).

An outcome is a ``CallOutcome`` or a ``StoredOutcome`` (the same attributes, read lazily).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

from spool.record import Direction, Disposition, OutcomeFields

__all__ = ["CLEAR", "VARIABLES", "Clear", "Getter", "ValueFn", "compile_value", "placeholders"]


class Clear:
    """Sentinel: clear the field (JSON null on REST, ``#N/A`` in Bulk CSV)."""

    _instance: Clear | None = None

    def __new__(cls) -> Clear:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "CLEAR"


CLEAR: Final = Clear()
CLEAR_LITERAL = "@clear"

Getter = Callable[[OutcomeFields, Mapping[str, str]], Any]
ValueFn = Callable[[OutcomeFields, Mapping[str, str]], Any]

_LABELS = {
    Disposition.CONNECTED: "Connected",
    Disposition.VOICEMAIL: "Voicemail",
    Disposition.NO_ANSWER: "No answer",
    Disposition.BUSY: "Busy",
    Disposition.CALLBACK_REQUESTED: "Callback requested",
    Disposition.DO_NOT_CALL: "Do not call",
    Disposition.WRONG_NUMBER: "Wrong number",
    Disposition.INVALID_NUMBER: "Invalid number",
    Disposition.FAX: "Fax",
    Disposition.ABANDONED: "Abandoned",
    Disposition.REJECTED: "Rejected",
    Disposition.CANCELED: "Canceled",
    Disposition.FAILED: "Failed",
    Disposition.UNKNOWN: "Unknown",
}


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _description(o: OutcomeFields, _: Mapping[str, str]) -> str | None:
    parts: list[str] = []
    if o.notes:
        parts.append(o.notes)
    if o.recording_url:
        parts.append(f"Recording: {o.recording_url}")
    if o.raw_disposition:
        raw = f"Dialer disposition: {o.raw_disposition}"
        if o.detail:
            raw += f" ({o.detail})"
        parts.append(raw)
    text = "\n".join(parts)
    return text[:32000] if text else None


def _ended_date(o: OutcomeFields, _: Mapping[str, str]) -> date:
    # The call's own local date, as the dialer reported it (ActivityDate is a date).
    return o.ended_at.date()


VARIABLES: dict[str, Getter] = {
    "source": lambda o, _: o.source,
    "call_id": lambda o, _: o.call_id,
    "external_key": lambda o, _: o.external_key,
    "disposition": lambda o, _: o.disposition.value,
    "disposition_label": lambda o, _: _LABELS[o.disposition],
    "raw_disposition": lambda o, _: o.raw_disposition,
    "detail": lambda o, _: o.detail,
    "agent_id": lambda o, _: o.agent_id,
    "campaign": lambda o, _: o.campaign,
    "phone": lambda o, _: o.phone,
    "direction": lambda o, _: o.direction.value,
    "call_type": lambda o, _: "Inbound" if o.direction is Direction.INBOUND else "Outbound",
    "started_at": lambda o, _: _utc(o.started_at),
    "ended_at": lambda o, _: _utc(o.ended_at),
    "ended_date": _ended_date,
    "duration_s": lambda o, _: o.duration_s,
    "talk_s": lambda o, _: o.talk_s,
    "callback_at": lambda o, _: _utc(o.callback_at),
    "recording_url": lambda o, _: o.recording_url,
    "notes": lambda o, _: o.notes,
    "description": _description,
    "owner_id": lambda o, agents: agents.get(o.agent_id) if o.agent_id else None,
}

# Finite value sets, for picklist checks against describe.
DOMAINS: dict[str, frozenset[str]] = {
    "call_type": frozenset({"Inbound", "Outbound"}),
    "disposition": frozenset(d.value for d in Disposition),
    "disposition_label": frozenset(_LABELS.values()),
    "direction": frozenset(d.value for d in Direction),
}
# Python type each placeholder yields when used alone.
TYPES: dict[str, type] = {
    "started_at": datetime,
    "ended_at": datetime,
    "callback_at": datetime,
    "ended_date": date,
    "duration_s": int,
    "talk_s": int,
}

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)?)\}")


def placeholders(text: str) -> list[str]:
    return _PLACEHOLDER.findall(text)


def _getter(name: str) -> Getter:
    if name.startswith("extra."):
        key = name[len("extra.") :]
        return lambda o, _: o.extra.get(key)
    try:
        return VARIABLES[name]
    except KeyError:
        known = ", ".join(sorted(VARIABLES)) + ", extra.<key>"
        raise ValueError(f"unknown placeholder {{{name}}}; known: {known}") from None


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compile_value(value: Any) -> ValueFn:
    """A TOML value -> ``fn(outcome, agents) -> value | None | CLEAR``.

    None means "leave the field out" (REST) / empty (Bulk, ignored on update).
    """
    if isinstance(value, bool | int | float):
        return lambda o, a: value
    if not isinstance(value, str):
        raise ValueError(f"expected a string, number or boolean, got {type(value).__name__}")
    if value == CLEAR_LITERAL:
        return lambda o, a: CLEAR
    names = placeholders(value)
    if not names:
        return lambda o, a: value
    getters = [_getter(n) for n in names]
    if len(names) == 1 and value == "{" + names[0] + "}":
        return getters[0]
    pieces = _PLACEHOLDER.split(value)
    # split() alternates literal, name, literal, name, ..., literal
    literals = pieces[0::2]

    def render(o: OutcomeFields, agents: Mapping[str, str]) -> str | None:
        values = [g(o, agents) for g in getters]
        if all(v is None for v in values):
            # e.g. "Recording: {recording_url}" with no recording: leave the field out.
            return None
        out = [literals[0]]
        for v, lit in zip(values, literals[1:], strict=True):
            out.append(_as_text(v))
            out.append(lit)
        return "".join(out)

    return render
