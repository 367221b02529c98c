"""A raw-value -> disposition table with site overrides; unknown values logged once.

Used by the websocket-client adapters (the generic ``websocket`` feed and the
``ari`` agent-disposition variable).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import structlog

from spool.record import Disposition

__all__ = ["VOCABULARY_TABLE", "LoggedMapper"]

log = structlog.get_logger("adapters.dispositions")

# The normalized vocabulary maps to itself (a feed that already speaks it).
VOCABULARY_TABLE: Final[Mapping[str, tuple[Disposition, bool]]] = {
    d.value: (d, False) for d in Disposition
}
_MAX_REMEMBERED: Final = 10_000


class LoggedMapper:
    """``raw -> (disposition, ambiguous)``: overrides, then the built-in table.

    Lookups ignore case and surrounding spaces. An unknown raw value maps to
    ``unknown`` (the caller keeps the raw value) and is logged once per value.
    """

    def __init__(
        self,
        source: str,
        builtin: Mapping[str, tuple[Disposition, bool]],
        overrides: Mapping[str, Disposition] | None = None,
    ) -> None:
        self.source = source
        self._table: dict[str, tuple[Disposition, bool]] = {
            k.strip().upper(): v for k, v in builtin.items()
        }
        for raw, disposition in (overrides or {}).items():
            self._table[raw.strip().upper()] = (disposition, False)
        self._seen_unknown: set[str] = set()

    def __call__(self, raw: str) -> tuple[Disposition, bool]:
        hit = self._table.get(raw.strip().upper())
        if hit is not None:
            return hit
        if raw not in self._seen_unknown and len(self._seen_unknown) < _MAX_REMEMBERED:
            self._seen_unknown.add(raw)
            log.warning(
                "unknown_disposition",
                adapter=self.source,
                raw_disposition=raw[:64],
                hint="add it to this adapter's `dispositions` table",
            )
        return (Disposition.UNKNOWN, False)
