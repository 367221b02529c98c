"""Store-then-ack: the one path every adapter takes from decoded input to the spool.

An adapter decodes (pure), then calls :class:`Intake`:

* :meth:`Intake.validate` turns a dict into a ``CallOutcome`` or a readable
  reason (``format_validation_error``);
* :meth:`Intake.store` awaits the spool's commit (``put`` / ``put_many``, with an
  optional durable cursor) and only then returns, so the caller acknowledges
  the dialer afterwards. A refusing spool (full, disk error) raises
  :class:`Refused`, which carries the ``Retry-After`` to send; nothing was stored
  and nothing may be acknowledged;
* :meth:`Intake.reject` keeps bad input in the spool's quarantine table.

It also keeps the adapter's ``AdapterHealth`` counters and logs one event per
accepted or rejected outcome (``call_id``, ``source``, ``disposition``; never
the body or a secret).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from pydantic import ValidationError

from adapters._base import AdapterHealth
from spool import CallOutcome, PutResult, PutStatus, Spool, format_validation_error
from spool.errors import SpoolError, SpoolFull, SpoolUnavailable

__all__ = ["Intake", "Refused", "log_reason"]

log = structlog.get_logger("adapters.ingest")

_DEFAULT_RETRY_AFTER_S: Final = 5.0
_REASON_MAX: Final = 300


_QUOTED: Final = re.compile(r"'[^']*'|\"[^\"]*\"")


def log_reason(reason: str) -> str:
    """A rejection reason for the log: what was wrong, without the quoted values.

    The full reason (values included) stays with the raw input in the quarantine
    table; logs travel further, and values can be phone numbers or names.
    """
    return _QUOTED.sub("'…'", reason)[:_REASON_MAX]


class Refused(Exception):
    """The spool refused the write (retryable): tell the dialer to retry later.

    Nothing of the request was stored; nothing may be acknowledged.
    """

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1 (RFC 9110 section 10.2.3 delay-seconds)."""
        return str(max(1, round(self.retry_after_s)))


@dataclass(frozen=True, slots=True)
class Stored:
    outcome: CallOutcome
    result: PutResult


def _refused(exc: SpoolError) -> Refused:
    kind = "spool full" if isinstance(exc, SpoolFull) else "spool unavailable"
    return Refused(kind, exc.retry_after_s or _DEFAULT_RETRY_AFTER_S)


class Intake:
    """The spool as one adapter writes to it (counters and logs included).

    ``log_each``: an ``outcome_stored`` line per outcome. Off by default: under
    ``dispo-sync run`` the daemon logs every outcome it stores (``outcome received``),
    and two lines per call would only double what an admin has to read.
    """

    def __init__(
        self, spool: Spool, health: AdapterHealth, *, source: str, log_each: bool = False
    ) -> None:
        self.spool = spool
        self.log_each = log_each
        self.health = health
        self.source = source
        self._log = log.bind(adapter=source)

    @staticmethod
    def validate(data: Mapping[str, Any]) -> CallOutcome | str:
        """A ``CallOutcome`` from ``data``, or one line per problem."""
        try:
            return CallOutcome.model_validate(data)
        except ValidationError as exc:
            return format_validation_error(exc)

    async def store(
        self, outcomes: Sequence[CallOutcome], *, cursor: tuple[str, str] | None = None
    ) -> list[PutResult]:
        """Commit ``outcomes`` (one transaction); returns after the commit.

        Raises :class:`Refused` when the spool refuses (full, disk error).
        """
        if not outcomes and cursor is None:
            return []
        try:
            if len(outcomes) == 1 and cursor is None:
                results = [await self.spool.put(outcomes[0])]
            else:
                results = list(await self.spool.put_many(list(outcomes), cursor=cursor))
        except (SpoolFull, SpoolUnavailable) as exc:
            self.health.refused += len(outcomes)
            self.health.last_error = type(exc).__name__
            self._log.warning(
                "outcomes_refused",
                count=len(outcomes),
                reason=type(exc).__name__,
                retry_after_s=exc.retry_after_s,
            )
            raise _refused(exc) from exc
        for outcome, result in zip(outcomes, results, strict=True):
            self._count(outcome, result)
        return results

    def _count(self, outcome: CallOutcome, result: PutResult) -> None:
        if result.status in (PutStatus.DUPLICATE, PutStatus.STALE):
            self.health.duplicates += 1
        else:
            self.health.accepted += 1
        if not self.log_each:
            return
        # one line per stored outcome; keep the keys few (every key costs formatting)
        log.info(
            "outcome_stored",
            call_id=outcome.call_id,
            source=outcome.source,
            disposition=outcome.disposition.value,
            status=result.status.value,
        )

    async def reject(self, raw: bytes | str, reason: str, *, call_id: str | None = None) -> None:
        """Quarantine bad input with its reason; counts and logs (never the body).

        Raises :class:`Refused` when even the quarantine write is refused.
        """
        self.health.rejected += 1
        self.health.last_error = "rejected input"
        self._log.warning(
            "outcome_rejected", source=self.source, call_id=call_id, reason=log_reason(reason)
        )
        try:
            await self.spool.quarantine(self.source, raw, reason)
        except (SpoolFull, SpoolUnavailable) as exc:
            raise _refused(exc) from exc
