"""Fault injection: latency, 5xx, dropped connections, row locks, revocations, failed jobs.

Set over the control API (``POST /__sim/faults`` with a JSON object) or from Python with
``org.faults.configure({...})``. Keys (all optional; a POST merges into the current settings,
``{"clear": true}`` first resets everything):

``latency_ms``
    A number (fixed delay), or a distribution ``{"dist": "uniform", "min_ms": a, "max_ms": b}``,
    ``{"dist": "exponential", "mean_ms": m}`` or ``{"dist": "normal", "mean_ms": m,
    "stddev_ms": s}``, added before each API request is handled.
``error_rate`` / ``error_next`` / ``error_status``
    A fraction of requests (or the next N) answered with ``error_status`` (500 or 503, or a list
    to pick from) instead of being handled.
``retry_after_s``
    Whole seconds (or null, the default): the injected 5xx answers carry ``Retry-After`` with
    this value, as a real org or its edge may during maintenance or overload.
``drop_rate`` / ``drop_next`` / ``drop_after_processing``
    A fraction of requests (or the next N) whose connection is cut before a complete response;
    with ``drop_after_processing`` the request is handled first (the write lands, the answer is
    lost), which is what makes client retries dangerous.
``lock_rate`` / ``lock_next``
    A fraction of written rows (or the next N) failing with UNABLE_TO_LOCK_ROW, on every write
    path (REST, composite, collections, bulk).
``upsert_race_rate`` / ``upsert_race_next``
    A fraction of upserts (or the next N) that would create a record lose a race with a concurrent
    request creating the same key: the record exists afterwards (created by "the other request"),
    and this upsert fails with DUPLICATE_VALUE, as real orgs do (§7.6). REST, composite and
    collections upserts.
``kinds``
    Restrict latency/error/drop faults to these request kinds (``sobjects``, ``describe``,
    ``query``, ``composite``, ``composite_batch``, ``collections``, ``limits``, ``resources``,
    ``bulk``, ``other``, and ``oauth`` for the token endpoint).
    Default: every API kind except ``oauth``.
``bulk_lock_contention``
    Bulk rows whose parent record (a Lead behind WhoId, ...) is also the parent of a row in another
    batch being processed at the same time fail with UNABLE_TO_LOCK_ROW (§7.7), and the job counts
    ``retries``.
``bulk_empty_results_204``
    Bulk result downloads with no row of their kind (``failedResults`` of a job without
    failures, say) answer 204 No Content with no body instead of a header-only CSV, as real orgs
    have been seen to (OpenFn/adaptors#886).
``corrupt_results_next``
    The next N Bulk result downloads come back ``Content-Encoding: gzip`` with a body that is not
    gzip: a compressed download corrupted on the way.
``job_failure_rate`` / ``fail_next_jobs`` / ``job_failure_message``
    Bulk jobs that end ``Failed`` as a whole (read by the bulk plugin via ``take_job_failure``).
``revoke_tokens``
    Action: ``true`` revokes every access token (clients get 401 INVALID_SESSION_ID and must log
    in again); ``"all"`` also revokes refresh tokens.
``exhaust_daily_limit``
    Action: use up the daily API allocation (403 REQUEST_LIMIT_EXCEEDED from then on).
``seed``
    Seed of the random generator, for reproducible rates.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

__all__ = ["FaultConfigError", "FaultSettings", "Faults"]

_DEFAULT_JOB_FAILURE: Final = (
    "InvalidBatch : Failed to process query: UNKNOWN_EXCEPTION: An unexpected error occurred."
)
_KNOWN_KEYS: Final = frozenset(
    {
        "latency_ms",
        "error_rate",
        "error_next",
        "error_status",
        "drop_rate",
        "drop_next",
        "drop_after_processing",
        "lock_rate",
        "lock_next",
        "kinds",
        "job_failure_rate",
        "fail_next_jobs",
        "job_failure_message",
        "revoke_tokens",
        "exhaust_daily_limit",
        "seed",
        "bulk_lock_contention",
        "upsert_race_rate",
        "upsert_race_next",
        "retry_after_s",
        "bulk_empty_results_204",
        "corrupt_results_next",
        "clear",
    }
)


class FaultConfigError(ValueError):
    """A fault setting that cannot be used, naming the key."""


@dataclass(slots=True)
class FaultSettings:
    """The current fault settings (JSON-ready through ``asdict``)."""

    latency_ms: float | dict[str, Any] = 0.0
    error_rate: float = 0.0
    error_next: int = 0
    error_status: int | list[int] = 503
    drop_rate: float = 0.0
    drop_next: int = 0
    drop_after_processing: bool = False
    lock_rate: float = 0.0
    lock_next: int = 0
    kinds: list[str] | None = None
    job_failure_rate: float = 0.0
    fail_next_jobs: int = 0
    job_failure_message: str = _DEFAULT_JOB_FAILURE
    bulk_lock_contention: bool = False
    upsert_race_rate: float = 0.0
    upsert_race_next: int = 0
    retry_after_s: int | None = None
    bulk_empty_results_204: bool = False
    corrupt_results_next: int = 0
    seed: int | None = None
    counters: dict[str, int] = field(default_factory=dict)


def _rate(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise FaultConfigError(f"{key}: expected a number between 0 and 1, got {value!r}")
    return float(value)


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FaultConfigError(f"{key}: expected a whole number >= 0, got {value!r}")
    return value


def _latency(value: Any) -> float | dict[str, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, Mapping):
        dist = value.get("dist")
        need = {
            "uniform": ("min_ms", "max_ms"),
            "exponential": ("mean_ms",),
            "normal": ("mean_ms", "stddev_ms"),
        }.get(str(dist))
        if need is None:
            raise FaultConfigError(
                f"latency_ms.dist: expected uniform, exponential or normal, got {dist!r}"
            )
        out: dict[str, Any] = {"dist": dist}
        for k in need:
            v = value.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise FaultConfigError(f"latency_ms.{k}: expected a number >= 0, got {v!r}")
            out[k] = float(v)
        return out
    raise FaultConfigError(f"latency_ms: expected milliseconds or a distribution, got {value!r}")


class Faults:
    """Runtime fault decisions, made from :class:`FaultSettings` with a seedable RNG.

    ``on_revoke`` / ``on_exhaust`` are wired by the org to its token store and API counter.
    """

    def __init__(
        self,
        *,
        on_revoke: Callable[[bool], None] | None = None,
        on_exhaust: Callable[[], None] | None = None,
    ) -> None:
        self.settings = FaultSettings()
        self._rng = random.Random()
        self._on_revoke = on_revoke
        self._on_exhaust = on_exhaust
        self.active = False

    def configure(self, changes: Mapping[str, Any]) -> FaultSettings:
        """Merge ``changes`` into the settings (see module doc); raises FaultConfigError."""
        unknown = sorted(set(changes) - _KNOWN_KEYS)
        if unknown:
            raise FaultConfigError(f"unknown fault setting(s): {', '.join(unknown)}")
        s = (
            FaultSettings()
            if changes.get("clear")
            else FaultSettings(**{k: v for k, v in asdict(self.settings).items()})
        )
        for key, value in changes.items():
            if key in (
                "error_rate",
                "drop_rate",
                "lock_rate",
                "job_failure_rate",
                "upsert_race_rate",
            ):
                setattr(s, key, _rate(key, value))
            elif key in (
                "error_next",
                "drop_next",
                "lock_next",
                "fail_next_jobs",
                "upsert_race_next",
                "corrupt_results_next",
            ):
                setattr(s, key, _count(key, value))
            elif key == "retry_after_s":
                s.retry_after_s = None if value is None else _count(key, value)
            elif key == "latency_ms":
                s.latency_ms = _latency(value)
            elif key == "error_status":
                statuses = value if isinstance(value, list) else [value]
                if not statuses or any(v not in (500, 502, 503) for v in statuses):
                    raise FaultConfigError(
                        f"error_status: expected 500, 502 or 503 (or a list), got {value!r}"
                    )
                s.error_status = value
            elif key == "drop_after_processing":
                s.drop_after_processing = bool(value)
            elif key in ("bulk_lock_contention", "bulk_empty_results_204"):
                if not isinstance(value, bool):
                    raise FaultConfigError(f"{key}: expected true or false, got {value!r}")
                setattr(s, key, value)
            elif key == "kinds":
                if value is not None and (
                    not isinstance(value, list) or not all(isinstance(k, str) for k in value)
                ):
                    raise FaultConfigError(f"kinds: expected a list of names, got {value!r}")
                s.kinds = value
            elif key == "job_failure_message":
                s.job_failure_message = str(value)
            elif key == "seed":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise FaultConfigError(f"seed: expected an integer, got {value!r}")
                s.seed = value
                self._rng.seed(value)
        self.settings = s
        self.active = bool(
            s.latency_ms
            or s.error_rate
            or s.error_next
            or s.drop_rate
            or s.drop_next
            or s.lock_rate
            or s.lock_next
        )
        if changes.get("revoke_tokens"):
            if self._on_revoke is not None:
                self._on_revoke(changes["revoke_tokens"] == "all")
            self._bump("tokens_revoked")
        if changes.get("exhaust_daily_limit"):
            if self._on_exhaust is not None:
                self._on_exhaust()
            self._bump("limit_exhausted")
        return s

    def as_json(self) -> dict[str, Any]:
        """The settings and how many faults of each kind fired."""
        return asdict(self.settings)

    def _bump(self, name: str) -> None:
        c = self.settings.counters
        c[name] = c.get(name, 0) + 1

    def applies_to(self, kind: str) -> bool:
        """Whether request faults apply to a request of ``kind``."""
        kinds = self.settings.kinds
        if kinds is None:
            return kind != "oauth"
        return kind in kinds

    def latency_s(self) -> float:
        """The delay to add to this request, in seconds."""
        lat = self.settings.latency_ms
        if isinstance(lat, float | int):
            return float(lat) / 1000
        dist = lat["dist"]
        if dist == "uniform":
            ms = self._rng.uniform(lat["min_ms"], lat["max_ms"])
        elif dist == "exponential":
            ms = self._rng.expovariate(1 / lat["mean_ms"]) if lat["mean_ms"] else 0.0
        else:
            ms = max(0.0, self._rng.gauss(lat["mean_ms"], lat["stddev_ms"]))
        return ms / 1000

    def take_error(self) -> int | None:
        """The 5xx status to answer this request with, or None."""
        s = self.settings
        hit = False
        if s.error_next:
            s.error_next -= 1
            hit = True
        elif s.error_rate and self._rng.random() < s.error_rate:
            hit = True
        if not hit:
            return None
        self._bump("errors")
        status = s.error_status
        return self._rng.choice(status) if isinstance(status, list) else status

    def take_drop(self) -> bool:
        """Whether to cut this request's connection."""
        s = self.settings
        hit = False
        if s.drop_next:
            s.drop_next -= 1
            hit = True
        elif s.drop_rate and self._rng.random() < s.drop_rate:
            hit = True
        if hit:
            self._bump("drops")
        return hit

    def lock_row(self, sobject: str, record_id: str | None) -> bool:
        """The store's lock hook: True makes this row write fail with UNABLE_TO_LOCK_ROW."""
        s = self.settings
        hit = False
        if s.lock_next:
            s.lock_next -= 1
            hit = True
        elif s.lock_rate and self._rng.random() < s.lock_rate:
            hit = True
        if hit:
            self._bump("locks")
        return hit

    def upsert_race(self, sobject: str) -> bool:
        """The store's race hook: True makes this creating upsert lose to a concurrent one."""
        s = self.settings
        hit = False
        if s.upsert_race_next:
            s.upsert_race_next -= 1
            hit = True
        elif s.upsert_race_rate and self._rng.random() < s.upsert_race_rate:
            hit = True
        if hit:
            self._bump("upsert_races")
        return hit

    def take_corrupt_result(self) -> bool:
        """For the bulk plugin: whether this result download's body must be corrupted."""
        s = self.settings
        if not s.corrupt_results_next:
            return False
        s.corrupt_results_next -= 1
        self._bump("corrupt_results")
        return True

    def take_job_failure(self) -> str | None:
        """For the bulk plugin: the ``errorMessage`` if this job must fail as a whole, else None."""
        s = self.settings
        hit = False
        if s.fail_next_jobs:
            s.fail_next_jobs -= 1
            hit = True
        elif s.job_failure_rate and self._rng.random() < s.job_failure_rate:
            hit = True
        if not hit:
            return None
        self._bump("job_failures")
        return s.job_failure_message
