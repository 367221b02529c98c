"""Lead references -> Lead Ids (REST rails), with caches; the ledger of Lead states sent.

- ``LeadRef.id`` is used as is.
- ``LeadRef.external_key`` is looked up by the mapping's external id field, in
  batches (one SOQL query per up to 100 keys), and cached.
- ``LeadRef.phone`` is looked up by the mapping's phone field, exact match
  (Salesforce stores phones as free text; normalise them in the org or use an
  external key when formats differ), and cached. Several Leads sharing a phone
  resolve to the oldest (by Id), deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import quote_plus

from daemon.mapping import Mapping
from daemon.salesforce import SalesforceClient
from spool.record import LeadRef

__all__ = [
    "QUERY_BATCH",
    "KeyLocks",
    "LeadLedger",
    "LeadResolver",
    "LruCache",
    "SentLead",
    "id_key",
    "newer",
    "soql_chunks",
    "soql_literal",
]

K = TypeVar("K")
V = TypeVar("V")

QUERY_BATCH = 100
#: URL-encoded bytes of IN-list literals per lookup query: with the rest of the URI far
#: under the 16,384 bytes a GET may carry (longer is refused with 414, reference §2.8).
QUERY_IN_BYTES = 12_000


class LruCache(Generic[K, V]):
    """A small bounded LRU map (memory must not grow with the backlog)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def discard(self, key: K) -> None:
        self._data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


def id_key(lead_id: str) -> str:
    """The lead key of a Lead by its Id (as ``LeadRef.key`` names one by Id): the key
    every naming of that Lead (Id, external key, phone) meets under once its Id is known."""
    return "id:" + lead_id[:15]


def soql_literal(value: str) -> str:
    """A SOQL string literal (quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def soql_chunks(values: Sequence[str]) -> Iterator[list[str]]:
    """``values`` in chunks for ``WHERE field IN (...)`` lookups: at most
    :data:`QUERY_BATCH` each, and short enough once URL-encoded for a GET (long keys,
    non-ASCII ones especially, would otherwise pass the URI limit)."""
    chunk: list[str] = []
    size = 0
    for value in values:
        cost = len(quote_plus(soql_literal(value))) + 3  # ", " between literals
        if chunk and (len(chunk) >= QUERY_BATCH or size + cost > QUERY_IN_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(value)
        size += cost
    if chunk:
        yield chunk


class LeadResolver:
    """Resolve LeadRefs to Lead Ids for the REST rails (cached, batched lookups)."""

    def __init__(
        self,
        client: SalesforceClient,
        mapping: Mapping,
        *,
        cache_size: int = 100_000,
        missing_ttl_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._mapping = mapping
        self._cache: LruCache[str, str] = LruCache(cache_size)
        # Leads known not to exist (lead key -> when we learned it), re-checked after a while.
        self._missing: LruCache[str, float] = LruCache(cache_size)
        self.missing_ttl_s = missing_ttl_s
        self._clock = clock
        self.lookups = 0

    def is_missing(self, ref: LeadRef) -> bool:
        """True while a Lead is known not to exist (for ``missing_ttl_s``)."""
        return self.is_missing_key(ref.key)

    def is_missing_key(self, key: str | None) -> bool:
        if key is None or not len(self._missing):
            return False
        seen = self._missing.get(key)
        if seen is None:
            return False
        if self._clock() - seen >= self.missing_ttl_s:
            self._missing.discard(key)
            return False
        return True

    def mark_missing(self, ref: LeadRef) -> None:
        self.mark_missing_key(ref.key)

    def drop_cached_key(self, key: str) -> bool:
        """Forget the Id cached for this lead key (it turned out gone: the Lead may have
        been merged into another, which a new lookup finds); True if there was one."""
        if key not in self._cache:
            return False
        self._cache.discard(key)
        return True

    def mark_missing_key(self, key: str) -> None:
        self._cache.discard(key)
        self._missing.put(key, self._clock())

    def cached_key(self, key: str) -> str | None:
        """The Lead Id known for this lead key without a lookup (an Id naming is its own;
        else the cache), or None."""
        if key.startswith("id:"):
            return key[3:]
        if self.is_missing_key(key):
            return None
        return self._cache.get(key)

    def remember(self, key: str, lead_id: str) -> None:
        """A Lead Id learnt otherwise for this lead key (a Bulk upsert by external key
        answers with the Id it matched)."""
        if not key.startswith("id:"):
            self._cache.put(key, lead_id)

    def cached(self, ref: LeadRef) -> str | None:
        if self.is_missing(ref):
            return None
        if ref.id is not None:
            return ref.id
        return self._cache.get(ref.key)

    def forget(self, ref: LeadRef) -> None:
        """No Lead for this ref after all (its Id is gone, and no lookup finds another):
        missing for a while."""
        self.mark_missing(ref)

    async def refresh(self, refs: Sequence[LeadRef], *, rail: str) -> dict[str, str | None]:
        """Look these refs up again, past the cache: the Id cached for them turned out gone
        (a deleted Lead, or one merged into another, which the phone or key names now).
        A ref by Id is answered with its Id, as by :meth:`resolve`: nothing to look up."""
        for ref in refs:
            self.drop_cached_key(ref.key)
        return await self.resolve(refs, rail=rail)

    async def resolve(self, refs: Iterable[LeadRef], *, rail: str) -> dict[str, str | None]:
        """lead key -> Lead Id, or None when no Lead matches."""
        out: dict[str, str | None] = {}
        by_ext: dict[str, str] = {}
        by_phone: dict[str, str] = {}
        for ref in refs:
            if self.is_missing(ref):
                out[ref.key] = None
                continue
            hit = self.cached(ref)
            if hit is not None:
                out[ref.key] = hit
            elif ref.external_key is not None:
                by_ext[ref.external_key] = ref.key
            elif ref.phone is not None:
                by_phone[ref.phone] = ref.key
        await self._lookup(self._mapping.lead_external_id, by_ext, out, rail=rail)
        await self._lookup(self._mapping.lead_phone_field, by_phone, out, rail=rail)
        return out

    async def _lookup(
        self, field: str, wanted: dict[str, str], out: dict[str, str | None], *, rail: str
    ) -> None:
        values = list(wanted)
        obj = self._mapping.lead_object
        for chunk in soql_chunks(values):
            soql = (
                f"SELECT Id, {field} FROM {obj} WHERE {field} IN "
                f"({', '.join(soql_literal(v) for v in chunk)}) ORDER BY Id"
            )
            self.lookups += 1
            records: list[dict[str, Any]] = await self._client.query(soql, rail=rail)
            # SOQL '=' / IN on text is case-insensitive (and external ids are unique without
            # regard to case), as Bulk relationship columns match: fold case on both sides.
            found: dict[str, str] = {}
            for record in records:
                value = record.get(field)
                if isinstance(value, str):
                    found.setdefault(value.lower(), str(record["Id"]))
            for value in chunk:
                key = wanted[value]
                lead_id = found.get(value.lower())
                out[key] = lead_id
                if lead_id is not None:
                    self._cache.put(key, lead_id)
                else:
                    self._missing.put(key, self._clock())


class SentLead(NamedTuple):
    """The full Lead state one outcome wrote (for newest-wins across rails). A tuple:
    the Bulk rail keeps one per Lead of every batch (cheap to build)."""

    order: tuple[float, int]  # (ended_at, record_id), as the spool orders outcomes per Lead
    lead_id: str
    fields: dict[str, Any]
    lead_key: str = ""  # how that outcome named the Lead (LeadRef.key); "": by lead_id
    stamp: int = 0  # LeadLedger.tick() when a REST write recorded it (0: a Bulk job)


def newer(a: SentLead | None, b: SentLead | None) -> SentLead | None:
    """The newer of two sent states (either may be None)."""
    if a is None:
        return b
    if b is None or a.order >= b.order:
        return a
    return b


class LeadLedger:
    """The newest full Lead state this process wrote per Lead, bounded.

    A bulk job that finishes late compares its rows with this ledger: a Lead whose
    newer state went out by REST while the job ran gets that state re-sent.

    A state is kept under the lead key of the outcome that wrote it and under the
    Lead's Id key (:func:`id_key`), so that outcomes naming one Lead in different ways
    (Id, external key, phone) are compared with each other once the Lead's Id is known.
    """

    def __init__(self, maxsize: int = 200_000) -> None:
        self._data: LruCache[str, SentLead] = LruCache(maxsize)
        self.stamp = 0  # the last stamp handed out (see tick)

    def tick(self) -> int:
        """A new stamp for a state being recorded: a Bulk batch that notes ``stamp`` when
        it starts knows which REST writes went out while its jobs ran."""
        self.stamp += 1
        return self.stamp

    def record(self, lead_key: str, sent: SentLead) -> None:
        self._keep(lead_key, sent)
        key = "id:" + sent.lead_id[:15]  # (id_key, inline: the Bulk hot path)
        if key != lead_key:
            self._keep(key, sent)

    def _keep(self, key: str, sent: SentLead) -> None:
        current = self._data.get(key)
        if current is None or sent.order >= current.order:
            self._data.put(key, sent)

    def get(self, lead_key: str) -> SentLead | None:
        return self._data.get(lead_key)

    def newest(self, lead_key: str, lead_id: str | None) -> SentLead | None:
        """The newest state sent for this lead key or, when known, the Lead's Id."""
        sent = self._data.get(lead_key)
        if lead_id is None or lead_key.startswith("id:"):
            # (named by Id: that is the Lead's Id key)
            return sent
        return newer(sent, self._data.get("id:" + lead_id[:15]))


class KeyLocks:
    """Per-Lead locks: REST writes for one Lead never overlap, so none lands out of order.

    Locks are taken in sorted order (no deadlock between batches) and forgotten
    when nobody holds or waits for them (memory stays bounded).
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        wanted = sorted(set(keys))
        registered: list[str] = []
        acquired: list[asyncio.Lock] = []
        try:
            for key in wanted:
                lock, users = self._locks.get(key, (None, 0))
                if lock is None:
                    lock = asyncio.Lock()
                self._locks[key] = (lock, users + 1)
                registered.append(key)
                await lock.acquire()
                acquired.append(lock)
            yield
        finally:
            for lock in acquired:
                lock.release()
            for key in registered:
                lock, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def busy(self, keys: Iterable[str]) -> list[str]:
        """Those of ``keys`` whose lock is held or waited for now."""
        locks = self._locks
        return [k for k in keys if k in locks]

    def __len__(self) -> int:
        return len(self._locks)
