"""The adapters package's public surface is pinned (STYLE habit 13)."""

from __future__ import annotations

import adapters
import adapters.config
import adapters.dispositions
import adapters.file
import adapters.webhook


def test_package_exports() -> None:
    """The daemon's entry points into adapters stay where the contract says."""
    assert set(adapters.__all__) == {
        "ADAPTER_TYPES",
        "Adapter",
        "AdapterHealth",
        "AdapterState",
        "DispositionMap",
        "Mapped",
        "build_adapters",
        "ingest_file",
        "validate_adapter_configs",
    }
    for name in adapters.__all__:
        assert hasattr(adapters, name)


def test_module_exports() -> None:
    """Every adapter module exposes validate/build for the registry."""
    for module in (adapters.webhook, adapters.file):
        assert {"build", "validate"} <= set(module.__all__)
    assert "IngestSummary" in adapters.file.__all__
    assert {"DispositionMap", "Mapped", "parse_overrides"} <= set(adapters.dispositions.__all__)
    assert {"WebhookConfig", "FileConfig"} <= set(adapters.config.__all__)
