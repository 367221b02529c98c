"""`CallOutcome`: the one record shape between adapters, the spool and the rails.

Identity is ``(source, call_id)``. ``call_id`` is the dialer's own call id; together
with ``source`` it becomes the Salesforce Task's external key (``external_key``),
which is what makes every retry and replay an idempotent upsert.

Ordering: a dialer may deliver the same call more than once, and late. Two
versions of one call are compared by ``order_key`` (explicit ``version`` first,
then the platform's own ``source_seq``, then ``ended_at``); the spool keeps the
greatest and ignores anything older. The vocabulary of ``Disposition`` is the one
in ``reference/dialers.md`` section 7.2.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final

import pydantic_core
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "CallOutcome",
    "Direction",
    "Disposition",
    "LeadRef",
    "OutcomeFields",
    "StoredOutcome",
    "format_validation_error",
]

# Salesforce ids: 15 case-sensitive or 18 case-safe alphanumeric characters.
_SF_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
# Validation context of a payload the spool wrote itself (``CallOutcome.from_stored_json``):
# the Python-level checks below already passed when it was put, so they are skipped; the
# schema (types, enums, lengths, required fields) is still enforced.
STORED: Final[dict[str, bool]] = {"stored": True}
# A call_id may not hold C0 control characters or DEL (one C scan, not a per-char loop).
_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")
# A phone as dialers send it: digits with an optional leading +, after stripping
# the usual separators. Anything else (letters, formulas) is refused.
_PHONE_STRIP = re.compile(r"[\s().\-]")
_PHONE = re.compile(r"^\+?[0-9]{3,20}$")
_SOURCE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
# Absurd timestamps are refused rather than written to Salesforce.
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)

# Task.Call_Id__c is text(255) in the default schema.
EXTERNAL_KEY_MAX = 255

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class Disposition(StrEnum):
    """Normalized call outcome (reference/dialers.md section 7.2)."""

    CONNECTED = "connected"
    VOICEMAIL = "voicemail"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    CALLBACK_REQUESTED = "callback_requested"
    DO_NOT_CALL = "do_not_call"
    WRONG_NUMBER = "wrong_number"
    INVALID_NUMBER = "invalid_number"
    FAX = "fax"
    ABANDONED = "abandoned"
    REJECTED = "rejected"
    CANCELED = "canceled"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Direction(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


def normalize_phone(value: str) -> str:
    """Strip separators; refuse anything that is not a phone number."""
    stripped = _PHONE_STRIP.sub("", value)
    if not _PHONE.match(stripped):
        raise ValueError(f"not a phone number: {value!r}")
    return stripped


class LeadRef(BaseModel):
    """How the outcome names its Lead: a Salesforce Id, an external key, or a phone.

    The rails use the first one present, in that order. ``key`` is a stable string
    used by the spool to find the newest outcome per Lead.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str | None = None
    external_key: ShortText | None = None
    phone: str | None = None

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.context is STORED:
            return value
        if value is not None and not _SF_ID.match(value):
            raise ValueError(f"not a 15- or 18-character Salesforce id: {value!r}")
        return value

    @field_validator("phone")
    @classmethod
    def _check_phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.context is STORED:
            return value
        return None if value is None else normalize_phone(value)

    @model_validator(mode="after")
    def _at_least_one(self, info: ValidationInfo) -> LeadRef:
        if info.context is STORED:
            return self
        if self.id is None and self.external_key is None and self.phone is None:
            raise ValueError("a lead reference needs one of id, external_key or phone")
        return self

    @property
    def key(self) -> str:
        """Stable identity of the Lead this reference points at (for newest-wins)."""
        if self.id is not None:
            # The first 15 characters are the case-sensitive id; 18-char ids add a
            # checksum only, so both forms name the same record.
            return f"id:{self.id[:15]}"
        if self.external_key is not None:
            return f"ext:{self.external_key}"
        assert self.phone is not None
        return f"phone:{self.phone}"


ExtraValue = str | int | float | bool | None
_INT64_MAX = 2**63 - 1


class CallOutcome(BaseModel):
    """One call's final outcome as a dialer reported it, normalized."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    # Identity
    source: str = Field(description="adapter name, e.g. 'vicidial' (lowercase, [a-z0-9_.-])")
    call_id: str = Field(min_length=1, max_length=190)  # 64 + ":" + 190 = 255
    # Ordering: explicit version bump, then the platform's sequence / event time.
    # (at most SQLite's largest integer: the spool orders by both in columns of their own)
    version: int = Field(default=0, ge=0, le=_INT64_MAX)
    source_seq: int | None = Field(default=None, ge=0, le=_INT64_MAX)

    # What happened
    disposition: Disposition
    raw_disposition: str | None = Field(default=None, max_length=255)
    detail: str | None = Field(default=None, max_length=255)
    ambiguous: bool = False

    # Who and where
    lead: LeadRef | None = None
    agent_id: str | None = Field(default=None, max_length=255)
    campaign: str | None = Field(default=None, max_length=255)
    phone: str | None = None
    direction: Direction = Direction.OUTBOUND

    # When (timezone-aware only: naive datetimes are refused by AwareDatetime)
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime
    duration_s: int | None = Field(default=None, ge=0, le=7 * 86400)
    talk_s: int | None = Field(default=None, ge=0, le=7 * 86400)
    callback_at: AwareDatetime | None = None

    recording_url: str | None = Field(default=None, max_length=2000)
    notes: str | None = Field(default=None, max_length=32000)
    live: bool = False
    extra: dict[str, ExtraValue] = Field(default_factory=dict, max_length=64)

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str, info: ValidationInfo) -> str:
        if info.context is STORED:
            return value
        if not _SOURCE.match(value):
            raise ValueError(
                f"source must be 1-64 chars of lowercase letters, digits, '_', '.', '-': {value!r}"
            )
        return value

    @field_validator("call_id")
    @classmethod
    def _check_call_id(cls, value: str, info: ValidationInfo) -> str:
        if info.context is STORED:
            return value
        if _CONTROL_CHAR.search(value) is not None:
            raise ValueError(f"call_id contains control characters: {value!r}")
        return value

    @field_validator("phone")
    @classmethod
    def _check_phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.context is STORED:
            return value
        return None if value is None else normalize_phone(value)

    @field_validator("started_at", "ended_at", "callback_at")
    @classmethod
    def _check_range(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if info.context is STORED:
            return value
        if value is not None and not (_EARLIEST <= value < _LATEST):
            raise ValueError(f"timestamp outside 2000-01-01..2100-01-01: {value.isoformat()}")
        return value

    @field_validator("recording_url")
    @classmethod
    def _check_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.context is STORED:
            return value
        if value is not None and not value.lower().startswith(("https://", "http://")):
            raise ValueError(f"recording_url must be an http(s) URL: {value!r}")
        return value

    @field_validator("extra")
    @classmethod
    def _check_extra(
        cls, value: dict[str, ExtraValue], info: ValidationInfo
    ) -> dict[str, ExtraValue]:
        if info.context is STORED:
            return value
        for key, item in value.items():
            if not key or len(key) > 64:
                raise ValueError(f"extra key must be 1-64 characters: {key!r}")
            if isinstance(item, str) and len(item) > 32000:
                raise ValueError(f"extra[{key!r}] is longer than 32000 characters")
        return value

    @model_validator(mode="after")
    def _check_times(self, info: ValidationInfo) -> CallOutcome:
        if info.context is STORED:
            return self
        if self.started_at is not None and self.started_at > self.ended_at:
            raise ValueError(
                f"started_at {self.started_at.isoformat()} is after ended_at "
                f"{self.ended_at.isoformat()}"
            )
        return self

    def to_stored_json(self) -> str:
        """The spool's payload: JSON without the fields equal to their defaults (about
        half the bytes of ``model_dump_json()`` for a typical outcome, so fewer pages
        for SQLite to rewrite and less to parse on every claim). The defaults are thus
        part of the stored format (``tests/spool/test_record.py`` pins them): changing
        one needs a spool migration."""
        return _SERIALIZER.to_json(self, exclude_defaults=True).decode()

    @classmethod
    def from_stored_json(cls, payload: str | bytes) -> CallOutcome:
        """An outcome from a payload the spool stored (written by ``put`` after full
        validation): the schema is checked, the Python validators are not run again
        (about half the cost of ``model_validate_json``; the rails load every record
        they claim). Raises ``ValidationError`` when the payload does not fit the schema
        (e.g. written by another version)."""
        return cls.model_validate_json(payload, context=STORED)

    @property
    def external_key(self) -> str:
        """The Task external id (``Call_Id__c``): ``source:call_id``."""
        return f"{self.source}:{self.call_id}"

    @property
    def identity(self) -> tuple[str, str]:
        return (self.source, self.call_id)

    @property
    def order_key(self) -> tuple[int, int, float]:
        """Greater means newer. Equal means the same version (a duplicate)."""
        seq = -1 if self.source_seq is None else self.source_seq
        return (self.version, seq, self.ended_at.timestamp())

    def is_newer_than(self, other: CallOutcome) -> bool:
        return self.order_key > other.order_key


_SERIALIZER = CallOutcome.__pydantic_serializer__

_REQUIRED: Final = frozenset(n for n, f in CallOutcome.model_fields.items() if f.is_required())
_DISPOSITIONS: Final = {d.value: d for d in Disposition}
_DIRECTIONS: Final = {d.value: d for d in Direction}
_UNSET: Final[Any] = object()
# The JSON type of each field as to_stored_json writes it (None where the field may be
# null): the view hands values on as they are, so a payload whose types differ (another
# writer) is refused and read in full instead. Times are ISO text, enums their value.
_S, _I, _N = (str,), (int,), (type(None),)
_JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "source": _S,
    "call_id": _S,
    "version": _I,
    "source_seq": _I + _N,
    "disposition": _S,
    "raw_disposition": _S + _N,
    "detail": _S + _N,
    "ambiguous": (bool,),
    "lead": (dict, *_N),
    "agent_id": _S + _N,
    "campaign": _S + _N,
    "phone": _S + _N,
    "direction": _S,
    "started_at": _S + _N,
    "ended_at": _S,
    "duration_s": _I + _N,
    "talk_s": _I + _N,
    "callback_at": _S + _N,
    "recording_url": _S + _N,
    "notes": _S + _N,
    "live": (bool,),
    "extra": (dict,),
}
_LEAD_KEYS: Final = frozenset(LeadRef.model_fields)


class StoredOutcome:
    """A payload the spool stored, read without building a ``CallOutcome``: the same
    attributes (the ones the field mapping reads), decoded on first use (``ended_at``, which
    every use needs, at once).

    For the Bulk rail, which reads a few fields of very many records: this costs about
    half of ``CallOutcome.from_stored_json`` (measured: 2.8 against 5 us). It trusts the
    payload as ``put`` wrote it (``to_stored_json``: fields equal to their default are
    left out); :meth:`parse` refuses one whose keys, JSON types, enum values or
    ``ended_at`` do not fit, so that the caller can decode it in full (and dead-letter it
    if that fails too). Build it with :meth:`parse` or :meth:`of`.
    """

    __slots__ = ("_d", "_ended", "_lead")

    def __init__(self, data: dict[str, Any], ended_at: datetime) -> None:
        self._d = data
        self._ended = ended_at
        self._lead: LeadRef | None = _UNSET

    @classmethod
    def parse(cls, payload: str | bytes) -> StoredOutcome | None:
        """The view of a stored payload; None when it is not one this version wrote."""
        try:
            data = pydantic_core.from_json(payload, cache_strings="keys")
        except ValueError:
            return None
        return cls.of(data)

    @classmethod
    def of(cls, data: Any) -> StoredOutcome | None:
        """The view of a stored payload already parsed from JSON (see :meth:`parse`)."""
        if type(data) is not dict or not data.keys() >= _REQUIRED:
            return None
        types = _JSON_TYPES
        for name, value in data.items():
            allowed = types.get(name)
            if allowed is None or type(value) not in allowed:
                return None
        if (
            data["disposition"] not in _DISPOSITIONS
            or data.get("direction", "outbound") not in _DIRECTIONS
        ):
            return None
        lead = data.get("lead")
        if lead is not None and not all(
            name in _LEAD_KEYS and (value is None or type(value) is str)
            for name, value in lead.items()
        ):
            return None
        try:
            ended_at = datetime.fromisoformat(data["ended_at"])
        except ValueError:
            return None
        return cls(data, ended_at)

    def to_json(self) -> str:
        """The payload this view reads (JSON text)."""
        return pydantic_core.to_json(self._d).decode()

    def _time(self, name: str) -> datetime | None:
        value = self._d.get(name)
        return None if value is None else datetime.fromisoformat(value)

    # Identity
    @property
    def source(self) -> str:
        return self._d["source"]  # type: ignore[no-any-return]

    @property
    def call_id(self) -> str:
        return self._d["call_id"]  # type: ignore[no-any-return]

    @property
    def external_key(self) -> str:
        d = self._d
        return f"{d['source']}:{d['call_id']}"

    @property
    def version(self) -> int:
        return self._d.get("version", 0)  # type: ignore[no-any-return]

    @property
    def source_seq(self) -> int | None:
        return self._d.get("source_seq")

    # What happened
    @property
    def disposition(self) -> Disposition:
        return _DISPOSITIONS[self._d["disposition"]]

    @property
    def raw_disposition(self) -> str | None:
        return self._d.get("raw_disposition")

    @property
    def detail(self) -> str | None:
        return self._d.get("detail")

    @property
    def ambiguous(self) -> bool:
        return self._d.get("ambiguous", False)  # type: ignore[no-any-return]

    # Who and where
    @property
    def lead(self) -> LeadRef | None:
        lead = self._lead
        if lead is _UNSET:
            raw = self._d.get("lead")
            lead = None if raw is None else LeadRef.model_construct(**raw)
            self._lead = lead
        return lead

    def lead_fields(self) -> tuple[str | None, str | None, str | None]:
        """``(lead.id, lead.external_key, lead.phone)``, all None without a lead: what
        ``lead`` holds without building a LeadRef (a third of the cost of the rest)."""
        raw = self._d.get("lead")
        if raw is None:
            return (None, None, None)
        return (raw.get("id"), raw.get("external_key"), raw.get("phone"))

    @property
    def agent_id(self) -> str | None:
        return self._d.get("agent_id")

    @property
    def campaign(self) -> str | None:
        return self._d.get("campaign")

    @property
    def phone(self) -> str | None:
        return self._d.get("phone")

    @property
    def direction(self) -> Direction:
        return _DIRECTIONS[self._d.get("direction", "outbound")]

    # When
    @property
    def started_at(self) -> datetime | None:
        return self._time("started_at")

    @property
    def ended_at(self) -> datetime:
        return self._ended

    @property
    def duration_s(self) -> int | None:
        return self._d.get("duration_s")

    @property
    def talk_s(self) -> int | None:
        return self._d.get("talk_s")

    @property
    def callback_at(self) -> datetime | None:
        return self._time("callback_at")

    @property
    def recording_url(self) -> str | None:
        return self._d.get("recording_url")

    @property
    def notes(self) -> str | None:
        return self._d.get("notes")

    @property
    def live(self) -> bool:
        return self._d.get("live", False)  # type: ignore[no-any-return]

    @property
    def extra(self) -> dict[str, ExtraValue]:
        return self._d.get("extra") or {}


#: What the field mapping reads: an outcome, or a stored one read lazily.
OutcomeFields = CallOutcome | StoredOutcome


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the field and the bad value (never a secret).

    >>> CallOutcome.model_validate({"source": "x"})  # doctest: +SKIP
    """
    parts: list[str] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(record)"
        value: Any = err.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        if err["type"] == "missing":
            parts.append(f"{loc}: field required")
        else:
            parts.append(f"{loc}: {err['msg']} (got {shown})")
    return "; ".join(parts)
