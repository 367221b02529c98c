"""The spool view the daemon hands to adapters and rails: counts in, counts out, wakes rails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.metrics import Metrics
from daemon.settings import load_settings
from daemon.wiring import CountingSpool, DaemonRails
from spool import CallOutcome, Disposition, open_spool


def outcome(n: int, disposition: Disposition) -> CallOutcome:
    return CallOutcome(
        source="vicidial",
        call_id=f"c{n}",
        disposition=disposition,
        ended_at=datetime(2026, 11, 24, 12, 0, n, tzinfo=UTC),
    )


async def test_counts_stored_outcomes_and_confirmed_sends_by_rail(tmp_path: Path) -> None:
    """Stored puts count as received; acks by Claim or by pair count as sent per rail."""
    metrics = Metrics()
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    async with open_spool(tmp_path / "s.db") as raw:
        spool = CountingSpool(raw, metrics)
        spool.on_stored = wake
        await spool.put(outcome(1, Disposition.DO_NOT_CALL))
        await spool.put(outcome(1, Disposition.DO_NOT_CALL))  # a re-delivery: not counted
        await spool.put_many([outcome(2, Disposition.BUSY), outcome(3, Disposition.BUSY)])
        assert wakes == 2

        live = await spool.claim("live", 10, urgent=True)
        bulk = await spool.claim("bulk", 10, urgent=False)
        await spool.ack(live)  # Claim objects
        await spool.ack([c.pair for c in bulk[:1]])  # (record_id, rev) pairs, as Bulk does
        await spool.retry_later(bulk[1:], delay_s=60)
        assert (await spool.stats()).done == 2  # forwarded to the real spool

    text = metrics.render().decode()
    assert 'dispo_outcomes_received_total{disposition="do_not_call",source="vicidial"} 1.0' in text
    assert 'dispo_outcomes_received_total{disposition="busy",source="vicidial"} 2.0' in text
    assert 'dispo_outcomes_sent_total{disposition="do_not_call",rail="live"} 1.0' in text
    assert 'dispo_outcomes_sent_total{disposition="busy",rail="bulk"} 1.0' in text
    assert "dispo_live_latency_seconds_count 1.0" in text


CONFIG = """
[salesforce]
login_url = "https://acme.my.salesforce.com"
client_id = "3MVGkey"
client_secret = "s"
"""
TIMINGS = {"bulk_lease_s": 1800.0, "config_recheck_s": 15.0, "limits_interval_s": 600.0}


@pytest.mark.parametrize("source", ["file", "env"])
async def test_rail_timings_reach_the_running_rails(tmp_path: Path, source: str) -> None:
    """[rails] bulk_lease_s, config_recheck_s and limits_interval_s, from the file or from
    DISPO_RAILS__*, are what the Bulk rail leases its records for, how long a paused rail
    waits before its recheck and how often /limits is read."""
    text, env = CONFIG, {}
    if source == "file":
        text += "[rails]\n" + "".join(f"{k} = {v}\n" for k, v in TIMINGS.items())
    else:
        env = {f"DISPO_RAILS__{k.upper()}": str(v) for k, v in TIMINGS.items()}
    config = tmp_path / "config.toml"
    config.write_text(text)
    settings = load_settings(config, environ=env)
    async with open_spool(tmp_path / "s.db") as spool:
        rails = DaemonRails(settings, spool, Metrics()).rails
    assert rails.bulk.lease_s == 1800
    assert rails.config_recheck_s == 15
    assert rails.limits_interval_s == 600


async def test_api_calls_metric_counts_what_the_quota_counts(tmp_path: Path) -> None:
    """dispo_api_calls_total ("each counts against the quota") counts the calls the quota
    view counts: one answered, one whose answer was lost (Salesforce counted it), not one
    whose connection could not be made (nothing left the machine)."""
    import socket

    from daemon.salesforce import TransportError
    from sfsim.testing import running_sim

    async with running_sim(tls=False) as sim, open_spool(tmp_path / "s.db") as spool:
        info = sim.info
        config = tmp_path / "c.toml"
        config.write_text(
            f'[salesforce]\nlogin_url = "{info["instance_url"]}"\n'
            f'client_id = "{info["client_id"]}"\nclient_secret = "{info["client_secret"]}"\n'
        )
        metrics = Metrics()
        daemon = DaemonRails(load_settings(config, environ={}), spool, metrics)
        sf = daemon.client
        async with sf:
            await sf.limits()
            sim.org.faults.configure({"drop_next": 1, "drop_after_processing": True})
            with pytest.raises(TransportError):
                await sf.limits()
            with socket.socket() as s:  # a port nothing listens on
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            with pytest.raises(TransportError):
                await sf.request("GET", f"http://127.0.0.1:{port}/x", rail="admin")
        assert sf.quota.calls_by_rail["admin"] == 2
        assert 'dispo_api_calls_total{rail="admin"} 2.0' in metrics.render().decode()
