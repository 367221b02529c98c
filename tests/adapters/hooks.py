"""Helpers for webhook tests: run a WebhookAdapter on a loopback port (port 0)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from adapters.webhook import WebhookAdapter, build
from spool import Spool


def hook_table(preset: str, **over: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "type": "webhook",
        "preset": preset,
        "listen": "127.0.0.1:0",
        "secret": "s3cr3t-token",
    }
    table.update(over)
    return table


@contextlib.asynccontextmanager
async def serving(
    spool: Spool, table: dict[str, Any], *, default_tz: str = "UTC"
) -> AsyncIterator[tuple[WebhookAdapter, httpx.AsyncClient]]:
    adapter = build(table, spool, default_tz=default_tz)
    await adapter.start()
    base = f"http://127.0.0.1:{adapter.bound_port}"
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(adapter.run())
            try:
                async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
                    yield adapter, client
            finally:
                await adapter.stop()
    finally:
        await adapter.stop()
