"""Raw dialer status -> normalized ``Disposition``: built-in tables plus site overrides.

Every adapter maps its platform's raw value (a VICIdial status, a Twilio
``CallStatus``, a CDR ``disposition``...) through a :class:`DispositionMap`:

* the built-in table for the platform (``reference/dialers.md`` section 7.3),
* overridden per installation by the adapter's ``dispositions`` config table
  (a site's custom VICIdial statuses, ``WN = "wrong_number"``),
* an unknown raw value becomes ``Disposition.UNKNOWN`` (never dropped: the raw
  value stays in ``raw_disposition``) and is logged once per value.

Lookups ignore case and surrounding whitespace. A prefix rule (``HUC`` for
VICIdial's ``HUC<cause>`` statuses) is tried after the exact table.

Other platforms add their table to :data:`BUILTIN_TABLES` (one line).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog

from spool.record import Disposition

__all__ = [
    "BUILTIN_TABLES",
    "CDR_TABLE",
    "TWILIO_TABLE",
    "VICIDIAL_TABLE",
    "VOCABULARY_TABLE",
    "DispositionMap",
    "Mapped",
    "parse_overrides",
]

log = structlog.get_logger("adapters.dispositions")

# Unknown values remembered for "log once"; past this many, stop logging new ones
# (a misconfigured feed could otherwise grow the set without bound).
_MAX_REMEMBERED: Final = 10_000


@dataclass(frozen=True, slots=True)
class Mapped:
    """What a raw value means: disposition, finer detail, heuristic flag, finality."""

    disposition: Disposition
    detail: str | None = None
    ambiguous: bool = False
    #: False for progress values (VICIdial INCALL, Twilio ringing): no outcome yet
    final: bool = True


def _m(d: Disposition, detail: str | None = None, ambiguous: bool = False) -> Mapped:
    return Mapped(d, detail, ambiguous)


D = Disposition
_NOT_FINAL: Final = Mapped(D.UNKNOWN, None, False, final=False)

#: The normalized vocabulary maps to itself (a sender that already speaks it).
VOCABULARY_TABLE: Final[Mapping[str, Mapped]] = {d.value: Mapped(d) for d in Disposition}

#: VICIdial statuses (reference/dialers.md sections 2.1 and 7.3).
VICIDIAL_TABLE: Final[Mapping[str, Mapped]] = {
    **{s: _m(D.CONNECTED, s.lower()) for s in ("SALE", "NI", "NP", "DEC", "XFER")},
    # broadcast/survey: a message was played, the answerer may be a machine
    **{s: _m(D.CONNECTED, s.lower(), True) for s in ("PM", "SVYEXT", "SVYHU", "SVYREC", "SVYCLM")},
    "CALLBK": _m(D.CALLBACK_REQUESTED),
    "CBHOLD": _m(D.CALLBACK_REQUESTED, "hold"),
    "DNC": _m(D.DO_NOT_CALL, "requested"),
    # DNCL/DNCC: matched the DNC list in the hopper, never dialed
    **{s: _m(D.DO_NOT_CALL, "list_block") for s in ("DNCL", "DNCC", "DNCCAR")},
    "A": _m(D.VOICEMAIL),
    "AA": _m(D.VOICEMAIL, "machine"),
    "AM": _m(D.VOICEMAIL, "message_left"),
    "AL": _m(D.VOICEMAIL, "message_left"),
    "AMDXFR": _m(D.VOICEMAIL, "transferred"),
    "SVYVM": _m(D.VOICEMAIL),
    "UNKAM": _m(D.VOICEMAIL, None, True),
    "UNKAL": _m(D.VOICEMAIL, "message_left", True),
    "AFAX": _m(D.FAX),
    "B": _m(D.BUSY),
    "AB": _m(D.BUSY, "carrier"),
    "N": _m(D.NO_ANSWER),
    # NA hides disconnects and congestion unless enhanced disconnect logging is on
    "NA": _m(D.NO_ANSWER, None, True),
    "DC": _m(D.INVALID_NUMBER),
    "ADC": _m(D.INVALID_NUMBER, "carrier"),
    "ADCCAR": _m(D.INVALID_NUMBER, "carrier"),
    # ADCT is a *temporary* disconnect/congestion: not a permanent invalid number
    "ADCT": _m(D.FAILED, "temporary"),
    "LRERR": _m(D.FAILED),
    **{
        s: _m(D.ABANDONED, "system")
        for s in (
            "DROP",
            "XDROP",
            "TIMEOT",
            "AFTHRS",
            "NANQUE",
            "IQNANQ",
            "MAXCAL",
            "HOLDTO",
            "WAITTO",
            "SRDROP",
            "CLOSOP",
        )
    },
    "QVMAIL": _m(D.ABANDONED, "message_left"),
    "PDROP": _m(D.ABANDONED, "callee"),
    **{s: _m(D.UNKNOWN) for s in ("ERI", "DISPO", "DONEM", "DAIR", "ADAIR")},
    **{s: _NOT_FINAL for s in ("NEW", "QUEUE", "INCALL", "PU")},
}
# HUC<q.850 cause> (enhanced disconnect logging level 3)
_VICIDIAL_PREFIXES: Final[tuple[tuple[str, Mapped], ...]] = (("HUC", _m(D.FAILED, "carrier")),)

#: Twilio ``CallStatus`` and ``CallStatus/AnsweredBy`` (section 7.3). The decoder
#: tries ``completed/<AnsweredBy>`` first, then the bare status.
TWILIO_TABLE: Final[Mapping[str, Mapped]] = {
    "completed": _m(D.CONNECTED),
    "completed/human": _m(D.CONNECTED, "human"),
    **{
        f"completed/{m}": _m(D.VOICEMAIL, m)
        for m in ("machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other")
    },
    "completed/fax": _m(D.FAX),
    "completed/unknown": _m(D.CONNECTED, "answered_by_unknown", True),
    "busy": _m(D.BUSY),
    "no-answer": _m(D.NO_ANSWER),
    "canceled": _m(D.CANCELED),
    "failed": _m(D.FAILED),
    **{s: _NOT_FINAL for s in ("queued", "initiated", "ringing", "in-progress", "answered")},
}
#: SIP responses on a Twilio ``failed`` call that mean the number is invalid.
TWILIO_INVALID_SIP: Final = frozenset({"404", "410", "484", "604"})

#: Asterisk CDR ``disposition`` (section 1.5; ``main/cdr.c ast_cdr_disp2str``).
CDR_TABLE: Final[Mapping[str, Mapped]] = {
    # ANSWERED says the channel was answered, not by whom (a machine answers too)
    "ANSWERED": _m(D.CONNECTED, "answered", True),
    # NO ANSWER also covers CANCEL (canceldispositionenabled=no) and cause 16 never Up
    "NO ANSWER": _m(D.NO_ANSWER, None, True),
    "BUSY": _m(D.BUSY),
    # FAILED also covers congestion (congestion=no, the default)
    "FAILED": _m(D.FAILED),
    "CONGESTION": _m(D.FAILED, "congestion"),
    "CANCEL": _m(D.CANCELED),
    "UNKNOWN": _m(D.UNKNOWN),
}

#: platform -> built-in table. ADAPTERS-STREAM adds "asterisk" (ARI/Q.850).
BUILTIN_TABLES: dict[str, Mapping[str, Mapped]] = {
    "vocabulary": VOCABULARY_TABLE,
    "vicidial": VICIDIAL_TABLE,
    "twilio": TWILIO_TABLE,
    "asterisk-cdr": CDR_TABLE,
}
_PREFIXES: dict[str, tuple[tuple[str, Mapped], ...]] = {"vicidial": _VICIDIAL_PREFIXES}


def _norm(raw: str) -> str:
    return raw.strip().upper()


class DispositionMap:
    """``raw -> Mapped`` for one adapter: site overrides, built-in table, prefixes.

    >>> m = DispositionMap("vicidial", "vicidial", {"WN": Mapped(Disposition.WRONG_NUMBER)})
    >>> m.lookup("wn").disposition
    <Disposition.WRONG_NUMBER: 'wrong_number'>
    """

    def __init__(
        self,
        platform: str,
        source: str,
        overrides: Mapping[str, Mapped] | None = None,
    ) -> None:
        if platform not in BUILTIN_TABLES:
            raise ValueError(
                f"no disposition table for {platform!r}; known: {', '.join(sorted(BUILTIN_TABLES))}"
            )
        self.platform = platform
        self.source = source
        self._table: dict[str, Mapped] = {_norm(k): v for k, v in BUILTIN_TABLES[platform].items()}
        self._table.update({_norm(k): v for k, v in (overrides or {}).items()})
        self._prefixes = _PREFIXES.get(platform, ())
        self._seen_unknown: set[str] = set()

    def known(self, raw: str) -> bool:
        """True when ``raw`` has a mapping (table or prefix rule)."""
        return self._find(_norm(raw)) is not None

    def _find(self, key: str) -> Mapped | None:
        hit = self._table.get(key)
        if hit is None:
            for prefix, mapped in self._prefixes:
                if key.startswith(prefix) and key != prefix:
                    return mapped
        return hit

    def lookup(self, raw: str) -> Mapped:
        """The mapping of ``raw``; unknown values give ``UNKNOWN`` and are logged once."""
        hit = self._find(_norm(raw))
        if hit is not None:
            return hit
        if raw not in self._seen_unknown and len(self._seen_unknown) < _MAX_REMEMBERED:
            self._seen_unknown.add(raw)
            log.warning(
                "unknown_disposition",
                adapter=self.source,
                platform=self.platform,
                raw_disposition=raw[:64],
                hint="map it in this adapter's `dispositions` table",
            )
        return Mapped(Disposition.UNKNOWN)


_CHOICES: Final = ", ".join(d.value for d in Disposition)


def parse_overrides(value: Any, key: str = "dispositions") -> tuple[dict[str, Mapped], list[str]]:
    """Read a config ``dispositions`` table; every problem is named ``<key>.<raw>: ...``.

    Each entry is either a disposition name or a small table::

        dispositions = { WN = "wrong_number", SURVEY = { disposition = "connected",
                         detail = "survey", ambiguous = true } }
    """
    out: dict[str, Mapped] = {}
    problems: list[str] = []
    if value is None:
        return out, problems
    if not isinstance(value, Mapping):
        return out, [f"{key}: expected a table of raw value = disposition, got {value!r}"]
    for raw, entry in value.items():
        where = f"{key}.{raw}"
        if isinstance(entry, str):
            entry = {"disposition": entry}
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: expected a disposition name or a table, got {entry!r}")
            continue
        unknown = set(entry) - {"disposition", "detail", "ambiguous"}
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
            continue
        name = entry.get("disposition")
        try:
            disposition = Disposition(str(name).strip().lower())
        except ValueError:
            problems.append(f"{where}: {name!r} is not one of: {_CHOICES}")
            continue
        detail = entry.get("detail")
        ambiguous = entry.get("ambiguous", False)
        if detail is not None and not isinstance(detail, str):
            problems.append(f"{where}.detail: expected a string, got {detail!r}")
            continue
        if not isinstance(ambiguous, bool):
            problems.append(f"{where}.ambiguous: expected true or false, got {ambiguous!r}")
            continue
        out[str(raw)] = Mapped(disposition, detail, ambiguous)
    return out, problems
