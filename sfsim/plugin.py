"""How an API family plugs into the sim (Bulk API 2.0 does, from ``sfsim/bulk.py``).

A plugin module exposes ``create_plugin(org: Org) -> SimPlugin``. The org finds ``sfsim.bulk``
by import at start-up; nothing else has to be registered.

The app does, before a plugin route runs: API version check, bearer-token auth (401
INVALID_SESSION_ID), API-call counting (one call per HTTP request, kind ``bulk``), the daily
limit (403 REQUEST_LIMIT_EXCEEDED), request faults (latency, 5xx, dropped connections), and
adds ``Sforce-Limit-Info`` to the response. The plugin does the rest, using the org's shared
pieces: ``org.store`` (validation + records), ``org.usage.add_bulk_batches(n)``,
``org.faults.take_job_failure()`` (whole-job failure), ``org.faults.lock_row`` (wired into the
store already), ``org.config.bulk_rate`` (records/s; None = as fast as possible).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from starlette.routing import BaseRoute

__all__ = ["SimPlugin"]


class SimPlugin(Protocol):
    """One API family served by the sim, with its own state and background work."""

    #: Short name, used as the request kind in API stats (``bulk``).
    name: str

    def routes(self) -> Sequence[BaseRoute]:
        """Starlette routes, mounted under ``/services/data/v{version}`` (``version`` is a path
        parameter, e.g. ``"62.0"``). Paths are relative, e.g. ``/jobs/ingest/{job_id}``."""
        ...

    def path_prefixes(self) -> Sequence[str]:
        """Path prefixes after ``/services/data/vNN.N`` this plugin owns, e.g. ``["/jobs/"]``."""
        ...

    def stats(self) -> dict[str, Any]:
        """Merged into ``GET /__sim/stats`` (e.g. ``{"bulk_jobs": {"JobComplete": 3}}``)."""
        ...

    def reset(self) -> None:
        """Forget all state (``POST /__sim/reset``)."""
        ...

    def dump_state(self) -> Any:
        """JSON-ready state saved to ``--state-dir`` on shutdown."""
        ...

    def load_state(self, state: Any) -> None:
        """Restore what ``dump_state`` returned, on start."""
        ...

    async def run(self) -> None:
        """Background work (job processing) until cancelled; owned by the org's TaskGroup."""
        ...
