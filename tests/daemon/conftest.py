"""Fixtures for the daemon's tests: logging is process-global, reset it around each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from daemon.logging import reset_logging


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    reset_logging()
    yield
    reset_logging()
