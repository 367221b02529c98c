"""A small SOQL subset: enough to look records up by id, phone or external key (reference §2).

Grammar: ``SELECT field[, field...] | COUNT() FROM Object [WHERE cond [AND cond...]]
[ORDER BY field [ASC|DESC]] [LIMIT n] [OFFSET n]``, where ``cond`` is ``field op value``
(``= != <> < <= > >= LIKE``) or ``field [NOT] IN (value, ...)``; values are 'quoted strings',
numbers, true/false, null, dates and datetimes. String comparison is case-insensitive, as in SOQL.
Anything else is MALFORMED_QUERY; unknown objects INVALID_TYPE; unknown fields INVALID_FIELD.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from sfsim.errors import SfError
from sfsim.ids import normalize_id
from sfsim.schema import FieldDef, SObjectDef
from sfsim.store import RecordStore, format_datetime, parse_datetime

__all__ = ["Query", "parse_query", "run_query"]

_TOKEN_RE: Final = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op><>|!=|<=|>=|=|<|>)|(?P<punct>[(),])"
    r"|(?P<word>[A-Za-z0-9_.:+\-]+))"
)
_ESCAPES: Final = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
    "_": "\\_",
    "%": "\\%",
}
_INVALID_FIELD_TAIL: Final = (
    ". If you are attempting to use a custom field, be sure to append the '__c' after the custom "
    "field name. Please reference your WSDL or the describe call for the appropriate names."
)


@dataclass(slots=True)
class _Cond:
    field: FieldDef
    op: str
    values: list[Any]


@dataclass(slots=True)
class Query:
    """A parsed query."""

    obj: SObjectDef
    fields: list[FieldDef]
    count_only: bool = False
    where: list[_Cond] = field(default_factory=list)
    order_by: FieldDef | None = None
    descending: bool = False
    limit: int | None = None
    offset: int = 0


def _malformed(message: str) -> SfError:
    return SfError(400, "MALFORMED_QUERY", message)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise _malformed(f"unexpected token: '{text[pos : pos + 20].split()[0]}'")
        kind = m.lastgroup or "word"
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _unquote(token: str) -> str:
    body = token[1:-1]
    out = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise _malformed(
                    f"Invalid string literal '{body}'. Illegal character sequence "
                    f"'\\{nxt}' in string literal."
                )
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


class _Parser:
    def __init__(self, text: str, store: RecordStore) -> None:
        self.toks = _tokens(text)
        self.pos = 0
        self.store = store

    def peek(self) -> str | None:
        return self.toks[self.pos][1] if self.pos < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.toks):
            raise _malformed("unexpected end of query")
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.upper() == word:
            self.pos += 1
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.keyword(word):
            got = self.peek()
            raise _malformed(
                f"unexpected token: '{got}'" if got else f"unexpected end of query, expected {word}"
            )

    def parse(self) -> Query:
        self.expect("SELECT")
        names: list[str] = []
        count_only = False
        if (
            (self.peek() or "").upper() == "COUNT"
            and self.pos + 2 < len(self.toks)
            and self.toks[self.pos + 1][1] == "("
            and self.toks[self.pos + 2][1] == ")"
        ):
            self.pos += 3
            count_only = True
        else:
            while True:
                kind, tok = self.take()
                if kind != "word" or tok.upper() == "FROM":
                    raise _malformed(f"unexpected token: '{tok}'")
                names.append(tok)
                if self.peek() != ",":
                    break
                self.pos += 1
        self.expect("FROM")
        kind, obj_name = self.take()
        obj = self.store.schema.get(obj_name) if kind == "word" else None
        if obj is None:
            raise SfError(
                400,
                "INVALID_TYPE",
                f"sObject type '{obj_name}' is not supported. If you are attempting to "
                "use a custom object, be sure to append the '__c' after the entity "
                "name. Please reference your WSDL or the describe call for the "
                "appropriate names.",
            )
        fields = [self._field(obj, n) for n in names]
        q = Query(obj=obj, fields=fields, count_only=count_only)
        if self.keyword("WHERE"):
            q.where.append(self._cond(obj))
            while self.keyword("AND"):
                q.where.append(self._cond(obj))
            if (self.peek() or "").upper() == "OR":
                raise _malformed("unexpected token: 'OR' (this org emulator supports AND only)")
        if self.keyword("ORDER"):
            self.expect("BY")
            q.order_by = self._field(obj, self.take()[1])
            if self.keyword("DESC"):
                q.descending = True
            else:
                self.keyword("ASC")
        if self.keyword("LIMIT"):
            q.limit = self._int()
        if self.keyword("OFFSET"):
            q.offset = self._int()
        if self.pos != len(self.toks):
            raise _malformed(f"unexpected token: '{self.peek()}'")
        return q

    def _int(self) -> int:
        _, tok = self.take()
        if not tok.isdigit():
            raise _malformed(f"unexpected token: '{tok}'")
        return int(tok)

    def _field(self, obj: SObjectDef, name: str) -> FieldDef:
        f = obj.field(name)
        if f is None:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"No such column '{name}' on entity '{obj.name}'{_INVALID_FIELD_TAIL}",
            )
        return f

    def _cond(self, obj: SObjectDef) -> _Cond:
        f = self._field(obj, self.take()[1])
        if self.keyword("NOT"):
            self.expect("IN")
            return _Cond(f, "NOT IN", self._list(f))
        if self.keyword("IN"):
            return _Cond(f, "IN", self._list(f))
        if self.keyword("LIKE"):
            return _Cond(f, "LIKE", [self._value(f)])
        kind, op = self.take()
        if kind != "op":
            raise _malformed(f"unexpected token: '{op}'")
        return _Cond(f, "!=" if op == "<>" else op, [self._value(f)])

    def _list(self, f: FieldDef) -> list[Any]:
        if self.take()[1] != "(":
            raise _malformed("expected '(' after IN")
        values = [self._value(f)]
        while self.peek() == ",":
            self.pos += 1
            values.append(self._value(f))
        if self.take()[1] != ")":
            raise _malformed("expected ')'")
        return values

    def _value(self, f: FieldDef) -> Any:
        kind, tok = self.take()
        if kind == "str":
            text = _unquote(tok)
            if f.type in ("id", "reference"):
                return normalize_id(text) or text
            if f.type in ("date", "datetime", "boolean", "int", "double", "currency", "percent"):
                raise SfError(
                    400,
                    "INVALID_FIELD",
                    f"value of filter criterion for field '{f.name}' must be of type "
                    f"{f.type} and should not be enclosed in quotes",
                )
            return text
        if kind != "word":
            raise _malformed(f"unexpected token: '{tok}'")
        low = tok.lower()
        if low == "null":
            return None
        if low in ("true", "false"):
            return low == "true"
        if f.type == "datetime":
            parsed = parse_datetime(tok)
            if parsed is None:
                raise _malformed(f"line 1:0 no viable alternative at character '{tok}'")
            return format_datetime(parsed)
        try:
            return int(tok) if re.fullmatch(r"-?\d+", tok) else float(tok)
        except ValueError:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", tok):
                return tok
            raise _malformed(f"unexpected token: '{tok}'") from None


def parse_query(text: str, store: RecordStore) -> Query:
    """Parse ``text``; raises SfError (MALFORMED_QUERY, INVALID_TYPE, INVALID_FIELD)."""
    if not text or not text.strip():
        raise _malformed("A query is required: q=SELECT ...")
    return _Parser(text, store).parse()


def _norm(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _like(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _predicate(cond: _Cond) -> Callable[[dict[str, Any]], bool]:
    name = cond.field.name
    op = cond.op
    if op in ("IN", "NOT IN"):
        wanted = {_norm(v) for v in cond.values}
        if op == "IN":
            return lambda row: _norm(row.get(name)) in wanted
        return lambda row: _norm(row.get(name)) not in wanted
    target = cond.values[0]
    if op == "LIKE":
        if not isinstance(target, str):
            raise _malformed("LIKE needs a string")
        rx = _like(target)
        return lambda row: isinstance(row.get(name), str) and rx.fullmatch(row[name]) is not None
    t = _norm(target)
    if op == "=":
        return lambda row: _norm(row.get(name)) == t
    if op == "!=":
        return lambda row: _norm(row.get(name)) != t

    def compare(row: dict[str, Any]) -> bool:
        v = _norm(row.get(name))
        if v is None or t is None:
            return False
        try:
            return bool({"<": v < t, "<=": v <= t, ">": v > t, ">=": v >= t}[op])
        except TypeError:
            return False

    return compare


def _candidates(store: RecordStore, q: Query) -> Iterable[dict[str, Any]]:
    """Rows worth filtering: from an index when a condition allows it, else every row."""
    for cond in q.where:
        # Equality on any filterable field goes through the store's (on-demand) index; a null
        # among the values means "unset", which indexes do not hold, so those scan.
        if cond.op not in ("=", "IN") or any(v is None for v in cond.values):
            continue
        if cond.field.type in ("textarea", "base64", "multipicklist"):
            continue
        ids: list[str] = []
        for v in cond.values:
            ids.extend(store.find(q.obj.name, cond.field.name, v))
        rows = (store.raw(q.obj.name, rid) for rid in dict.fromkeys(ids))
        return [r for r in rows if r is not None]
    return store.iter_rows(q.obj.name)


def run_query(store: RecordStore, q: Query) -> list[dict[str, Any]]:
    """The matching stored rows (read-only), ordered, offset and limited."""
    preds = [_predicate(c) for c in q.where]
    rows = [r for r in _candidates(store, q) if all(p(r) for p in preds)]
    if q.order_by is not None:
        key = q.order_by.name
        present = [r for r in rows if r.get(key) is not None]
        absent = [r for r in rows if r.get(key) is None]
        present.sort(key=lambda r: _norm(r[key]), reverse=q.descending)
        # SOQL default: NULLS FIRST ascending, NULLS LAST descending.
        rows = present + absent if q.descending else absent + present
    if q.offset:
        rows = rows[q.offset :]
    if q.limit is not None:
        rows = rows[: q.limit]
    return rows
