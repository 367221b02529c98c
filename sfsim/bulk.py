"""The Bulk API 2.0 plugin of the sim: wires :class:`~sfsim.bulk_engine.BulkEngine` into an org.

The org imports this module at start-up and calls :func:`create_plugin` (see ``sfsim.plugin``).
The engine's ``run`` is the plugin's background task, owned by the org's TaskGroup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

from sfsim.bulk_engine import BulkEngine, BulkSettings
from sfsim.bulk_routes import bulk_routes

if TYPE_CHECKING:
    from sfsim.org import Org

__all__ = ["BulkPlugin", "create_plugin"]


class BulkPlugin:
    """Bulk API 2.0 ingest for one org."""

    name = "bulk"

    def __init__(self, org: Org, *, settings: BulkSettings | None = None) -> None:
        self.org = org
        usage = org.usage
        if settings is None:
            # --bulk-rate: records per second; None or 0 means as fast as possible.
            settings = BulkSettings(rate=float(org.config.bulk_rate or 0.0))
        self.engine = BulkEngine(
            org.store,
            settings=settings,
            take_job_failure=org.faults.take_job_failure,
            add_bulk_batches=usage.add_bulk_batches,
            batches_remaining=lambda: max(usage.bulk_batch_limit - usage.bulk_batches, 0),
            lock_contention=lambda: org.faults.settings.bulk_lock_contention,
            assignment_owner=lambda: org.lead_assignment_owner,
            upsert_race_possible=lambda: bool(
                org.faults.settings.upsert_race_rate or org.faults.settings.upsert_race_next
            ),
            # The store's lock hook answers only from these settings (Faults.lock_row), unless
            # something replaced the hook.
            row_locks_possible=lambda: bool(
                org.faults.settings.lock_rate
                or org.faults.settings.lock_next
                or org.store.lock_hook != org.faults.lock_row
            ),
            # With --state-dir, uploads live there so jobs and their results survive a restart.
            upload_dir=(
                str(org.config.state_dir / "bulk-uploads")
                if org.config.state_dir is not None
                else None
            ),
        )

    def routes(self) -> Sequence[BaseRoute]:
        """Ingest routes under ``/services/data/v{version}``."""
        return bulk_routes(self.engine, lambda: self.org.user_id, self.org.faults)

    def path_prefixes(self) -> Sequence[str]:
        """Everything under ``/jobs/`` is Bulk 2.0."""
        return ["/jobs/"]

    def stats(self) -> dict[str, Any]:
        """Jobs per state, merged into ``/__sim/stats``."""
        return {"bulk_jobs": dict(Counter(j.state.value for j in self.engine.jobs()))}

    def reset(self) -> None:
        """Forget every job (jobs being processed stop after their current chunk)."""
        self.engine.reset()

    def dump_state(self) -> Any:
        """Jobs, their outcomes and uploads, for ``--state-dir``."""
        return self.engine.dump_state()

    def load_state(self, state: Any) -> None:
        """Restore what :meth:`dump_state` saved."""
        self.engine.load_state(state)

    async def run(self) -> None:
        """Process closed jobs until cancelled."""
        await self.engine.run()


def create_plugin(org: Org) -> BulkPlugin:
    """Entry point the org looks for."""
    return BulkPlugin(org)
