"""Backoff: jittered, geometric, capped. A generator, reset by starting a new one.

Used by every retry loop in the rails (STYLE habit 4). Tests inject a
millisecond-scale policy instead of patching ``asyncio.sleep``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Backoff", "backoff"]


def backoff(
    initial: float = 1.0,
    factor: float = 2.0,
    cap: float = 60.0,
    *,
    jitter: float = 0.5,
    rng: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield delays: ``initial`` then ``initial*factor**n``, each capped, each jittered.

    ``jitter`` is the relative spread: 0.5 means each delay is drawn uniformly from
    [50 %, 150 %] of the nominal value (never more than ``cap``), so many clients
    that failed together do not retry together.
    """
    if initial <= 0 or factor < 1 or cap < initial or not 0 <= jitter <= 1:
        raise ValueError(
            f"backoff needs 0 < initial <= cap, factor >= 1, 0 <= jitter <= 1; "
            f"got initial={initial}, factor={factor}, cap={cap}, jitter={jitter}"
        )
    nominal = initial
    while True:
        spread = 1.0 - jitter + 2.0 * jitter * rng()
        yield min(cap, nominal * spread)
        nominal = min(cap, nominal * factor)


@dataclass(frozen=True, slots=True)
class Backoff:
    """A backoff policy as a value, to pass down through constructors."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.5

    def __iter__(self) -> Iterator[float]:
        return backoff(self.initial, self.factor, self.cap, jitter=self.jitter)

    def delay(self, attempt: int, *, rng: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``attempt`` (1 = first retry), for spool scheduling."""
        nominal = min(self.cap, self.initial * self.factor ** max(0, min(attempt - 1, 64)))
        spread = 1.0 - self.jitter + 2.0 * self.jitter * rng()
        return min(self.cap, nominal * spread)
