"""Salesforce record ids: 15-character case-sensitive bodies with a 3-character case-safe suffix.

An 18-character id is the 15-character id plus one suffix character per 5-character chunk; the
character encodes, as a 5-bit mask, which positions of the chunk hold an upper-case letter, using
the alphabet ``A-Z0-5``. That lets case-insensitive systems recover the real id, and lets us reject
ids whose suffix does not match (MALFORMED_ID), which a real org does.
"""

from __future__ import annotations

import itertools
import string
import threading
from typing import Final

__all__ = ["IdGenerator", "checksum", "is_id_shaped", "normalize_id", "to18"]

_SUFFIX_ALPHABET: Final = string.ascii_uppercase + "012345"
_BASE62: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ALNUM: Final = frozenset(string.ascii_letters + string.digits)
_UPPER: Final = frozenset(string.ascii_uppercase)


def checksum(id15: str) -> str:
    """The 3-character case-safe suffix of a 15-character id."""
    out = []
    for start in (0, 5, 10):
        mask = 0
        for bit, char in enumerate(id15[start : start + 5]):
            if char in _UPPER:
                mask |= 1 << bit
        out.append(_SUFFIX_ALPHABET[mask])
    return "".join(out)


def to18(id15: str) -> str:
    """Append the case-safe suffix to a 15-character id."""
    return id15 + checksum(id15)


def is_id_shaped(value: str) -> bool:
    """True when ``value`` is 15 or 18 alphanumeric characters (no suffix check)."""
    return len(value) in (15, 18) and all(c in _ALNUM for c in value)


def normalize_id(value: str) -> str | None:
    """The canonical 18-character id for a 15- or 18-character id, or None if it is malformed.

    An 18-character id's suffix is authoritative for the case of the first 15 characters, as in a
    real org (an all-lower-case 18-character id is still accepted). A suffix character outside the
    alphabet, or one that marks a digit as upper case, makes the id malformed.
    """
    if not is_id_shaped(value):
        return None
    if len(value) == 15:
        return to18(value)
    body = list(value[:15])
    for chunk, suffix_char in enumerate(value[15:].upper()):
        mask = _SUFFIX_ALPHABET.find(suffix_char)
        if mask < 0:
            return None
        for bit in range(5):
            pos = chunk * 5 + bit
            char = body[pos]
            if mask & (1 << bit):
                if not char.isalpha():
                    return None
                body[pos] = char.upper()
            elif char.isalpha():
                body[pos] = char.lower()
    id15 = "".join(body)
    return id15 + value[15:].upper()


class IdGenerator:
    """Mints unique 18-character ids: key prefix + instance ``8d`` + ``0`` + 9 base-62 digits.

    The counter is shared by every prefix, so ids are unique org-wide. Thread-safe, because the
    bulk processor may mint ids off the event loop.
    """

    def __init__(self, start: int = 1_000_000) -> None:
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def new(self, key_prefix: str) -> str:
        """A fresh 18-character id with the given 3-character key prefix."""
        with self._lock:
            n = next(self._counter)
        digits = []
        for _ in range(9):
            n, rem = divmod(n, 62)
            digits.append(_BASE62[rem])
        return to18(key_prefix + "8d0" + "".join(reversed(digits)))

    def advance_past(self, used: int) -> None:
        """Continue numbering after ``used`` (after loading persisted records)."""
        with self._lock:
            self._counter = itertools.count(used + 1)

    @staticmethod
    def sequence_of(record_id: str) -> int:
        """The counter value encoded in an id minted by this generator (for reload)."""
        n = 0
        for char in record_id[6:15]:
            idx = _BASE62.find(char)
            if idx < 0:
                return 0
            n = n * 62 + idx
        return n
