"""REST sending shared by the live and collections rails.

One outcome -> one ``/composite`` call (Task upsert by external key + Lead update,
allOrNone false, 1 API call). A key that ends in ``.`` and letters (``vici:abc.inc``)
would be a 404 in the upsert's URL (:func:`~daemon.salesforce.wire.key_fits_url`): its
Task goes as a one-record collection upsert inside that composite instead, the key in
the body. Several outcomes -> sObject Collections (Task upsert by external key, Lead
update by Id, ≤200 each); by default both collections travel inside one
``/composite`` request, so up to 200 outcomes cost one API call. Keys that differ only
in case go in separate requests (:meth:`RestSender._waves`).

Orgs without a Task external ID field (``Mapping.upserts_tasks`` false): a Task is
inserted (POST) and its Id kept in the spool; a later send of the call updates that
Id. A record claimed before (its answer may have been lost) is first looked up by
its key in ``CallObject`` (:func:`._task_ids.find_tasks`), so no call gets two Tasks.
After the org gains the field (the mapping switched back to upserts), a Task whose Id
the spool remembers from then is still updated by that Id, the key field filled in on
the way: an upsert by key would not find it, and would create a second Task.

Every record gets a :class:`Verdict` from its own results (HTTP 200 is not
success). Create-only fields (TaskSubtype) that Salesforce refuses on an update
are dropped and the Task re-sent in the same cycle, never failing the record.
A Lead found gone (by the Task's WhoId or by the Lead update) is looked up again
when its Id came from the cache for a phone or external key (a merge leaves the
survivor with that phone or key); else the lead-not-found policy applies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import structlog

from daemon.mapping import LeadNotFound, Mapping
from daemon.salesforce import (
    MAX_COLLECTION,
    Backoff,
    ConfigurationError,
    ItemResult,
    Kind,
    PermanentError,
    RecordError,
    RetryableError,
    SalesforceClient,
)
from daemon.salesforce.errors import parse_error_body
from daemon.salesforce.wire import (
    collection_records,
    json_value,
    key_fits_url,
    parse_collection_results,
    parse_composite_results,
    sobject_path,
)
from spool import Claim, RecordRef, Spool, SpoolError, StoredClaim

from ._leads import KeyLocks, LeadLedger, LeadResolver, LruCache, SentLead, id_key, newer
from ._task_ids import find_tasks

__all__ = ["SENDING", "Action", "Ref", "RestSender", "Verdict", "apply_verdicts", "verdict_for"]

#: External keys of the outcomes a REST request in this task is carrying (for hooks
#: that measure latency per outcome, e.g. bench/live_latency.py).
SENDING: ContextVar[tuple[str, ...]] = ContextVar("dispo_sync_sending", default=())

log = structlog.get_logger("dispo_sync.rails")

AUTO_ASSIGN_OFF = {"Sforce-Auto-Assign": "FALSE"}
LEAD_NOT_FOUND = "LEAD_NOT_FOUND"
# Errors that mean "this Lead does not exist (any more)" for a Lead update or a WhoId.
_MISSING_LEAD_CODES = frozenset(
    {"ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY", "MALFORMED_ID"}
)
# Errors of an update by Id that mean "this Task does not exist any more" (deleted).
_MISSING_TASK_CODES = frozenset({"ENTITY_IS_DELETED", "NOT_FOUND"})
_SHARED_ROW_NOTE = (
    "the Lead update shared with a newer outcome of this Lead was refused for that "
    "outcome's values; sent again on its own"
)
# Rounds after the first in one send, each mending what the one before was refused for.
# Three suffice: a deleted Task (looked up, re-upserted) whose key another Task carries
# (create-only fields dropped), with a dead WhoId (dropped, or pointed at the Lead its
# phone or key names now) is the longest chain.
_MENDS = 3


# Tasks remembered as existing (their create-only fields are left out of a re-send;
# one not remembered costs one refused row, then goes again without them). About
# 155 bytes each: 16 MB at most, whatever the backlog.
KNOWN_TASKS = 100_000


class Action(StrEnum):
    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"
    RELEASE = "release"  # keep pending, attempt not counted (rail paused)


class Ref(NamedTuple):
    """A claimed record without its payload (Bulk keeps one per outcome in a batch;
    a tuple: cheap to build and small)."""

    record_id: int
    rev: int
    attempt: int
    call_id: str

    @property
    def pair(self) -> tuple[int, int]:
        return (self.record_id, self.rev)

    @classmethod
    def of(cls, claim: Claim | StoredClaim) -> Ref:
        return cls(claim.record_id, claim.rev, claim.attempt, claim.outcome.call_id)


@dataclass(slots=True)
class Verdict:
    claim: Claim | Ref
    action: Action
    code: str | None = None
    message: str | None = None
    retry_after_s: float | None = None


@dataclass(slots=True)
class _Item:
    """One outcome on its way out."""

    claim: Claim
    ext_key: str
    task: dict[str, Any]
    lead_id: str | None = None
    #: the Task's Id when it is updated by Id: remembered from an insert (orgs without a
    #: Task external ID field, now or before the mapping switched to upserts) or found
    task_id: str | None = None
    #: lead_id came from the resolver's cache for a Lead named by phone or external key:
    #: it may name a Lead deleted (merged into another) since, and is looked up again once
    #: if refused as gone
    lead_cached: bool = False
    task_result: ItemResult | None = None
    lead_result: ItemResult | None = None
    errors: list[RecordError] = field(default_factory=list)
    verdict: Verdict | None = None


@dataclass(slots=True)
class _LeadRow:
    lead_id: str
    lead_key: str
    fields: dict[str, Any]
    items: list[_Item]
    full: Claim | None  # the outcome whose full state this row carries (None: sticky only)


def verdict_for(claim: Claim | Ref, errors: Sequence[RecordError]) -> Verdict:
    """The worst of a record's errors decides: config (keep pending) > permanent > retry."""
    if not errors:
        return Verdict(claim, Action.ACK)
    kinds = [e.kind for e in errors]
    for wanted, action in ((Kind.CONFIG, Action.RELEASE), (Kind.PERMANENT, Action.DEAD)):
        if wanted in kinds:
            err = errors[kinds.index(wanted)]
            return Verdict(claim, action, err.code, err.message)
    err = errors[0]
    return Verdict(claim, Action.RETRY, err.code, err.message)


def pause_reason(verdicts: Iterable[Verdict]) -> str | None:
    """``CODE: message`` of the first configuration error among these verdicts (a record
    released, to wait while its rail pauses), or None."""
    return next((f"{v.code}: {v.message}" for v in verdicts if v.action is Action.RELEASE), None)


class RestSender:
    """Builds, sends and reconciles REST writes for a list of claims."""

    def __init__(
        self,
        *,
        client: SalesforceClient,
        spool: Spool,
        mapping: Mapping,
        resolver: LeadResolver,
        ledger: LeadLedger,
        nested_collections: bool = True,
        known_tasks: LruCache[str, bool] | None = None,
    ) -> None:
        self._client = client
        self._spool = spool
        self._mapping = mapping
        self._resolver = resolver
        self._ledger = ledger
        self._nested = nested_collections
        self._known: LruCache[str, bool] = known_tasks or LruCache(KNOWN_TASKS)
        self._locks = KeyLocks()

    # -- building ------------------------------------------------------------------
    async def _prepare(
        self,
        claims: Sequence[Claim],
        lead_ids: dict[str, str | None],
        cached: set[str],
        *,
        rail: str,
    ) -> tuple[list[_Item], list[_LeadRow]]:
        """Items and Lead rows of these claims; ``lead_ids`` (lead key -> Lead Id) and
        ``cached`` (the lead keys whose Id came from the resolver's cache) as
        :meth:`send` resolved them."""
        m = self._mapping
        lead_keys = [c.lead_key for c in claims if c.lead_key is not None]
        newest = await self._spool.newest_per_lead(lead_keys) if lead_keys else {}
        found, lookup_failed = await self._find_tasks(claims, rail=rail)
        items: list[_Item] = []
        groups: dict[str, list[_Item]] = defaultdict(list)
        for claim in claims:
            outcome = claim.outcome
            ref = outcome.lead
            lead_id = lead_ids.get(ref.key) if ref is not None else None
            item = _Item(claim, outcome.external_key, {})
            # Upserting Tasks, a remembered Id is one inserted before the switch, and only
            # records marked as maybe inserted before it (``task_id == ""``) are looked up.
            item.task_id = claim.task_id or found.get(item.ext_key)
            if (
                lookup_failed is not None
                and item.task_id is None
                and (claim.task_id == "" if m.upserts_tasks else claim.maybe_sent)
            ):
                item.verdict = _lookup_failed(claim, lookup_failed)
                items.append(item)
                continue
            if ref is not None and lead_id is None:
                if m.lead_not_found is LeadNotFound.DEAD_LETTER:
                    item.verdict = Verdict(
                        claim, Action.DEAD, LEAD_NOT_FOUND, f"no {m.lead_object} matches {ref.key}"
                    )
                    items.append(item)
                    continue
                log.info(
                    "lead_not_found",
                    call_id=outcome.call_id,
                    lead=ref.key,
                    policy="task_without_who",
                )
            item.lead_id = lead_id
            item.lead_cached = lead_id is not None and ref is not None and ref.key in cached
            new = item.task_id is None and (not m.upserts_tasks or item.ext_key not in self._known)
            item.task = m.task_record(outcome, who_id=lead_id, include_create_only=new)
            items.append(item)
            if lead_id is not None and claim.lead_key is not None:
                # One row per Lead, however its outcomes name it (by Id, key or phone).
                groups[id_key(lead_id)].append(item)
        rows: list[_LeadRow] = []
        for group in groups.values():
            # Per naming, the spool's newest outcome if it is here (the spool orders the
            # outcomes of one naming; nothing newer known: the newest here); the newest of
            # those carries the Lead's full state.
            full: Claim | None = None
            lead_id = group[0].lead_id
            assert lead_id is not None
            sent: SentLead | None = None
            for lead_key in dict.fromkeys(i.claim.lead_key for i in group):
                mine = [i.claim for i in group if i.claim.lead_key == lead_key]
                newest_id = newest.get(lead_key, (None, None))[0] if lead_key else None
                best = next((c for c in mine if c.record_id == newest_id), None)
                if best is None and newest_id is None:
                    best = max(mine, key=_claim_order)
                if best is not None and (full is None or _claim_order(best) > _claim_order(full)):
                    full = best
                if lead_key is not None:
                    sent = newer(sent, self._ledger.newest(lead_key, lead_id))
            fields: dict[str, Any] = {}
            if full is not None:
                order = (full.outcome.ended_at.timestamp(), full.record_id)
                if sent is not None and sent.order > order:
                    full = None  # a newer state already went out (another rail or naming)
                else:
                    fields.update(m.lead_update(full.outcome))
            for i in group:
                fields.update(m.sticky_update(i.claim.outcome))
            if fields:
                key = (full or group[0].claim).lead_key
                assert key is not None
                rows.append(_LeadRow(lead_id, key, fields, group, full))
        return items, rows

    async def _find_tasks(
        self, claims: Sequence[Claim], *, rail: str
    ) -> tuple[dict[str, str], RetryableError | None]:
        """Ids of the Tasks that earlier claims may have inserted; a retryable failure is
        returned, for those records to wait. Inserting Tasks: any claim that may have been
        sent and has no Task Id. Upserting them: those marked by
        :meth:`Spool.suspect_unkeyed_tasks` (``task_id == ""``), whose Task may have been
        inserted without its key before the mapping switched to upserts."""
        if self._mapping.upserts_tasks:
            keys = [c.outcome.external_key for c in claims if c.task_id == ""]
        else:
            # (a mark left by an upserting run counts as no Id)
            keys = [c.outcome.external_key for c in claims if not c.task_id and c.maybe_sent]
        if not keys:
            return {}, None
        return await self._lookup_tasks(keys, rail=rail)

    async def _lookup_tasks(
        self, keys: Sequence[str], *, rail: str
    ) -> tuple[dict[str, str], RetryableError | None]:
        """key -> Task Id by ``CallObject``, or the retryable failure (the records wait).
        A permanent refusal would refuse every lookup alike (e.g. CallObject not readable):
        it pauses the rail, since no Task that may exist can be inserted safely meanwhile."""
        try:
            return await find_tasks(self._client, self._mapping.task_object, keys, rail=rail), None
        except RetryableError as exc:
            log.info("task_lookup_failed", rail=rail, keys=len(keys), error=str(exc)[:200])
            return {}, exc
        except PermanentError as exc:
            raise ConfigurationError(
                f"Task lookup by CallObject refused ({exc.error_code}): {exc.message}; the "
                "integration user needs read access to Task.CallObject",
                error_code=exc.error_code,
            ) from exc

    async def _remember_task_ids(self, items: Sequence[_Item], *, rail: str) -> None:
        """Keep the Ids of Tasks inserted or found now, for the next send to update.

        Upserting Tasks, a remembered Id (from before the switch) is forgotten once a
        write of the Task succeeded: its key is filled in, and upserts find it from then
        on, as any other Task (create-only fields, a deleted Lead and all)."""
        if self._mapping.upserts_tasks:
            done = [
                i.claim.record_id
                for i in items
                if i.claim.task_id is not None
                and i.task_result is not None
                and i.task_result.success
            ]
            n = len(done)
            write: Awaitable[int] | None = self._spool.forget_task_ids(done) if done else None
        else:
            pairs = [
                (i.claim.record_id, i.task_id)
                for i in items
                if i.task_id is not None and i.task_id != i.claim.task_id
            ]
            n = len(pairs)
            write = self._spool.set_task_ids(pairs) if pairs else None
        if write is None:
            return
        try:
            await asyncio.shield(write)
        except SpoolError as exc:
            # Safe: a record claimed again is looked up by CallObject before any insert, or
            # (upserting) updated by the old Id once more.
            log.warning("task_ids_not_kept", rail=rail, records=n, error=str(exc)[:300])

    @contextlib.asynccontextmanager
    async def settled(self, lead_keys: Iterable[str]) -> AsyncIterator[None]:
        """Wait until no REST write to these Leads is in flight, and hold new ones off
        meanwhile: inside, every write that reached Salesforce is in the ledger (a write
        records its Lead state there only once its answer is read, under the Lead's lock)."""
        async with self._locks.hold(self._locks.busy(lead_keys)):
            yield

    # -- sending ---------------------------------------------------------------------
    async def send(self, claims: Sequence[Claim], *, rail: str) -> list[Verdict]:
        """Send these outcomes; a verdict per claim. Raises only ConfigurationError/AuthError.

        Writes for one Lead are serialized (live slots and the collections rail run
        concurrently): the newest-state check and the write happen under the lock.
        """
        # Leads are resolved first (cached lookups; no write depends on them yet), so that
        # the lock of each Lead's Id is held too: one Lead named two ways (by Id and by
        # phone, say, by two dialers) is one Lead to the ordering.
        refs = [c.outcome.lead for c in claims if c.outcome.lead is not None]
        # (before resolve, which caches what it looks up: those are fresh)
        cached = {r.key for r in refs if r.id is None and self._resolver.cached(r) is not None}
        lead_ids = await self._resolver.resolve(refs, rail=rail) if refs else {}
        keys = {c.lead_key for c in claims if c.lead_key is not None}
        keys.update(id_key(i) for i in lead_ids.values() if i is not None)
        async with self._locks.hold(keys):
            return await self._send_locked(claims, lead_ids, cached, rail=rail)

    async def _send_locked(
        self,
        claims: Sequence[Claim],
        lead_ids: dict[str, str | None],
        cached: set[str],
        *,
        rail: str,
    ) -> list[Verdict]:
        items, rows = await self._prepare(claims, lead_ids, cached, rail=rail)
        todo = [i for i in items if i.verdict is None]
        if todo:
            await self._send_round(todo, rows, rail=rail, single=len(claims) == 1)
            self._note_inserted(todo)
            try:
                # Later rounds, same cycle: a refusal we can mend (create-only fields on an
                # update, a Lead gone, a deleted or already keyed Task) is mended and sent
                # again. A mend can meet another (a deleted Task re-upserted by a key that
                # another Task carries is then an update, which refuses create-only fields),
                # so this goes on while there is one, for at most _MENDS rounds: each mend
                # removes its own cause, so none comes back.
                sent = todo
                for _ in range(_MENDS):
                    again = await self._recheck_missing_tasks(sent, rail=rail)
                    queued = {id(i) for i in again}
                    moved, moved_rows = await self._mend_missing_leads(
                        sent, rows, queued, rail=rail
                    )
                    again += moved
                    queued.update(id(i) for i in moved)
                    again += [
                        i
                        for i in sent
                        if id(i) not in queued and i.verdict is None and self._fix_for_resend(i)
                    ]
                    if not again:
                        break
                    queued.update(id(i) for i in again)
                    # A Lead update pointed at another Lead goes again with its items (one
                    # whose items all wait for a retry goes with them then).
                    resend = [r for r in moved_rows if any(id(i) in queued for i in r.items)]
                    for i in again:
                        i.task_result = None
                        i.errors.clear()
                    await self._send_round(again, resend, rail=rail, single=len(again) == 1)
                    self._note_inserted(again)
                    sent = again
            finally:
                # Also when a later round pauses the rail: the Tasks inserted in round one
                # are then updated by Id later, not looked up.
                await self._remember_task_ids(todo, rail=rail)
        verdicts: list[Verdict] = []
        # The outcome whose full state each shared Lead update carried (see below).
        full_of = {id(i): r.full for r in rows if r.full is not None for i in r.items}
        for item in items:
            if item.verdict is None:
                errors = list(item.errors)
                for result in (item.task_result, item.lead_result):
                    if result is not None and not result.success:
                        errors.extend(result.errors)
                item.verdict = verdict_for(item.claim, errors)
                full = full_of.get(id(item))
                if (
                    item.verdict.action is Action.DEAD
                    and full is not None
                    and full is not item.claim
                    and item.lead_result is not None
                    and not item.lead_result.success
                    and not (item.task_result is not None and item.task_result.errors)
                ):
                    # The Lead update it shared was refused for good, for values that
                    # another outcome's state put there (it carried only its sticky fields,
                    # or nothing): not its own error. Sent again at once; that other
                    # outcome is dead, so this one's state (a do-not-call with it) goes.
                    item.verdict = Verdict(
                        item.claim, Action.RETRY, "LEAD_ROW_REFUSED", _SHARED_ROW_NOTE, 0.0
                    )
                if (
                    self._mapping.upserts_tasks
                    and item.task_result is not None
                    and item.task_result.success
                ):
                    self._known.put(item.ext_key, True)
            verdicts.append(item.verdict)
        for row in rows:
            if row.full is not None and all(
                i.lead_result is not None and i.lead_result.success for i in row.items
            ):
                self._ledger.record(
                    row.lead_key,
                    SentLead(
                        (row.full.outcome.ended_at.timestamp(), row.full.record_id),
                        row.lead_id,
                        dict(row.fields),
                        row.lead_key,
                        self._ledger.tick(),
                    ),
                )
        return verdicts

    def _note_inserted(self, items: Sequence[_Item]) -> None:
        """An inserted Task's Id from its result: what a later send of it updates."""
        if self._mapping.upserts_tasks:
            return
        for i in items:
            r = i.task_result
            if i.task_id is None and r is not None and r.success and r.id:
                i.task_id = r.id

    async def _recheck_missing_tasks(self, items: Sequence[_Item], *, rail: str) -> list[_Item]:
        """Updates by Id refused as deleted or not found: is the Task gone, or the Lead in
        its WhoId? (ENTITY_IS_DELETED names no field for either.) Asked by the call's key:
        no Task found -> inserted again in full; found under another Id -> that one is
        updated; found under the same Id -> its WhoId is what is gone (left to
        :meth:`_mend_missing_leads`). Returns the items to send again now.

        Upserting Tasks, only those updated by a remembered Id (inserted before the switch)
        are asked; one not found is then upserted by its key."""
        m = self._mapping
        suspects = [
            i
            for i in items
            if i.task_id is not None
            and i.verdict is None
            and i.task_result is not None
            and (err := i.task_result.error) is not None
            and err.code in _MISSING_TASK_CODES
            and "WhoId" not in err.fields
        ]
        if not suspects:
            return []
        found, failed = await self._lookup_tasks([i.ext_key for i in suspects], rail=rail)
        if failed is not None:
            # Unknown which is gone: inserting could make a second Task; try again later.
            for i in suspects:
                i.verdict = _lookup_failed(i.claim, failed)
            return []
        again: list[_Item] = []
        for i in suspects:
            now_id = found.get(i.ext_key)
            if now_id == i.task_id:
                continue
            log.info(
                "task_deleted_reinserting" if now_id is None else "task_found_again",
                rail=rail,
                call_id=i.claim.outcome.call_id,
                task_id=i.task_id,
                found=now_id,
            )
            i.task_id = now_id
            i.task = m.task_record(
                i.claim.outcome, who_id=i.task.get("WhoId"), include_create_only=now_id is None
            )
            again.append(i)
        return again

    async def _mend_missing_leads(
        self, items: Sequence[_Item], rows: Sequence[_LeadRow], rechecked: set[int], *, rail: str
    ) -> tuple[list[_Item], list[_LeadRow]]:
        """Items whose Lead is gone: their Lead update, or their Task's WhoId, was refused as
        deleted or unknown. Either answer counts alone: the Task may have failed for another
        reason (a lock) in the same call, and the record is retried for that.

        An Id from the cache, for a Lead named by phone or external key, is looked up once
        again: the Lead may have been merged into another, which the phone or key names now,
        and the Task and the Lead update go to that one. Otherwise (named by Id, looked up
        in this send, or none found now) the lead-not-found policy applies, as in
        :meth:`_prepare`. Items in ``rechecked`` (their Task was gone, and is sent again
        anyway) are mended by their Lead update's answer only.

        Returns the items to send again now, and the Lead rows pointed at another Lead."""
        gone: list[tuple[_Item, RecordError, bool]] = []  # (item, error, WhoId refused)
        for i in items:
            if i.verdict is not None:
                continue
            who = None if id(i) in rechecked else _who_refused(i)
            lead = i.lead_result.error if i.lead_result is not None else None
            if lead is not None and lead.code not in _MISSING_LEAD_CODES:
                lead = None
            if (first := who or lead) is not None:
                gone.append((i, first, who is not None))
        if not gone:
            return [], []
        found: dict[str, str | None] = {}
        stale = [i for i, _, _ in gone if i.lead_cached]
        refs = [ref for i in stale if (ref := i.claim.outcome.lead) is not None]
        if refs:
            try:
                found = await self._resolver.refresh(refs, rail=rail)
            except (RetryableError, PermanentError) as exc:
                # Which Lead the phone or key names now is unknown: the record waits, and
                # is looked up afresh then (refresh dropped the cached Id).
                for i in stale:
                    i.verdict = Verdict(
                        i.claim,
                        Action.RETRY,
                        exc.error_code or type(exc).__name__,
                        f"Lead lookup failed: {exc.message}",
                        exc.retry_after_s if isinstance(exc, RetryableError) else None,
                    )
        row_of = {id(i): r for r in rows for i in r.items}
        again: list[_Item] = []
        moved_rows: list[_LeadRow] = []
        for i, err, refused in gone:
            if i.verdict is not None:
                continue
            ref = i.claim.outcome.lead
            now = found.get(ref.key) if ref is not None and i.lead_cached else None
            i.lead_cached = False  # one fresh lookup per refusal: a second one is final
            if ref is None or now is None or now == i.lead_id:
                self._lead_gone(i, err)
                if refused and i.verdict is None:
                    again.append(i)
                continue
            log.info(
                "lead_moved",
                rail=rail,
                call_id=i.claim.outcome.call_id,
                lead=ref.key,
                was=i.lead_id,
                now=now,
            )
            i.lead_id = now
            i.lead_result = None
            row = row_of.get(id(i))
            if row is not None and row.lead_id != now:
                row.lead_id = now
                moved_rows.append(row)
            done = i.task_result is not None and i.task_result.success
            if done:
                # Written a moment before its Lead was merged away: pointed at the survivor
                # too, by an update (which refuses create-only fields).
                self._known.put(i.ext_key, True)
                i.task = self._mapping.task_record(
                    i.claim.outcome, who_id=now, include_create_only=False
                )
            else:
                i.task["WhoId"] = now
            if id(i) not in rechecked and (refused or done):
                again.append(i)
        return again, moved_rows

    def _lead_gone(self, item: _Item, err: RecordError) -> None:
        """No Lead for this outcome after all: the lead-not-found policy. The resolver marks
        it missing, so a record retried (for its Task's own error) goes without it."""
        ref = item.claim.outcome.lead
        if ref is not None:
            self._resolver.forget(ref)
        if self._mapping.lead_not_found is LeadNotFound.DEAD_LETTER:
            item.verdict = Verdict(item.claim, Action.DEAD, LEAD_NOT_FOUND, err.message)
            return
        item.task.pop("WhoId", None)
        item.lead_id = None
        item.lead_result = None  # a Lead update failed, or would: nothing to update

    def _fix_for_resend(self, item: _Item) -> bool:
        """True when the Task failed for a reason we can fix now (create-only fields on an
        update, a key another Task carries)."""
        result = item.task_result
        if result is None or result.success or result.error is None:
            return False
        err = result.error
        m = self._mapping
        create_only = m.create_only
        if (
            m.upserts_tasks
            and err.code == "INVALID_FIELD_FOR_INSERT_UPDATE"
            and (set(err.fields) & create_only or any(f in err.message for f in create_only))
        ):
            # The Task exists: this is an update, which create-only fields may not be in.
            self._known.put(item.ext_key, True)
            for name in create_only:
                item.task.pop(name, None)
            return True
        if (
            item.task_id is not None
            and m.upserts_tasks
            and err.code == "DUPLICATE_VALUE"
            and (m.task_external_id in err.fields or m.task_external_id in err.message)
        ):
            # Filling the key into the Task inserted before the switch: another Task has
            # it already (e.g. upserted by an older version while this one was unknown).
            # That one is what upserts find from now on: it is updated by key instead.
            log.warning(
                "task_key_taken",
                call_id=item.claim.outcome.call_id,
                task_id=item.task_id,
                note="another Task already carries this call's key: it is updated, and "
                "the Task inserted before the key field existed is left as it is",
            )
            item.task_id = None
            item.task = m.task_record(
                item.claim.outcome, who_id=item.task.get("WhoId"), include_create_only=False
            )
            return True
        return False

    async def _send_round(
        self, items: list[_Item], rows: list[_LeadRow], *, rail: str, single: bool
    ) -> None:
        for wave, wave_rows in self._waves(items, rows):
            token = SENDING.set(tuple(i.ext_key for i in wave))
            try:
                await self._send_round_inner(wave, wave_rows, rail=rail, single=single)
            finally:
                SENDING.reset(token)

    def _waves(
        self, items: list[_Item], rows: list[_LeadRow]
    ) -> list[tuple[list[_Item], list[_LeadRow]]]:
        """The items split into requests sent one after the other, so that no request
        carries two Task keys that differ only in case (almost always one request).

        A key field that is not case-sensitive (Salesforce's default for a Unique text
        field) takes "vici:ABC" and "vici:abc" as one key, and one save call naming a key
        twice fails both records with DUPLICATE_VALUE "Duplicate external id specified"
        (retried, until they happen to be claimed apart). One after the other, the second
        updates the Task the first wrote, as the README says of such call ids. Keys are
        compared casefolded whatever the field: on a case-sensitive one a split only costs
        a call. Each wave carries the Lead rows of its items: a row shared by two waves goes with
        both (the same fields twice), so each item's Lead update is answered with it."""
        if not self._mapping.upserts_tasks or len(items) < 2:
            return [(items, rows)]
        waves: list[list[_Item]] = [[]]
        keys: list[set[str]] = [set()]
        for i in items:
            key = i.ext_key.casefold()
            n = 0
            while key in keys[n]:
                n += 1
                if n == len(waves):
                    waves.append([])
                    keys.append(set())
            keys[n].add(key)
            waves[n].append(i)
        if len(waves) == 1:
            return [(items, rows)]
        out: list[tuple[list[_Item], list[_LeadRow]]] = []
        for wave in waves:
            ids = {id(i) for i in wave}
            out.append((wave, [r for r in rows if any(id(i) in ids for i in r.items)]))
        return out

    async def _send_round_inner(
        self, items: list[_Item], rows: list[_LeadRow], *, rail: str, single: bool
    ) -> None:
        try:
            if single and len(rows) <= 1:
                await self._send_composite_rows(items[0], rows[0] if rows else None, rail=rail)
            else:
                await self._send_collections(items, rows, rail=rail)
        except RetryableError as exc:
            # No answer (or a retryable one) for the whole request: every record is retried.
            # Its code alone would not say so: a dropped connection has none ("TransportError")
            # and a 500 says UNKNOWN_EXCEPTION, both "permanent" for a record's own error.
            error = RecordError(exc.error_code or type(exc).__name__, exc.message)
            for i in items:
                i.errors.append(error)
                if i.verdict is None:
                    i.verdict = Verdict(
                        i.claim, Action.RETRY, error.code, error.message, exc.retry_after_s
                    )
        except PermanentError as exc:
            if len(items) > 1:
                # One bad record spoils a whole request: send each alone to find it.
                log.warning(
                    "batch_refused_splitting", rail=rail, error_code=exc.error_code, size=len(items)
                )
                for i in items:
                    own = [r for r in rows if i in r.items]
                    await self._send_round([i], own, rail=rail, single=True)
                return
            error = RecordError(exc.error_code or "REQUEST_REFUSED", exc.message)
            for i in items:
                i.errors.append(error)

    async def _send_composite_rows(self, item: _Item, row: _LeadRow | None, *, rail: str) -> None:
        m = self._mapping
        v = self._client.api_version
        body = item.task
        # A key Salesforce could read as ending in a format extension (abc.inc) is a 404
        # in the upsert's URL, which the rail would take for a missing resource and pause
        # on: it goes in a collection's body instead (see key_fits_url).
        in_body = item.task_id is None and m.upserts_tasks and not key_fits_url(item.ext_key)
        task_body: dict[str, Any]
        if item.task_id is not None:
            method, url = "PATCH", sobject_path(v, m.task_object, item.task_id)
            body = self._by_id(item)
        elif in_body:
            method, path, records = self._task_collection("tasks", [item])
            url = self._client.data_path(path)
            task_body = {
                "allOrNone": False,
                "records": collection_records(m.task_object, records),
            }
        elif m.upserts_tasks:
            method, url = "PATCH", sobject_path(v, m.task_object, m.task_external_id, item.ext_key)
        else:
            method, url = "POST", sobject_path(v, m.task_object)
        if not in_body:
            task_body = {k: json_value(val) for k, val in body.items()}
        subs: list[dict[str, Any]] = [
            {"method": method, "url": url, "referenceId": "task", "body": task_body}
        ]
        if row is not None:
            subs.append(
                {
                    "method": "PATCH",
                    "url": sobject_path(v, m.lead_object, row.lead_id),
                    "referenceId": "lead",
                    "body": {k: json_value(val) for k, val in row.fields.items()},
                    "httpHeaders": dict(AUTO_ASSIGN_OFF),
                }
            )
        if in_body:
            # Still one call: the collection is a subrequest; its answer is a list, read per
            # record (HTTP 200 says nothing about the record).
            entries = await self._client.composite_entries(subs, rail=rail)
            [item.task_result] = _nested_results(entries.get("task"), 1)
            results = parse_composite_results(
                {"compositeResponse": [e for ref, e in entries.items() if ref != "task"]}
            )
        else:
            results = await self._client.composite(subs, rail=rail)
            item.task_result = results.get("task") or ItemResult(
                False, errors=(RecordError("UNKNOWN_EXCEPTION", "no result for the Task"),)
            )
        if row is not None:
            lead_result = results.get("lead") or ItemResult(
                False, errors=(RecordError("UNKNOWN_EXCEPTION", "no result for the Lead"),)
            )
            # (a row sent again with one of its items: the others' Lead is updated as well)
            for i in row.items:
                i.lead_result = lead_result

    def _by_id(self, item: _Item) -> dict[str, Any]:
        """The fields of an update by Id; upserting Tasks, with the key field filled in (a
        Task inserted before the switch to upserts has none), for upserts to find it."""
        m = self._mapping
        if m.upserts_tasks:
            return {m.task_external_id: item.ext_key, **item.task}
        return item.task

    def _task_groups(self, items: list[_Item]) -> list[tuple[str, list[_Item]]]:
        """Tasks by how they are written: upserted by key or inserted, and updated by Id."""
        return [
            (
                "tasks" if self._mapping.upserts_tasks else "tasks_new",
                [i for i in items if i.task_id is None],
            ),
            ("tasks_upd", [i for i in items if i.task_id is not None]),
        ]

    def _task_collection(
        self, kind: str, chunk: Sequence[_Item]
    ) -> tuple[str, str, list[dict[str, Any]]]:
        """``(method, path, records)`` of one Task collection of this kind."""
        m = self._mapping
        if kind == "tasks":
            path = f"composite/sobjects/{m.task_object}/{m.task_external_id}"
            return "PATCH", path, [{m.task_external_id: i.ext_key, **i.task} for i in chunk]
        if kind == "tasks_upd":
            records = [{"Id": i.task_id, **self._by_id(i)} for i in chunk]
            return "PATCH", "composite/sobjects", records
        return "POST", "composite/sobjects", [i.task for i in chunk]

    async def _send_collections(
        self, items: list[_Item], rows: list[_LeadRow], *, rail: str
    ) -> None:
        m = self._mapping
        groups = self._task_groups(items)
        longest = max(len(rows), *(len(g) for _, g in groups))
        for start in range(0, longest, MAX_COLLECTION):
            chunks = [
                (kind, g[start : start + MAX_COLLECTION])
                for kind, g in groups
                if g[start : start + MAX_COLLECTION]
            ]
            row_chunk = rows[start : start + MAX_COLLECTION]
            lead_records = [{"Id": r.lead_id, **r.fields} for r in row_chunk]
            lead_results: list[ItemResult] = []
            if self._nested:
                subs: list[dict[str, Any]] = []
                for kind, chunk in chunks:
                    method, path, records = self._task_collection(kind, chunk)
                    subs.append(
                        {
                            "method": method,
                            "url": self._client.data_path(path),
                            "referenceId": kind,
                            "body": {
                                "allOrNone": False,
                                "records": collection_records(m.task_object, records),
                            },
                        }
                    )
                if lead_records:
                    subs.append(
                        {
                            "method": "PATCH",
                            "url": self._client.data_path("composite/sobjects"),
                            "referenceId": "leads",
                            "body": {
                                "allOrNone": False,
                                "records": collection_records(m.lead_object, lead_records),
                            },
                            "httpHeaders": dict(AUTO_ASSIGN_OFF),
                        }
                    )
                entries = await self._client.composite_entries(subs, rail=rail)
                for kind, chunk in chunks:
                    results = _nested_results(entries.get(kind), len(chunk))
                    for i, r in zip(chunk, results, strict=True):
                        i.task_result = r
                lead_results = _nested_results(entries.get("leads"), len(lead_records))
            else:
                for kind, chunk in chunks:
                    method, path, records = self._task_collection(kind, chunk)
                    # Each answer is kept as it comes: an insert whose Id is known must not
                    # be inserted again if a later call of this chunk fails.
                    results = await self._client.collection(
                        method, path, m.task_object, records, rail=rail
                    )
                    for i, r in zip(chunk, results, strict=True):
                        i.task_result = r
                if lead_records:
                    lead_results = await self._client.update_collection(
                        m.lead_object, lead_records, rail=rail, headers=AUTO_ASSIGN_OFF
                    )
            for row, r in zip(row_chunk, lead_results, strict=True):
                for i in row.items:
                    i.lead_result = r


def _claim_order(claim: Claim) -> tuple[datetime, int]:
    return (claim.outcome.ended_at, claim.record_id)


def _who_refused(item: _Item) -> RecordError | None:
    """The Task's error when it refused its WhoId as no Lead (deleted, unknown, not a Lead).
    ENTITY_IS_DELETED names no field: on an update by Id, it may mean a deleted Task, which
    ``_recheck_missing_tasks`` rules out first."""
    result = item.task_result
    err = result.error if result is not None and not result.success else None
    if (
        err is not None
        and "WhoId" in item.task
        and err.code in _MISSING_LEAD_CODES | {"FIELD_INTEGRITY_EXCEPTION"}
        and ("WhoId" in err.fields or "WhoId" in err.message or not err.fields)
    ):
        return err
    return None


def _lookup_failed(claim: Claim, exc: RetryableError) -> Verdict:
    """A record whose Task lookup failed: whether its Task exists is unknown, and an insert
    could make a second one; it is retried later."""
    return Verdict(
        claim,
        Action.RETRY,
        exc.error_code or type(exc).__name__,
        f"Task lookup failed: {exc.message}",
        exc.retry_after_s,
    )


def _nested_results(entry: dict[str, Any] | None, expected: int) -> list[ItemResult]:
    """A collections subresponse inside a composite -> per-record results."""
    if expected == 0:
        return []
    if entry is None:
        return parse_collection_results(None, expected)
    status = entry.get("httpStatusCode")
    body = entry.get("body")
    if isinstance(status, int) and 200 <= status < 300:
        return parse_collection_results(body, expected)
    errors = parse_error_body(body) or (RecordError("UNKNOWN_EXCEPTION", f"HTTP {status}"),)
    if isinstance(status, int) and status >= 500:
        errors = (RecordError("SERVER_UNAVAILABLE", errors[0].message),)
    return [ItemResult(False, errors=errors) for _ in range(expected)]


async def apply_verdicts(
    spool: Spool,
    verdicts: Sequence[Verdict],
    *,
    backoff: Backoff,
    rail: str,
    acks: Sequence[Ref] = (),
) -> dict[Action, int]:
    """Record every verdict in the spool (shielded: a cancel cannot strand a row in flight).

    ``acks``: records that succeeded, given without a Verdict each (the Bulk hot path).
    """
    counts: dict[Action, int] = defaultdict(int)
    if acks:
        counts[Action.ACK] = len(acks)
    acks_out: list[RecordRef] = [a.pair for a in acks]
    release: list[RecordRef] = []
    retry: dict[tuple[float, str | None, str | None], list[RecordRef]] = defaultdict(list)
    dead: dict[tuple[str | None, str | None], list[RecordRef]] = defaultdict(list)
    for v in verdicts:
        counts[v.action] += 1
        ref: RecordRef = v.claim if isinstance(v.claim, Claim) else v.claim.pair
        if v.action is Action.ACK:
            acks_out.append(ref)
        elif v.action is Action.RELEASE:
            release.append(ref)
        elif v.action is Action.DEAD:
            dead[(v.code, (v.message or "")[:1000])].append(ref)
            call_id = v.claim.outcome.call_id if isinstance(v.claim, Claim) else v.claim.call_id
            log.warning(
                "record_dead",
                rail=rail,
                call_id=call_id,
                error_code=v.code,
                reason=(v.message or "")[:300],
            )
        else:
            delay = (
                v.retry_after_s if v.retry_after_s is not None else backoff.delay(v.claim.attempt)
            )
            retry[(round(delay, 3), v.code, (v.message or "")[:1000])].append(ref)

    async def record() -> None:
        if acks_out:
            await spool.ack(acks_out)
        if release:
            await spool.release(release)
        for (delay, code, message), claims in retry.items():
            await spool.retry_later(claims, delay_s=delay, error_code=code, message=message)
        for (code, message), claims in dead.items():
            await spool.dead(claims, error_code=code or "UNKNOWN", message=message or "")

    await asyncio.shield(record())
    return dict(counts)
