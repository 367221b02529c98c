"""``dispo-sync check-config``: a pass/fail list an admin can act on.

The configuration file itself has already been validated when this runs
(``load_settings`` raised otherwise, exit 78). What follows checks the world
the configuration points at: files it names, the spool directory, the adapter
tables, and Salesforce (token, describe, mapped fields) once the Salesforce
client is part of the build.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TextIO

from daemon.settings import Settings

__all__ = ["Check", "check_config", "local_checks"]


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool | None  # None: could not be checked (counts as a failure for the exit code)
    detail: str = ""

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        return f"{mark}  {self.name}" + (f": {self.detail}" if self.detail else "")


def local_checks(settings: Settings) -> list[Check]:
    """Checks that need no network: file, spool directory, adapters."""
    out = [Check("configuration file", True, "all keys valid")]
    spool_dir = settings.spool.path.parent
    if spool_dir.is_dir() and os.access(spool_dir, os.W_OK):
        out.append(Check("spool directory", True, f"{spool_dir} is writable"))
    elif spool_dir.is_dir():
        out.append(Check("spool directory", False, f"{spool_dir} is not writable by this user"))
    else:
        out.append(Check("spool directory", False, f"{spool_dir} does not exist"))
    if settings.adapter:
        kinds = ", ".join(str(t.get("type", "?")) for t in settings.adapter)
        out.append(Check("adapters", True, f"{len(settings.adapter)} configured ({kinds})"))
    else:
        out.append(
            Check("adapters", False, "no [[adapter]] section: no call outcome will be received")
        )
    return out


def check_config(settings: Settings, out: TextIO) -> int:
    """Print the report; 0 when every check passed, 1 otherwise."""
    checks = local_checks(settings)
    checks += _salesforce_checks(settings)
    for check in checks:
        print(check.line(), file=out)
    failed = [c for c in checks if c.ok is not True]
    print(f"\n{len(checks) - len(failed)} passed, {len(failed)} failed or not checked", file=out)
    return 0 if not failed else 1


def _salesforce_checks(settings: Settings) -> list[Check]:
    try:
        from daemon.mapping import validate_against_org  # type: ignore[attr-defined,import-not-found,unused-ignore]
    except ImportError:
        return [
            Check(
                "salesforce login, describe and mapped fields",
                None,
                "not checked: the Salesforce client is not part of this build yet",
            )
        ]
    return list(validate_against_org(settings))  # pragma: no cover - wired when RAILS lands
