"""Column-at-a-time saving of insert, upsert and update chunks: the store's rules, fewer steps.

:meth:`RecordStore.insert` / :meth:`RecordStore.upsert` / :meth:`RecordStore.update` do per row
what only needs doing once per column or once per distinct cell value: look fields up, check the
field is writable, coerce and check each value (`_coerce_text` then `_coerce_json`, the store's
own functions), resolve a relationship key. This module hoists that work out of the row loop
(memoising each column's converted cells, resolving each distinct reference once per chunk) and
then builds and stores each row as the store does: its lock check (`_check_lock`, skipped while
no lock fault can fire, no record is read-only and the object is not Lead), its derived fields
(`RecordStore.deriver`, the same function `_derive` runs), its uniqueness rule (`_check_unique`
words any violation) and its index upkeep (`_put`, unrolled per chunk: an index entry changes
only when the value does).
Ids for a chunk's creates are minted in one block (`IdGenerator.new_block`); a row that then
fails leaves a gap in the sequence, as ids on a real org have.

Anything unusual goes back to the row-by-row store path, which then produces the exact error:
a cell that fails to convert, a required field left empty, several records matching one key, an
update naming a record in any form other than its stored id (15 characters, other case, deleted,
unknown, malformed). ``tests/sfsim/test_bulk_fast.py`` runs the same files through both paths and
compares the results, the ids and the stored records, and checks the indexes against scans.

The store is not thread-safe; this runs on the event loop inside ``store.frozen_clock()``.

Keeping the two paths equal: this mirrors ``RecordStore.insert`` / ``update`` / ``upsert`` step for
step (lock hook, template row, derived fields, uniqueness, the race hook via the row path). A
change to those methods needs the same change here; ``test_bulk_fast.py`` compares both paths on
random files and fails when they drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from sfsim.bulk_jobs import RowOutcomes
from sfsim.errors import SfError
from sfsim.ids import normalize_id
from sfsim.schema import STRING_TYPES, FieldDef, SObjectDef
from sfsim.store import (
    NULL_MARKER,
    Column,
    Holders,
    RecordStore,
    _add_holder,
    _coerce_text,
    _remove_holder,
)

__all__ = ["FastSaver", "Unsaved"]

#: A row ``save`` did not save: its position in ``rows`` and a final :class:`SfError`, or None
#: for "redo on the row path".
Unsaved = tuple[int, SfError | None]

_SKIP: Final = object()  # an empty cell: the field is left out
_MEMO_LIMIT: Final = 50_000  # distinct cells remembered per column (bounded memory)


class _Fail:
    """A cell the store would refuse; the row goes back to the row-by-row path."""

    __slots__ = ()


_FAIL: Final = _Fail()


class _Memo(dict[str, Any]):
    """Converted cells of one column; a miss converts through the store's own coercion."""

    __slots__ = ("convert", "failed", "skipped")

    def __init__(self, convert: Callable[[str], Any]) -> None:
        super().__init__()
        self.convert = convert
        self.failed = False
        self.skipped = False

    def __missing__(self, cell: str) -> Any:
        value = self.convert(cell)
        if value is _FAIL:
            self.failed = True
        elif value is _SKIP:
            self.skipped = True
        if len(self) >= _MEMO_LIMIT:
            self.clear()
        self[cell] = value
        return value


class FastSaver:
    """Saves insert/upsert chunks for one job; build with :meth:`for_job` (None = not eligible)."""

    def __init__(
        self,
        store: RecordStore,
        obj: SObjectDef,
        columns: Sequence[Column],
        key_index: int | None,
        race_possible: Callable[[], bool] = lambda: False,
        locks_possible: Callable[[], bool] = lambda: True,
        *,
        by_id: bool = False,
    ) -> None:
        self.store = store
        # An update job: ``key_index`` is the Id column, every row updates the record it names.
        self.by_id = by_id
        self._race_possible = race_possible
        self._locks_possible = locks_possible
        self.obj = obj
        self.table = store._tables[obj.name]
        self.key_index = key_index
        self.key_field: FieldDef | None = (
            columns[key_index].field if key_index is not None else None
        )
        self.value_indexes = [i for i in range(len(columns)) if i != key_index]
        self.names = [columns[i].field.name for i in self.value_indexes]
        fields = [columns[i].field for i in self.value_indexes]
        # Static parts of store._validate: a column the operation cannot write sends its rows
        # down the row path (which reports INVALID_FIELD_FOR_INSERT_UPDATE).
        key_fields = [self.key_field] if self.key_field is not None else []
        self.can_create = not by_id and all(f.createable for f in fields + key_fields)
        self.can_update = all(f.updateable for f in fields)
        required = store._required[obj.name]
        self.required_names = {f.name for f in required}
        self._static = [self._static_memo(columns[i]) for i in self.value_indexes]
        self._resolvers = [
            self._resolver(columns[i])
            if columns[i].field.type == "reference" or columns[i].target is not None
            else None
            for i in self.value_indexes
        ]
        self._key_memo = (
            self._static_memo(columns[key_index]) if key_index is not None and not by_id else None
        )
        # A plain text key (no picklist, no email format): a cell converts to itself when it is
        # neither empty nor #N/A and fits the length (store._check_text), so a whole column of
        # such cells needs no per-cell conversion.
        self._plain_key_length: int | None = None
        if self.key_field is not None and not by_id:
            kf = self.key_field
            if kf.type in STRING_TYPES and kf.type != "email" and not kf.restricted_picklist:
                self._plain_key_length = kf.length or None
                self._plain_key = True
            else:
                self._plain_key = False
        else:
            self._plain_key = False
        self._template = self._insert_template()

    @classmethod
    def for_job(
        cls,
        store: RecordStore,
        object_name: str,
        operation: str,
        columns: Sequence[Column],
        key_index: int | None,
        key_field: str | None,
        race_possible: Callable[[], bool] = lambda: False,
        locks_possible: Callable[[], bool] = lambda: True,
        id_index: int | None = None,
    ) -> FastSaver | None:
        """A saver when the job can take the fast path: insert, upsert on a non-Id key, update."""
        obj = store.schema.get(object_name)
        if obj is None:
            return None
        if operation == "update":
            # The row path's update: the Id column names the record, the others are written.
            if id_index is None:
                return None
            return cls(store, obj, columns, id_index, race_possible, locks_possible, by_id=True)
        if operation not in ("insert", "upsert"):
            return None
        if any(c.field.name == "Id" and c.target is None for c in columns):
            return None  # an Id column: insert refuses it, upsert by Id updates by id
        if operation == "upsert" and (key_index is None or key_field is None or key_field == "Id"):
            return None
        return cls(
            store,
            obj,
            columns,
            key_index if operation == "upsert" else None,
            race_possible,
            locks_possible,
        )

    # ------------------------------------------------------------------ conversion

    def _static_memo(self, column: Column) -> _Memo:
        """Cell -> value, for what does not depend on which records exist (pure, kept)."""
        store = self.store
        f = column.field
        target_field = column.target_field
        relation_by_key = (
            column.target is not None and target_field is not None and target_field.name != "Id"
        )

        def convert(cell: str) -> Any:
            if cell == "":
                return _SKIP
            if cell == NULL_MARKER:
                return None
            if relation_by_key:
                return cell  # resolved per chunk (_resolve)
            try:
                if column.target is not None:
                    # Type:Rel.Id: csv_row_to_fields passes the cell as is to _validate.
                    return store._coerce_json(f, cell)
                # What csv_row_to_fields then _validate do to a plain cell.
                return store._coerce_json(f, _coerce_text(f, cell))
            except SfError:
                return _FAIL

        return _Memo(convert)

    def _resolver(self, column: Column) -> Callable[[dict[Any, Any]], None]:
        """Fills a chunk's ``{value: checked reference}`` (it depends on the records present)."""
        store = self.store
        f = column.field
        target = column.target
        target_field = column.target_field
        if target is not None and target_field is not None and target_field.name != "Id":
            index = store._tables[target].indexes[target_field.name]
            fold = not target_field.case_sensitive

            def resolve_keys(mapping: dict[Any, Any]) -> None:
                # store.resolve_reference: exactly one record with that key, through the index.
                get = index.get
                for value in mapping:
                    if value is None or value is _SKIP or value is _FAIL:
                        mapping[value] = value
                        continue
                    holders = get(value.lower() if fold and isinstance(value, str) else value)
                    # One holder is a bare id (already canonical, a valid reference by type); a
                    # set holds several.
                    mapping[value] = holders if isinstance(holders, str) else _FAIL

            return resolve_keys

        def check(mapping: dict[Any, Any]) -> None:
            # store._validate: a non-null reference must name an existing record of a
            # referenced type (_check_reference).
            for value in mapping:
                if value is None or value is _SKIP or value is _FAIL:
                    mapping[value] = value
                    continue
                try:
                    store._check_reference(f, value)
                except SfError:
                    mapping[value] = _FAIL
                else:
                    mapping[value] = value

        return check

    def _insert_template(self) -> dict[str, Any]:
        """The row ``store.insert`` starts from, minus Id and timestamps (set per chunk)."""
        store = self.store
        fields = self.obj.fields
        row: dict[str, Any] = {"Id": None}
        for name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
            if name in fields:
                row[name] = None
        if "IsDeleted" in fields:
            row["IsDeleted"] = False
        if store.user_id:
            for name in ("CreatedById", "LastModifiedById", "OwnerId"):
                if name in fields:
                    row[name] = store.user_id
        for f in fields.values():
            if f.defaulted_on_create and f.name not in row:
                if f.default_picklist_value is not None:
                    row[f.name] = f.default_picklist_value
                elif f.type == "boolean":
                    default = f.default_value
                    row[f.name] = default if isinstance(default, bool) else False
        return row

    # ------------------------------------------------------------------ saving

    def _keys(self, cells: Sequence[str]) -> list[Any]:
        """The key column converted (the memo's values: _SKIP / _FAIL / None / the key)."""
        if self._plain_key and cells and NULL_MARKER not in cells and "" not in cells:
            limit = self._plain_key_length
            if limit is None or max(map(len, cells)) <= limit:
                return list(cells)
        key_memo = self._key_memo
        assert key_memo is not None
        return list(map(key_memo.__getitem__, cells))

    def save(
        self, rows: Sequence[Sequence[str]], positions: Sequence[int], outcomes: RowOutcomes
    ) -> list[Unsaved]:
        """Save ``rows`` (all well-formed CSV rows); ``rows[i]`` is row ``positions[i]`` of the
        job, still unprocessed in ``outcomes``. Each saved row is recorded there (created or
        updated, and its id); the others are returned, in order.

        Must run inside ``store.frozen_clock()``.
        """
        store = self.store
        count = len(rows)
        by_column = list(zip(*rows, strict=True)) if rows else []
        converted: list[list[Any]] = []
        failed_rows: set[int] = set()
        skipped = False
        for position, index in enumerate(self.value_indexes):
            memo = self._static[position]
            values = list(map(memo.__getitem__, by_column[index]))
            failed = memo.failed
            resolver = self._resolvers[position]
            if resolver is not None:
                mapping = dict.fromkeys(values)
                resolver(mapping)
                values = list(map(mapping.__getitem__, values))
                failed = failed or any(v is _FAIL for v in mapping.values())
            if failed:
                failed_rows.update(i for i, v in enumerate(values) if v is _FAIL)
            skipped = skipped or memo.skipped
            converted.append(values)
        keys: list[Any] = []
        by_id = self.by_id
        if by_id:
            assert self.key_index is not None
            keys = list(by_column[self.key_index])
        elif self.key_index is not None and self._key_memo is not None:
            keys = self._keys(by_column[self.key_index])
            key_memo = self._key_memo
            if key_memo.failed or key_memo.skipped:
                # A bad or empty key: the row path reports it (MISSING_ARGUMENT, too long, ...).
                failed_rows.update(i for i, v in enumerate(keys) if v is _FAIL or v is _SKIP)
        names = self.names
        now = store._stamp()
        template = dict(self._template)
        for name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
            if name in template:
                template[name] = now
        # Hoisted out of the row loop: what store.insert / store.update look up per row.
        obj = self.obj
        obj_name, prefix, table, fields = obj.name, obj.key_prefix, self.table, obj.fields
        check_lock, new_id = store._check_lock, store.ids.new
        derive = store.deriver(obj)
        rows_by_id = table.rows
        user_id = store.user_id
        touched = [n for n in ("LastModifiedDate", "SystemModstamp") if n in fields]
        stamp_user = bool(user_id) and "LastModifiedById" in fields
        # store._check_unique and store._put, unrolled over this chunk's indexes (an index built
        # on demand between chunks is picked up here). Inside a transaction (a journal to keep)
        # rows go through store._put itself.
        indexes = [
            (name, holders_of, not fields[name].case_sensitive)
            for name, holders_of in table.indexes.items()
        ]
        uniques = [entry for entry in indexes if entry[0] in table.unique]
        journaled = store._journal is not None
        put = store._put
        # Required fields the insert template leaves empty, and required columns an update may
        # clear with #N/A (store.insert / store.update raise REQUIRED_FIELD_MISSING for those).
        need_on_insert = [n for n in self.required_names if template.get(n) is None]
        required_at = [p for p, n in enumerate(names) if n in self.required_names]
        key_field = self.key_field
        key_name = key_field.name if key_field is not None else ""
        index_keys: list[Any] = []
        key_index: dict[Any, Holders] = {}
        if key_field is not None and not by_id:
            key_index = table.indexes[key_field.name]
            if key_field.case_sensitive:
                index_keys = keys
            else:
                # store._index_key: a key already in lower case is shared with the row.
                index_keys = [
                    (k if (low := k.lower()) == k else low) if type(k) is str else k for k in keys
                ]
        can_create, can_update = self.can_create, self.can_update
        # Ids for the rows that look like creates, minted in one go (a row that then fails leaves
        # its id unused: ids have gaps, as on a real org).
        creates = 0
        if can_create:
            if key_field is not None:  # (never by_id: no creating there)
                creates = list(map(key_index.get, index_keys)).count(None)
            else:
                creates = count - len(failed_rows)
        fresh_ids = iter(store.ids.new_block(prefix, creates))
        # store.upsert consults its race hook before creating; while that fault is set, creating
        # upserts take the row path so the hook is asked exactly as it would be there.
        racing = key_field is not None and not by_id and self._race_possible()
        # store._check_lock asks the lock hook (a fault) and refuses converted Leads and records
        # the user may not edit; with no lock fault and no such record, only Leads need it.
        locking = obj_name == "Lead" or bool(store.read_only_ids) or self._locks_possible()
        status, ids = outcomes.status, outcomes.ids
        created_code, updated_code = RowOutcomes.CREATED, RowOutcomes.UPDATED
        errors: dict[int, SfError] = {}
        rows_values = zip(*converted, strict=True) if converted else iter([()] * count)
        for i, row_values in enumerate(rows_values):
            if i in failed_rows:
                continue
            given: Any
            if skipped:
                given = [(n, v) for n, v in zip(names, row_values, strict=True) if v is not _SKIP]
            else:
                given = zip(names, row_values, strict=True)
            old = None
            rid = None
            if by_id:
                # store.update's _existing_id, for the ids it accepts: a canonical id present
                # is itself; anything else (15 characters, other case, malformed, deleted, of
                # another object, unknown, empty) is looked at by the row path.
                cell = keys[i]
                rid = cell if cell in rows_by_id else normalize_id(cell)
                old = rows_by_id.get(rid) if rid is not None else None
                if old is None:
                    continue
            elif key_field is not None:
                holders = key_index.get(index_keys[i])
                if holders is not None:
                    if not isinstance(holders, str):
                        continue  # several matches: the row path raises MULTIPLE_CHOICES
                    rid = holders
                    old = rows_by_id[rid]
                elif racing:
                    continue
            try:
                if old is None:
                    if not can_create:
                        continue  # the row path words the error
                    row = dict(template)
                    row.update(given)
                    if key_field is not None:
                        row[key_name] = keys[i]
                    if need_on_insert and None in map(row.get, need_on_insert):
                        continue
                    if locking:
                        check_lock(obj_name, None)
                    rid = next(fresh_ids, None) or new_id(prefix)
                    row["Id"] = rid
                    created = True
                else:
                    if not can_update or (
                        required_at and None in map(row_values.__getitem__, required_at)
                    ):
                        continue
                    assert rid is not None
                    if locking:
                        check_lock(obj_name, rid)
                    row = dict(old)
                    row.update(given)
                    for name in touched:
                        row[name] = now
                    if stamp_user:
                        row["LastModifiedById"] = user_id
                    created = False
                derive(row, old)
                for name, holders_of, fold in uniques:  # store._check_unique
                    value = row.get(name)
                    if value is None or (old is None and name == key_name):
                        continue  # (a created row's key has no holder: looked up above)
                    holders = holders_of.get(
                        value.lower() if fold and isinstance(value, str) else value
                    )
                    if holders is not None and holders != rid:
                        store._check_unique(table, row, rid)  # raises, worded by the store
            except SfError as exc:
                errors[i] = exc
                continue
            if journaled:
                put(table, rid, row)
            else:  # store._put
                rows_by_id[rid] = row
                for name, holders_of, fold in indexes:
                    value = row.get(name)
                    if old is not None:
                        previous = old.get(name)
                        if value == previous and type(value) is type(previous):
                            continue  # the same key: the index already holds this record
                        # store._index_key, inline.
                        if previous is not None:
                            if fold and isinstance(previous, str):
                                previous = previous.lower()
                            _remove_holder(holders_of, previous, rid)
                    if value is not None:
                        if old is None and name == key_name:
                            key = index_keys[i]  # folded already
                        else:
                            key = value
                            if fold and isinstance(value, str):
                                low = value.lower()
                                key = value if low == value else low  # (store._index_key)
                        if key in holders_of:
                            _add_holder(holders_of, key, rid)
                        else:
                            holders_of[key] = rid
            # RowOutcomes.succeed, inline.
            position = positions[i]
            ids[position] = rid
            status[position] = created_code if created else updated_code
        return [(i, errors.get(i)) for i in range(count) if not status[positions[i]]]
