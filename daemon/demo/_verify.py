"""Did every acknowledged call arrive, exactly once, as its newest version? (pure)

Input: the reports the daemon acknowledged, plus the org's Task and Lead records
as sfsim's control API returns them. Output: a :class:`Verification` listing
every failure in words a user can act on.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.demo._dialer import DialerCall

__all__ = ["Expected", "Verification", "expected_from", "live_latencies", "percentile", "verify"]


@dataclass(frozen=True)
class Expected:
    """What the org must show after the run."""

    tasks: dict[str, str]  # Call_Id__c -> newest disposition
    lead_outcome: dict[str, str]  # Dialer_Lead_Id__c -> newest outcome across its calls
    dnc_leads: frozenset[str]
    live_calls: dict[str, str]  # Call_Id__c -> delivery id of its newest version, when live


def expected_from(acked: Iterable[DialerCall]) -> Expected:
    """Newest version per call (later end wins: VICIdial epoch / event time), newest per Lead."""
    newest: dict[str, DialerCall] = {}
    dnc: set[str] = set()
    for call in acked:
        current = newest.get(call.external_key)
        if current is None or call.ended_at > current.ended_at:
            newest[call.external_key] = call
        if call.disposition == "do_not_call":
            dnc.add(call.lead)
    per_lead: dict[str, DialerCall] = {}
    for call in newest.values():
        current = per_lead.get(call.lead)
        if current is None or call.ended_at > current.ended_at:
            per_lead[call.lead] = call
    return Expected(
        tasks={key: c.disposition for key, c in newest.items()},
        lead_outcome={lead: c.disposition for lead, c in per_lead.items()},
        dnc_leads=frozenset(dnc),
        live_calls={k: c.delivery_id for k, c in newest.items() if c.live},
    )


@dataclass
class Verification:
    tasks_ok: int = 0
    tasks_expected: int = 0
    leads_ok: int = 0
    leads_expected: int = 0
    dnc_ok: int = 0
    dnc_expected: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def verify(
    expected: Expected,
    tasks: Sequence[dict[str, Any]],
    leads: Sequence[dict[str, Any]],
    *,
    sources: Iterable[str],
    not_acknowledged: dict[str, str] | None = None,
) -> Verification:
    """Compare the org with what the dialer was told was stored."""
    prefixes = tuple(f"{s}:" for s in sources)
    result = Verification(
        tasks_expected=len(expected.tasks),
        leads_expected=len(expected.lead_outcome),
        dnc_expected=len(expected.dnc_leads),
    )
    for delivery, why in sorted((not_acknowledged or {}).items()):
        result.failures.append(f"report {delivery} was not acknowledged by the daemon: {why}")

    ours = [t for t in tasks if str(t.get("Call_Id__c") or "").startswith(prefixes)]
    count = Counter(str(t["Call_Id__c"]) for t in ours)
    by_key = {str(t["Call_Id__c"]): t for t in ours}
    for key, disposition in sorted(expected.tasks.items()):
        n = count.get(key, 0)
        if n == 0:
            result.failures.append(f"Task {key}: missing in the org")
        elif n > 1:
            result.failures.append(f"Task {key}: {n} Tasks (duplicates)")
        elif by_key[key].get("CallDisposition") != disposition:
            result.failures.append(
                f"Task {key}: CallDisposition {by_key[key].get('CallDisposition')!r}, "
                f"newest version says {disposition!r}"
            )
        else:
            result.tasks_ok += 1
    for key in sorted(set(count) - set(expected.tasks)):
        result.failures.append(f"Task {key}: in the org but never acknowledged to the dialer")

    by_lead = {str(r.get("Dialer_Lead_Id__c")): r for r in leads if r.get("Dialer_Lead_Id__c")}
    for lead, outcome in sorted(expected.lead_outcome.items()):
        record = by_lead.get(lead)
        if record is None:
            result.failures.append(f"Lead {lead}: not in the org")
            continue
        if record.get("Last_Call_Outcome__c") != outcome:
            result.failures.append(
                f"Lead {lead}: Last_Call_Outcome__c {record.get('Last_Call_Outcome__c')!r}, "
                f"newest call says {outcome!r}"
            )
        else:
            result.leads_ok += 1
    for lead, record in sorted(by_lead.items()):
        flagged = record.get("DoNotCall") is True
        if lead in expected.dnc_leads:
            if flagged:
                result.dnc_ok += 1
            else:
                result.failures.append(f"Lead {lead}: asked not to be called, DoNotCall not set")
        elif flagged:
            result.failures.append(f"Lead {lead}: DoNotCall set but no call asked for it")
    return result


def live_latencies(
    expected: Expected, tasks: Sequence[dict[str, Any]], reported_at: Mapping[str, datetime]
) -> list[float]:
    """Seconds from the dialer's report of each live call's newest version to the Task holding it.

    Measured on the org's clock (``LastModifiedDate``, ms resolution); a later rewrite of
    the same Task only makes a figure larger, never smaller.
    """
    by_key = {str(t.get("Call_Id__c")): t for t in tasks}
    out: list[float] = []
    for key, delivery in expected.live_calls.items():
        task = by_key.get(key)
        sent = reported_at.get(delivery)
        stamp = task.get("LastModifiedDate") if task else None
        if sent is None or not isinstance(stamp, str):
            continue
        out.append(max(0.0, (_sf_datetime(stamp) - sent).total_seconds()))
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _sf_datetime(text: str) -> datetime:
    # Salesforce writes "2026-11-24T20:00:06.163+0000" (no colon in the offset).
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")
