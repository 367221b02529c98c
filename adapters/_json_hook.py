"""Generic JSON webhook: a body in the ``CallOutcome`` shape -> outcomes (pure).

The body is one JSON object or an array of them. ``source`` may be left out
(it defaults to the adapter's name) but may not name another adapter: one
sender must not overwrite another dialer's records. A ``disposition`` outside
the normalized vocabulary goes through the adapter's ``dispositions`` table
(unknown -> ``unknown``, raw value kept in ``raw_disposition``).

Authentication: ``<signature_header>: sha256=<hex HMAC-SHA256(secret, body)>``
(the bare hex is accepted too), or ``Authorization: Bearer <secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import from_json

from adapters._decode_util import DecodeError
from adapters._ingest import Intake
from adapters.dispositions import DispositionMap
from spool.record import CallOutcome

__all__ = ["JsonBatch", "decode_json", "sign_body", "verify_hmac"]


def sign_body(body: bytes, secret: str) -> str:
    """The signature header value a sender computes: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_hmac(body: bytes, header: str | None, secret: str) -> bool:
    if not header:
        return False
    given = header.strip()
    given = given.split("=", 1)[1] if given.lower().startswith("sha256=") else given
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), given.lower().encode())


@dataclass
class JsonBatch:
    """Decoded body: valid outcomes and per-item problems (index, reason, call_id)."""

    outcomes: list[CallOutcome] = field(default_factory=list)
    errors: list[tuple[int, str, str | None]] = field(default_factory=list)
    is_batch: bool = False


def decode_json(
    body: bytes, *, source: str, dmap: DispositionMap, max_batch: int = 1000
) -> JsonBatch:
    """Raises :class:`DecodeError` when the body as a whole is unusable."""
    try:
        data = from_json(body)
    except ValueError as exc:
        raise DecodeError(f"body: not valid JSON ({str(exc)[:120]})") from None
    batch = JsonBatch(is_batch=isinstance(data, list))
    items: list[Any] = data if isinstance(data, list) else [data]
    if not items:
        raise DecodeError("body: an empty array")
    if len(items) > max_batch:
        raise DecodeError(f"body: {len(items)} outcomes in one request; at most {max_batch}")
    for index, item in enumerate(items):
        where = f"[{index}]." if batch.is_batch else ""
        if not isinstance(item, dict):
            batch.errors.append((index, f"{where[:-1] or 'body'}: expected a JSON object", None))
            continue
        call_id = item.get("call_id") if isinstance(item.get("call_id"), str) else None
        given_source = item.get("source", source)
        if given_source != source:
            batch.errors.append(
                (index, f"{where}source: this endpoint accepts source {source!r} only", call_id)
            )
            continue
        item = {**item, "source": source}
        raw = item.get("disposition")
        if isinstance(raw, str):
            mapped = dmap.lookup(raw)
            item["disposition"] = mapped.disposition
            item.setdefault("raw_disposition", raw)
            if mapped.detail is not None:
                item.setdefault("detail", mapped.detail)
            if mapped.ambiguous:
                item.setdefault("ambiguous", True)
        result = Intake.validate(item)
        if isinstance(result, str):
            reason = "; ".join(where + part for part in result.split("; ")) if where else result
            batch.errors.append((index, reason, call_id))
        else:
            batch.outcomes.append(result)
    return batch
