"""Mappings shared by tests of several packages."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import daemon.mapping as mapping_pkg


def no_task_key_mapping_data() -> dict[str, Any]:
    """The built-in mapping with no Task external ID field (Tasks found again by
    CallObject), as the README tells an admin to write it."""
    data = tomllib.loads((Path(mapping_pkg.__file__).parent / "default.toml").read_text())
    data["task"]["external_id_field"] = ""
    data["task"]["fields"]["CallObject"] = "{external_key}"
    return data
