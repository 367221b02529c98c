"""Dialer adapters: raw dialer events -> ``CallOutcome`` -> spool, acked after commit.

The daemon builds every ``[[adapter]]`` table through :func:`build_adapters`
and checks them with :func:`validate_adapter_configs` (``check-config``). Each
adapter type is one module exposing::

    validate(table, index) -> list[str]            # "adapter[<index>].<key>: <problem>"
    build(table, spool, *, default_tz="UTC") -> Adapter

registered by name in :data:`ADAPTER_TYPES` (one line per type). Modules are
imported lazily, so a daemon with only webhooks never imports websockets.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters._base import Adapter, AdapterHealth, AdapterState
from adapters.dispositions import DispositionMap, Mapped

if TYPE_CHECKING:
    from adapters.file import IngestSummary
    from spool import Spool

__all__ = [
    "ADAPTER_TYPES",
    "Adapter",
    "AdapterHealth",
    "AdapterState",
    "DispositionMap",
    "Mapped",
    "build_adapters",
    "ingest_file",
    "validate_adapter_configs",
]

#: ``type = "..."`` -> module implementing it (``validate`` and ``build``).
ADAPTER_TYPES: dict[str, str] = {
    "webhook": "adapters.webhook",
    "file": "adapters.file",
    "websocket": "adapters.websocket",
    "ari": "adapters.ari",
}


_DEFAULT_LISTEN = "127.0.0.1:8081"  # WebhookConfig.listen's default


def _module(kind: str) -> Any:
    return importlib.import_module(ADAPTER_TYPES[kind])


def validate_adapter_configs(tables: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every problem in the ``[[adapter]]`` tables, each naming ``adapter[i].key``."""
    problems: list[str] = []
    names: dict[str, int] = {}
    listens: dict[str, int] = {}
    for index, table in enumerate(tables):
        if not isinstance(table, Mapping):
            problems.append(f"adapter[{index}]: expected a table, got {type(table).__name__}")
            continue
        kind = table.get("type")
        if kind not in ADAPTER_TYPES:
            problems.append(
                f"adapter[{index}].type: {'required' if kind is None else f'unknown type {kind!r}'}"
                f"; one of: {', '.join(ADAPTER_TYPES)}"
            )
            continue
        problems += _module(str(kind)).validate(table, index)
        name = table.get("name") or table.get("preset")
        if isinstance(name, str):
            if name in names:
                problems.append(
                    f"adapter[{index}].name: {name!r} is already used by adapter[{names[name]}]"
                    " (each adapter's name is its outcomes' source: give each a distinct name)"
                )
            names.setdefault(name, index)
        listen = table.get("listen", _DEFAULT_LISTEN)
        if kind == "webhook" and isinstance(listen, str) and not listen.endswith(":0"):
            if listen in listens:
                problems.append(
                    f"adapter[{index}].listen: {listen!r} is already used by "
                    f"adapter[{listens[listen]}] (one webhook per address)"
                )
            listens.setdefault(listen, index)
    return problems


def build_adapters(
    tables: Sequence[Mapping[str, Any]], spool: Spool, *, default_tz: str = "UTC"
) -> list[Adapter]:
    """One adapter per table; raises ``ValueError`` listing every problem."""
    problems = validate_adapter_configs(tables)
    if problems:
        raise ValueError("invalid [[adapter]] configuration: " + "; ".join(problems))
    adapters: list[Adapter] = []
    for table in tables:
        adapters.append(_module(str(table["type"])).build(table, spool, default_tz=default_tz))
    return adapters


async def ingest_file(
    path: str | Path,
    spool: Spool,
    *,
    format: str = "asterisk-cdr",
    source: str | None = None,
    mapping: Mapping[str, str] | None = None,
    tz: str = "UTC",
    progress: bool | None = None,
    dispositions: Mapping[str, Any] | None = None,
) -> IngestSummary:
    """Backfill a CDR/CSV file (idempotent, resumable); see ``adapters.file``."""
    from adapters.file import ingest_file as _ingest

    return await _ingest(
        path,
        spool,
        format=format,
        source=source,
        mapping=mapping,
        tz=tz,
        progress=progress,
        dispositions=dispositions,
    )
