"""Twilio Voice status callbacks: signature check and decoding (pure).

Signature (``X-Twilio-Signature``), as twilio-python's ``RequestValidator``
does it (``reference/dialers.md`` section 3):

1. the full URL Twilio requested (scheme, host, path, query; no fragment);
2. for a form POST, each parameter name sorted, then ``name + value`` for each of
   its values sorted (deduplicated); a GET signs the URL alone;
3. HMAC-SHA1 keyed with the auth token, base64, compared in constant time;
4. tried with the port made explicit (``:443``/``:80``) and with it removed,
   because Twilio's own signing is inconsistent about ports;
5. a JSON body is signed as the URL alone, whose ``bodySHA256`` parameter must
   equal the hex SHA-256 of the raw body.

The URL must be the one Twilio used: behind a proxy, configure ``public_url``
(or trust ``X-Forwarded-Proto``/``X-Forwarded-Host``); never re-encode the query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit, urlunsplit

from adapters._decode_util import DecodeError, lead_from_value, optional_int, safe_phone
from adapters.dispositions import TWILIO_INVALID_SIP, DispositionMap
from spool.record import Direction, Disposition, LeadRef

__all__ = ["compute_signature", "decode_twilio", "validate_signature"]

_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


def compute_signature(url: str, params: Mapping[str, Sequence[str]], auth_token: str) -> str:
    """Twilio's signature of ``url`` and the (form) ``params``."""
    payload = url + "".join(
        name + value for name in sorted(set(params)) for value in sorted(set(params[name]))
    )
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _with_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is not None or parts.scheme not in _DEFAULT_PORTS:
        return url
    netloc = f"{parts.netloc}:{_DEFAULT_PORTS[parts.scheme]}"
    return urlunsplit(parts._replace(netloc=netloc))


def _without_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is None:
        return url
    netloc = parts.netloc.rsplit(":", 1)[0]
    return urlunsplit(parts._replace(netloc=netloc))


def validate_signature(
    url: str,
    params: Mapping[str, Sequence[str]],
    signature: str | None,
    auth_token: str,
    *,
    body: bytes | None = None,
) -> bool:
    """True when ``signature`` is Twilio's for this request (constant-time)."""
    if not signature:
        return False
    body_ok = True
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    if "bodySHA256" in query:
        expected_hash = hashlib.sha256(body or b"").hexdigest()
        # bytes: compare_digest raises TypeError on a str with non-ASCII characters
        body_ok = hmac.compare_digest(expected_hash.encode(), query["bodySHA256"][0].encode())
        params = {}
    given = signature.encode()
    ok_plain = hmac.compare_digest(
        compute_signature(_without_port(url), params, auth_token).encode(), given
    )
    ok_port = hmac.compare_digest(
        compute_signature(_with_port(url), params, auth_token).encode(), given
    )
    return body_ok and (ok_plain or ok_port)


def _timestamp(value: str | None, now: datetime) -> datetime:
    if not value:
        return now
    try:
        parsed = parsedate_to_datetime(value)
    # OverflowError: a year or offset too big for C ("Mon, 01 Jan 99999999999999999999 ...")
    except (TypeError, ValueError, OverflowError):
        raise DecodeError(f"Timestamp: not an RFC 2822 date, got {value[:40]!r}") from None
    if parsed.tzinfo is None:  # RFC 2822 "-0000": UTC with unknown local zone
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def decode_twilio(
    form: Mapping[str, str],
    *,
    source: str,
    dmap: DispositionMap,
    lead: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """The ``CallOutcome`` fields of one status callback, or None for a progress event.

    ``lead`` is the value of the configured lead query parameter (a Lead Id or
    an external key), when the callback URL carries one.
    """
    call_sid = (form.get("CallSid") or "").strip()
    if not call_sid:
        raise DecodeError("CallSid: missing")
    status = (form.get("CallStatus") or "").strip().lower()
    if not status:
        raise DecodeError("CallStatus: missing")
    answered_by = (form.get("AnsweredBy") or "").strip().lower()
    raw = f"{status}/{answered_by}" if answered_by else status
    mapped = dmap.lookup(raw) if answered_by and dmap.known(raw) else dmap.lookup(status)
    if not mapped.final:
        return None
    disposition, detail = mapped.disposition, mapped.detail
    sip = (form.get("SipResponseCode") or "").strip()
    if status == "failed" and sip in TWILIO_INVALID_SIP:
        disposition, detail = Disposition.INVALID_NUMBER, f"sip_{sip}"

    ended_at = _timestamp(form.get("Timestamp"), now or datetime.now(UTC))
    seq = optional_int("SequenceNumber", form.get("SequenceNumber"))
    duration = optional_int("CallDuration", form.get("CallDuration"))
    if duration is not None and duration < 0:
        raise DecodeError(f"CallDuration: negative ({duration})")
    try:
        started_at = ended_at - timedelta(seconds=duration) if duration else None
    except OverflowError:  # a duration reaching back before year 1
        raise DecodeError(f"CallDuration: out of range ({duration})") from None
    inbound = (form.get("Direction") or "").strip().lower() == "inbound"
    far_end = form.get("From") if inbound else form.get("To")
    phone = safe_phone(far_end)
    extra: dict[str, str | int | float | bool | None] = {}
    if answered_by:
        extra["answered_by"] = answered_by
    if sip:
        extra["sip_response_code"] = sip[:8]
    if form.get("ParentCallSid"):
        extra["parent_call_sid"] = str(form["ParentCallSid"])[:64]
    lead_ref = lead_from_value(lead)
    if lead_ref is None and phone is not None:
        lead_ref = LeadRef(phone=phone)
    recording = (form.get("RecordingUrl") or "").strip() or None
    return {
        "source": source,
        "call_id": call_sid,
        "source_seq": seq,
        "disposition": disposition,
        "raw_disposition": raw,
        "detail": detail,
        "ambiguous": mapped.ambiguous,
        "lead": lead_ref,
        "phone": phone,
        "direction": Direction.INBOUND if inbound else Direction.OUTBOUND,
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_s": duration,
        "talk_s": duration if disposition is Disposition.CONNECTED else None,
        "recording_url": recording,
        "live": False,
        "extra": extra,
    }
