"""Helpers for tests that need an org: start one, get a token, talk to it with httpx.

::

    from sfsim.testing import running_sim, sim_client

    async def test_something() -> None:
        async with running_sim() as sim, sim_client(sim) as sf:
            r = await sf.post("sobjects/Lead/", json={"LastName": "Doe", "Company": "Acme"})

or as a fixture (pytest-asyncio)::

    small_sim = sim_fixture("small_sim", api_limit=50)   # in a conftest or test module

    async def test_x(small_sim: SimOrg) -> None: ...

``SimControl`` wraps the ``/__sim/`` control API (seed records, read records, stats, faults).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx

from sfsim.server import SimOrg

__all__ = [
    "DEFAULT_VERSION",
    "SimControl",
    "fetch_token",
    "running_sim",
    "sim_client",
    "sim_fixture",
]

DEFAULT_VERSION: Final = "62.0"
_TIMEOUT: Final = httpx.Timeout(30.0)


@asynccontextmanager
async def running_sim(**kwargs: Any) -> AsyncIterator[SimOrg]:
    """A running org on a free loopback port; keyword arguments go to :class:`SimOrg`."""
    async with SimOrg(**kwargs) as sim:
        yield sim


def _verify(sim: SimOrg) -> ssl.SSLContext | bool:
    # Plain HTTP needs no trust store, and loading certifi's costs ~0.5 s per client.
    if sim.ca_file:
        return ssl.create_default_context(cafile=sim.ca_file)
    return not sim.instance_url.startswith("http:")


async def fetch_token(sim: SimOrg, client: httpx.AsyncClient | None = None) -> str:
    """An access token from the client-credentials flow."""
    info = sim.info
    form = {
        "grant_type": "client_credentials",
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
    }
    if client is None:
        async with httpx.AsyncClient(verify=_verify(sim), timeout=_TIMEOUT) as own:
            r = await own.post(info["token_url"], data=form)
    else:
        r = await client.post(info["token_url"], data=form)
    r.raise_for_status()
    return str(r.json()["access_token"])


@asynccontextmanager
async def sim_client(
    sim: SimOrg, version: str = DEFAULT_VERSION
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose base URL is ``/services/data/v{version}/``, already authorized."""
    async with httpx.AsyncClient(verify=_verify(sim), timeout=_TIMEOUT) as bare:
        token = await fetch_token(sim, bare)
    async with httpx.AsyncClient(
        base_url=f"{sim.instance_url}/services/data/v{version}/",
        headers={"Authorization": f"Bearer {token}"},
        verify=_verify(sim),
        timeout=_TIMEOUT,
    ) as client:
        yield client


class SimControl:
    """The ``/__sim/`` control API over HTTP."""

    def __init__(self, sim: SimOrg, client: httpx.AsyncClient) -> None:
        self._base = f"{sim.instance_url}/__sim"
        self._client = client

    @classmethod
    @asynccontextmanager
    async def open(cls, sim: SimOrg) -> AsyncIterator[SimControl]:
        """A control client with its own connection pool."""
        async with httpx.AsyncClient(verify=_verify(sim), timeout=_TIMEOUT) as client:
            yield cls(sim, client)

    async def seed(self, sobject: str, records: list[dict[str, Any]]) -> list[str]:
        """Create records directly (read-only fields allowed); returns their ids."""
        r = await self._client.post(f"{self._base}/records/{sobject}", json=records)
        r.raise_for_status()
        return [str(i) for i in r.json()]

    async def records(self, sobject: str) -> list[dict[str, Any]]:
        """Every stored record of ``sobject`` with all fields."""
        r = await self._client.get(f"{self._base}/records/{sobject}")
        r.raise_for_status()
        result: list[dict[str, Any]] = r.json()
        return result

    async def stats(self) -> dict[str, Any]:
        """API calls, bulk jobs by state, records by object."""
        r = await self._client.get(f"{self._base}/stats")
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        return result

    async def faults(self, **settings: Any) -> dict[str, Any]:
        """Change fault injection (see ``sfsim.faults``); returns the current settings."""
        r = await self._client.post(f"{self._base}/faults", json=settings)
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        return result

    async def read_only_records(self, ids: list[str]) -> list[str]:
        """Make these records readable but not editable by the integration user (sharing)."""
        r = await self._client.post(f"{self._base}/read_only_records", json={"ids": ids})
        r.raise_for_status()
        return [str(i) for i in r.json()["ids"]]

    async def reset(self) -> None:
        """Back to an empty org."""
        r = await self._client.post(f"{self._base}/reset")
        r.raise_for_status()


def sim_fixture(name: str = "sim", **kwargs: Any) -> Callable[..., Any]:
    """A pytest-asyncio fixture called ``name`` yielding a running :class:`SimOrg`.

    ``limited_sim = sim_fixture("limited_sim", api_limit=5)`` in a test module or conftest.
    """
    import pytest_asyncio

    @pytest_asyncio.fixture(name=name)
    async def _sim() -> AsyncIterator[SimOrg]:
        async with SimOrg(**kwargs) as sim:
            yield sim

    return _sim
