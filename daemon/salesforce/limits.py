"""API quota: ``Sforce-Limit-Info`` parsing and the quota view the router reads.

Every REST response except ``GET /services/data/`` carries
``Sforce-Limit-Info: api-usage=<used>/<max>`` (reference §5.1), optionally with
``api-bursts=`` and ``per-app-api-usage=<u>/<m>(appName=<name>)``. ``/limits``
gives ``DailyApiRequests {Max, Remaining}`` (§5.2) and is read at start and every
few minutes. Values are org-wide: other integrations spend from the same pool.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["ApiUsage", "QuotaState", "QuotaView", "parse_limit_info", "usage_from_limits"]

_API_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")
_PER_APP = re.compile(r"per-app-api-usage=(\d+)/(\d+)\(appName=([^)]*)\)")


@dataclass(frozen=True, slots=True)
class ApiUsage:
    """Org-wide daily API usage at one moment."""

    used: int
    max: int
    per_app: tuple[tuple[str, int, int], ...] = ()

    @property
    def remaining(self) -> int:
        return max(0, self.max - self.used)


def parse_limit_info(value: str | None) -> ApiUsage | None:
    """``api-usage=18/5000; per-app-api-usage=17/250(appName=x)`` -> ApiUsage; None if absent."""
    if not value:
        return None
    match = _API_USAGE.search(value)
    if match is None:
        return None
    per_app = tuple(
        (m.group(3), int(m.group(1)), int(m.group(2))) for m in _PER_APP.finditer(value)
    )
    return ApiUsage(int(match.group(1)), int(match.group(2)), per_app)


def usage_from_limits(body: Mapping[str, Any]) -> ApiUsage | None:
    """``GET /limits`` body -> ApiUsage from ``DailyApiRequests`` (None if missing)."""
    entry = body.get("DailyApiRequests")
    if not isinstance(entry, Mapping):
        return None
    try:
        maximum = int(entry["Max"])
        remaining = int(entry["Remaining"])
    except (KeyError, TypeError, ValueError):
        return None
    return ApiUsage(max(0, maximum - remaining), maximum)


class QuotaState(StrEnum):
    OK = "ok"  # spend freely
    LOW = "low"  # under the reserve: live degrades to batches, non-urgent waits
    EXHAUSTED = "exhausted"  # at our share or the org's cap: send nothing, recheck /limits


class QuotaView:
    """What the router knows about the daily API allocation.

    ``reserve`` (fraction of Max) is kept for urgent work: below it, only urgent
    outcomes go out, batched. ``max_share`` (fraction of Max) is the most this
    daemon may spend in any rolling 24 hours; we count our own calls (every request
    that may have reached Salesforce, answered or not), and we also stop when the
    org-wide figure says the allocation is spent.

    Answers arrive out of order, so each reading carries when its request was sent
    (``sent_at``, this view's :meth:`now` then): a reading from a request sent before
    the current reading's is dropped, and one from a request sent before
    REQUEST_LIMIT_EXCEEDED was met does not lift it.
    """

    def __init__(
        self,
        *,
        reserve: float = 0.10,
        max_share: float = 0.50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= reserve < 1 or not 0 < max_share <= 1:
            raise ValueError(
                f"need 0 <= reserve < 1 and 0 < max_share <= 1, got {reserve}, {max_share}"
            )
        self.reserve = reserve
        self.max_share = max_share
        self._clock = clock
        self.usage: ApiUsage | None = None
        self.observed_at: float | None = None
        self.limit_hit_at: float | None = None
        # When the request behind ``usage`` was sent (or the limit was hit, after which
        # a reading from a request sent earlier is stale).
        self._usage_sent_at: float | None = None
        self.calls_total = 0
        self.calls_by_rail: dict[str, int] = {}
        # (minute bucket, count): our own calls over the rolling 24 h window.
        self._own: deque[list[int]] = deque()

    # -- observations -------------------------------------------------------
    def now(self) -> float:
        """This view's clock: a request's ``sent_at``, read as it is sent."""
        return self._clock()

    def observe(self, usage: ApiUsage | None, *, sent_at: float) -> None:
        """A reading from the answer to a request sent at ``sent_at`` (:meth:`now`).

        Older than the current reading (its request sent before that one's): dropped.
        A reading with room clears a limit hit only if its request was sent after the
        hit (e.g. the periodic /limits read after the window rolled): an answer that was
        on its way when the allocation ran out says nothing about now.
        """
        if usage is None:
            return
        if self._usage_sent_at is not None and sent_at < self._usage_sent_at:
            return
        self.usage = usage
        self._usage_sent_at = sent_at
        self.observed_at = self._clock()
        hit = self.limit_hit_at
        if hit is not None and sent_at > hit and usage.remaining > 0:
            self.limit_hit_at = None

    def observe_header(self, value: str | None, *, sent_at: float) -> None:
        """``Sforce-Limit-Info`` of the answer to a request sent at ``sent_at``."""
        self.observe(parse_limit_info(value), sent_at=sent_at)

    def limit_exceeded(self) -> None:
        """Salesforce said REQUEST_LIMIT_EXCEEDED."""
        self.limit_hit_at = self._usage_sent_at = self._clock()
        if self.usage is not None:
            self.usage = ApiUsage(self.usage.max, self.usage.max, self.usage.per_app)

    def count_call(self, rail: str) -> None:
        """One request of ``rail`` that may have reached Salesforce (answered or not)."""
        self.calls_total += 1
        self.calls_by_rail[rail] = self.calls_by_rail.get(rail, 0) + 1
        minute = int(self._clock() // 60)
        if self._own and self._own[-1][0] == minute:
            self._own[-1][1] += 1
        else:
            self._own.append([minute, 1])
        while self._own and self._own[0][0] <= minute - 24 * 60:
            self._own.popleft()

    # -- reading ------------------------------------------------------------
    @property
    def own_calls_24h(self) -> int:
        minute = int(self._clock() // 60)
        return sum(n for m, n in self._own if m > minute - 24 * 60)

    def state(self) -> QuotaState:
        if self.limit_hit_at is not None:
            return QuotaState.EXHAUSTED
        usage = self.usage
        if usage is None or usage.max <= 0:
            return QuotaState.OK  # unknown yet: the first response tells us
        if usage.remaining <= 0 or self.own_calls_24h >= self.max_share * usage.max:
            return QuotaState.EXHAUSTED
        if usage.remaining < self.reserve * usage.max:
            return QuotaState.LOW
        return QuotaState.OK

    def snapshot(self) -> dict[str, Any]:
        usage = self.usage
        return {
            "state": self.state().value,
            "used": usage.used if usage else None,
            "max": usage.max if usage else None,
            "remaining": usage.remaining if usage else None,
            "own_calls_24h": self.own_calls_24h,
            "calls_total": self.calls_total,
            "calls_by_rail": dict(self.calls_by_rail),
        }
