"""Compiled value templates: ``"{name}"`` placeholders over an outcome (pure).

An outcome is a ``CallOutcome`` or a ``StoredOutcome`` (the same attributes, read lazily).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, tzinfo
from itertools import product
from typing import Any, Final

from spool.record import CallOutcome, Direction, Disposition, OutcomeFields

__all__ = [
    "CLEAR",
    "VARIABLES",
    "Clear",
    "Getter",
    "ValueFn",
    "compile_value",
    "finite_values",
    "max_text_length",
    "placeholders",
]


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
    # The date where the call happened (ActivityDate is a date, "Due Date Only"): the
    # adapters keep the site's UTC offset in ended_at (the dialer's own, or the adapter's
    # tz for wall-clock times and epochs), so its date is the site's, not UTC's.
    return o.ended_at.date()


def _ended_date_in(zone: tzinfo) -> Getter:
    """``{ended_date}`` taken in ``zone`` (mapping ``ended_date_tz``): for dialers that
    give their times in UTC (Twilio, "...Z" timestamps), whose evening calls in the
    Americas would otherwise be dated the next day."""

    def ended_date(o: OutcomeFields, _: Mapping[str, str]) -> date:
        return o.ended_at.astimezone(zone).date()

    return ended_date


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


# The longest text each placeholder yields (CallOutcome's limits; datetimes as ISO 8601
# with microseconds and offset), to tell templates that always fit a Text field from
# those that may not (their values are cut to fit at send time: see Mapping.cut_to_fit).
def _model_max_length(name: str) -> int:
    """CallOutcome's ``max_length`` of a text field (read, not copied: raised there, a
    template of it must not be taken for one that always fits its field)."""
    for rule in CallOutcome.model_fields[name].metadata:
        limit = getattr(rule, "max_length", None)
        if isinstance(limit, int):
            return limit
    raise LookupError(f"CallOutcome.{name} has no max_length")


_MAX_TEXT: dict[str, int] = {
    **{
        name: _model_max_length(name)
        for name in (
            "call_id",
            "raw_disposition",
            "detail",
            "agent_id",
            "campaign",
            "recording_url",
            "notes",
        )
    },
    "source": 64,  # checked by CallOutcome's validator: 1-64 characters
    "external_key": 255,
    "phone": 21,
    "started_at": 32,
    "ended_at": 32,
    "callback_at": 32,
    "ended_date": 10,
    "duration_s": 6,
    "talk_s": 6,
    "description": 32000,
    "owner_id": 18,
}
_MAX_EXTRA_TEXT: Final = 32000

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)?)\}")


def placeholders(text: str) -> list[str]:
    return _PLACEHOLDER.findall(text)


def _getter(name: str, date_tz: tzinfo | None) -> Getter:
    if name == "ended_date" and date_tz is not None:
        return _ended_date_in(date_tz)
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


def compile_value(value: Any, *, date_tz: tzinfo | None = None) -> ValueFn:
    """A TOML value -> ``fn(outcome, agents) -> value | None | CLEAR``.

    None means "leave the field out" (REST) / empty (Bulk, ignored on update).
    ``date_tz``: the zone ``{ended_date}`` is taken in (None: ended_at's own offset).
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
    getters = [_getter(n, date_tz) for n in names]
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


def max_text_length(value: str) -> int:
    """The most characters a template's text can have (its literals plus each
    placeholder's longest value)."""
    names = placeholders(value)
    literal = len(_PLACEHOLDER.sub("", value))
    total = literal
    for n in names:
        if n in DOMAINS:
            total += max(len(v) for v in DOMAINS[n])
        else:
            total += _MAX_TEXT.get(n, _MAX_EXTRA_TEXT)
    return total


#: Beyond this many combinations a template's values are not enumerated (checks skip it).
_MAX_COMBINATIONS: Final = 10_000


def finite_values(value: Any) -> frozenset[str] | None:
    """Every string a text value can produce, when that set is known and finite: a
    literal, or a template whose placeholders all have a finite domain (``{disposition}``,
    ``"Call: {disposition_label}"``). None otherwise (``{notes}``, ``@clear``, numbers)."""
    if not isinstance(value, str) or value == CLEAR_LITERAL:
        return None
    names = placeholders(value)
    if not names:
        return frozenset({value})
    if not all(n in DOMAINS for n in names):
        return None
    domains = [sorted(DOMAINS[n]) for n in names]
    count = 1
    for d in domains:
        count *= len(d)
    if count > _MAX_COMBINATIONS:
        return None
    literals = _PLACEHOLDER.split(value)[0::2]
    out: set[str] = set()
    for combo in product(*domains):
        parts = [literals[0]]
        for v, lit in zip(combo, literals[1:], strict=True):
            parts.append(v)
            parts.append(lit)
        out.add("".join(parts))
    return frozenset(out)
