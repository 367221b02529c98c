"""Fixtures for the rails tests: a real sfsim org over loopback, a real spool file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from railkit import FAST_POLL, FAST_RETRY, make_client

from daemon.mapping import Mapping, load_mapping
from daemon.rails import Rails
from daemon.salesforce import SalesforceClient
from sfsim.testing import sim_fixture
from spool import Spool, open_spool

sim = sim_fixture()  # a running SimOrg on a free loopback port, per test


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    async with open_spool(tmp_path / "spool.db", synchronous="NORMAL") as sp:
        yield sp


@pytest.fixture
async def client(sim: Any) -> AsyncIterator[SalesforceClient]:
    async with make_client(sim) as sf:
        yield sf


@pytest.fixture
def make_rails(spool: Spool, client: SalesforceClient) -> Callable[..., Rails]:
    def build(mapping: Mapping | None = None, **kw: Any) -> Rails:
        kw.setdefault("retry_backoff", FAST_RETRY)
        kw.setdefault("bulk_poll", FAST_POLL)
        kw.setdefault("idle_poll_s", 0.005)
        return Rails(spool=spool, client=client, mapping=mapping or load_mapping(None), **kw)

    return build
