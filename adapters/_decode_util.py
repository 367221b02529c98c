"""Small pure helpers shared by the webhook and file decoders (no I/O)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from typing import Final

from spool.record import LeadRef, normalize_phone

__all__ = [
    "DecodeError",
    "lead_from_value",
    "local_time",
    "optional_int",
    "safe_phone",
]

# A Salesforce Lead Id: key prefix 00Q, 15 or 18 characters. Only this shape is
# taken as a direct Id; anything else is an external key (a 15-char vendor code
# must not be mistaken for an Id).
_LEAD_ID: Final = re.compile(r"^00Q[a-zA-Z0-9]{12}(?:[a-zA-Z0-9]{3})?$")
# VICIdial's "no date" values.
_ZERO_DATES: Final = frozenset({"", "0000-00-00 00:00:00", "0000-00-00", "NULL"})


class DecodeError(ValueError):
    """Input we cannot turn into an outcome; the message names what was wrong."""


def is_lead_id(value: str) -> bool:
    return bool(_LEAD_ID.match(value))


def lead_from_value(value: str | None) -> LeadRef | None:
    """A Lead Id if it looks like one, else an external key."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if is_lead_id(value):
        return LeadRef(id=value)
    return LeadRef(external_key=value[:255])


def safe_phone(value: str | None) -> str | None:
    """The normalized phone, or None when it is not a phone number (kept elsewhere)."""
    if not value:
        return None
    try:
        return normalize_phone(value)
    except ValueError:
        return None


def optional_int(name: str, value: str | None) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return int(value.strip())
    except ValueError:
        try:
            as_float = float(value.strip())
        except ValueError:
            raise DecodeError(f"{name}: expected a whole number, got {value[:40]!r}") from None
        if not as_float.is_integer():
            raise DecodeError(f"{name}: expected a whole number, got {value[:40]!r}") from None
        return int(as_float)


def local_time(name: str, value: str | None, tz: tzinfo) -> datetime | None:
    """``YYYY-MM-DD HH:MM:SS`` (or ISO 8601) in ``tz`` unless it names its own zone.

    Dialers that write wall-clock times (VICIdial, Asterisk CDR) are read in the
    configured zone, never silently as the host's local time.
    """
    if value is None or value.strip() in _ZERO_DATES:
        return None
    text = value.strip()
    if len(text) > 10 and text[10] == "+":  # an unencoded space from a URL template
        text = text[:10] + " " + text[11:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise DecodeError(f"{name}: expected 'YYYY-MM-DD HH:MM:SS', got {value[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)
