"""REST resources under ``/services/data/vNN.N/`` as plain functions of the org (no sockets).

``RestApi.dispatch`` takes a method, API version, the path after the version (segments already
percent-decoded), the query parameters and the parsed JSON body, and returns a :class:`Reply`.
The ASGI app calls it for top-level requests and ``/composite`` calls it for subrequests, so both
behave the same. Wire facts: reference §2 (sObject rows, describe, upsert, errors), §3 (composite,
collections, in ``sfsim.composite``), §5 (limits).

An external id in the URL (``GET``/``PATCH``/``DELETE .../sobjects/{SObject}/{Field}/{value}``)
whose part after its last ``.`` is letters only answers 404 NOT_FOUND "The requested resource does
not exist", whether or not a record has it. Salesforce documents that some top-level domains in
such a value clash with response format extensions ("using an email address, such as
example@email.inc, as the External ID returns a '404 not found' error",
resources_sobject_upsert_patch, reference §2.6) without listing which; sfsim refuses every such
suffix (``.inc``, ``.json``, ``.com``), the strict reading, so a client that works here never
depends on which ones a real org happens to read as a format. The same value in a request body
(collections, Bulk) is a plain value.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime as http_date
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final

from sfsim.errors import SfError, not_found
from sfsim.ids import is_id_shaped, normalize_id
from sfsim.soql import Query, parse_query, run_query

if TYPE_CHECKING:
    from sfsim.org import Org

__all__ = ["NO_BODY", "Reply", "RestApi"]

#: Marker for "the request had no body".
NO_BODY: Final = object()
#: Records per query page (a real org's default batch size).
QUERY_BATCH: Final = 2000
_MAX_CURSORS: Final = 200
_MAX_CURSOR_ROWS: Final = 2_000_000
#: An external id in a URL that Salesforce may read as ending in a format extension (see above).
_FORMAT_SUFFIX_RE: Final = re.compile(r"\.[A-Za-z]+\Z")


@dataclass(slots=True)
class Reply:
    """One REST answer: status, JSON body (None = no body) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _bad_method(allowed: str) -> SfError:
    return SfError(405, "METHOD_NOT_ALLOWED", f"HTTP Method not allowed: Allow: {allowed}")


class RestApi:
    """The org's REST resources (everything but Bulk 2.0, which is a plugin)."""

    def __init__(self, org: Org) -> None:
        self.org = org
        self.store = org.store
        self.schema_loaded_at = datetime.now(UTC).replace(microsecond=0)
        self._cursors: OrderedDict[str, tuple[Query, list[dict[str, Any]], int, int]] = (
            OrderedDict()
        )
        self._cursor_rows = 0
        self._cursor_seq = itertools.count(1)
        # Composite and collections live in their own module; imported here to avoid a cycle.
        from sfsim.composite import CompositeApi

        self.composite = CompositeApi(self)

    # ---------------------------------------------------------------- dispatch

    def dispatch(
        self,
        method: str,
        version: str,
        segments: list[str],
        query: Mapping[str, str],
        body: Any,
        headers: Mapping[str, str] | None = None,
        *,
        in_composite: bool = False,
        force_all_or_none: bool = False,
    ) -> Reply:
        """Route one request; every SfError becomes its REST error reply."""
        try:
            if method == "POST" and query.get("_HttpMethod"):
                method = query["_HttpMethod"].upper()
            return self._route(
                method,
                version,
                segments,
                query,
                body,
                headers or {},
                in_composite=in_composite,
                force_all_or_none=force_all_or_none,
            )
        except SfError as err:
            if err.status == 300:
                matches = getattr(err, "matches", [])
                obj = segments[1] if len(segments) > 1 else ""
                real = self.org.schema.get(obj)
                name = real.name if real else obj
                return Reply(
                    300, [f"/services/data/v{version}/sobjects/{name}/{m}" for m in matches]
                )
            return Reply(err.status, err.rest_body())

    def _route(
        self,
        method: str,
        version: str,
        seg: list[str],
        query: Mapping[str, str],
        body: Any,
        headers: Mapping[str, str],
        *,
        in_composite: bool,
        force_all_or_none: bool,
    ) -> Reply:
        # A trailing slash is the same resource (simple-salesforce calls ``query/``).
        if len(seg) > 1 and seg[-1] == "":
            seg = seg[:-1]
        head = seg[0] if seg else ""
        n = len(seg)
        if head == "":
            if n <= 1:
                self._allow(method, "GET")
                return Reply(200, self._resources(version))
            raise not_found()
        if head == "limits" and (n == 1 or seg[1:] == [""]):  # simple-salesforce asks "limits/"
            self._allow(method, "GET")
            return Reply(200, self.org.usage.limits_body())
        if head == "sobjects":
            return self._sobjects(method, version, seg[1:], query, body, headers)
        if head in ("query", "queryAll"):
            self._allow(method, "GET")
            if n == 1:
                return self._query(version, query.get("q", ""), _batch_size(headers))
            if n == 2:
                return self._next_page(version, seg[1])
            raise not_found()
        if head == "composite":
            return self.composite.route(
                method,
                version,
                seg[1:],
                query,
                body,
                headers,
                in_composite=in_composite,
                force_all_or_none=force_all_or_none,
            )
        raise not_found()

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method not in allowed.split(","):
            raise _bad_method(allowed)

    # ---------------------------------------------------------------- resources

    def _resources(self, version: str) -> dict[str, str]:
        base = f"/services/data/v{version}"
        return {
            name: f"{base}/{name}"
            for name in ("sobjects", "query", "queryAll", "composite", "limits", "jobs")
        }

    def _sobjects(
        self,
        method: str,
        version: str,
        seg: list[str],
        query: Mapping[str, str],
        body: Any,
        headers: Mapping[str, str],
    ) -> Reply:
        if not seg or seg == [""]:
            self._allow(method, "GET")
            return Reply(
                200,
                {
                    "encoding": "UTF-8",
                    "maxBatchSize": 200,
                    "sobjects": [o.global_entry(version) for o in self.org.schema.objects.values()],
                },
            )
        obj = self.store.sobject(seg[0])
        rest = list(seg[1:])
        if rest and rest[-1] == "" and len(rest) == 1:
            rest = []
        if not rest:
            if method == "GET":
                return Reply(200, {"objectDescribe": obj.global_entry(version), "recentItems": []})
            if method == "POST":
                return self._create(version, obj.name, body, headers)
            raise _bad_method("GET,HEAD,POST")
        if rest[0] == "describe" and len(rest) <= 2 and (len(rest) == 1 or rest[1] == ""):
            self._allow(method, "GET")
            return self._describe(obj.name, version, headers)
        if len(rest) == 1 or (len(rest) == 2 and rest[1] == ""):
            return self._row(method, version, obj.name, rest[0], query, body, headers)
        if len(rest) == 2:
            return self._by_external_id(
                method, version, obj.name, rest[0], rest[1], query, body, headers
            )
        raise not_found()

    def _describe(self, obj_name: str, version: str, headers: Mapping[str, str]) -> Reply:
        since = headers.get("if-modified-since")
        last_modified = http_date(self.schema_loaded_at, usegmt=True)
        if since:
            try:
                when = parsedate_to_datetime(since)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None and when >= self.schema_loaded_at:
                return Reply(304, None, {"Last-Modified": last_modified})
        obj = self.store.sobject(obj_name)
        return Reply(200, obj.describe(version), {"Last-Modified": last_modified})

    # ---------------------------------------------------------------- rows

    def record_json(
        self, version: str, obj_name: str, row: Mapping[str, Any], fields: list[str] | None = None
    ) -> dict[str, Any]:
        """A record as REST returns it: ``attributes`` first, then the fields."""
        obj = self.store.sobject(obj_name)
        out: dict[str, Any] = {
            "attributes": {
                "type": obj.name,
                "url": f"/services/data/v{version}/sobjects/{obj.name}/{row['Id']}",
            }
        }
        for name in fields if fields is not None else obj.fields:
            out[name] = row.get(name)
        return out

    def _field_list(self, obj_name: str, query: Mapping[str, str]) -> list[str] | None:
        raw = query.get("fields")
        if raw is None:
            return None
        obj = self.store.sobject(obj_name)
        out = []
        for name in (p.strip() for p in raw.split(",") if p.strip()):
            f = obj.field(name)
            if f is None:
                raise SfError(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj.name}"
                )
            out.append(f.name)
        return out

    def assign(self, obj_name: str, record_id: str, headers: Mapping[str, str]) -> None:
        """Run the simulated Lead assignment rule after a REST write (§2.10).

        ``Sforce-Auto-Assign`` defaults to TRUE; only FALSE keeps the owner.
        """
        owner = self.org.lead_assignment_owner
        if owner is None or obj_name != "Lead":
            return
        if headers.get("sforce-auto-assign", "TRUE").strip().upper() == "FALSE":
            return
        self.store.assign_owner(obj_name, record_id, owner)

    def _create(self, version: str, obj_name: str, body: Any, headers: Mapping[str, str]) -> Reply:
        fields = _body_object(body)
        rid = self.store.insert(obj_name, fields)
        self.assign(obj_name, rid, headers)
        return Reply(
            201,
            {"id": rid, "success": True, "errors": []},
            {"Location": f"/services/data/v{version}/sobjects/{obj_name}/{rid}"},
        )

    def _resolve_row_id(self, obj_name: str, raw_id: str) -> str:
        """A row id from the URL: not id-shaped reads as an external-id field name (404)."""
        if not is_id_shaped(raw_id):
            raise not_found(
                f"Provided external ID field does not exist or is not accessible: {raw_id}"
            )
        rid = normalize_id(raw_id)
        obj = self.store.sobject(obj_name)
        if rid is None or rid[:3] != obj.key_prefix:
            raise SfError(
                400, "MALFORMED_ID", f"{obj.label} ID: id value of incorrect type: {raw_id}", ["Id"]
            )
        return rid

    def _row(
        self,
        method: str,
        version: str,
        obj_name: str,
        raw_id: str,
        query: Mapping[str, str],
        body: Any,
        headers: Mapping[str, str],
    ) -> Reply:
        if method == "POST" and raw_id == "Id":
            # Insert with Id as the "external id" (v37.0+, §2.4).
            rid = self.store.insert(obj_name, _body_object(body))
            self.assign(obj_name, rid, headers)
            return Reply(201, {"id": rid, "success": True, "errors": [], "created": True})
        rid = self._resolve_row_id(obj_name, raw_id)
        if method == "GET":
            fields = self._field_list(obj_name, query)
            row = self.store.raw(obj_name, rid)
            if row is None:
                if self.store.is_deleted(obj_name, rid):
                    raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted")
                raise not_found()
            return Reply(200, self.record_json(version, obj_name, row, fields))
        if method == "PATCH":
            self.store.update(obj_name, rid, _body_object(body))
            self.assign(obj_name, rid, headers)
            return Reply(204)
        if method == "DELETE":
            self.store.delete(obj_name, rid)
            return Reply(204)
        raise _bad_method("GET,HEAD,PATCH,DELETE")

    def _by_external_id(
        self,
        method: str,
        version: str,
        obj_name: str,
        field_name: str,
        value: str,
        query: Mapping[str, str],
        body: Any,
        headers: Mapping[str, str],
    ) -> Reply:
        obj = self.store.sobject(obj_name)
        f = obj.field(field_name)
        if f is None or not (f.is_upsert_key or f.name == "Id"):
            raise not_found(
                f"Provided external ID field does not exist or is not accessible: {field_name}"
            )
        if _FORMAT_SUFFIX_RE.search(value):
            # The tail reads as a format extension (example@email.inc): no such resource.
            raise not_found()
        if method == "PATCH":
            update_only = query.get("updateOnly", "").lower() == "true"
            rid, created = self.store.upsert(
                obj.name, f.name, value, _body_object(body), update_only=update_only
            )
            self.assign(obj.name, rid, headers)
            major = int(version.split(".")[0])
            if major < 46:
                # v45.0 and earlier: 201 on create, 204 with no body on update (§2.6, §7.19).
                return (
                    Reply(201, {"id": rid, "success": True, "errors": []})
                    if created
                    else Reply(204)
                )
            return Reply(
                201 if created else 200,
                {"id": rid, "success": True, "errors": [], "created": created},
            )
        if method in ("GET", "DELETE"):
            matches = self.store.find(obj.name, f.name, value)
            if not matches:
                raise not_found()
            if len(matches) > 1:
                return Reply(
                    300, [f"/services/data/v{version}/sobjects/{obj.name}/{m}" for m in matches]
                )
            if method == "DELETE":
                self.store.delete(obj.name, matches[0])
                return Reply(204)
            row = self.store.raw(obj.name, matches[0])
            assert row is not None
            return Reply(
                200, self.record_json(version, obj.name, row, self._field_list(obj.name, query))
            )
        raise _bad_method("GET,HEAD,PATCH,DELETE")

    # ---------------------------------------------------------------- query

    def _query(self, version: str, text: str, batch: int) -> Reply:
        q = parse_query(text, self.store)
        rows = run_query(self.store, q)
        if q.count_only:
            return Reply(200, {"totalSize": len(rows), "done": True, "records": []})
        return self._page(version, q, rows, 0, batch)

    def _page(
        self, version: str, q: Query, rows: list[dict[str, Any]], start: int, batch: int
    ) -> Reply:
        names = [f.name for f in q.fields]
        end = start + batch
        records = [self.record_json(version, q.obj.name, r, names) for r in rows[start:end]]
        body: dict[str, Any] = {
            "totalSize": len(rows),
            "done": end >= len(rows),
            "records": records,
        }
        if end < len(rows):
            locator = f"01g8d{next(self._cursor_seq):010d}{secrets.token_hex(2).upper()}"
            self._cursors[locator] = (q, rows, end, batch)
            self._cursor_rows += len(rows)
            # Open cursors are bounded in number and in rows held, oldest dropped first (a
            # real org expires query locators too; a late nextRecordsUrl then fails).
            while len(self._cursors) > _MAX_CURSORS or self._cursor_rows > _MAX_CURSOR_ROWS:
                _, old = self._cursors.popitem(last=False)
                self._cursor_rows -= len(old[1])
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
        return Reply(200, body)

    def _next_page(self, version: str, locator: str) -> Reply:
        key = locator.rsplit("-", 1)[0]
        entry = self._cursors.get(key)
        if entry is None:
            raise SfError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        q, rows, start, batch = entry
        return self._page(version, q, rows, start, batch)


def _batch_size(headers: Mapping[str, str]) -> int:
    """``Sforce-Query-Options: batchSize=N`` (200-2000; the org may return more, never less)."""
    raw = headers.get("sforce-query-options", "")
    for part in raw.split(","):
        key, _, value = part.strip().partition("=")
        if key == "batchSize" and value.isdigit():
            return min(max(int(value), 200), QUERY_BATCH)
    return QUERY_BATCH


def _body_object(body: Any) -> dict[str, Any]:
    """The JSON object body of a write; a missing or non-object body is a JSON_PARSER_ERROR."""
    if body is NO_BODY or body is None:
        raise SfError(
            400,
            "JSON_PARSER_ERROR",
            "The HTTP entity body is required, but this request has no entity body.",
        )
    if not isinstance(body, dict):
        raise SfError(
            400,
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of sObject from {_json_kind(body)} value",
        )
    return body


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, str):
        return "VALUE_STRING"
    return "VALUE_NUMBER_INT" if isinstance(value, int) else "VALUE_EMBEDDED_OBJECT"
