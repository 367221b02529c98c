"""``/composite`` and sObject Collections ``/composite/sobjects`` (reference §3).

Composite: up to 25 subrequests (at most 5 of them collections or queries), run in order,
``@{ref.path}`` references resolved from earlier results, 200 overall with a per-subrequest status.
``allOrNone=true`` rolls everything back on the first failure; the others then report 400
PROCESSING_HALTED. With ``allOrNone=false`` a subrequest that references a failed one is not run.

Collections: create / update / upsert / delete / retrieve, up to 200 records, per-item results in
input order, 200 overall. ``allOrNone=true`` rolls back every item once one fails; the items that
would have succeeded report ALL_OR_NONE_OPERATION_ROLLED_BACK (upsert items keep ``created``, as a
real org does, §3.2). An upsert naming one external id in two items (compared as the field's
unique index compares, case-folded unless it is case-sensitive) fails each of them with
DUPLICATE_VALUE "Duplicate external id specified", as Bulk chunks do. The whole request costs one
API call (counted by the app).

Batch (``/composite/batch``): up to 25 independent subrequests (``richInput`` bodies, URLs
relative to ``/services/data/``), ``haltOnError``; unlike composite, every subrequest is charged
as an API call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from sfsim.errors import SfError, not_found
from sfsim.ids import normalize_id

if TYPE_CHECKING:
    from sfsim.rest import Reply, RestApi

__all__ = ["MAX_COLLECTION_RECORDS", "MAX_SUBREQUESTS", "CompositeApi"]

MAX_SUBREQUESTS: Final = 25
MAX_HEAVY_SUBREQUESTS: Final = 5
MAX_COLLECTION_RECORDS: Final = 200
_REF_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
_REF_RE: Final = re.compile(r"@\{([A-Za-z0-9_]+)\.([^}]+)\}")
_PATH_STEP_RE: Final = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_FORBIDDEN_SUB_HEADERS: Final = frozenset({"accept", "authorization", "content-type"})
_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_HALTED: Final = (
    "The transaction was rolled back since another operation in the same transaction failed."
)
_ROLLED_BACK: Final = (
    "Record rolled back because not all records were valid and the request "
    "was using AllOrNone header"
)


def _bad_request(message: str, code: str = "INVALID_INPUT") -> SfError:
    return SfError(400, code, message)


def _halted(message: str = _HALTED) -> list[dict[str, Any]]:
    return [{"errorCode": "PROCESSING_HALTED", "message": message}]


class _Unresolved(Exception):
    def __init__(self, ref: str, path: str) -> None:
        super().__init__(ref)
        self.ref = ref
        self.path = path


class CompositeApi:
    """The composite family of resources, executed through the same REST dispatch."""

    def __init__(self, rest: RestApi) -> None:
        self.rest = rest
        self.store = rest.store

    def route(
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
        from sfsim.rest import Reply

        major = int(version.split(".")[0])
        if not seg or seg == [""]:
            if in_composite:
                raise _bad_request("A composite subrequest cannot be a composite request")
            if method != "POST":
                raise SfError(405, "METHOD_NOT_ALLOWED", "HTTP Method not allowed: Allow: POST")
            return Reply(200, self._composite(version, body, headers))
        if seg[0] == "batch" and len(seg) == 1:
            if in_composite:
                raise _bad_request("A composite subrequest cannot be a batch request")
            if method != "POST":
                raise SfError(405, "METHOD_NOT_ALLOWED", "HTTP Method not allowed: Allow: POST")
            return Reply(200, self._batch(body, headers))
        if seg[0] != "sobjects" or major < 42:
            raise not_found()
        rest = [s for s in seg[1:] if s != ""] if seg[-1] == "" else seg[1:]
        if not rest:
            if method == "POST":
                return Reply(200, self._create(body, force_all_or_none, headers))
            if method == "PATCH":
                return Reply(200, self._update(body, force_all_or_none, headers))
            if method == "DELETE":
                return Reply(200, self._delete(query, force_all_or_none))
            raise SfError(
                405, "METHOD_NOT_ALLOWED", "HTTP Method not allowed: Allow: POST, PATCH, DELETE"
            )
        if len(rest) == 1:
            if method in ("GET", "POST"):
                return Reply(200, self._retrieve(version, rest[0], method, query, body))
            raise SfError(405, "METHOD_NOT_ALLOWED", "HTTP Method not allowed: Allow: GET, POST")
        if len(rest) == 2:
            if major < 46:
                raise not_found()
            if method != "PATCH":
                raise SfError(405, "METHOD_NOT_ALLOWED", "HTTP Method not allowed: Allow: PATCH")
            return Reply(200, self._upsert(rest[0], rest[1], body, force_all_or_none, headers))
        raise not_found()

    # ---------------------------------------------------------------- composite

    def _composite(self, version: str, body: Any, headers: Mapping[str, str]) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
            raise SfError(
                400,
                "JSON_PARSER_ERROR",
                "compositeRequest is required and must be an array of subrequests",
            )
        subs: list[Any] = body["compositeRequest"]
        all_or_none = body.get("allOrNone") is True
        if not subs:
            raise _bad_request("compositeRequest must contain at least one subrequest")
        if len(subs) > MAX_SUBREQUESTS:
            # [U] exact code/message for too many subrequests; the request is refused as a whole.
            raise SfError(
                400,
                "LIMIT_EXCEEDED",
                f"Limit Exceeded: compositeRequest can contain at most "
                f"{MAX_SUBREQUESTS} subrequests, got {len(subs)}",
            )
        seen: set[str] = set()
        heavy = 0
        for i, sub in enumerate(subs):
            if not isinstance(sub, dict):
                raise SfError(400, "JSON_PARSER_ERROR", f"compositeRequest[{i}] is not an object")
            ref = sub.get("referenceId")
            if not isinstance(ref, str) or not _REF_ID_RE.match(ref):
                # v52.0+: an illegal referenceId fails the whole request (§3.1).
                raise _bad_request(
                    f"Invalid referenceId: {ref!r}. A referenceId may contain "
                    "only letters, numbers and underscores, and must start with "
                    "a letter or number."
                )
            if ref in seen:
                raise _bad_request(f"Duplicate referenceId provided in the request: {ref}")
            seen.add(ref)
            method = sub.get("method")
            if method not in _METHODS:
                raise _bad_request(
                    f"Invalid HTTP method: {method!r} (one of GET, POST, PUT, "
                    "PATCH, DELETE, case-sensitive)"
                )
            url = sub.get("url")
            if not isinstance(url, str) or not re.match(r"^/services/data/v\d+\.\d/", url):
                raise _bad_request(f"The url of {ref} must start with /services/data/vXX.X/")
            hdrs = sub.get("httpHeaders") or {}
            if not isinstance(hdrs, dict) or any(
                str(k).lower() in _FORBIDDEN_SUB_HEADERS for k in hdrs
            ):
                raise _bad_request(
                    f"{ref}: subrequest httpHeaders may not contain Accept, "
                    "Authorization or Content-Type"
                )
            path = urlsplit(url).path
            if "/composite/sobjects" in path or re.search(r"/query(All)?(/|$)", path):
                heavy += 1
        if heavy > MAX_HEAVY_SUBREQUESTS:
            raise SfError(
                400,
                "LIMIT_EXCEEDED",
                f"Limit Exceeded: at most {MAX_HEAVY_SUBREQUESTS} subrequests may be "
                "sObject Collections or queries",
            )

        results: dict[str, Any] = {}
        failed: set[str] = set()
        out: list[dict[str, Any]] = []
        with self.store.transaction():
            mark = self.store.savepoint()
            for sub in subs:
                ref = sub["referenceId"]
                try:
                    url = self._substitute_str(sub["url"], results, failed, in_url=True)
                    sub_body = self._substitute(sub.get("body"), results, failed)
                except _Unresolved as un:
                    failed.add(ref)
                    if all_or_none:
                        out.append(self._entry(ref, 400, _halted()))
                        break
                    message = (
                        f"Invalid reference specified. No value for {un.ref}.{un.path} "
                        f"found in {un.ref}. Provided referenceId ('{un.ref}') must match "
                        "a referenceId of a previous subrequest that succeeded."
                    )
                    out.append(self._entry(ref, 400, _halted(message)))
                    continue
                # The top-level request's headers (Sforce-Auto-Assign) apply unless the
                # subrequest sets its own.
                sub_headers = {
                    **headers,
                    **{str(k).lower(): str(v) for k, v in (sub.get("httpHeaders") or {}).items()},
                }
                reply = self._run_sub(sub["method"], url, sub_body, sub_headers, all_or_none)
                out.append(self._entry(ref, reply.status, reply.body, reply.headers))
                collection_failed = (
                    all_or_none
                    and isinstance(reply.body, list)
                    and reply.status == 200
                    and any(isinstance(i, dict) and i.get("success") is False for i in reply.body)
                )
                if reply.status >= 400 or collection_failed:
                    failed.add(ref)
                    if all_or_none:
                        break
                else:
                    results[ref] = reply.body
            if all_or_none and failed:
                self.store.rollback_to(mark)
                first_failed = len(out) - 1
                done = {e["referenceId"] for e in out}
                for i, entry in enumerate(out):
                    if i != first_failed:
                        out[i] = self._entry(entry["referenceId"], 400, _halted())
                for sub in subs:
                    if sub["referenceId"] not in done:
                        out.append(self._entry(sub["referenceId"], 400, _halted()))
        return {"compositeResponse": out}

    def _batch(self, body: Any, headers: Mapping[str, str]) -> dict[str, Any]:
        """``/composite/batch``: independent subrequests, each charged as an API call (§3.1)."""
        from sfsim.rest import NO_BODY

        if not isinstance(body, dict) or not isinstance(body.get("batchRequests"), list):
            raise SfError(
                400,
                "JSON_PARSER_ERROR",
                "batchRequests is required and must be an array of subrequests",
            )
        subs: list[Any] = body["batchRequests"]
        if not subs or len(subs) > MAX_SUBREQUESTS:
            raise SfError(
                400,
                "LIMIT_EXCEEDED",
                f"A batch must contain between 1 and {MAX_SUBREQUESTS} subrequests, "
                f"got {len(subs)}",
            )
        halt = body.get("haltOnError") is True
        results: list[dict[str, Any]] = []
        has_errors = False
        usage = self.rest.org.usage
        for i, sub in enumerate(subs):
            if has_errors and halt:
                results.append(
                    {
                        "statusCode": 412,
                        "result": [
                            {
                                "errorCode": "BATCH_PROCESSING_HALTED",
                                "message": "Batch processing halted per request",
                            }
                        ],
                    }
                )
                continue
            # The batch request itself paid for the first subrequest; each further one is a
            # call of its own (unlike /composite, §5.3).
            if i > 0 and not usage.try_count("composite_batch"):
                results.append(
                    {
                        "statusCode": 403,
                        "result": [
                            {
                                "errorCode": "REQUEST_LIMIT_EXCEEDED",
                                "message": "TotalRequests Limit exceeded.",
                            }
                        ],
                    }
                )
                has_errors = True
                continue
            method = sub.get("method") if isinstance(sub, dict) else None
            url = sub.get("url") if isinstance(sub, dict) else None
            if method not in _METHODS or not isinstance(url, str):
                raise _bad_request(
                    f"batchRequests[{i}] needs a method (GET, POST, PUT, PATCH, DELETE) and a url"
                )
            if not url.startswith("/"):
                url = "/services/data/" + url
            if not re.match(r"^/services/data/v\d+\.\d/", url):
                raise _bad_request(
                    f"batchRequests[{i}].url must be vXX.X/... "
                    f"(relative to /services/data/), got {sub['url']!r}"
                )
            rich = sub.get("richInput")
            reply = self._run_sub(method, url, NO_BODY if rich is None else rich, headers, False)
            results.append({"statusCode": reply.status, "result": reply.body})
            if reply.status >= 400:
                has_errors = True
        return {"hasErrors": has_errors, "results": results}

    @staticmethod
    def _entry(
        ref: str, status: int, body: Any, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        return {
            "body": body,
            "httpHeaders": dict(headers or {}),
            "httpStatusCode": status,
            "referenceId": ref,
        }

    def _run_sub(
        self, method: str, url: str, body: Any, headers: Mapping[str, Any], force_all_or_none: bool
    ) -> Reply:
        from sfsim.rest import NO_BODY

        if body is NO_BODY:
            body = None
        parts = urlsplit(url)
        m = re.match(r"^/services/data/v(\d+\.\d)(/.*)?$", parts.path)
        assert m is not None  # checked up front
        version = m.group(1)
        segments = [unquote(s) for s in (m.group(2) or "/").split("/")[1:]]
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        hdrs = {str(k).lower(): str(v) for k, v in headers.items()}
        return self.rest.dispatch(
            method,
            version,
            segments,
            query,
            NO_BODY if body is None else body,
            hdrs,
            in_composite=True,
            force_all_or_none=force_all_or_none,
        )

    def _lookup(self, results: Mapping[str, Any], failed: set[str], ref: str, path: str) -> Any:
        if ref not in results or ref in failed:
            raise _Unresolved(ref, path)
        value: Any = results[ref]
        for name, index in _PATH_STEP_RE.findall(path):
            if name:
                if not isinstance(value, dict) or name not in value:
                    raise _Unresolved(ref, path)
                value = value[name]
            else:
                i = int(index)
                if not isinstance(value, list) or i >= len(value):
                    raise _Unresolved(ref, path)
                value = value[i]
        return value

    def _substitute_str(
        self, text: str, results: Mapping[str, Any], failed: set[str], *, in_url: bool = False
    ) -> str:
        return _REF_RE.sub(
            lambda m: str(self._lookup(results, failed, m.group(1), m.group(2))), text
        )

    def _substitute(self, value: Any, results: Mapping[str, Any], failed: set[str]) -> Any:
        if isinstance(value, str):
            whole = _REF_RE.fullmatch(value)
            if whole:
                return self._lookup(results, failed, whole.group(1), whole.group(2))
            return self._substitute_str(value, results, failed)
        if isinstance(value, dict):
            return {k: self._substitute(v, results, failed) for k, v in value.items()}
        if isinstance(value, list):
            return [self._substitute(v, results, failed) for v in value]
        return value

    # ---------------------------------------------------------------- collections

    @staticmethod
    def _records(body: Any) -> tuple[list[Any], bool]:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SfError(400, "JSON_PARSER_ERROR", "records is required and must be an array")
        records: list[Any] = body["records"]
        if len(records) > MAX_COLLECTION_RECORDS:
            # [U] status (§2.8 EXCEEDED_ID_LIMIT): refused as a whole with 400.
            raise SfError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
                [],
            )
        return records, body.get("allOrNone") is True

    def _run_items(self, items: list[Any], all_or_none: bool, op: Any) -> list[dict[str, Any]]:
        """Apply ``op(item) -> result dict`` to each item; roll all back on failure if asked."""
        results: list[dict[str, Any]] = []
        with self.store.transaction():
            mark = self.store.savepoint()
            for item in items:
                before = self.store.savepoint()
                try:
                    results.append(op(item))
                except SfError as err:
                    self.store.rollback_to(before)
                    res: dict[str, Any] = {"success": False, "errors": [err.item_error()]}
                    rid = getattr(err, "record_id", None)
                    if rid:
                        res = {"id": rid, **res}
                    results.append(res)
            if all_or_none and any(not r["success"] for r in results):
                self.store.rollback_to(mark)
                rolled = {
                    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "message": _ROLLED_BACK,
                    "fields": [],
                }
                for i, r in enumerate(results):
                    if r["success"]:
                        results[i] = {**r, "success": False, "errors": [rolled]}
        return results

    @staticmethod
    def _type_of(record: Any) -> str:
        if not isinstance(record, dict):
            raise SfError(400, "JSON_PARSER_ERROR", "each record must be a JSON object")
        attrs = record.get("attributes")
        rtype = attrs.get("type") if isinstance(attrs, dict) else None
        if not isinstance(rtype, str) or not rtype:
            raise SfError(400, "INVALID_TYPE", "Must specify a type in the attributes field", [])
        return rtype

    def _create(self, body: Any, force: bool, headers: Mapping[str, str]) -> list[dict[str, Any]]:
        records, all_or_none = self._records(body)

        def op(record: Any) -> dict[str, Any]:
            rtype = self._type_of(record)
            if "id" in record or "Id" in record:
                raise SfError(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    "cannot specify Id in an insert call",
                    ["Id"],
                )
            fields = {k: v for k, v in record.items() if k != "attributes"}
            rid = self.store.insert(rtype, fields)
            self.rest.assign(self.store.sobject(rtype).name, rid, headers)
            return {"id": rid, "success": True, "errors": []}

        return self._run_items(records, all_or_none or force, op)

    def _update(self, body: Any, force: bool, headers: Mapping[str, str]) -> list[dict[str, Any]]:
        records, all_or_none = self._records(body)

        def op(record: Any) -> dict[str, Any]:
            rtype = self._type_of(record)
            fields = {k: v for k, v in record.items() if k not in ("attributes", "id", "Id")}
            raw_id = record.get("id", record.get("Id"))
            if not raw_id:
                raise SfError(400, "MISSING_ARGUMENT", "Id not specified in an update call", [])
            rid = normalize_id(str(raw_id))
            # A failed update item carries no id (§3.2), unlike a failed delete.
            self.store.update(rtype, str(raw_id), fields)
            if rid is not None:
                self.rest.assign(self.store.sobject(rtype).name, rid, headers)
            return {"id": rid, "success": True, "errors": []}

        return self._run_items(records, all_or_none or force, op)

    def _upsert(
        self, obj_name: str, ext_field: str, body: Any, force: bool, headers: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        obj = self.store.sobject(obj_name)
        f = obj.field(ext_field)
        if f is None or not f.is_upsert_key:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"Field name provided, {ext_field} is not an External ID or indexed "
                f"field for {obj.name}",
            )
        records, all_or_none = self._records(body)
        duplicates = self._duplicate_keys(obj.name, f.name, records)

        def op(record: Any) -> dict[str, Any]:
            rtype = self._type_of(record)
            if rtype.lower() != obj.name.lower():
                raise SfError(
                    400,
                    "INVALID_TYPE",
                    f"Record type {rtype} does not match {obj.name} in the URI",
                    [],
                )
            fields = {k: v for k, v in record.items() if k != "attributes"}
            value = _key_value(fields, f.name)
            if value is None or value == "":
                raise SfError(400, "MISSING_ARGUMENT", f"{f.name} not specified", [])
            if duplicates and self.store.upsert_key(obj.name, f.name, value) in duplicates:
                # One collections request is one DML save call, which refuses an upsert list
                # naming the same external id twice, whether or not a record has it yet
                # (Apex: "DUPLICATE_VALUE, Duplicate external id specified: <key>: [<field>]").
                # As in Bulk chunks (bulk_engine._check_duplicate), every item naming it fails.
                raise SfError(
                    400, "DUPLICATE_VALUE", f"Duplicate external id specified: {value}", [f.name]
                )
            rid, created = self.store.upsert(obj.name, f.name, value, fields)
            self.rest.assign(obj.name, rid, headers)
            return {"id": rid, "success": True, "errors": [], "created": created}

        return self._run_items(records, all_or_none or force, op)

    def _duplicate_keys(self, obj_name: str, field_name: str, records: list[Any]) -> set[Any]:
        """Keys named by more than one upsert item, compared as the unique index compares them
        (case-folded unless the field is case-sensitive). Items that fail anyway (not an
        object, of another type, without a key, a key of the wrong type) are not counted."""
        seen: set[Any] = set()
        duplicates: set[Any] = set()
        for record in records:
            if not isinstance(record, dict):
                continue
            attrs = record.get("attributes")
            rtype = attrs.get("type") if isinstance(attrs, dict) else None
            if not isinstance(rtype, str) or rtype.lower() != obj_name.lower():
                continue
            value = _key_value(record, field_name)
            if value is None or value == "":
                continue
            try:
                key = self.store.upsert_key(obj_name, field_name, value)
            except SfError:
                continue
            if key in seen:
                duplicates.add(key)
            seen.add(key)
        return duplicates

    def _delete(self, query: Mapping[str, str], force: bool) -> list[dict[str, Any]]:
        ids = [i for i in query.get("ids", "").split(",") if i]
        if not ids:
            raise SfError(400, "MISSING_ARGUMENT", "ids parameter is required", [])
        if len(ids) > MAX_COLLECTION_RECORDS:
            raise SfError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
                [],
            )
        all_or_none = query.get("allOrNone", "").lower() == "true"

        def op(raw_id: str) -> dict[str, Any]:
            rid = normalize_id(raw_id)
            obj = self.store.schema.by_prefix(rid[:3]) if rid else None
            if rid is None or obj is None:
                raise SfError(400, "MALFORMED_ID", f"malformed id {raw_id}", [])
            try:
                self.store.delete(obj.name, rid)
            except SfError as err:
                err.record_id = rid  # type: ignore[attr-defined]
                raise
            return {"id": rid, "success": True, "errors": []}

        return self._run_items(ids, all_or_none or force, op)

    def _retrieve(
        self, version: str, obj_name: str, method: str, query: Mapping[str, str], body: Any
    ) -> list[dict[str, Any] | None]:
        obj = self.store.sobject(obj_name)
        if method == "POST":
            if not isinstance(body, dict):
                raise SfError(400, "JSON_PARSER_ERROR", "body must be {ids: [...], fields: [...]}")
            ids = [str(i) for i in body.get("ids") or []]
            names = [str(n) for n in body.get("fields") or []]
            limit = 2000
        else:
            ids = [i for i in query.get("ids", "").split(",") if i]
            names = [n for n in query.get("fields", "").split(",") if n]
            limit = 800
        if not ids or not names:
            raise SfError(400, "MISSING_ARGUMENT", "ids and fields are required", [])
        if len(ids) > limit:
            raise SfError(400, "EXCEEDED_ID_LIMIT", f"cannot retrieve more than {limit} ids", [])
        fields = []
        for n in names:
            fd = obj.field(n)
            if fd is None:
                raise SfError(
                    400, "INVALID_FIELD", f"No such column '{n}' on sobject of type {obj.name}"
                )
            fields.append(fd.name)
        out: list[dict[str, Any] | None] = []
        for raw_id in ids:
            rid = normalize_id(raw_id)
            row = self.store.raw(obj.name, rid) if rid else None
            out.append(
                None if row is None else self.rest.record_json(version, obj.name, row, fields)
            )
        return out


def _key_value(fields: Mapping[str, Any], field_name: str) -> Any:
    """The upsert key's value in a record (field names are case-insensitive); None if absent."""
    low = field_name.lower()
    return next((v for k, v in fields.items() if k.lower() == low), None)
