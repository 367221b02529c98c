"""The daemon's public surface: the names other parts and admins rely on stay put."""

from __future__ import annotations

import importlib

import pytest

EXPORTS = {
    "daemon.settings": {"Settings", "SettingsError", "load_settings", "CREDENTIAL_FILES"},
    "daemon.logging": {"configure_logging", "reset_logging", "redact"},
    "daemon.notify": {"Notifier", "watchdog_loop"},
    "daemon.http": {"HealthServer", "ReadinessCheck", "build_app"},
    "daemon.metrics": {"Metrics"},
    "daemon.runner": {"Daemon", "run_daemon"},
    "daemon.cli": {"main", "build_parser", "EXIT_CONFIG"},
    "daemon.admin": {"status_command", "dead_letters_command", "read_status"},
    "daemon.wiring": {"build_rails", "client_kwargs", "CountingSpool"},
    "daemon.checks": {"check_config"},
}


@pytest.mark.parametrize("module", sorted(EXPORTS))
def test_public_names_are_exported(module: str) -> None:
    """Each module's __all__ lists its public names, and they exist."""
    mod = importlib.import_module(module)
    assert EXPORTS[module] <= set(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"
