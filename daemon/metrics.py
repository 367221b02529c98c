"""Prometheus metrics: one registry per daemon (no global state; tests build their own).

Two kinds of series:

- *events* (counters, the latency histogram) that the parts call as they
  happen: :meth:`Metrics.outcome_received`, :meth:`Metrics.outcome_sent`,
  :meth:`Metrics.api_call`, ...;
- *state* (gauges) refreshed from a snapshot of the spool and the adapters
  just before each scrape (:meth:`Metrics.update_spool`,
  :meth:`Metrics.update_adapters`), and ``dispo_ready`` from the readiness
  checks (``daemon.http``). The spool's snapshot is its O(1) stats, read on its
  own connection under a timeout (``daemon.runner``): a stuck disk leaves the
  previous values instead of holding the scrape.

Metric names carry the ``dispo_`` prefix and follow Prometheus naming
(``_total`` counters, ``_seconds`` units).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as _CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "Metrics"]

# No `*_created` timestamp series next to every counter: noise for an admin's dashboards.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = _CONTENT_TYPE

# Live latency: from the dialer's event to Salesforce's confirmation.
_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

_ADAPTER_STATES = ("starting", "listening", "connected", "reconnecting", "stopping", "stopped")


class Metrics:
    """Every series the daemon exports, in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.spool_records = Gauge(
            "dispo_spool_records", "Records in the spool by state", ["state"], registry=r
        )
        self.spool_oldest_pending = Gauge(
            "dispo_spool_oldest_pending_seconds",
            "Age of the oldest record still waiting to be sent",
            registry=r,
        )
        self.quarantined = Gauge(
            "dispo_quarantined",
            "Dialer input that was not a call outcome, kept aside in the spool with its reason",
            registry=r,
        )
        self.dead_letters = Gauge(
            "dispo_dead_letters",
            "Records Salesforce refused for good, by error code",
            ["error_code"],
            registry=r,
        )
        self.bulk_jobs = Gauge(
            "dispo_bulk_jobs",
            "Bulk API 2.0 jobs recorded in the spool, by state",
            ["state"],
            registry=r,
        )
        self.received = Counter(
            "dispo_outcomes_received_total",
            "Call outcomes received from dialers",
            ["source", "disposition"],
            registry=r,
        )
        self.sent = Counter(
            "dispo_outcomes_sent_total",
            "Call outcomes Salesforce confirmed, by rail",
            ["rail", "disposition"],
            registry=r,
        )
        self.api_calls = Counter(
            "dispo_api_calls_total",
            "Salesforce API calls made (each counts against the quota)",
            ["rail"],
            registry=r,
        )
        self.quota_used = Gauge(
            "dispo_api_quota_used", "Daily API requests used (last Sforce-Limit-Info)", registry=r
        )
        self.quota_max = Gauge(
            "dispo_api_quota_max",
            "Daily API request allocation (last Sforce-Limit-Info)",
            registry=r,
        )
        self.live_latency = Histogram(
            "dispo_live_latency_seconds",
            "Seconds from call end to Salesforce confirmation, live rail",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rail_paused = Gauge(
            "dispo_rail_paused",
            "1 when a rail is paused (configuration error or quota)",
            ["rail"],
            registry=r,
        )
        self.adapter_up = Gauge(
            "dispo_adapter_up",
            "1 when an adapter listens or is connected",
            ["adapter", "type"],
            registry=r,
        )
        self.adapter_state = Gauge(
            "dispo_adapter_state",
            "Adapter connection state (1 for the current one)",
            ["adapter", "state"],
            registry=r,
        )
        self.adapter_events = Gauge(
            "dispo_adapter_events",
            "Adapter counters since start (received, accepted, ...)",
            ["adapter", "kind"],
            registry=r,
        )
        self.adapter_extra = Gauge(
            "dispo_adapter_extra",
            "Adapter-specific figures (e.g. unauthorized requests, open ARI channels)",
            ["adapter", "name"],
            registry=r,
        )
        self.ready = Gauge("dispo_ready", "1 when /readyz answers 200", registry=r)

    # ----------------------------------------------------------------- events

    def outcome_received(self, source: str, disposition: str, n: int = 1) -> None:
        self.received.labels(source=source, disposition=disposition).inc(n)

    def outcome_sent(
        self, rail: str, disposition: str, n: int = 1, latency_s: float | None = None
    ) -> None:
        self.sent.labels(rail=rail, disposition=disposition).inc(n)
        if latency_s is not None and rail == "live":
            self.live_latency.observe(max(0.0, latency_s))

    def api_call(self, rail: str, n: int = 1) -> None:
        self.api_calls.labels(rail=rail).inc(n)

    def quota(self, used: int, maximum: int) -> None:
        self.quota_used.set(used)
        self.quota_max.set(maximum)

    def paused(self, rail: str, is_paused: bool) -> None:
        self.rail_paused.labels(rail=rail).set(1 if is_paused else 0)

    # ------------------------------------------------------------------ state

    def update_spool(
        self,
        *,
        by_state: Mapping[str, int],
        oldest_pending_s: float | None,
        dead_by_error: Mapping[str, int],
        jobs_by_state: Mapping[str, int],
        quarantined: int = 0,
    ) -> None:
        """Refresh the spool gauges from a stats snapshot (vanished labels go to 0)."""
        _set_all(self.spool_records, "state", by_state, ("pending", "inflight", "done", "dead"))
        self.spool_oldest_pending.set(oldest_pending_s or 0.0)
        self.quarantined.set(quarantined)
        _set_all(self.dead_letters, "error_code", dead_by_error, ())
        _set_all(self.bulk_jobs, "state", jobs_by_state, ())

    def update_adapters(self, healths: Iterable[Any]) -> None:
        """Refresh adapter gauges from ``Adapter.health()`` results."""
        for h in healths:
            state = str(getattr(h.state, "value", h.state))
            self.adapter_up.labels(adapter=h.name, type=h.type).set(1 if h.up else 0)
            # Every state the adapter's enum knows (one series each, 1 for the current one).
            states = [str(m.value) for m in type(h.state)] if isinstance(h.state, Enum) else []
            for candidate in dict.fromkeys([*_ADAPTER_STATES, *states, state]):
                self.adapter_state.labels(adapter=h.name, state=candidate).set(
                    1 if candidate == state else 0
                )
            for kind in ("received", "accepted", "duplicates", "rejected", "refused", "reconnects"):
                self.adapter_events.labels(adapter=h.name, kind=kind).set(getattr(h, kind, 0))
            for name, value in (getattr(h, "extra", None) or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.adapter_extra.labels(adapter=h.name, name=str(name)).set(value)

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)


def _set_all(gauge: Gauge, label: str, values: Mapping[str, int], always: Iterable[str]) -> None:
    # Labels seen before but absent now must read 0, not keep a stale value.
    seen = {key[0] for key in _label_values(gauge)}
    for name in {*values, *always, *seen}:
        gauge.labels(**{label: name}).set(values.get(name, 0))


def _label_values(gauge: Gauge) -> list[tuple[str, ...]]:
    # prometheus_client keeps children in a dict keyed by label values.
    metrics: dict[tuple[str, ...], Any] = getattr(gauge, "_metrics", {})
    return list(metrics)
