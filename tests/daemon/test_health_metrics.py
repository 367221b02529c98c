"""/healthz, /readyz and /metrics over a real loopback socket, alone and in the daemon."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from adapters._base import AdapterHealth, AdapterState
from daemon.http import HealthServer, ReadinessCheck
from daemon.metrics import Metrics
from daemon.notify import Notifier
from daemon.runner import Daemon
from daemon.settings import Settings, load_settings
from spool import CallOutcome, Disposition
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


# ------------------------------------------------------------------ in the daemon


def config(tmp_path: Path, extra: str = "", **sections: dict[str, Any]) -> Path:
    """A config for a daemon on loopback; ``sections`` add keys, e.g. spool={...}."""
    keys: dict[str, dict[str, Any]] = {
        "spool": {"path": str(tmp_path / "spool.db")},
        "daemon": {"status_interval_s": 0.05},
    }
    for name, values in sections.items():
        keys.setdefault(name, {}).update(values)
    # JSON strings and numbers are TOML values too.
    body = "".join(
        f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
        for name, values in keys.items()
    )
    path = tmp_path / "config.toml"
    path.write_text(
        '[salesforce]\nlogin_url = "https://example.my.salesforce.com"\nclient_id = "id"\n'
        'client_secret = "secret-value"\n[http]\nlisten = "127.0.0.1:0"\n[log]\n'
        f'format = "json"\n{body}{extra}'
    )
    return path


class ReadyRails:
    """A rails stand-in that is always ready and stops at once."""

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    def readiness(self) -> Sequence[ReadinessCheck]:
        return [ReadinessCheck("salesforce", True, "authenticated")]

    def quota(self) -> dict[str, Any] | None:
        return {"used": 1, "max": 100, "state": "ok"}

    def reload_mapping(self) -> str:
        return "ok"


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """The daemon (ready rails) and a client on its health port; stopped (exit 0) after."""

    async def rails(settings: Settings, spool: Any, metrics: Metrics) -> ReadyRails:
        return ReadyRails()

    daemon = Daemon(
        settings, notifier=Notifier(None), rails_factory=rails, install_signal_handlers=False
    )
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(daemon.run())
        try:
            async with asyncio.timeout(10):
                await daemon.started.wait()
            assert daemon.health is not None
            base = f"http://127.0.0.1:{daemon.health.port}"
            async with httpx.AsyncClient(base_url=base) as client:
                yield daemon, client
        finally:
            daemon.request_stop()
    assert task.result() == 0


def outcome(call_id: str) -> CallOutcome:
    return CallOutcome(
        source="vicidial",
        call_id=call_id,
        disposition=Disposition.VOICEMAIL,
        ended_at=datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
    )


def series(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


async def test_dispo_ready_metric_reflects_readiness_without_a_readyz_probe(
    tmp_path: Path,
) -> None:
    """README: /metrics has `dispo_ready`. Prometheus only scrapes /metrics; a healthy,
    ready daemon must not read 0 there just because nobody asked /readyz."""
    settings = load_settings(config(tmp_path), environ={})
    async with running(settings) as (_, client):
        text = (await client.get("/metrics")).text  # the first scrape, no /readyz before
        readyz = await client.get("/readyz")
    assert readyz.status_code == 200, readyz.text
    assert series(text, "dispo_ready") == ["dispo_ready 1.0"]


async def test_spool_gauges_follow_the_spool_at_scrape_time(tmp_path: Path) -> None:
    """daemon/metrics.py: spool gauges are refreshed just before each scrape, not only on
    the systemd STATUS tick (here an hour apart)."""
    settings = load_settings(config(tmp_path, daemon={"status_interval_s": 3600}), environ={})
    async with running(settings) as (daemon, client):
        await daemon.spool.put(outcome("c1"))
        text = (await client.get("/metrics")).text
    assert series(text, 'dispo_spool_records{state="pending"') == [
        'dispo_spool_records{state="pending"} 1.0'
    ]
    assert series(text, "dispo_spool_oldest_pending_seconds ") != [
        "dispo_spool_oldest_pending_seconds 0.0"
    ]


async def test_readyz_says_so_when_the_spool_is_full_at_max_pending(tmp_path: Path) -> None:
    """At [spool] max_pending every put is refused (webhooks answer 503): not ready, and the
    check names the limit, before any dialer was refused."""
    settings = load_settings(config(tmp_path, spool={"max_pending": 2}), environ={})
    async with running(settings) as (daemon, client):
        await daemon.spool.put(outcome("c1"))
        before = await client.get("/readyz")
        await daemon.spool.put(outcome("c2"))
        full = await client.get("/readyz")
        text = (await client.get("/metrics")).text
    assert before.status_code == 200, before.text
    assert full.status_code == 503, full.text
    failed = [c for c in full.json()["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["spool accepting outcomes"]
    assert "max_pending = 2" in failed[0]["detail"]
    assert series(text, "dispo_ready") == ["dispo_ready 0.0"]


async def test_readyz_says_so_after_a_webhook_was_refused_at_max_bytes(tmp_path: Path) -> None:
    """Over [spool] max_bytes a webhook answers 503; /readyz then names the refusal."""
    hook = (
        '[[adapter]]\ntype = "webhook"\npreset = "json"\nlisten = "127.0.0.1:0"\ntrusted = true\n'
    )
    settings = load_settings(config(tmp_path, hook, spool={"max_bytes": 1}), environ={})
    async with running(settings) as (daemon, client):
        assert (await client.get("/readyz")).status_code == 200  # nothing refused yet
        (adapter,) = daemon.adapters
        body = {"call_id": "h1", "disposition": "busy", "ended_at": "2026-05-04T10:00:00Z"}
        posted = await client.post(f"http://127.0.0.1:{adapter.bound_port}/outcomes", json=body)
        assert posted.status_code == 503, posted.text
        full = await client.get("/readyz")
    assert full.status_code == 503, full.text
    failed = [c for c in full.json()["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["spool accepting outcomes"]
    assert "max_bytes" in failed[0]["detail"]
