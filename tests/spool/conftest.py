"""Fixtures for the spool tests: a real SQLite file in tmp_path, a controllable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from spool_helpers import FakeClock

from spool import Spool, open_spool


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
def open_test_spool(spool_path: Path, clock: FakeClock) -> Callable[..., Any]:
    """open_spool on the test file with the fake clock; keyword arguments override."""

    def opener(**kw: Any) -> Any:
        kw.setdefault("clock", clock)
        # Tests run maintenance explicitly (run_maintenance) unless they ask otherwise.
        kw.setdefault("reap_interval_s", 3600.0)
        return open_spool(spool_path, **kw)

    return opener


@pytest.fixture
async def spool(open_test_spool: Callable[..., Any]) -> AsyncIterator[Spool]:
    async with open_test_spool() as sp:
        yield sp
