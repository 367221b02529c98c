"""VICIdial Dispo Call URL / No Agent Call URL query -> ``CallOutcome`` (pure).

Both are one HTTP GET whose query the admin wrote as a URL template
(``reference/dialers.md`` section 2.2), so parameter names default to VICIdial's
own variable names (``dispo``, ``lead_id``...) and can be remapped per site.

* Dispo Call URL: an agent dispositioned the call -> ``live`` (the rails send it
  at once); the status is ``dispo``.
* No Agent Call URL: the call never reached an agent (DROP, NA, B, ...); the
  status is ``status`` (``dispo`` is accepted too); not live.

Identity is VICIdial's ``call_id`` (the caller code), falling back to
``uniqueid``. Ordering uses VICIdial's ``epoch`` when the template sends it.
The Lead: ``vendor_lead_code`` holding a Salesforce Lead Id is used directly;
otherwise ``lead_id`` is the Lead's external key; otherwise the phone number.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Literal

from adapters._decode_util import (
    DecodeError,
    in_zone,
    is_lead_id,
    local_time,
    optional_int,
    safe_phone,
)
from adapters.dispositions import DispositionMap
from spool.record import LeadRef

__all__ = ["VicidialKind", "decode_vicidial"]

VicidialKind = Literal["dispo", "no-agent"]

# Extra values kept for custom field mappings (VICIdial variable names).
_EXTRA: Final = ("dispo_name", "term_reason", "list_id", "lead_id", "vendor_lead_code")


def decode_vicidial(
    query: Mapping[str, str],
    *,
    kind: VicidialKind,
    source: str,
    dmap: DispositionMap,
    tz: tzinfo,
    params: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """The ``CallOutcome`` fields for one request, or None for a non-final status.

    Raises :class:`DecodeError` naming what is missing or malformed.
    """
    names = params or {}

    def get(var: str) -> str | None:
        value = query.get(names.get(var, var))
        if value is None:
            return None
        value = value.strip()
        # an unsubstituted template token (--A--x--B--) means "not sent"
        return None if not value or value.startswith("--A--") else value

    call_id = get("call_id") or get("uniqueid")
    if call_id is None:
        raise DecodeError(
            f"{names.get('call_id', 'call_id')}: missing (and no "
            f"{names.get('uniqueid', 'uniqueid')} to fall back on)"
        )
    order = ("dispo", "status") if kind == "dispo" else ("status", "dispo")
    raw = get(order[0]) or get(order[1])
    if raw is None:
        raise DecodeError(f"{names.get(order[0], order[0])}: missing (the call's status)")
    mapped = dmap.lookup(raw)
    if not mapped.final:
        return None

    epoch = optional_int(names.get("epoch", "epoch"), get("epoch"))
    if epoch is not None and not 946_684_800 <= epoch < 4_102_444_800:
        raise DecodeError(f"{names.get('epoch', 'epoch')}: not a plausible unix time: {epoch}")
    # In the site's zone (tz: VICIdial's wall clock), so that the call is dated where it
    # happened (Task.ActivityDate); an epoch, like our clock, names only the instant.
    ended_at = in_zone(
        datetime.fromtimestamp(epoch, UTC) if epoch is not None else (now or datetime.now(UTC)),
        tz,
    )
    talk_s = optional_int(names.get("talk_time", "talk_time"), get("talk_time"))
    if talk_s is not None and talk_s < 0:
        talk_s = 0  # talk_sec - dead_sec can dip below zero in VICIdial's agent log
    callback_at = local_time(
        names.get("callback_datetime", "callback_datetime"), get("callback_datetime"), tz
    )

    phone_raw = get("phone_number")
    phone = safe_phone(phone_raw)
    vendor = get("vendor_lead_code")
    lead_id = get("lead_id")
    lead: LeadRef | None = None
    if vendor is not None and is_lead_id(vendor):
        lead = LeadRef(id=vendor)
    elif lead_id is not None:
        lead = LeadRef(external_key=lead_id[:255])
    elif phone is not None:
        lead = LeadRef(phone=phone)

    extra: dict[str, str | int | float | bool | None] = {}
    for var in _EXTRA:
        value = get(var)
        if value is not None:
            extra[var] = value[:255]
    if phone_raw is not None and phone is None:
        extra["phone_raw"] = phone_raw[:64]
    uniqueid = get("uniqueid")
    if uniqueid is not None and uniqueid != call_id:
        extra["uniqueid"] = uniqueid[:64]
    recording = get("recording_filename")
    if recording is not None:
        extra["recording_filename"] = recording[:255]
    extra["vicidial_url"] = kind

    return {
        "source": source,
        "call_id": call_id,
        "source_seq": epoch,
        "disposition": mapped.disposition,
        "raw_disposition": raw,
        "detail": mapped.detail,
        "ambiguous": mapped.ambiguous,
        "lead": lead,
        "agent_id": get("user"),
        "campaign": get("campaign"),
        "phone": phone,
        "ended_at": ended_at,
        "talk_s": talk_s,
        "callback_at": callback_at,
        "notes": get("call_notes"),
        "live": kind == "dispo",
        "extra": extra,
    }
