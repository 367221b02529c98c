"""CDR / CSV rows -> ``CallOutcome`` fields (pure; no files).

* ``asterisk-cdr``: Asterisk ``cdr_csv`` ``Master.csv`` (``reference/dialers.md``
  section 1.5): 16 fixed columns, then optionally ``uniqueid``, ``userfield``
  (``loguniqueid``/``loguserfield``) and ``peeraccount``, ``linkedid``,
  ``sequence`` (``newcdrcolumns``). No header. Dates are wall-clock times in
  the configured zone. The call id is ``uniqueid`` when logged; otherwise a hash
  of the row, so re-reading the same file yields the same ids (idempotent).
* ``csv``: any CSV with a header row; ``mapping`` names the column for each
  field (a field without a mapping is read from the column of the same name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import tzinfo
from typing import Any, Final

from adapters._decode_util import (
    DecodeError,
    lead_from_value,
    local_span,
    local_time,
    optional_int,
    safe_phone,
)
from adapters.config import CSV_FIELDS
from adapters.dispositions import DispositionMap
from spool.record import Direction, LeadRef

__all__ = ["CDR_COLUMNS", "CDR_MAX_COLUMNS", "decode_cdr_row", "decode_csv_row"]

CDR_COLUMNS: Final = (
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
)
# Optional trailing columns, in the order cdr_csv writes them.
_NEW_COLUMNS: Final = ("peeraccount", "linkedid", "sequence")
# The most a Master.csv row has: every optional column logged
CDR_MAX_COLUMNS: Final = len(CDR_COLUMNS) + 2 + len(_NEW_COLUMNS)
_EXTRA_KEYS: Final = ("accountcode", "dcontext", "channel", "dstchannel", "lastapp", "userfield")


def _named(row: Sequence[str]) -> dict[str, str]:
    n = len(row)
    if n < len(CDR_COLUMNS):
        raise DecodeError(
            f"row: expected at least {len(CDR_COLUMNS)} columns (Master.csv layout), got {n}"
        )
    names = list(CDR_COLUMNS)
    tail = n - len(CDR_COLUMNS)
    if tail >= 3:  # newcdrcolumns, with zero, one or two of uniqueid/userfield before
        names += ["uniqueid", "userfield"][: tail - 3] + list(_NEW_COLUMNS)
    elif tail:
        names += ["uniqueid", "userfield"][:tail]
    return dict(zip(names, row, strict=False))


def decode_cdr_row(
    row: Sequence[str],
    line: bytes,
    *,
    source: str,
    dmap: DispositionMap,
    tz: tzinfo,
    direction: Direction = Direction.OUTBOUND,
) -> dict[str, Any]:
    """The ``CallOutcome`` fields of one Master.csv row (``line``: its raw bytes)."""
    cols = _named(row)
    raw = cols["disposition"].strip()
    if not raw:
        raise DecodeError("disposition: empty")
    mapped = dmap.lookup(raw)
    # duration is end - start (cdr.c): it tells the readings of a DST fall-back hour apart
    duration = optional_int("duration", cols["duration"])
    started_at, ended_at = local_span(("start", cols["start"]), ("end", cols["end"]), tz, duration)
    if ended_at is None:
        raise DecodeError("end: empty (the call's end time)")
    uniqueid = cols.get("uniqueid", "").strip()
    call_id = uniqueid or "cdr-" + hashlib.sha256(line.strip()).hexdigest()[:32]
    far = cols["src"] if direction is Direction.INBOUND else cols["dst"]
    phone = safe_phone(far)
    extra: dict[str, str | int | float | bool | None] = {
        k: cols[k][:255] for k in _EXTRA_KEYS if cols.get(k, "").strip()
    }
    if cols.get("linkedid"):
        extra["linkedid"] = cols["linkedid"][:64]
    return {
        "source": source,
        "call_id": call_id,
        "source_seq": optional_int("sequence", cols.get("sequence")),
        "disposition": mapped.disposition,
        "raw_disposition": raw,
        "detail": mapped.detail,
        "ambiguous": mapped.ambiguous,
        "lead": LeadRef(phone=phone) if phone else None,
        "phone": phone,
        "direction": direction,
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_s": duration,
        "talk_s": optional_int("billsec", cols["billsec"]),
        "extra": extra,
    }


_TIME_FIELDS: Final = ("started_at", "ended_at", "callback_at")
_SPAN_FIELDS: Final = ("started_at", "ended_at")
_INT_FIELDS: Final = ("duration_s", "talk_s", "source_seq")


def decode_csv_row(
    row: Mapping[str, str],
    *,
    mapping: Mapping[str, str],
    source: str,
    dmap: DispositionMap,
    tz: tzinfo,
    direction: Direction = Direction.OUTBOUND,
) -> dict[str, Any]:
    """The ``CallOutcome`` fields of one generic CSV row (header -> value)."""

    def get(name: str) -> str | None:
        value = row.get(mapping.get(name, name))
        return value.strip() if value is not None and value.strip() else None

    out: dict[str, Any] = {"source": source, "direction": direction}
    for name in CSV_FIELDS:
        value = get(name)
        if value is None or name.startswith("lead_") or name in _SPAN_FIELDS:
            continue
        if name in _TIME_FIELDS:
            out[name] = local_time(mapping.get(name, name), value, tz)
        elif name in _INT_FIELDS:
            out[name] = optional_int(mapping.get(name, name), value)
        elif name == "disposition":
            mapped = dmap.lookup(value)
            out["disposition"] = mapped.disposition
            out["raw_disposition"] = value
            if mapped.detail is not None:
                out.setdefault("detail", mapped.detail)
            out["ambiguous"] = mapped.ambiguous
        else:
            out[name] = value
    if "disposition" not in out:
        raise DecodeError(f"{mapping.get('disposition', 'disposition')}: missing")
    # read together: the duration tells the readings of a DST fall-back hour apart
    span = local_span(
        (mapping.get("started_at", "started_at"), get("started_at")),
        (mapping.get("ended_at", "ended_at"), get("ended_at")),
        tz,
        out.get("duration_s"),
    )
    for name, when in zip(_SPAN_FIELDS, span, strict=True):
        if when is not None:
            out[name] = when
    lead_id = get("lead_id")
    lead_key = get("lead_external_key")
    lead_phone = safe_phone(get("lead_phone")) or safe_phone(out.get("phone"))
    if lead_id:
        out["lead"] = lead_from_value(lead_id)
    elif lead_key:
        out["lead"] = LeadRef(external_key=lead_key[:255])
    elif lead_phone:
        out["lead"] = LeadRef(phone=lead_phone)
    return out
