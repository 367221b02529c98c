"""Fixtures of the Salesforce client tests: an sfsim org over a real loopback socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    from sfsim import SimOrg

    async with SimOrg(port=0) as org:
        yield org
