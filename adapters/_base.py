"""The adapter interface: what the daemon needs from every dialer protocol.

An adapter turns one dialer protocol into ``CallOutcome`` records, stores them
through the spool and acknowledges the dialer only after the spool committed.
The daemon runs any set of adapters side by side in one ``asyncio.TaskGroup``::

    for adapter in adapters:
        await adapter.start()           # bound / connected: READY=1 waits for all
    async with asyncio.TaskGroup() as tg:
        for adapter in adapters:
            tg.create_task(adapter.run(), name=adapter.name)
        await stop.wait()
        for adapter in adapters:
            await adapter.stop()        # intake stops; run() returns
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = ["Adapter", "AdapterHealth", "AdapterState"]


class AdapterState(StrEnum):
    STARTING = "starting"
    LISTENING = "listening"  # servers (webhook)
    CONNECTED = "connected"  # clients (websocket, ARI)
    RECONNECTING = "reconnecting"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class AdapterHealth:
    """Connection state and counters, exported to /metrics and `status`."""

    name: str
    type: str
    state: AdapterState = AdapterState.STARTING
    received: int = 0  # raw events/requests seen
    accepted: int = 0  # outcomes committed to the spool (new, replaced or requeued)
    duplicates: int = 0  # duplicates and stale re-deliveries (harmless)
    rejected: int = 0  # bad input, quarantined
    refused: int = 0  # spool full / unavailable: dialer told to retry
    reconnects: int = 0
    last_error: str | None = None
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.state in (AdapterState.LISTENING, AdapterState.CONNECTED)


@runtime_checkable
class Adapter(Protocol):
    """One dialer protocol feeding the spool."""

    name: str

    async def start(self) -> None:
        """Bind, listen or connect; return once outcomes can be accepted."""

    async def run(self) -> None:
        """Serve until :meth:`stop` is called. Owned by the daemon's TaskGroup."""

    async def stop(self) -> None:
        """Stop intake, let in-flight commits finish; safe to call twice."""

    def health(self) -> AdapterHealth:
        """Current state and counters (cheap; called every few seconds)."""
