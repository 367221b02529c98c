"""The router (pure): which rail takes which work, given quota and backlog.

Inputs: the quota state (:class:`QuotaState`), the pending backlog, whether the
bulk interval elapsed, and which rails are paused. Outputs a :class:`Route`
with a human-readable reason, logged and counted on every change.

- OK: urgent work (``live`` outcomes and the configured dispositions) takes the
  live rail at once. The rest waits for ``bulk_interval_s`` or
  ``bulk_max_records``, then goes by collections when the backlog is small (a
  Bulk job costs more calls than it saves, about 14 for two jobs against one
  call per 200 outcomes) and by Bulk otherwise.
- LOW (headroom under the reserve): urgent work degrades to batched collections
  (one call per up to 200), non-urgent work waits.
- EXHAUSTED (our share used, or the org's allocation): nothing is sent; /limits
  is re-read periodically.
- No Bulk (``bulk_allowed`` false: the org has no Task external ID field, so a
  Task cannot be upserted by key in a job): the rest goes by collections.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from daemon.salesforce import QuotaState

__all__ = ["Route", "Via", "route"]


class Via(StrEnum):
    LIVE = "live"
    COLLECTIONS = "collections"
    BULK = "bulk"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class Route:
    urgent: Via
    other: Via
    reason: str


def route(
    *,
    quota: QuotaState,
    backlog: int,
    bulk_due: bool,
    bulk_min_records: int,
    paused: frozenset[str] = frozenset(),
    bulk_allowed: bool = True,
) -> Route:
    """Decide the rails for urgent and other work right now."""
    if quota is QuotaState.EXHAUSTED:
        return Route(Via.WAIT, Via.WAIT, "api quota exhausted: sending nothing until it recovers")
    if quota is QuotaState.LOW:
        urgent = Via.WAIT if "collections" in paused else Via.COLLECTIONS
        return Route(urgent, Via.WAIT, "api quota under the reserve: urgent batched, rest waits")
    urgent = Via.LIVE
    if "live" in paused:
        urgent = Via.WAIT if "collections" in paused else Via.COLLECTIONS
    if not bulk_due or backlog <= 0:
        return Route(urgent, Via.WAIT, "accumulating for the next bulk interval")
    if not bulk_allowed:
        other = Via.WAIT if "collections" in paused else Via.COLLECTIONS
        return Route(urgent, other, f"backlog {backlog}, no Task external ID field: {other.value}")
    other = Via.COLLECTIONS if backlog < bulk_min_records else Via.BULK
    if other.value in paused:
        alt = Via.BULK if other is Via.COLLECTIONS else Via.COLLECTIONS
        other = Via.WAIT if alt.value in paused else alt
    return Route(
        urgent,
        other,
        f"backlog {backlog} {'<' if backlog < bulk_min_records else '>='} "
        f"{bulk_min_records}: {other.value}",
    )
