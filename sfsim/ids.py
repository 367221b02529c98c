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


_62_2: Final = 62 * 62
_62_5: Final = 62**5
_PAIRS: Final = tuple(a + b for a in _BASE62 for b in _BASE62)
_UPPER_BITS: Final = str.maketrans(
    {c: "1" for c in string.ascii_uppercase}
    | {c: "0" for c in string.ascii_lowercase + string.digits}
)
# Upper-case bit of each base-62 digit, and the two bits of each pair in _PAIRS (first char = bit
# 0): the suffix of a minted id's last chunk comes from these without looking at characters.
_DIGIT_BITS: Final = tuple(int(c.isupper()) for c in _BASE62)
_PAIR_BITS: Final = tuple(a | b << 1 for a in _DIGIT_BITS for b in _DIGIT_BITS)


def _chunk_suffix(chunk5: str) -> str:
    """The suffix character of one 5-character chunk (as :func:`checksum` computes it)."""
    return _SUFFIX_ALPHABET[int(chunk5.translate(_UPPER_BITS)[::-1], 2)]


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
    if (
        len(value) == 18
        and value.isascii()
        and value.isalnum()
        and value[15:]
        == (_chunk_suffix(value[:5]) + _chunk_suffix(value[5:10]) + _chunk_suffix(value[10:15]))
    ):
        return value  # fast path: already canonical (every id a client echoes back)
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
        self._heads: dict[tuple[str, int], tuple[str, str]] = {}

    def new(self, key_prefix: str) -> str:
        """A fresh 18-character id with the given 3-character key prefix."""
        with self._lock:
            n = next(self._counter)
        return self._mint(key_prefix, n, 1)[0]

    def new_block(self, key_prefix: str, count: int) -> list[str]:
        """``count`` fresh ids at once (a bulk chunk's inserts), in order, as ``new`` mints them."""
        if count <= 0:
            return []
        with self._lock:
            n = next(self._counter)
            self._counter = itertools.count(n + count)
        return self._mint(key_prefix, n, count)

    def _head(self, key_prefix: str, high: int) -> tuple[str, str]:
        """The first 10 characters for counter values ``high * 62**5`` on, and their suffix."""
        head = self._heads.get((key_prefix, high))
        if head is None:
            digits = []
            rest = high
            for _ in range(4):
                rest, rem = divmod(rest, 62)
                digits.append(_BASE62[rem])
            first10 = key_prefix + "8d0" + "".join(reversed(digits))
            head = (first10, _chunk_suffix(first10[:5]) + _chunk_suffix(first10[5:]))
            if len(self._heads) > 64:
                self._heads.clear()
            self._heads[(key_prefix, high)] = head
        return head

    def _mint(self, key_prefix: str, n: int, count: int) -> list[str]:
        # Same result as to18(prefix + "8d0" + 9 base-62 digits of n), computed in pieces: the
        # first 10 characters change rarely and are cached; bulk loads mint ids per row. The
        # last chunk is digit + pair + pair; its suffix comes from their upper-case bits.
        out: list[str] = []
        end = n + count
        while n < end:
            high, low = divmod(n, _62_5)
            first10, first_suffix = self._head(key_prefix, high)
            a, b = divmod(low, _62_2)
            first, pair = divmod(a, _62_2)
            stop = min(_62_2, b + end - n)  # the run of ids that differ in the last pair only
            head = first10 + _BASE62[first] + _PAIRS[pair]
            bits = _DIGIT_BITS[first] | _PAIR_BITS[pair] << 1
            out += [
                head + _PAIRS[last] + first_suffix + _SUFFIX_ALPHABET[bits | _PAIR_BITS[last] << 3]
                for last in range(b, stop)
            ]
            n += stop - b
        return out

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
