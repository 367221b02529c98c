"""Validation rules: an org's own checks on save, failing with FIELD_CUSTOM_VALIDATION_EXCEPTION.

Real orgs carry validation rules the integration cannot see in describe; a write that breaks one
fails with ``FIELD_CUSTOM_VALIDATION_EXCEPTION``, the rule's own message, and ``fields`` naming the
rule's error field (or empty) (§2.8). The sim lets a test or a user reproduce their org's rules
(``POST /__sim/validation_rules``) so the daemon's handling of such permanent per-record errors can
be exercised. A rule fails the save when its condition holds for the record as it would be saved:

``{"object": "Task", "field": "CallDisposition", "condition": "blank",
   "message": "Call Result is required", "error_field": "CallDisposition"}``

Conditions: ``blank``, ``not_blank``, ``equals`` (``value``), ``in`` / ``not_in`` (``value`` is a
list), ``matches`` (``value`` is a regular expression the whole text must match).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sfsim.errors import SfError
from sfsim.schema import Schema

__all__ = ["RuleError", "ValidationRule", "group_rules", "parse_rules"]

_CONDITIONS: Final = frozenset({"blank", "not_blank", "equals", "in", "not_in", "matches"})


class RuleError(ValueError):
    """A rule definition that cannot be used, naming the rule and key."""


@dataclass(frozen=True, slots=True)
class ValidationRule:
    """One rule on one field of one object."""

    object: str
    field: str
    condition: str
    message: str
    value: Any = None
    error_field: str | None = None

    def violated_by(self, row: Mapping[str, Any]) -> bool:
        """True when saving ``row`` would break this rule."""
        v = row.get(self.field)
        blank = v is None or v == ""
        c = self.condition
        if c == "blank":
            return blank
        if c == "not_blank":
            return not blank
        if c == "equals":
            return bool(v == self.value)
        if c == "in":
            return v in self.value
        if c == "not_in":
            return v not in self.value
        return isinstance(v, str) and re.fullmatch(str(self.value), v) is not None

    def error(self) -> SfError:
        """The error a save breaking this rule gets."""
        return SfError(
            400,
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            self.message,
            [self.error_field] if self.error_field else [],
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "field": self.field,
            "condition": self.condition,
            "value": self.value,
            "message": self.message,
            "error_field": self.error_field,
        }


def parse_rules(raw: Any, schema: Schema) -> list[ValidationRule]:
    """Rules from JSON (a list of rule objects); raises RuleError naming what is wrong."""
    if not isinstance(raw, list):
        raise RuleError("expected a JSON array of rules")
    rules = []
    for i, item in enumerate(raw):
        where = f"rules[{i}]"
        if not isinstance(item, Mapping):
            raise RuleError(f"{where}: expected an object")
        obj = schema.get(str(item.get("object", "")))
        if obj is None:
            raise RuleError(f"{where}.object: no such object {item.get('object')!r}")
        f = obj.field(str(item.get("field", "")))
        if f is None:
            raise RuleError(f"{where}.field: {obj.name} has no field {item.get('field')!r}")
        condition = item.get("condition")
        if condition not in _CONDITIONS:
            raise RuleError(f"{where}.condition: expected one of {', '.join(sorted(_CONDITIONS))}")
        value = item.get("value")
        if condition in ("in", "not_in") and not isinstance(value, list):
            raise RuleError(f"{where}.value: '{condition}' needs a list")
        if condition == "matches":
            try:
                re.compile(str(value))
            except re.error as exc:
                raise RuleError(f"{where}.value: not a regular expression: {exc}") from None
        message = item.get("message")
        if not isinstance(message, str) or not message:
            raise RuleError(f"{where}.message: the error text is required")
        error_field = item.get("error_field")
        if error_field is not None:
            ef = obj.field(str(error_field))
            if ef is None:
                raise RuleError(f"{where}.error_field: {obj.name} has no field {error_field!r}")
            error_field = ef.name
        rules.append(ValidationRule(obj.name, f.name, str(condition), message, value, error_field))
    return rules


def group_rules(rules: list[ValidationRule]) -> dict[str, list[ValidationRule]]:
    """Rules by object name, in their given order."""
    out: dict[str, list[ValidationRule]] = {}
    for rule in rules:
        out.setdefault(rule.object, []).append(rule)
    return out
