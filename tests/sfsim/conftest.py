"""Fixtures for sfsim tests: a running org on a loopback port, an authorized client, control."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from sfsim.server import SimOrg
from sfsim.testing import SimControl, sim_client


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[SimOrg]:
    async with SimOrg(port=0) as org:
        yield org


@pytest_asyncio.fixture
async def sf(sim: SimOrg) -> AsyncIterator[httpx.AsyncClient]:
    async with sim_client(sim) as client:
        yield client


@pytest_asyncio.fixture
async def control(sim: SimOrg) -> AsyncIterator[SimControl]:
    async with SimControl.open(sim) as ctl:
        yield ctl
