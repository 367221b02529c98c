"""sfsim in its own process for the rails benchmarks (its CPU is not the daemon's).

with sim_process(api_limit=1_000_000) as info:
    lead_ids = seed_leads(info, 20_000)
    ...  # info: instance_url, token_url, client_id, client_secret
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx

__all__ = ["client_kwargs", "seed_leads", "sim_process"]


@contextlib.contextmanager
def sim_process(*, api_limit: int = 1_000_000) -> Iterator[dict[str, Any]]:
    """Start ``python -m sfsim`` (no rate limit: its fastest), yield its info, stop it."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "sfsim", "--print-json", "--api-limit", str(api_limit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        if not line:
            raise RuntimeError(f"sfsim did not start (exit code {sim.wait(timeout=10)})")
        yield json.loads(line)
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()


def seed_leads(info: dict[str, Any], n: int) -> list[str]:
    """Create ``n`` Leads through the control API; their Ids."""
    ids: list[str] = []
    with httpx.Client(timeout=120) as http:
        for start in range(0, n, 5000):
            batch = [
                {"LastName": f"L{i}", "Company": "Acme"} for i in range(start, min(n, start + 5000))
            ]
            response = http.post(f"{info['instance_url']}/__sim/records/Lead", json=batch)
            response.raise_for_status()
            ids += response.json()
    return ids


def sim_stats(info: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(timeout=120) as http:
        stats: dict[str, Any] = http.get(f"{info['instance_url']}/__sim/stats").json()
    return stats


def client_kwargs(info: dict[str, Any]) -> dict[str, Any]:
    """SalesforceClient arguments for this sim (plain http on loopback)."""
    return {
        "login_url": info["token_url"].removesuffix("/services/oauth2/token"),
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
        "allow_http": True,
    }
