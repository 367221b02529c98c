"""SimOrg as an in-process server: start/stop, logging left alone, TLS info, state."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import httpx
import pytest

from sfsim.server import SimOrg


async def test_in_process_server_leaves_logging_configuration_alone() -> None:
    """Starting a sim in-process installs no logging handlers (the daemon owns logging)."""
    root_before = list(logging.getLogger().handlers)
    uv_before = list(logging.getLogger("uvicorn.error").handlers)
    async with SimOrg() as sim:
        assert sim.info["instance_url"].startswith("http://127.0.0.1:")
    assert logging.getLogger().handlers == root_before
    assert logging.getLogger("uvicorn.error").handlers == uv_before


async def test_tls_info_and_closed_port() -> None:
    """With tls=True the info carries a CA that verifies the server; after exit it is closed."""
    async with SimOrg(tls=True) as sim:
        ca = sim.info["ca_file"]
        assert ca and sim.instance_url.startswith("https://")
        ctx = ssl.create_default_context(cafile=ca)
        async with httpx.AsyncClient(verify=ctx) as c:
            assert (await c.get(f"{sim.instance_url}/services/data/")).status_code == 200
        url = sim.instance_url
    async with httpx.AsyncClient(verify=False) as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"{url}/services/data/")


async def test_simorg_enters_once_and_info_needs_running() -> None:
    """Using info before start, or entering twice, is a clear RuntimeError."""
    sim = SimOrg()
    with pytest.raises(RuntimeError, match="not running"):
        _ = sim.info
    async with sim:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        async with sim:
            pass


async def test_state_dir_round_trip_in_process(tmp_path: Path) -> None:
    """Records and credentials of one SimOrg are there in the next with the same state_dir."""
    async with SimOrg(state_dir=tmp_path) as sim:
        lead = sim.org.store.insert("Lead", {"LastName": "Keep", "Company": "C"})
        first = sim.info
    assert (tmp_path / "sfsim-state.json").exists()
    async with SimOrg(state_dir=tmp_path) as sim:
        assert sim.org.store.get("Lead", lead) is not None
        # Generated credentials are kept too, so a pasted config keeps working.
        for key in ("client_id", "client_secret", "username", "password"):
            assert sim.info[key] == first[key]
        new = sim.org.store.insert("Lead", {"LastName": "New", "Company": "C"})
        assert new != lead
