"""[[adapter]] tables: every problem named, unknown keys refused, registry builds each type."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import ADAPTER_TYPES, Adapter, build_adapters, validate_adapter_configs
from adapters.file import FileAdapter
from adapters.webhook import WebhookAdapter
from spool import Spool


def test_valid_tables_have_no_problems(tmp_path: Path) -> None:
    """A correct webhook and file table validate cleanly."""
    tables = [
        {
            "type": "webhook",
            "preset": "vicidial",
            "secret": "s3cr3t-token",
            "listen": "127.0.0.1:0",
        },
        {"type": "file", "path": str(tmp_path / "Master.csv"), "tz": "America/Chicago"},
    ]
    assert validate_adapter_configs(tables) == []


def test_every_problem_is_named() -> None:
    """All problems are reported at once, each as adapter[i].key."""
    problems = validate_adapter_configs(
        [
            {"type": "webhook", "preset": "vicidial", "secret": "short", "colour": "red"},
            {"type": "webhook", "preset": "pbx", "secret": "long-enough-1", "tz": "Mars/Base"},
            {"type": "faxmodem"},
            {"preset": "json"},
            {"type": "file", "path": "/x.csv", "format": "xls"},
        ]
    )
    text = "\n".join(problems)
    assert "adapter[0].secret: must be at least 8 characters" in text
    assert "adapter[0].colour: unknown key for type = 'webhook'" in text
    assert "adapter[1].preset:" in text
    assert "adapter[1].tz: unknown time zone 'Mars/Base'" in text
    assert "adapter[2].type: unknown type 'faxmodem'" in text
    assert "adapter[3].type: required" in text
    assert "adapter[4].format:" in text


def test_params_only_for_vicidial() -> None:
    """Query parameter remapping on a preset without query parameters is refused."""
    problems = validate_adapter_configs(
        [{"type": "webhook", "preset": "json", "trusted": True, "params": {"dispo": "s"}}]
    )
    assert problems == ["adapter[0].params: only the vicidial preset has query parameters to remap"]


def test_duplicate_names_and_listen_addresses_are_refused() -> None:
    """Two adapters with one name (one source) or one address are flagged."""
    problems = validate_adapter_configs(
        [
            {"type": "webhook", "preset": "json", "trusted": True, "listen": "127.0.0.1:9000"},
            {"type": "webhook", "preset": "json", "trusted": True, "listen": "127.0.0.1:9000"},
        ]
    )
    assert any("adapter[1].name: 'json' is already used by adapter[0]" in p for p in problems)
    assert any("adapter[1].listen" in p for p in problems)


def test_secret_never_appears_in_problems() -> None:
    """A rejected secret is described, not echoed."""
    problems = validate_adapter_configs(
        [{"type": "webhook", "preset": "json", "secret": "abc", "colour": 1}]
    )
    assert problems and not any("abc" in p for p in problems)


def test_vicidial_param_remap_checks_names() -> None:
    """Remapping an unknown VICIdial variable is refused, naming the known ones."""
    problems = validate_adapter_configs(
        [{"type": "webhook", "preset": "vicidial", "trusted": True, "params": {"dispoo": "s"}}]
    )
    assert problems and "adapter[0].params: unknown VICIdial variable(s) dispoo" in problems[0]


async def test_build_adapters_builds_each_type(spool: Spool, tmp_path: Path) -> None:
    """build_adapters returns one Adapter per table, by type."""
    adapters = build_adapters(
        [
            {"type": "webhook", "preset": "twilio", "secret": "auth-token-123"},
            {"type": "file", "path": str(tmp_path / "x.csv"), "format": "csv", "name": "crm"},
        ],
        spool,
        default_tz="Europe/Paris",
    )
    assert isinstance(adapters[0], WebhookAdapter) and adapters[0].name == "twilio"
    assert isinstance(adapters[1], FileAdapter) and adapters[1].tz == "Europe/Paris"
    assert all(isinstance(a, Adapter) for a in adapters)
    assert {"webhook", "file", "websocket", "ari"} <= set(ADAPTER_TYPES)


async def test_build_adapters_raises_with_every_problem(spool: Spool) -> None:
    """Building from a bad configuration raises, listing the problems."""
    with pytest.raises(ValueError, match=r"adapter\[0\]\.preset"):
        build_adapters([{"type": "webhook", "preset": "pbx", "trusted": True}], spool)


def test_two_webhooks_on_the_default_address_are_refused() -> None:
    """Two webhooks that both leave `listen` at its default would collide at start."""
    problems = validate_adapter_configs(
        [
            {"type": "webhook", "preset": "vicidial", "trusted": True},
            {"type": "webhook", "preset": "twilio", "trusted": True},
        ]
    )
    assert problems == [
        "adapter[1].listen: '127.0.0.1:8081' is already used by adapter[0]"
        " (one webhook per address)"
    ]
