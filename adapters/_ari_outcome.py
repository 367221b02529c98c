"""A finished ARI call -> ``CallOutcome`` (pure; the ``ari`` adapter moves the bytes)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from adapters._ari_map import Decision, classify
from adapters._ari_track import FinishedCall, TrackerConfig
from adapters._ws_decode import parse_timestamp
from spool.record import (
    CallOutcome,
    Direction,
    Disposition,
    format_validation_error,
    normalize_phone,
)

__all__ = ["OutcomeBuildError", "OutcomeConfig", "build_outcome"]

_SF_ID: Final = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
# Salesforce Lead ids start with the key prefix 00Q; any other 15/18-char value
# is taken as the site's own key unless lead_ref says otherwise.
_LEAD_PREFIX: Final = "00Q"


class OutcomeBuildError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OutcomeConfig:
    source: str
    vars: TrackerConfig
    lead_ref: str = "auto"  # "auto" | "id" | "external_key"
    lead_by_phone: bool = True
    direction: Direction = Direction.OUTBOUND
    default_tz: str = "UTC"


def _lead(value: str | None, phone: str | None, cfg: OutcomeConfig) -> dict[str, str] | None:
    if value:
        value = value.strip()
        if cfg.lead_ref == "id" or (
            cfg.lead_ref == "auto" and _SF_ID.match(value) and value.startswith(_LEAD_PREFIX)
        ):
            return {"id": value}
        return {"external_key": value}
    if phone and cfg.lead_by_phone:
        return {"phone": phone}
    return None


def _phone(candidates: tuple[str | None, ...]) -> str | None:
    for value in candidates:
        if value:
            try:
                return normalize_phone(value)
            except ValueError:
                continue
    return None


def _seconds(later: datetime | None, earlier: datetime | None) -> int | None:
    if later is None or earlier is None or later < earlier:
        return None
    return round((later - earlier).total_seconds())


def build_outcome(
    done: FinishedCall,
    cfg: OutcomeConfig,
    *,
    overrides: Mapping[str, Disposition],
    map_var: Callable[[str], tuple[Disposition, bool]],
) -> tuple[CallOutcome, Decision]:
    """The outcome for one finished call; :class:`OutcomeBuildError` names what was wrong."""
    decision = classify(done.facts, overrides=overrides, map_var=map_var)
    v = cfg.vars
    names = {k: k.upper() for k in (v.lead_var, v.agent_var, v.campaign_var, v.phone_var)}
    vars_ = done.vars
    own = done.connected_number if cfg.direction is Direction.OUTBOUND else done.caller_number
    phone = _phone((vars_.get(names[v.phone_var]), done.dialed, own))
    agent = vars_.get(names[v.agent_var])
    extra: dict[str, Any] = {}
    if done.facts.cause is not None:
        extra["q850_cause"] = done.facts.cause
    if done.facts.tech_cause is not None:
        extra["sip_code"] = done.facts.tech_cause
    if done.facts.amd_cause:
        extra["amd_cause"] = done.facts.amd_cause[:255]
    for name in v.extra_vars:
        value = vars_.get(name.upper())
        if value is not None:
            extra[name.lower()[:64]] = value
    callback_at: datetime | None = None
    raw_callback = vars_.get(v.callback_var.upper())
    if raw_callback:
        try:
            callback_at = parse_timestamp(raw_callback, ZoneInfo(cfg.default_tz))
        except ValueError:
            # Keep the outcome; the unparsable value travels for a custom mapping.
            extra["callback_at_raw"] = raw_callback[:255]
    data: dict[str, Any] = {
        "source": cfg.source,
        "call_id": done.call_id,
        "source_seq": done.source_seq,
        "disposition": decision.disposition,
        "raw_disposition": decision.raw[:255],
        "detail": (
            "ended while disconnected"
            if done.partial
            else (decision.detail or done.facts.cause_txt or None)
        ),
        "ambiguous": decision.ambiguous or done.partial,
        "lead": _lead(vars_.get(names[v.lead_var]), phone, cfg),
        "agent_id": agent,
        "campaign": vars_.get(names[v.campaign_var]),
        "phone": phone,
        "direction": cfg.direction,
        "started_at": done.created_at,
        "ended_at": done.ended_at,
        "duration_s": _seconds(done.ended_at, done.created_at),
        "talk_s": _seconds(done.ended_at, done.answered_at),
        "callback_at": callback_at,
        "notes": vars_.get(v.notes_var.upper()),
        # An agent dispositioned it: the rails send it at once (issue 5, "live").
        "live": decision.from_agent and bool(agent),
        "extra": extra,
    }
    if data["started_at"] is not None and data["started_at"] > done.ended_at:
        data["started_at"] = None
        data["duration_s"] = None
    try:
        return CallOutcome.model_validate(data), decision
    except ValidationError as exc:
        raise OutcomeBuildError(format_validation_error(exc)) from None
