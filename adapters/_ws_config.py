"""Reading ``[[adapter]]`` tables for the websocket-client adapters (every problem named).

Problems are reported as ``adapter[<index>].<key>: <what is wrong>`` so the
daemon's ``check-config`` can show all of them at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.dispositions import Mapped, parse_overrides

__all__ = ["ConfigError", "TableReader", "disposition_overrides"]

T = TypeVar("T")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


class ConfigError(ValueError):
    """An ``[[adapter]]`` table with problems; ``problems`` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class TableReader:
    """Typed reads from one table, collecting problems instead of stopping at the first."""

    def __init__(self, table: Mapping[str, Any], index: int, known: set[str]) -> None:
        self.table = table
        self.index = index
        self.problems: list[str] = []
        for key in table:
            if key not in known:
                self.problem(key, "unknown key")

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"adapter[{self.index}].{key}: {message}")

    def get(self, key: str, kind: type[T] | tuple[type, ...], default: T) -> T:
        value = self.table.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) and kind in (int, float):
            self.problem(key, f"expected a number, got {value!r}")
            return default
        if kind is float and isinstance(value, int):
            return float(value)  # type: ignore[return-value]
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.problem(key, f"expected {names}, got {type(value).__name__} {value!r}")
            return default
        return value  # type: ignore[return-value]

    def number(self, key: str, default: float, *, low: float, high: float) -> float:
        value = self.get(key, float, default)
        if not low <= value <= high:
            self.problem(key, f"must be between {low:g} and {high:g}, got {value:g}")
            return default
        return value

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        value = self.get(key, int, default)
        if not low <= value <= high:
            self.problem(key, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            self.problem(key, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def name(self, default: str) -> str:
        value = self.get("name", str, default)
        if not _NAME.match(value):
            self.problem(
                "name", f"must be 1-64 chars of lowercase letters, digits, '_', '.', '-': {value!r}"
            )
            return default
        return value

    def tz(self, key: str = "tz") -> str | None:
        """An IANA zone name (naive timestamps are read in it); None when absent."""
        value = self.get(key, str, "")
        if not value:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(key, f"unknown time zone {value!r} (an IANA name like 'Europe/Paris')")
            return None
        return value

    def string_map(self, key: str) -> dict[str, str]:
        value = self.get(key, dict, {})
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str):
                self.problem(f"{key}.{k}", f"expected a string, got {type(v).__name__} {v!r}")
            else:
                out[str(k)] = v
        return out

    def string_list(self, key: str) -> list[str]:
        value = self.get(key, list, [])
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.problem(f"{key}[{i}]", f"expected a string, got {item!r}")
            else:
                out.append(item)
        return out

    def check(self, key: str, fn: Callable[[], T], default: T) -> T:
        try:
            return fn()
        except ValueError as exc:
            self.problem(key, str(exc))
            return default

    def raise_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def disposition_overrides(reader: TableReader, key: str = "dispositions") -> dict[str, Mapped]:
    """The site's ``dispositions`` table (same syntax as every adapter: a name, or
    ``{ disposition = ..., detail = ..., ambiguous = ... }``), problems collected."""
    overrides, problems = parse_overrides(reader.table.get(key), key)
    reader.problems += [f"adapter[{reader.index}].{p}" for p in problems]
    return overrides
