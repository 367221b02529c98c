"""The in-memory record store and the validation every write path shares.

REST, composite, sObject Collections and Bulk 2.0 all write through :class:`RecordStore`, so a
record is validated the same way whichever API carried it. Each failed write raises
:class:`~sfsim.errors.SfError` with the documented code (reference §2.8):

- unknown field ``INVALID_FIELD``; read-only field ``INVALID_FIELD_FOR_INSERT_UPDATE`` (also a
  create-only field on update, and ``Id`` on insert);
- missing required field ``REQUIRED_FIELD_MISSING``; over-long text ``STRING_TOO_LONG``;
- unknown value of a restricted picklist ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``;
- a JSON value of the wrong type ``JSON_PARSER_ERROR``; a CSV value of the wrong type
  ``INVALID_TYPE_ON_FIELD_IN_RECORD`` (bulk);
- an id that is not an id ``MALFORMED_ID``; an id of the wrong object ``FIELD_INTEGRITY_EXCEPTION``;
  an id of a record that does not exist ``INVALID_CROSS_REFERENCE_KEY``; an id of a deleted
  record (in the recycle bin) ``ENTITY_IS_DELETED`` naming no field, as for an update of the
  deleted record itself: the answer does not say which of the two is gone;
- a duplicate on a unique field ``DUPLICATE_VALUE``; a simulated lock ``UNABLE_TO_LOCK_ROW``;
- a bad email ``INVALID_EMAIL_ADDRESS``; too many digits ``NUMBER_OUTSIDE_VALID_RANGE``;
- an update of a converted Lead ``CANNOT_UPDATE_CONVERTED_LEAD``; a broken validation rule of
  the org (``sfsim.rules``) ``FIELD_CUSTOM_VALIDATION_EXCEPTION``;
- an update or delete of a record in ``read_only_ids`` (the integration user may read it but not
  edit it: a private sharing model, another owner's record) ``INSUFFICIENT_ACCESS_OR_READONLY``.

Values are stored JSON-ready: datetimes as ``2026-01-02T03:04:05.000+0000`` (UTC), dates as
``YYYY-MM-DD``, ids as 18 characters. A record holds only the fields that were set; readers get
every field of the schema (unset ones as None).

Concurrency: the store is not thread-safe. Call it from the event loop thread only (bulk processes
in chunks and yields between them). ``transaction()`` gives all-or-none rollback for composite and
collections.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

from sfsim.errors import SfError, not_found
from sfsim.ids import IdGenerator, normalize_id
from sfsim.rules import ValidationRule
from sfsim.schema import CLOSED_TASK_STATUSES, STRING_TYPES, FieldDef, Schema, SObjectDef

__all__ = [
    "NULL_MARKER",
    "Column",
    "Holders",
    "LockHook",
    "RecordStore",
    "format_datetime",
    "holder_ids",
    "parse_datetime",
]

#: A bulk CSV cell with this value sets the field to null; an empty cell is ignored (§4.9).
NULL_MARKER: Final = "#N/A"

#: Called before each write with (sobject, record id or None); True simulates a row lock.
LockHook = Callable[[str, str | None], bool]
#: Sets the fields a real org computes on a row about to be saved (given the old row on update).
Deriver = Callable[[dict[str, Any], Mapping[str, Any] | None], None]

_EMAIL_RE: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMERIC_TYPES: Final = frozenset({"double", "currency", "percent"})
_TRUE: Final = frozenset({"true", "1", "yes", "y"})
_FALSE: Final = frozenset({"false", "0", "no", "n"})
_SYSTEM_DATES: Final = ("CreatedDate", "LastModifiedDate", "SystemModstamp")
#: Field types never indexed on demand (not filterable in SOQL, or values too large).
_UNINDEXABLE: Final = frozenset(
    {"textarea", "base64", "multipicklist", "encryptedstring", "address", "location", "anyType"}
)


def format_datetime(value: datetime) -> str:
    """Salesforce's datetime form: UTC, milliseconds, ``+0000`` (no colon)."""
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:"
        f"{v.second:02d}.{v.microsecond // 1000:03d}+0000"
    )


def parse_datetime(text: str) -> datetime | None:
    """Parse an ISO-8601 datetime (``Z``, ``+HH:MM``, ``+HHMM`` or naive = UTC), else None."""
    if len(text) < 16 or text[10] not in "Tt ":
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Column:
    """A bulk CSV header column resolved against the schema.

    ``field`` is the field written. For a relationship column (``Lead:Who.Dialer_Lead_Id__c``,
    ``Owner.Username``) ``target`` and ``target_field`` name the parent object and its indexed
    field, and the cell is an external key resolved to an id with ``resolve_reference``.
    """

    header: str
    field: FieldDef
    target: str | None = None
    target_field: FieldDef | None = None


class _Table:
    __slots__ = ("deleted", "indexes", "obj", "rows", "unique")

    def __init__(self, obj: SObjectDef) -> None:
        self.obj = obj
        self.rows: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        # index name -> key -> holders (see Holders); ``unique`` names the indexes that must stay
        # unique.
        self.indexes: dict[str, dict[Any, Holders]] = {}
        self.unique: set[str] = set()
        for f in obj.fields.values():
            if f.name != "Id" and (f.unique or f.external_id or f.id_lookup):
                self.indexes[f.name] = {}
                if f.unique:
                    self.unique.add(f.name)


def _index_key(f: FieldDef, value: Any) -> Any:
    if isinstance(value, str) and not f.case_sensitive:
        low = value.lower()
        # A value already in lower case is its own key: the index shares the row's string.
        return value if low == value else low
    return value


#: What an index holds for one key: the id of the one record with that key (a ``str``, the usual
#: case, and the only one on unique fields), or a set of two or more ids. A set per key per
#: record was most of the store's memory and of the cyclic GC's work on a large org (sets are
#: GC-tracked containers; rows of plain values and bare strings are not).
Holders = str | set[str]


def holder_ids(holders: Holders | None) -> list[str]:
    """The ids an index entry holds, sorted."""
    if holders is None:
        return []
    if isinstance(holders, str):
        return [holders]
    return sorted(holders)


def _add_holder(index: dict[Any, Holders], key: Any, rid: str) -> None:
    held = index.get(key)
    if held is None:
        index[key] = rid
    elif isinstance(held, str):
        if held != rid:
            index[key] = {held, rid}
    else:
        held.add(rid)


def _remove_holder(index: dict[Any, Holders], key: Any, rid: str) -> None:
    held = index.get(key)
    if held is None:
        return
    if isinstance(held, str):
        if held == rid:
            del index[key]
        return
    held.discard(rid)
    if len(held) == 1:
        index[key] = next(iter(held))
    elif not held:
        del index[key]


class RecordStore:
    """All records of the org, with schema validation on every write."""

    def __init__(
        self,
        schema: Schema,
        *,
        ids: IdGenerator | None = None,
        clock: Callable[[], datetime] = _utcnow,
        lock_hook: LockHook | None = None,
    ) -> None:
        self.schema = schema
        self.ids = ids or IdGenerator()
        self.clock = clock
        self.lock_hook = lock_hook
        #: Called with the object name before an upsert creates; True simulates losing a race.
        self.race_hook: Callable[[str], bool] | None = None
        #: The org's validation rules per object (``sfsim.rules``); seeding ignores them.
        self.validation_rules: dict[str, list[ValidationRule]] = {}
        #: Ids (18 characters) of records the integration user can read but not edit or
        #: delete (sharing): every write path refuses them with INSUFFICIENT_ACCESS_OR_READONLY.
        #: Set through ``POST /__sim/read_only_records``; not saved with ``--state-dir``.
        self.read_only_ids: set[str] = set()
        self._seeding = False
        #: The running (integration) user: owner and creator of what the API writes.
        self.user_id: str = ""
        self._tables: dict[str, _Table] = {name: _Table(o) for name, o in schema.objects.items()}
        self._journal: list[tuple[str, str, dict[str, Any] | None, bool]] | None = None
        self._frozen_stamp: str | None = None
        self._derivers: dict[str, tuple[SObjectDef, Deriver]] = {}
        self._required: dict[str, tuple[FieldDef, ...]] = {
            name: tuple(f for f in o.fields.values() if f.required_on_create)
            for name, o in schema.objects.items()
        }

    # ---------------------------------------------------------------- lookups

    def sobject(self, name: str) -> SObjectDef:
        """The object named ``name``; 404 NOT_FOUND when the org has no such object."""
        obj = self.schema.get(name)
        if obj is None:
            raise not_found()
        return obj

    def get(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        """A copy of the record with every field (None for unset), or None when absent."""
        table = self._tables[self.sobject(sobject).name]
        rid = normalize_id(record_id)
        row = table.rows.get(rid) if rid else None
        if row is None:
            return None
        return {name: row.get(name) for name in table.obj.fields}

    def raw(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        """The stored row itself (only set fields), for fast read-only access. Do not mutate."""
        return self._tables[self.sobject(sobject).name].rows.get(record_id)

    def is_deleted(self, sobject: str, record_id: str) -> bool:
        """True when the record existed and was deleted."""
        rid = normalize_id(record_id)
        return rid is not None and rid in self._tables[self.sobject(sobject).name].deleted

    def find(self, sobject: str, field_name: str, value: Any) -> list[str]:
        """Ids of the records whose ``field_name`` equals ``value`` (indexed fields are fast)."""
        obj = self.sobject(sobject)
        f = obj.field(field_name)
        if f is None:
            raise SfError(
                400, "INVALID_FIELD", f"No such column '{field_name}' on entity '{obj.name}'"
            )
        table = self._tables[obj.name]
        if f.name == "Id":
            rid = normalize_id(str(value))
            return [rid] if rid is not None and rid in table.rows else []
        index = table.indexes.get(f.name)
        if index is None and value is not None and f.type not in _UNINDEXABLE:
            index = self._build_index(table, f)
        if index is not None and value is not None:
            return holder_ids(index.get(_index_key(f, value)))
        key = _index_key(f, value)
        return [rid for rid, row in table.rows.items() if _index_key(f, row.get(f.name)) == key]

    def upsert_key(self, sobject: str, field_name: str, value: Any) -> Any:
        """The key an upsert by ``field_name`` matches ``value`` by: the value as the field
        stores it, in lower case unless the field is case-sensitive (the unique index's key,
        so ``"ABC"`` and ``"abc"`` are one key on a field that is not). Raises the write's
        error for a value of the wrong type."""
        obj = self.sobject(sobject)
        f = obj.field(field_name)
        if f is None:
            raise SfError(
                400, "INVALID_FIELD", f"No such column '{field_name}' on entity '{obj.name}'"
            )
        return _index_key(f, self._coerce_json(f, value))

    def _build_index(self, table: _Table, f: FieldDef) -> dict[Any, Holders]:
        """Index ``f`` on first lookup (a Lead by Phone, say) and keep it up to date from then on.

        Lookups stay O(1) however many records there are; the index costs memory in proportion
        to the records, like the rest of the store.
        """
        index: dict[Any, Holders] = {}
        for rid, row in table.rows.items():
            value = row.get(f.name)
            if value is not None:
                _add_holder(index, _index_key(f, value), rid)
        table.indexes[f.name] = index
        return index

    def records(self, sobject: str) -> list[dict[str, Any]]:
        """Every record of ``sobject`` with every field, in creation order."""
        table = self._tables[self.sobject(sobject).name]
        names = list(table.obj.fields)
        return [{n: row.get(n) for n in names} for row in table.rows.values()]

    def iter_rows(self, sobject: str) -> Iterator[dict[str, Any]]:
        """The stored rows of ``sobject`` (read-only views; only set fields)."""
        return iter(self._tables[self.sobject(sobject).name].rows.values())

    def counts(self) -> dict[str, int]:
        """Number of stored records per object."""
        return {name: len(t.rows) for name, t in self._tables.items()}

    # ---------------------------------------------------------------- writes

    def insert(self, sobject: str, fields: Mapping[str, Any], *, seed: bool = False) -> str:
        """Create a record and return its 18-character id.

        ``seed=True`` (the control API) also allows read-only fields and skips the required-field
        check, so tests can build any state; types, lengths, picklists and uniqueness still apply.
        """
        obj = self.sobject(sobject)
        self._check_lock(obj.name, None)
        values = self._validate(obj, fields, creating=True, seed=seed)
        table = self._tables[obj.name]
        if "Id" in values and seed:
            rid = values["Id"]
            if rid in table.rows or rid in table.deleted:
                raise SfError(
                    400,
                    "DUPLICATE_VALUE",
                    f"duplicate value found: Id duplicates value on record with id: {rid}",
                )
        else:
            rid = self.ids.new(obj.key_prefix)
        now = self._stamp()
        row: dict[str, Any] = {"Id": rid}
        fields_def = obj.fields
        for name in _SYSTEM_DATES:
            if name in fields_def:
                row[name] = now
        if "IsDeleted" in fields_def:
            row["IsDeleted"] = False
        if self.user_id:
            for name in ("CreatedById", "LastModifiedById", "OwnerId"):
                if name in fields_def:
                    row[name] = self.user_id
        for f in fields_def.values():
            if f.defaulted_on_create and f.name not in row:
                if f.default_picklist_value is not None:
                    row[f.name] = f.default_picklist_value
                elif f.type == "boolean":
                    default = f.default_value
                    row[f.name] = default if isinstance(default, bool) else False
        row.update(values)
        if not seed:
            missing = [f.name for f in self._required[obj.name] if row.get(f.name) is None]
            if missing:
                raise SfError(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
        self._seeding = seed
        try:
            self._derive(obj, row, None)
        finally:
            self._seeding = False
        self._check_unique(table, row, rid)
        self._put(table, rid, row)
        return str(rid)

    def update(self, sobject: str, record_id: str, fields: Mapping[str, Any]) -> None:
        """Update the record ``record_id``; fields left out are unchanged, None clears."""
        obj = self.sobject(sobject)
        table = self._tables[obj.name]
        rid = self._existing_id(obj, table, record_id)
        self._check_lock(obj.name, rid)
        values = self._validate(obj, fields, creating=False)
        body_id = values.pop("Id", None)
        if body_id is not None and body_id != rid:
            raise SfError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "Unable to create/update fields: Id. Please check the security settings "
                "of this field and verify that it is read/write for your profile or "
                "permission set.",
                ["Id"],
            )
        old = table.rows[rid]
        row = dict(old)
        row.update(values)
        for f in self._required[obj.name]:
            if f.name in values and values[f.name] is None:
                raise SfError(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{f.name}]",
                    [f.name],
                )
        now = self._stamp()
        for name in ("LastModifiedDate", "SystemModstamp"):
            if name in obj.fields:
                row[name] = now
        if self.user_id and "LastModifiedById" in obj.fields:
            row["LastModifiedById"] = self.user_id
        self._derive(obj, row, old)
        self._check_unique(table, row, rid)
        self._put(table, rid, row)

    def upsert(
        self,
        sobject: str,
        ext_field: str,
        ext_value: Any,
        fields: Mapping[str, Any],
        *,
        update_only: bool = False,
    ) -> tuple[str, bool]:
        """Insert or update by an External ID / idLookup field; returns ``(id, created)``.

        Raises 404 NOT_FOUND for a field that is not an upsert key, and 300 MULTIPLE_CHOICES (with
        ``.matches``) when several records match (§2.6). A body value of the key field that
        differs from ``ext_value`` is refused ([U] the docs say leave it out; we take the stricter
        reading for a conflicting value and accept an equal one, which bulk and collections send).
        """
        obj = self.sobject(sobject)
        f = obj.field(ext_field)
        if f is None or not (f.is_upsert_key or f.name == "Id"):
            raise not_found(
                f"Provided external ID field does not exist or is not accessible: {ext_field}"
            )
        body = dict(fields)
        for key in [k for k in body if k.lower() == f.name.lower()]:
            given = body.pop(key)
            if given is not None and _index_key(f, self._coerce_json(f, given)) != _index_key(
                f, self._coerce_json(f, ext_value)
            ):
                raise SfError(
                    400,
                    "INVALID_FIELD",
                    f"{f.label}: the value in the body ({given}) does not match the "
                    f"external ID in the URL ({ext_value})",
                    [f.name],
                )
        if f.name == "Id":
            self.update(obj.name, str(ext_value), body)
            rid = normalize_id(str(ext_value))
            assert rid is not None
            return rid, False
        if ext_value is None or ext_value == "":
            raise SfError(400, "MISSING_ARGUMENT", f"{f.name} not specified", [f.name])
        key_value = self._coerce_json(f, ext_value)
        matches = self.find(obj.name, f.name, key_value)
        if len(matches) > 1:
            err = SfError(
                300,
                "MULTIPLE_CHOICES",
                f"More than one record found for external id field {f.name}: {ext_value}",
            )
            err.matches = matches  # type: ignore[attr-defined]
            raise err
        if matches:
            self.update(obj.name, matches[0], body)
            return matches[0], False
        if update_only:
            raise not_found()
        body[f.name] = key_value
        race = self.race_hook
        if race is not None and race(obj.name):
            # A concurrent request created the same key first (§7.6): its record stays whatever
            # happens to this request's transaction, so it is written outside the journal.
            journal, self._journal = self._journal, None
            try:
                winner = self.insert(obj.name, body)
            finally:
                self._journal = journal
            raise SfError(
                400,
                "DUPLICATE_VALUE",
                f"duplicate value found: {f.name} duplicates value on record with id: {winner}",
                [],
            )
        return self.insert(obj.name, body), True

    def assign_owner(self, sobject: str, record_id: str, owner_id: str) -> None:
        """Set OwnerId the way an assignment rule does: no validation, no lock, journaled."""
        table = self._tables[self.sobject(sobject).name]
        old = table.rows.get(record_id)
        if old is None or "OwnerId" not in table.obj.fields or old.get("OwnerId") == owner_id:
            return
        self._put(table, record_id, {**old, "OwnerId": owner_id})

    def delete(self, sobject: str, record_id: str) -> None:
        """Delete a record; deleting again gives ENTITY_IS_DELETED (404 [U])."""
        obj = self.sobject(sobject)
        table = self._tables[obj.name]
        rid = self._existing_id(obj, table, record_id)
        self._check_lock(obj.name, rid, deleting=True)
        old = table.rows.pop(rid)
        self._unindex(table, rid, old)
        table.deleted.add(rid)
        if self._journal is not None:
            self._journal.append((obj.name, rid, old, False))

    # ---------------------------------------------------------------- transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-none: any exception inside rolls every write of the block back.

        Nests: an inner block rolls back only its own writes.
        """
        outer = self._journal is None
        if outer:
            self._journal = []
        assert self._journal is not None
        mark = len(self._journal)
        try:
            yield
        except BaseException:
            self.rollback_to(mark)
            raise
        finally:
            if outer:
                self._journal = None

    def savepoint(self) -> int:
        """A mark to roll back to inside ``transaction()``."""
        if self._journal is None:
            raise RuntimeError("savepoint() outside transaction()")
        return len(self._journal)

    def rollback_to(self, mark: int) -> None:
        """Undo every write made since ``mark`` (inside ``transaction()``)."""
        journal = self._journal
        if journal is None:
            raise RuntimeError("rollback_to() outside transaction()")
        while len(journal) > mark:
            name, rid, old, _ = journal.pop()
            table = self._tables[name]
            current = table.rows.pop(rid, None)
            if current is not None:
                self._unindex(table, rid, current)
            if old is not None:
                table.rows[rid] = old
                self._index(table, rid, old)
                table.deleted.discard(rid)

    # ---------------------------------------------------------------- bulk helpers

    @contextmanager
    def frozen_clock(self) -> Iterator[None]:
        """Stamp every write of the block with one time (a bulk chunk saves as one transaction).

        Formatting a timestamp costs more than the rest of a row's save; bulk saves 200 rows at
        a time under one stamp.
        """
        self._frozen_stamp = format_datetime(self.clock())
        try:
            yield
        finally:
            self._frozen_stamp = None

    def _stamp(self) -> str:
        return self._frozen_stamp or format_datetime(self.clock())

    def resolve_column(self, sobject: str, header: str) -> Column:
        """Resolve a bulk CSV header cell to the field it writes.

        Plain fields (case-insensitive), and relationship columns ``Rel.Field`` /
        ``Type:Rel.Field`` (§4.9): the parent field must be an External ID or idLookup field, the
        ``Type:`` prefix is required on polymorphic fields and an error elsewhere. Raises SfError
        INVALID_FIELD naming the column; bulk turns that into a failed job.
        """
        obj = self.sobject(sobject)
        if "." not in header:
            f = obj.field(header)
            if f is None:
                raise SfError(400, "INVALID_FIELD", f"Field name not found : {header}", [header])
            return Column(header, f)
        rel_part, target_name = header.split(".", 1)
        type_prefix: str | None = None
        if ":" in rel_part:
            type_prefix, rel_part = rel_part.split(":", 1)
        f = obj.relationship(rel_part)
        if f is None or "." in target_name:
            raise SfError(400, "INVALID_FIELD", f"Field name not found : {header}", [header])
        if f.polymorphic and type_prefix is None:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"Polymorphic field {f.name} needs an object type prefix: "
                f"Lead:{rel_part}.{target_name}",
                [header],
            )
        if not f.polymorphic and type_prefix is not None:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"Field name not found : {header} (type prefix on a non-polymorphic field)",
                [header],
            )
        target = type_prefix if type_prefix is not None else f.reference_to[0]
        target_obj = self.schema.get(target)
        if target_obj is None or target_obj.name not in f.reference_to:
            raise SfError(400, "INVALID_FIELD", f"Field name not found : {header}", [header])
        tf = target_obj.field(target_name)
        if tf is None or not (tf.is_upsert_key or tf.name == "Id"):
            raise SfError(
                400,
                "INVALID_FIELD",
                f"Field name not found : {header} (the parent field must be an "
                "External ID or idLookup field)",
                [header],
            )
        return Column(header, f, target_obj.name, tf)

    def resolve_reference(
        self, target: str, target_field: str, value: str, *, field_name: str = ""
    ) -> str:
        """The id of the ``target`` record whose ``target_field`` equals ``value``.

        Raises INVALID_FIELD ``Foreign key external ID: ... not found`` when none or several match.
        """
        matches = self.find(target, target_field, value)
        if len(matches) == 1:
            return matches[0]
        what = "not found" if not matches else "matched more than one record"
        raise SfError(
            400,
            "INVALID_FIELD",
            f"Foreign key external ID: {value} {what} for field {target_field} in entity {target}",
            [field_name] if field_name else [],
        )

    def csv_row_to_fields(
        self, columns: Sequence[Column], cells: Sequence[str], *, creating: bool
    ) -> dict[str, Any]:
        """Turn one bulk CSV row into typed field values for insert/update/upsert.

        Empty cells are left out (ignored on update, unset on insert); ``#N/A`` becomes None
        (clears the field); relationship cells are resolved to ids. Raises SfError per row.
        ``creating`` is unused by the conversion itself but documents the call site.
        """
        out: dict[str, Any] = {}
        for col, cell in zip(columns, cells, strict=True):
            if cell == "":
                continue
            f = col.field
            if cell == NULL_MARKER:
                out[f.name] = None
                continue
            if col.target is not None and col.target_field is not None:
                if col.target_field.name == "Id":
                    out[f.name] = cell
                else:
                    out[f.name] = self.resolve_reference(
                        col.target, col.target_field.name, cell, field_name=f.name
                    )
                continue
            out[f.name] = _coerce_text(f, cell)
        return out

    # ---------------------------------------------------------------- persistence

    def dump(self) -> dict[str, Any]:
        """JSON-ready state: rows and tombstones per object, and the id counter."""
        return {
            "objects": {name: list(t.rows.values()) for name, t in self._tables.items()},
            "deleted": {name: sorted(t.deleted) for name, t in self._tables.items() if t.deleted},
            "user_id": self.user_id,
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Replace the contents with a ``dump()``; rows of objects not in the schema are dropped."""
        self.reset()
        high = 0
        for name, rows in (state.get("objects") or {}).items():
            table = self._tables.get(name)
            if table is None:
                continue
            for row in rows:
                rid = row["Id"]
                table.rows[rid] = row
                self._index(table, rid, row)
                high = max(high, IdGenerator.sequence_of(rid))
        for name, ids in (state.get("deleted") or {}).items():
            if name in self._tables:
                self._tables[name].deleted.update(ids)
                for rid in ids:
                    high = max(high, IdGenerator.sequence_of(rid))
        self.user_id = str(state.get("user_id") or self.user_id)
        if high:
            self.ids.advance_past(high)

    def reset(self) -> None:
        """Forget every record."""
        self._tables = {name: _Table(o) for name, o in self.schema.objects.items()}
        self._journal = None
        self.read_only_ids.clear()

    # ---------------------------------------------------------------- internals

    def _existing_id(self, obj: SObjectDef, table: _Table, record_id: str) -> str:
        rid = normalize_id(record_id)
        if rid is None or (rid[:3] != obj.key_prefix):
            raise SfError(
                400,
                "MALFORMED_ID",
                f"{obj.label} ID: id value of incorrect type: {record_id}",
                ["Id"],
            )
        if rid in table.rows:
            return rid
        if rid in table.deleted:
            raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        raise not_found()

    def _check_lock(self, sobject: str, rid: str | None, *, deleting: bool = False) -> None:
        """Whether this row may be written now: simulated locks, converted Leads and records the
        user may not edit.

        Every write path (REST, composite, collections, both bulk save paths) calls this before
        writing a row, which is why the converted-Lead and sharing rules live here.
        """
        if rid is not None and rid in self.read_only_ids:
            # Record-level sharing: readable, not editable by this user. The message is a real
            # org's; [U] HTTP status: 400 like every record-level DML error (§2.8).
            raise SfError(
                400,
                "INSUFFICIENT_ACCESS_OR_READONLY",
                "insufficient access rights on object id",
                [],
            )
        if rid is not None and not deleting and sobject == "Lead":
            row = self._tables[sobject].rows.get(rid)
            if row is not None and row.get("IsConverted"):
                # A converted Lead is read-only to an integration user without "View and Edit
                # Converted Leads" (§6.2); real orgs answer this (simple-salesforce#341).
                raise SfError(
                    400, "CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", []
                )
        hook = self.lock_hook
        if hook is not None and hook(sobject, rid):
            # [U] HTTP status: 400 like every record-level DML error (§2.8).
            raise SfError(
                400,
                "UNABLE_TO_LOCK_ROW",
                "unable to obtain exclusive access to this record or 1 records: "
                f"{rid or ''}".rstrip(": ").rstrip(),
                [],
            )

    def _validate(
        self, obj: SObjectDef, fields: Mapping[str, Any], *, creating: bool, seed: bool = False
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        readonly: list[str] = []
        for key, value in fields.items():
            if key == "attributes":
                continue
            f = obj.field(key)
            if f is None:
                rel = obj.relationship(key)
                if rel is not None and isinstance(value, Mapping):
                    out[rel.name] = self._resolve_nested(obj, rel, value)
                    continue
                raise SfError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{key}' on sobject of type {obj.name}",
                    [],
                )
            if f.name == "Id":
                if creating and not seed:
                    raise SfError(
                        400,
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        "cannot specify Id in an insert call",
                        ["Id"],
                    )
                if value is None:
                    continue
                rid = normalize_id(str(value))
                if rid is None or rid[:3] != obj.key_prefix:
                    raise SfError(
                        400,
                        "MALFORMED_ID",
                        f"{obj.label} ID: id value of incorrect type: {value}",
                        ["Id"],
                    )
                out["Id"] = rid
                continue
            if not seed and not (f.createable if creating else f.updateable):
                readonly.append(f.name)
                continue
            out[f.name] = None if value is None else self._coerce_json(f, value)
        if readonly:
            raise SfError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(readonly)}. Please check the "
                "security settings of this field and verify that it is read/write for your "
                "profile or permission set.",
                readonly,
            )
        for name, value in out.items():
            if value is not None and name != "Id":
                f = obj.fields[name]
                if f.type == "reference":
                    self._check_reference(f, value)
        return out

    def _resolve_nested(self, obj: SObjectDef, rel: FieldDef, value: Mapping[str, Any]) -> str:
        """``{"Who": {"attributes": {"type": "Lead"}, "Dialer_Lead_Id__c": "x"}}`` -> WhoId."""
        attrs = value.get("attributes")
        target = attrs.get("type") if isinstance(attrs, Mapping) else None
        if target is None:
            if rel.polymorphic:
                # [U] REST form for polymorphic external-id references (§2.6): stricter reading,
                # the object type must be named in attributes.
                raise SfError(
                    400,
                    "INVALID_FIELD",
                    f"{rel.relationship_name}: a polymorphic relationship needs attributes.type",
                    [rel.name],
                )
            target = rel.reference_to[0]
        target_obj = self.schema.get(str(target))
        if target_obj is None or target_obj.name not in rel.reference_to:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"{rel.relationship_name}: cannot reference {target}",
                [rel.name],
            )
        keys = [k for k in value if k != "attributes"]
        if len(keys) != 1:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"{rel.relationship_name}: exactly one external ID field is required",
                [rel.name],
            )
        tf = target_obj.field(keys[0])
        if tf is None or not (tf.is_upsert_key or tf.name == "Id"):
            raise SfError(
                400,
                "INVALID_FIELD",
                f"{keys[0]} is not an External ID or indexed field for {target_obj.name}",
                [rel.name],
            )
        if tf.name == "Id":
            return str(value[keys[0]])
        return self.resolve_reference(target_obj.name, tf.name, value[keys[0]], field_name=rel.name)

    def _check_reference(self, f: FieldDef, value: str) -> None:
        rid = value
        target = self.schema.by_prefix(rid[:3])
        if target is None or target.name not in f.reference_to:
            raise SfError(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                f"{f.label}: id value of incorrect type: {value}",
                [f.name],
            )
        table = self._tables[target.name]
        if rid not in table.rows:
            if rid in table.deleted:
                raise SfError(400, "ENTITY_IS_DELETED", "entity is deleted", [])
            raise SfError(
                400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [f.name]
            )

    def _coerce_json(self, f: FieldDef, value: Any) -> Any:
        """A JSON value for field ``f``, normalized; JSON_PARSER_ERROR on a wrong type."""
        t = f.type
        if t in STRING_TYPES:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise _json_type_error(f, value)
            text = value if isinstance(value, str) else _num_text(value)
            return _check_text(f, text)
        if t == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise _json_type_error(f, value)
        if t == "reference" or t == "id":
            if not isinstance(value, str):
                raise _json_type_error(f, value)
            if value == "":
                return None
            rid = normalize_id(value)
            if rid is None:
                raise SfError(
                    400, "MALFORMED_ID", f"{f.label}: id value of incorrect type: {value}", [f.name]
                )
            return rid
        if t == "int":
            if isinstance(value, bool):
                raise _json_type_error(f, value)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, str):
                try:
                    value = int(value)
                except ValueError:
                    raise _json_type_error(f, value) from None
            if not isinstance(value, int):
                raise _json_type_error(f, value)
            if f.digits and len(str(abs(value))) > f.digits:
                raise SfError(
                    400,
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    f"{f.label}: value outside of valid range on numeric field: {value}",
                    [f.name],
                )
            return value
        if t in _NUMERIC_TYPES:
            if isinstance(value, bool):
                raise _json_type_error(f, value)
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise _json_type_error(f, value) from None
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _json_type_error(f, value)
            return value
        if t == "date":
            if isinstance(value, str) and _DATE_RE.match(value):
                try:
                    return date.fromisoformat(value).isoformat()
                except ValueError:
                    pass
            raise _json_type_error(f, value)
        if t == "datetime":
            if isinstance(value, str):
                parsed = parse_datetime(value)
                if parsed is not None:
                    return format_datetime(parsed)
            raise _json_type_error(f, value)
        return value

    def _check_unique(self, table: _Table, row: Mapping[str, Any], rid: str) -> None:
        for name in table.unique:
            value = row.get(name)
            if value is None:
                continue
            f = table.obj.fields[name]
            holders = table.indexes[name].get(_index_key(f, value))
            if holders is not None:
                if isinstance(holders, str):
                    other = holders if holders != rid else None
                else:
                    other = next((h for h in sorted(holders) if h != rid), None)
                if other is not None:
                    raise SfError(
                        400,
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {name} duplicates value on record with "
                        f"id: {other}",
                        [],
                    )

    def _put(self, table: _Table, rid: str, row: dict[str, Any]) -> None:
        old = table.rows.get(rid)
        if old is not None:
            self._unindex(table, rid, old)
        table.rows[rid] = row
        self._index(table, rid, row)
        if self._journal is not None:
            self._journal.append((table.obj.name, rid, old, True))

    def _index(self, table: _Table, rid: str, row: Mapping[str, Any]) -> None:
        for name, index in table.indexes.items():
            value = row.get(name)
            if value is not None:
                _add_holder(index, _index_key(table.obj.fields[name], value), rid)

    def _unindex(self, table: _Table, rid: str, row: Mapping[str, Any]) -> None:
        for name, index in table.indexes.items():
            value = row.get(name)
            if value is None:
                continue
            _remove_holder(index, _index_key(table.obj.fields[name], value), rid)

    def _derive(self, obj: SObjectDef, row: dict[str, Any], old: Mapping[str, Any] | None) -> None:
        """Fields a real org computes: Name, and Task IsClosed / CompletedDateTime / priority."""
        self.deriver(obj)(row, old)

    def deriver(self, obj: SObjectDef) -> Deriver:
        """``_derive`` for one object, with the schema questions answered once (every save asks)."""
        cached = self._derivers.get(obj.name)
        if cached is not None and cached[0] is obj:
            return cached[1]
        fields = obj.fields
        name_f = fields.get("Name")
        full_name = name_f is not None and not name_f.createable and "LastName" in fields
        closed_from_status = "IsClosed" in fields and "Status" in fields
        completed = closed_from_status and "CompletedDateTime" in fields
        priority = "IsHighPriority" in fields and "Priority" in fields
        account = (
            "AccountId" in fields and not fields["AccountId"].createable and "WhatId" in fields
        )
        name = obj.name

        def derive(row: dict[str, Any], old: Mapping[str, Any] | None) -> None:
            if full_name:
                parts = [row.get("FirstName"), row.get("LastName")]
                row["Name"] = " ".join(p for p in parts if p) or None
            if closed_from_status:
                closed = row.get("Status") in CLOSED_TASK_STATUSES
                row["IsClosed"] = closed
                if completed:
                    if closed and not (old and old.get("IsClosed")):
                        row["CompletedDateTime"] = self._stamp()
                    elif not closed:
                        row["CompletedDateTime"] = None
            if priority:
                row["IsHighPriority"] = row.get("Priority") == "High"
            if account:
                what = row.get("WhatId")
                row["AccountId"] = (
                    what if isinstance(what, str) and what.startswith("001") else None
                )
            # The org's validation rules run on the record as saved (every write path derives).
            # Looked up per save: the control API replaces the whole mapping.
            rules = self.validation_rules.get(name)
            if rules and not self._seeding:
                for rule in rules:
                    if rule.violated_by(row):
                        raise rule.error()

        self._derivers[name] = (obj, derive)
        return derive


def _num_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _json_type_error(f: FieldDef, value: Any) -> SfError:
    kind = {
        str: "VALUE_STRING",
        bool: "VALUE_TRUE" if value is True else "VALUE_FALSE",
        int: "VALUE_NUMBER_INT",
        float: "VALUE_NUMBER_FLOAT",
        dict: "START_OBJECT",
        list: "START_ARRAY",
    }.get(type(value), "VALUE_STRING")
    return SfError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {f.type} from {kind} value {value} or request "
        f"may be missing a required field",
        [f.name],
    )


def _check_text(f: FieldDef, text: str) -> str:
    """Length, restricted picklist and email format for a string-typed field."""
    if f.length and len(text) > f.length:
        raise SfError(
            400,
            "STRING_TOO_LONG",
            f"{f.label}: data value too large: {text} (max length={f.length})",
            [f.name],
        )
    if f.restricted_picklist:
        values = text.split(";") if f.type == "multipicklist" else [text]
        for v in values:
            if v not in f.picklist_values:
                raise SfError(
                    400,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{f.label}: bad value for restricted picklist field: {v}",
                    [f.name],
                )
    if f.type == "email" and text and not _EMAIL_RE.match(text):
        raise SfError(
            400, "INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {text}", [f.name]
        )
    return text


def _coerce_text(f: FieldDef, cell: str) -> Any:
    """A bulk CSV cell for field ``f``; INVALID_TYPE_ON_FIELD_IN_RECORD on a wrong type."""
    t = f.type
    if t in STRING_TYPES:
        return _check_text(f, cell)
    if t == "boolean":
        low = cell.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    elif t in ("reference", "id"):
        rid = normalize_id(cell)
        if rid is not None:
            return rid
        raise SfError(
            400, "MALFORMED_ID", f"{f.label}: id value of incorrect type: {cell}", [f.name]
        )
    elif t == "int":
        try:
            return int(cell)
        except ValueError:
            try:
                as_float = float(cell)
            except ValueError:
                as_float = math.nan
            if math.isfinite(as_float) and as_float.is_integer():
                return int(as_float)
    elif t in _NUMERIC_TYPES:
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return value
    elif t == "date":
        if _DATE_RE.match(cell):
            try:
                return date.fromisoformat(cell).isoformat()
            except ValueError:
                pass
    elif t == "datetime":
        parsed = parse_datetime(cell)
        if parsed is not None:
            return format_datetime(parsed)
    else:
        return cell
    raise SfError(
        400,
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        f"{f.label}: value not of required type: {cell}",
        [f.name],
    )
