"""The bad-input campaign (bench/campaign_fuzz.py), short: ~40 hypothesis cases per adapter.

One daemon with every adapter type and sfsim, both child processes; the full run
(``python -m bench.campaign_fuzz --cases 10000``) is the slow test below.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import campaign_fuzz as fuzz


def test_every_adapter_survives_bad_input_and_injection_round_trips(tmp_path: Path) -> None:
    r = fuzz.run_fuzz(tmp_path, cases=40, injection_cases=60)
    for adapter in fuzz.ADAPTERS:
        a = r[adapter]
        assert a["problems"] == [], (adapter, a)
        assert a["cases"] >= 40 and a["daemon_alive"], (adapter, a)
        # every quarantined input has its rejection log line, each with a reason
        assert a["log_lines"] == a["quarantined"] > 0 and a["without_reason"] == 0, (adapter, a)
        assert not any(s.startswith("5") for s in a["statuses"]), (adapter, a)
    inj = r["injection"]
    assert inj["sent"] > 30 and inj["sent_live"] > 0 and inj["sent_bulk_or_collections"] > 0, inj
    assert inj["value_mismatches"] == 0 and inj["wrong_lead_links"] == 0, inj
    assert inj["leads_changed_without_reference"] == [] and inj["missing"] == 0, inj
    assert r["error_log_events"] == {}, r["error_log_events"]
    assert r["ok"], r["failed"]


@pytest.mark.slow
def test_full_fuzz_campaign(tmp_path: Path) -> None:
    r = fuzz.run_fuzz(tmp_path, cases=10_000)
    assert r["ok"], r["failed"]
