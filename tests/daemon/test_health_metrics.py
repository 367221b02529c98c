"""/healthz, /readyz and /metrics over a real loopback socket."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from adapters._base import AdapterHealth, AdapterState
from daemon.http import HealthServer, ReadinessCheck
from daemon.metrics import Metrics
from tests.keepalive import assert_connections_nodelay


async def test_health_ready_and_metrics_endpoints() -> None:
    """healthz is 200; readyz flips to 503 naming the failed check; metrics show series."""
    metrics = Metrics()
    checks = [ReadinessCheck("spool writable", True), ReadinessCheck("salesforce", True)]
    scrapes = 0

    async def readiness() -> Sequence[ReadinessCheck]:
        return checks

    async def before_scrape() -> None:
        nonlocal scrapes
        scrapes += 1
        metrics.update_adapters(
            [
                AdapterHealth(
                    name="vicidial",
                    type="webhook",
                    state=AdapterState.LISTENING,
                    received=7,
                    accepted=6,
                    rejected=1,
                    extra={"unauthorized": 2},
                )
            ]
        )

    server = HealthServer(
        host="127.0.0.1",
        port=0,
        metrics=metrics,
        readiness=readiness,
        before_scrape=before_scrape,
    )
    await server.start()
    assert server.port != 0
    async with asyncio.TaskGroup() as tg:
        tg.create_task(server.serve())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            r = await client.get("/healthz")
            assert r.status_code == 200 and r.json()["status"] == "ok"

            r = await client.get("/readyz")
            assert r.status_code == 200 and r.json()["ready"] is True

            checks = [
                ReadinessCheck("spool writable", True),
                ReadinessCheck("rail bulk", False, "paused: INVALID_FIELD Call_Id__c"),
            ]
            r = await client.get("/readyz")
            assert r.status_code == 503
            failed = [c for c in r.json()["checks"] if not c["ok"]]
            assert failed == [
                {"name": "rail bulk", "ok": False, "detail": "paused: INVALID_FIELD Call_Id__c"}
            ]

            metrics.outcome_received("vicidial", "do_not_call", 3)
            metrics.outcome_sent("live", "do_not_call", 2, latency_s=0.4)
            metrics.api_call("live")
            metrics.quota(120, 15000)
            metrics.paused("bulk", True)
            metrics.update_spool(
                by_state={"pending": 5, "dead": 1},
                oldest_pending_s=12.5,
                dead_by_error={"INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": 1},
                jobs_by_state={"InProgress": 1},
                quarantined=2,
            )
            r = await client.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            text = r.text
            for line in [
                'dispo_spool_records{state="pending"} 5.0',
                'dispo_spool_records{state="inflight"} 0.0',
                "dispo_spool_oldest_pending_seconds 12.5",
                "dispo_quarantined 2.0",
                'dispo_outcomes_received_total{disposition="do_not_call",source="vicidial"} 3.0',
                'dispo_outcomes_sent_total{disposition="do_not_call",rail="live"} 2.0',
                'dispo_api_calls_total{rail="live"} 1.0',
                "dispo_api_quota_used 120.0",
                "dispo_api_quota_max 15000.0",
                'dispo_live_latency_seconds_bucket{le="0.5"} 1.0',
                'dispo_bulk_jobs{state="InProgress"} 1.0',
                'dispo_dead_letters{error_code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"} 1.0',
                'dispo_rail_paused{rail="bulk"} 1.0',
                'dispo_adapter_up{adapter="vicidial",type="webhook"} 1.0',
                'dispo_adapter_state{adapter="vicidial",state="listening"} 1.0',
                'dispo_adapter_events{adapter="vicidial",kind="rejected"} 1.0',
                'dispo_adapter_extra{adapter="vicidial",name="unauthorized"} 2.0',
                "dispo_ready 0.0",
            ]:
                assert line in text, line
            assert scrapes == 1
            # Keep-alive scrapes are not held ~40 ms by Nagle: accepted sockets have NODELAY.
            assert_connections_nodelay(server._server)
        await server.stop()


def test_spool_gauges_drop_vanished_labels_to_zero() -> None:
    """A dead-letter error code that was retried away reads 0, not its old count."""
    metrics = Metrics()
    metrics.update_spool(
        by_state={}, oldest_pending_s=None, dead_by_error={"X": 4}, jobs_by_state={}
    )
    metrics.update_spool(by_state={}, oldest_pending_s=None, dead_by_error={}, jobs_by_state={})
    assert b'dispo_dead_letters{error_code="X"} 0.0' in metrics.render()
