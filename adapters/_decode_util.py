"""Small pure helpers shared by the webhook and file decoders (no I/O)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timezone, tzinfo
from typing import Final

from spool.record import LeadRef, normalize_phone

__all__ = [
    "DecodeError",
    "in_zone",
    "lead_from_value",
    "local_span",
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


def in_zone(when: datetime, tz: tzinfo) -> datetime:
    """The instant ``when`` with the UTC offset ``tz`` has then (a fixed offset).

    For times that carry no offset of their own (a unix epoch, our clock): the outcome
    then says where the call happened, as a wall-clock time read in ``tz`` does. The
    field mapping takes the call's date from this offset (Task.ActivityDate); ordering
    and the spool use the instant only. A fixed offset, not ``tz`` itself: two datetimes
    sharing a ZoneInfo compare by wall clock, which is wrong across a DST fall-back.
    """
    local = when.astimezone(tz)
    offset = local.utcoffset()
    return local if offset is None else local.astimezone(timezone(offset))


def local_time(name: str, value: str | None, tz: tzinfo, *, fold: int = 0) -> datetime | None:
    """``YYYY-MM-DD HH:MM:SS`` (or ISO 8601) in ``tz`` unless it names its own zone.

    Dialers that write wall-clock times (VICIdial, Asterisk CDR) are read in the
    configured zone, never silently as the host's local time. A wall-clock time in
    the hour a DST fall-back repeats names two instants: ``fold=0`` (the default)
    takes the first, ``fold=1`` the second (PEP 495); see :func:`local_span`.

    The result keeps the offset it was read with (a fixed offset): converted to UTC, an
    evening call in the Americas would be dated the next day (Task.ActivityDate is the
    date of ``ended_at``); the instant, all that ordering and the spool use, is the same.
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
        parsed = parsed.replace(tzinfo=tz, fold=fold)
    offset = parsed.utcoffset()  # per fold: CDT or CST in the repeated hour
    try:
        parsed.astimezone(UTC)  # the instant must exist: the rails send it in UTC
    except OverflowError:  # "9999-12-31 23:59:59" west of UTC is past datetime.max in UTC
        raise DecodeError(f"{name}: out of range, got {value[:40]!r}") from None
    return parsed if offset is None else parsed.replace(tzinfo=timezone(offset), fold=0)


def local_span(
    start: tuple[str, str | None],
    end: tuple[str, str | None],
    tz: tzinfo,
    duration_s: int | None,
) -> tuple[datetime | None, datetime | None]:
    """A call's start and end, each ``(field name, wall-clock text)``, read in ``tz``.

    On the night a DST fall-back repeats an hour, a wall-clock time in that hour is
    ambiguous: in America/Chicago on 2025-11-02, "01:00:10" is 06:00:10Z (CDT) or
    07:00:10Z (CST). :func:`local_time` alone takes the first reading, so a call from
    01:59:50 CDT to 01:00:10 CST (20 s) would end before it started. The row's own
    duration says which readings belong together: when it is given and the first
    readings do not match it, the pair of readings closest to it is taken. Without a
    duration, or when both readings fit (a short call wholly inside the repeated
    hour), the first reading stays: the ambiguity cannot be resolved from the row.
    """
    ended = local_time(*end, tz)  # the end first: the time every outcome needs
    started = local_time(*start, tz)
    if started is None or ended is None or duration_s is None:
        return started, ended
    # One second of slack: Asterisk prints whole seconds but measures the duration
    # from the sub-second times, so the printed times may differ from it by one.
    best_error = abs((ended - started).total_seconds() - duration_s)
    if best_error <= 1:
        return started, ended
    # The second readings (fold=1), once each: they differ from the first only for a
    # time in the repeated hour, so a row whose duration means something else (or that
    # is simply off) costs two parses more, not six.
    start1 = local_time(*start, tz, fold=1)
    end1 = local_time(*end, tz, fold=1)
    if start1 is None or end1 is None:  # not reached: the same texts gave times above
        return started, ended
    best = started, ended
    for s, e in ((started, end1), (start1, ended), (start1, end1)):
        error = abs((e - s).total_seconds() - duration_s)
        if error < best_error:
            best, best_error = (s, e), error
    return best
