"""The systemd unit: notify type, watchdog, credentials, and a hardening score <= 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "dispo-sync.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_declares_what_the_daemon_relies_on() -> None:
    """Type=notify, a watchdog, restart on failure, state/config dirs and credentials."""
    d = directives()
    assert d["Type"] == ["notify"]
    assert int(d["WatchdogSec"][0]) > 0
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["78"]
    assert d["StateDirectory"] == ["dispo-sync"] and d["ConfigurationDirectory"] == ["dispo-sync"]
    assert any(v.startswith("salesforce-client-secret:") for v in d["LoadCredential"])
    assert d["User"] == ["dispo-sync"]
    assert "dispo-sync run --config /etc/dispo-sync/config.toml" in d["ExecStart"][0]
    # The daemon's own drain deadline (25 s default) must fit in the stop timeout.
    assert int(d["TimeoutStopSec"][0]) >= 30
    assert "AF_INET" in d["RestrictAddressFamilies"][0]


def _unit_with_real_executable(tmp_path: Path) -> Path:
    # verify checks that ExecStart exists; point it at this checkout's console script.
    exe = Path(sys.executable).parent / "dispo-sync"
    # Without the console script (a bare checkout), the same command through the interpreter.
    command = str(exe) if exe.exists() else f"{sys.executable} -m daemon"
    text = UNIT.read_text()
    assert "/opt/dispo-sync/venv/bin/dispo-sync run" in text
    text = text.replace("/opt/dispo-sync/venv/bin/dispo-sync", command)
    path = tmp_path / "dispo-sync.service"
    path.write_text(text)
    return path


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit."""
    assert ANALYZE is not None
    unit = _unit_with_real_executable(tmp_path)
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "dispo-sync.service" not in result.stderr, result.stderr


@needs_analyze
def test_security_exposure_is_2_or_lower() -> None:
    """`systemd-analyze security --offline=true` scores the unit at 2.0 or lower."""
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0
