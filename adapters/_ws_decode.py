"""Pure decoding of a generic JSON event stream into ``CallOutcome`` (no sockets).

A dialer's event is one JSON object per websocket text frame. The site tells us,
with dotted paths (``data.call.id``, ``legs.0.number``), where each ``CallOutcome``
field lives in the event, which event types carry an outcome, and where the
event id is (for acks and resume). This module only turns bytes into values;
``adapters.websocket`` moves the bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from pydantic_core import from_json

from adapters._decode_util import in_zone
from adapters.dispositions import Mapped
from spool.record import CallOutcome, Direction, format_validation_error

__all__ = [
    "OUTCOME_FIELDS",
    "DecodeError",
    "Event",
    "EventDecoder",
    "Path",
    "fill_template",
    "get_path",
    "parse_path",
    "parse_timestamp",
    "path_getter",
]

Path = tuple[str | int, ...]

# Fields a site can map; ``lead_*`` build the LeadRef, everything else is a
# CallOutcome field of the same name.
OUTCOME_FIELDS: Final = frozenset(
    {
        "call_id",
        "disposition",
        "detail",
        "ambiguous",
        "agent_id",
        "campaign",
        "phone",
        "direction",
        "started_at",
        "ended_at",
        "duration_s",
        "talk_s",
        "callback_at",
        "recording_url",
        "notes",
        "live",
        "version",
        "source_seq",
        "lead_id",
        "lead_external_key",
        "lead_phone",
    }
)
_TIME_FIELDS: Final = frozenset({"started_at", "ended_at", "callback_at"})
_INT_FIELDS: Final = frozenset({"duration_s", "talk_s", "version", "source_seq"})
_BOOL_FIELDS: Final = frozenset({"ambiguous", "live"})
_REQUIRED: Final = ("call_id", "disposition", "ended_at")
_REQUIRED_SET: Final = frozenset(_REQUIRED)

# Default mapping: the normalized names at the top level of the event.
DEFAULT_FIELDS: Final[Mapping[str, str]] = {name: name for name in OUTCOME_FIELDS}

# Epoch numbers above this are milliseconds (1e11 s is the year 5138).
_EPOCH_MS_THRESHOLD: Final = 1e11
_MISSING: Final = object()


class DecodeError(ValueError):
    """An event we cannot turn into an outcome; ``reason`` names what was wrong."""

    def __init__(self, reason: str, *, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


def parse_path(dotted: str) -> Path:
    """``"legs.0.number"`` -> ``("legs", 0, "number")``; digits index lists."""
    if not dotted or dotted.startswith(".") or dotted.endswith(".") or ".." in dotted:
        raise ValueError(f"not a dotted path: {dotted!r}")
    return tuple(int(part) if part.isdigit() else part for part in dotted.split("."))


def get_path(obj: Any, path: Path) -> Any:
    """The value at ``path``, or ``None`` when any step is absent."""
    # Hot path (every field of every event): exact type checks, no exceptions.
    for part in path:
        kind = type(obj)
        if kind is dict:
            obj = obj.get(part if type(part) is str else str(part), _MISSING)
            if obj is _MISSING:
                return None
        elif kind is list and type(part) is int:
            if part >= len(obj):
                return None
            obj = obj[part]
        else:
            return None
    return obj


def path_getter(path: Path) -> Callable[[Any], Any]:
    """``get_path`` specialised for one path (the common short, all-key paths)."""
    if all(type(part) is str for part in path):
        if len(path) == 1:
            (k1,) = path

            def get1(obj: Any) -> Any:
                return obj.get(k1) if type(obj) is dict else None

            return get1
        if len(path) == 2:
            k1, k2 = path

            def get2(obj: Any) -> Any:
                if type(obj) is not dict:
                    return None
                inner = obj.get(k1)
                return inner.get(k2) if type(inner) is dict else None

            return get2
    return lambda obj: get_path(obj, path)


def parse_timestamp(value: Any, default_tz: tzinfo = UTC) -> datetime:
    """ISO 8601 text or epoch seconds/milliseconds -> aware datetime.

    A timestamp without an offset is read in ``default_tz`` (the site's dialer
    time zone), never silently as UTC; epoch seconds are expressed in it.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        # The conversion to float is inside the try too: a JSON integer has no size
        # limit, and one beyond a double (10**400) raises OverflowError, not ValueError.
        try:
            seconds = value / 1000.0 if value > _EPOCH_MS_THRESHOLD else float(value)
            # An epoch names the instant only: expressed in the site's zone, as a time
            # without an offset is read, so the call is dated where it happened.
            return in_zone(datetime.fromtimestamp(seconds, tz=UTC), default_tz)
        except (OverflowError, OSError, ValueError):  # OSError: EOVERFLOW past year 9999
            raise ValueError(f"not a timestamp (out of range): {_short(value)}") from None
    if isinstance(value, str):
        try:  # fast path: ISO 8601 with an offset or Z (Python 3.11 reads both)
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=default_tz)
        text = value.strip()
        if text.replace(".", "", 1).isdigit():
            return parse_timestamp(float(text), default_tz)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a timestamp: {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=default_tz)
        return parsed
    raise ValueError(f"not a timestamp: {value!r}")


def _short(number: float) -> str:
    """A number for a reason: a JSON integer can have thousands of digits."""
    text = repr(number)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} characters)"


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}: not a number: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):  # inf, nan: not a number
        return int(value) if value.is_integer() else round(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number):  # "1e309" is inf: round() would raise OverflowError
                return round(number)
    raise ValueError(f"{name}: not a number: {value!r}")


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "yes", "1", "y", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "no", "0", "n", "off", ""}:
        return False
    raise ValueError(f"{name}: not a boolean: {value!r}")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(slots=True)  # not frozen: built once per event, on the hot path
class Event:
    """One parsed event: the JSON object, its id (if the stream has ids) and type."""

    body: dict[str, Any]
    event_id: str | None
    event_type: str | None


DispositionMapper = Callable[[str], Mapped]
"""raw value -> what it means (``DispositionMap.lookup``). Unknown values -> UNKNOWN."""


class EventDecoder:
    """Turns one event frame into an ``Event`` and then a ``CallOutcome``.

    ``fields`` maps outcome field names (``OUTCOME_FIELDS``) to dotted paths;
    ``extra`` maps free ``extra`` keys to paths. ``event_types`` empty means every
    event carries an outcome.
    """

    def __init__(
        self,
        *,
        source: str,
        fields: Mapping[str, str],
        map_disposition: DispositionMapper,
        extra: Mapping[str, str] | None = None,
        type_field: str | None = "type",
        event_types: Sequence[str] = (),
        id_field: str | None = "id",
        default_tz: str = "UTC",
        live_when_agent: bool = True,
    ) -> None:
        unknown = sorted(set(fields) - OUTCOME_FIELDS)
        if unknown:
            raise ValueError(f"unknown outcome field(s) in fields: {', '.join(unknown)}")
        self.source = source
        self._fields: dict[str, Path] = {k: parse_path(v) for k, v in fields.items() if v}
        for name in _REQUIRED:
            if name not in self._fields:
                raise ValueError(f"fields.{name} is required")
        self._extra: dict[str, Path] = {k: parse_path(v) for k, v in (extra or {}).items()}
        self._type: Path | None = parse_path(type_field) if type_field else None
        self._types = frozenset(event_types)
        self._id: Path | None = parse_path(id_field) if id_field else None
        self._map = map_disposition
        self._tz: tzinfo = ZoneInfo(default_tz)
        self._live_when_agent = live_when_agent
        # Lead parts are read as text, then assembled into the LeadRef.
        self._plan: list[tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = [
            (name, path_getter(path), _text if name.startswith("lead_") else self._convert(name))
            for name, path in self._fields.items()
        ]
        self._get_id = path_getter(self._id) if self._id is not None else None
        self._get_type = path_getter(self._type) if self._type is not None else None
        self._lead_fields = tuple(n for n in self._fields if n.startswith("lead_"))

    def parse(self, raw: str | bytes) -> Event:
        """Frame -> ``Event``; :class:`DecodeError` if it is not a JSON object."""
        try:
            # pydantic-core's parser: the same JSON, about twice as fast as json.loads.
            body = from_json(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise DecodeError(f"event is a JSON {type(body).__name__}, expected an object")
        event_id: str | None = None
        if self._get_id is not None:
            value = self._get_id(body)
            if value is not None and not isinstance(value, dict | list):
                event_id = value if isinstance(value, str) else _as_text(value)
        event_type: str | None = None
        if self._get_type is not None:
            value = self._get_type(body)
            if isinstance(value, str):
                event_type = value
        return Event(body, event_id, event_type)

    def wanted(self, event: Event) -> bool:
        """Whether this event carries an outcome (the event-type filter)."""
        return not self._types or event.event_type in self._types

    def outcome(self, event: Event) -> CallOutcome:
        """``Event`` -> ``CallOutcome``; :class:`DecodeError` names what was wrong."""
        try:
            return self._outcome(event)
        except DecodeError:
            raise
        except ValidationError as exc:
            raise DecodeError(format_validation_error(exc), event_id=event.event_id) from None
        except ValueError as exc:
            raise DecodeError(str(exc), event_id=event.event_id) from None

    def _convert(self, name: str) -> Callable[[Any], Any]:
        """The converter for one field (chosen once, at construction)."""
        tz = self._tz
        if name in _TIME_FIELDS:

            def to_time(value: Any) -> datetime:
                try:
                    return parse_timestamp(value, tz)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None

            return to_time
        if name in _INT_FIELDS:
            return lambda value: _as_int(value, name)
        if name in _BOOL_FIELDS:
            return lambda value: _as_bool(value, name)
        if name == "direction":
            return _as_direction
        return _text

    def _outcome(self, event: Event) -> CallOutcome:
        body = event.body
        data: dict[str, Any] = {"source": self.source}
        raw_disposition: Any = None
        for name, get, convert in self._plan:
            value = get(body)
            if value is None or value == "":
                continue
            data[name] = convert(value)
        if not data.keys() >= _REQUIRED_SET:
            missing = [n for n in _REQUIRED if n not in data]
            where = ", ".join(f"{n} (at {'.'.join(map(str, self._fields[n]))})" for n in missing)
            raise DecodeError(f"missing {where}", event_id=event.event_id)

        raw_disposition = data["disposition"].strip()
        mapped = self._map(raw_disposition)
        data["disposition"] = mapped.disposition
        data["raw_disposition"] = raw_disposition[:255]
        if mapped.ambiguous:
            data["ambiguous"] = True
        if mapped.detail is not None and "detail" not in data:
            data["detail"] = mapped.detail

        if self._lead_fields:
            lead: dict[str, str] = {}
            for key in self._lead_fields:
                value = data.pop(key) if key in data else None
                if value is not None:
                    lead[key[5:]] = value
            if lead:
                data["lead"] = lead
        if self._live_when_agent and "live" not in data:
            # An agent id on the outcome means an agent dispositioned it: the
            # rails send those at once (issue 5, "live").
            data["live"] = "agent_id" in data
        if self._extra:
            extra: dict[str, Any] = {}
            for key, path in self._extra.items():
                value = get_path(body, path)
                if value is None or isinstance(value, str | int | float | bool):
                    extra[key] = value
                else:
                    extra[key] = _as_text(value)
            data["extra"] = extra
        return CallOutcome.model_validate(data)


def _text(value: Any) -> str:
    return value if type(value) is str else _as_text(value)


def _as_direction(value: Any) -> Direction:
    text = _as_text(value).strip().lower()
    return Direction.INBOUND if text.startswith("in") else Direction.OUTBOUND


def fill_template(template: Any, replacements: Mapping[str, Any]) -> Any:
    """Copy a JSON-able template, replacing string leaves equal to ``"{name}"``.

    The value keeps its JSON type (``{"id": "{id}"}`` with id 7 gives ``{"id": 7}``
    when the event id was a number in the stream; we keep ids as text, so it is
    ``"7"``). ``{ids}`` is replaced by a list.
    """
    if isinstance(template, str):
        if template.startswith("{") and template.endswith("}"):
            key = template[1:-1]
            if key in replacements:
                return replacements[key]
        return template
    if isinstance(template, dict):
        return {k: fill_template(v, replacements) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_template(v, replacements) for v in template]
    return template
