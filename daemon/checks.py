"""``dispo-sync check-config``: a pass/fail list an admin can act on.

The configuration file itself has already been validated when this runs
(``load_settings`` raised otherwise, exit 78). What follows checks the world
the configuration points at: files it names, the spool directory, the adapter
tables, the mapping file, and Salesforce: a token, describe of Task and Lead,
every mapped field, type, length, picklist value and reference id, and the API
quota.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from daemon.settings import Settings
from daemon.wiring import (
    SpoolRefreshTokens,
    ca_file_problem,
    client_kwargs,
    spool_refresh_tokens,
)

__all__ = ["Check", "check_config", "local_checks", "salesforce_checks"]

# check-config opens the spool for its key-value state only (the kept refresh token): its
# lease expiry and purge, the service's work, wait this long, longer than any check.
_NO_MAINTENANCE_S = 86400.0


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool | None  # None: could not be checked (counts as a failure for the exit code)
    detail: str = ""
    warning: bool = False  # passed, but worth reading (does not change the exit code)

    def line(self) -> str:
        mark = "WARN" if self.warning else {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
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
    checks += asyncio.run(salesforce_checks(settings))
    for check in checks:
        print(check.line(), file=out)
    failed = [c for c in checks if c.ok is not True]
    print(f"\n{len(checks) - len(failed)} passed, {len(failed)} failed or not checked", file=out)
    return 0 if not failed else 1


async def salesforce_checks(settings: Settings) -> list[Check]:
    """Mapping file, login, describe Task and Lead, every mapped field, API quota."""
    from daemon.mapping import MappingError, load_mapping

    out: list[Check] = []
    where = str(settings.mapping.file) if settings.mapping.file else "built-in mapping"
    try:
        mapping = load_mapping(settings.mapping.file)
    except MappingError as exc:
        out.extend(Check(f"mapping {where}", False, p) for p in exc.problems)
        return out
    out.append(Check("mapping", True, f"{where} is valid"))

    ca_file = settings.salesforce.ca_file
    # Checked before the client opens, which would raise it instead of reporting it.
    ca_problem = ca_file_problem(ca_file)
    if ca_problem is not None:
        return [*out, Check("salesforce ca_file", False, f"{ca_file}: {ca_problem}")]

    async with _kept_refresh_tokens(settings) as kept:
        if isinstance(kept, Check):
            return [*out, kept]
        out += await _org_checks(settings, mapping, kept)
        if isinstance(kept, _NoSpoolYet) and kept.refused:
            out.append(
                Check(
                    "salesforce refresh token",
                    False,
                    "the connected app rotates refresh tokens: this login spent the "
                    f"configured one, and with no spool file at {kept.path} yet the new one "
                    "could not be kept, so the service would fail to log in (invalid_grant); "
                    "put a new refresh token in place before the service starts (from then "
                    "on the service keeps each rotated one in the spool, and check-config "
                    "uses and keeps it too), or turn rotation off for the app",
                )
            )
    return out


class _NoSpoolYet:
    """check-config's refresh token store before the service ever ran: nothing kept, and
    nowhere to keep a rotated token (the spool is not created here: run as root, it would
    belong to root, and the service could not open it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"the spool file {path} (not created yet)"
        self.refused = False

    async def load(self) -> str | None:
        return None

    async def save(self, token: str) -> None:
        self.refused = True
        raise FileNotFoundError(f"no spool file at {self.path}: the service has not run yet")


@contextlib.asynccontextmanager
async def _kept_refresh_tokens(
    settings: Settings,
) -> AsyncIterator[SpoolRefreshTokens | _NoSpoolYet | Check | None]:
    """Where check-config finds the refresh token the service would use, and keeps one the
    connected app rotates to (``auth = "refresh_token"`` only, else None): the spool, as
    the service does; a :class:`Check` (no login) if the spool exists but cannot be opened,
    since logging in with the configured token could spend the one the service needs."""
    if settings.salesforce.auth != "refresh_token":
        yield None
        return
    path = settings.spool.path
    if not path.exists():
        yield _NoSpoolYet(path)
        return
    from spool import SpoolError, open_spool

    async with contextlib.AsyncExitStack() as stack:
        try:
            spool = await stack.enter_async_context(
                open_spool(
                    path,
                    synchronous=settings.spool.synchronous,
                    reap_interval_s=_NO_MAINTENANCE_S,
                    purge_interval_s=_NO_MAINTENANCE_S,
                )
            )
        except (SpoolError, OSError) as exc:
            problem = (
                f"not tried: cannot open the spool file {path}, where the service keeps the "
                f"refresh token the connected app rotated to ({exc}); run check-config as "
                "the service's user"
            )
        else:
            yield spool_refresh_tokens(settings, spool)
            return
    yield Check("salesforce login", None, problem)


async def _org_checks(
    settings: Settings, mapping: Any, kept: SpoolRefreshTokens | _NoSpoolYet | None
) -> list[Check]:
    """Login, describe Task and Lead, every mapped field, API quota."""
    from daemon.salesforce import SalesforceClient, SalesforceError

    out: list[Check] = []
    try:
        client = SalesforceClient(**client_kwargs(settings), refresh_token_store=kept)
    except SalesforceError as exc:
        return [*out, Check("salesforce login", False, str(exc))]
    async with client as sf:
        try:
            await sf.authenticate()
        except SalesforceError as exc:
            return [*out, Check("salesforce login", False, _describe_error(exc))]
        how = ""
        if isinstance(kept, SpoolRefreshTokens) and kept.restored:
            how = f" with the refresh token kept in {kept.where} (rotated since configured)"
        out.append(
            Check(
                "salesforce login",
                True,
                f"{settings.salesforce.auth} token obtained{how}, instance {sf.instance_url}",
            )
        )
        describes: dict[str, Any] = {}
        for obj in dict.fromkeys((mapping.task_object, mapping.lead_object)):
            try:
                describes[obj] = await sf.describe(obj)
            except SalesforceError as exc:
                out.append(Check(f"describe {obj}", False, _describe_error(exc)))
            else:
                count = len(describes[obj].get("fields", []))
                out.append(Check(f"describe {obj}", True, f"{count} fields visible"))
        problems = mapping.check_against_describe(describes)
        if problems:
            out.extend(Check("mapped field", False, p) for p in problems)
        elif describes:
            out.append(
                Check(
                    "mapped fields",
                    True,
                    "every mapped field exists, is writable, has a compatible type and "
                    "room for every known value, every picklist value is allowed, and "
                    "every id is one of an object its field references",
                )
            )
        out.extend(
            Check("mapped field", True, note, warning=True)
            for note in mapping.notes_against_describe(describes)
        )
        try:
            await sf.limits()
        except SalesforceError as exc:
            out.append(Check("API quota", False, f"cannot read /limits: {_describe_error(exc)}"))
        else:
            usage = sf.quota.usage
            if usage is None:
                out.append(Check("API quota", False, "/limits has no DailyApiRequests"))
            else:
                left = 100.0 * usage.remaining / usage.max if usage.max else 0.0
                out.append(
                    Check(
                        "API quota",
                        usage.remaining > 0,
                        f"{usage.used} of {usage.max} daily requests used ({left:.0f}% left)",
                    )
                )
    return out


def _describe_error(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return f"{code}: {exc}" if code and str(code) not in str(exc) else str(exc)
