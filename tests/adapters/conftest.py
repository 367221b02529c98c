"""Fixtures for the HTTP/file adapter tests: a real spool file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spool import Spool, open_spool


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    async with open_spool(tmp_path / "spool.db") as s:
        yield s
