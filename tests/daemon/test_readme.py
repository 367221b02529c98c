"""README stays true to the code: the two commands first, log events, dependencies, metrics."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

from daemon.cli import build_parser
from daemon.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def source_text() -> str:
    return "\n".join(
        p.read_text() for d in ("daemon", "adapters", "spool") for p in (ROOT / d).rglob("*.py")
    )


def test_readme_starts_with_the_two_commands() -> None:
    """The first code block on a fresh machine is exactly `make demo` and `make test`."""
    first = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first is not None and README.index(first.group(0)) < README.index("\n## ")
    assert first.group(1).split("\n")[:2] == ["make demo", "make test"]


def test_every_troubleshooting_log_line_is_logged_by_the_code() -> None:
    """Each event the troubleshooting table quotes exists as a log event string in the code."""
    code = source_text()
    rows = [
        line for line in section("Troubleshooting by log line").splitlines() if line[:3] == "| `"
    ]
    assert len(rows) > 20
    for row in rows:
        first_cell = row.split(" | ")[0]
        keys = " ".join(re.findall(r"\(([^)]*)\)", first_cell))
        events = re.sub(r"\([^)]*\)", "", first_cell)
        for event in re.findall(r"`([^`]+)`", events):
            assert f'"{event}' in code or f"'{event}" in code, f"README quotes {event!r}"
        for key in re.findall(r"`([^`]+)`", keys):
            # the key names a log field: some line passes it as key=... (or "key": ...)
            assert re.search(rf"\b{key}=|\"{key}\"", code), f"README names log key {key!r}"


def test_every_dependency_is_explained() -> None:
    """Each runtime dependency in pyproject.toml has a row in the README's table."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    table = section("What each dependency is for")
    for dep in deps:
        name = re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]+\])?", dep)
        assert name is not None
        assert f"| `{name.group(0)}` |" in table, dep


def test_every_metric_and_command_is_named() -> None:
    """Every /metrics series and every command appears in the README."""
    for metric in Metrics().registry.collect():
        assert metric.name in README, metric.name
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = list(actions[0].choices)
    assert "run" in commands and "ingest" in commands
    for command in commands:
        assert f"`dispo-sync {command}" in README, command


def test_salesforce_set_up_lists_every_custom_field_of_the_built_in_mapping() -> None:
    """Each custom field the built-in mapping writes is in the set-up table with a type."""
    mapping = (ROOT / "daemon" / "mapping" / "default.toml").read_text()
    fields = set(re.findall(r"\b([A-Za-z0-9_]+__c)\b", mapping))
    assert {"Call_Id__c", "Dialer_Lead_Id__c"} <= fields
    setup = section("Salesforce set-up")
    for name in fields:
        row = re.search(rf"^\s*\| (Task|Lead)[^|]*\| `{name}` \| (\S[^|]*) \|", setup, re.M)
        assert row is not None, name
    for key in ("Call_Id__c", "Dialer_Lead_Id__c"):
        assert re.search(rf"`{key}` \| Text\(255\) \| \*\*External ID\*\*, \*\*Unique\*\*", setup)
