"""Running an adapter in a test: started, its run() in a task, stopped on the way out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

from adapters._base import Adapter

A = TypeVar("A", bound=Adapter)


@contextlib.asynccontextmanager
async def running(adapter: A) -> AsyncIterator[A]:
    await adapter.start()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(adapter.run())
        try:
            yield adapter
        finally:
            await adapter.stop()
