"""The public surface of sfsim that other parts (daemon CLI, tests, benches) rely on."""

from __future__ import annotations

import sfsim
import sfsim.testing


def test_package_exports() -> None:
    """sfsim's __all__ is pinned: SimOrg and run_sim_cli are the contract with the daemon."""
    assert sorted(sfsim.__all__) == sorted(
        [
            "Org",
            "RecordStore",
            "Schema",
            "SchemaError",
            "SfError",
            "SimConfig",
            "SimOrg",
            "default_schema",
            "load_schema",
            "run_sim_cli",
        ]
    )
    for name in sfsim.__all__:
        assert getattr(sfsim, name) is not None


def test_testing_helpers_exports() -> None:
    """The helpers other engineers' tests import stay available."""
    assert sorted(sfsim.testing.__all__) == sorted(
        ["DEFAULT_VERSION", "SimControl", "fetch_token", "running_sim", "sim_client", "sim_fixture"]
    )
