"""The control API under ``/__sim/`` (not part of Salesforce): inspect, seed and steer the org.

Open without auth on loopback; from any other address it needs a valid bearer token.

- ``GET  /__sim/records/{SObject}``: every stored record with all fields (JSON array);
- ``POST /__sim/records/{SObject}``: seed records (a JSON array, or ``{"records": [...]}``);
  read-only fields may be set and required fields may be left out; returns the ids (JSON array);
- ``GET  /__sim/stats``: API calls (total, by kind), bulk jobs by state, records by object;
- ``GET|POST /__sim/faults``: read / change fault injection (see ``sfsim.faults``);
- ``POST /__sim/reset``: back to an empty org;
- ``GET|POST /__sim/assignment_rules``: ``{"active": true}`` turns on a Lead assignment rule
  that re-owns every Lead created or updated over REST without ``Sforce-Auto-Assign: FALSE``;
- ``GET|POST /__sim/validation_rules``: replace / read the org's validation rules (a JSON array,
  see ``sfsim.rules``); a save breaking one fails with FIELD_CUSTOM_VALIDATION_EXCEPTION;
- ``GET|POST /__sim/read_only_records``: ``{"ids": [...]}`` replaces / reads the records the
  integration user can read but not edit (sharing); writes to them fail with
  INSUFFICIENT_ACCESS_OR_READONLY on every API;
- ``POST /__sim/refresh_token``: mint a refresh token for the integration user;
- ``GET  /__sim/info``: the connection info (instance_url, token_url, client credentials...).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from sfsim.errors import SfError
from sfsim.faults import FaultConfigError
from sfsim.ids import normalize_id
from sfsim.rules import RuleError, group_rules, parse_rules

if TYPE_CHECKING:
    from sfsim.org import Org

__all__ = ["ControlApi"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_LOOPBACK: Final = ("127.", "::1", "localhost")
_MAX_BODY: Final = 200 * 1024 * 1024


class ControlApi:
    """ASGI handler for ``/__sim/``."""

    def __init__(self, org: Org) -> None:
        self.org = org

    def _allowed(self, scope: Scope) -> bool:
        client = scope.get("client")
        host = client[0] if client else ""
        if not host or any(host.startswith(p) for p in _LOOPBACK):
            return True
        for key, value in scope["headers"]:
            if key == b"authorization":
                _, _, token = bytes(value).decode("latin-1").partition(" ")
                return self.org.tokens.check(token.strip()) is not None
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._allowed(scope):
            await _json(
                send,
                403,
                {
                    "error": "the control API is open on loopback only; "
                    "send a bearer token from elsewhere"
                },
            )
            return
        method: str = scope["method"]
        parts = [p for p in scope["path"][len("/__sim/") :].split("/") if p]
        body: Any = None
        if method in ("POST", "PUT", "PATCH"):
            raw = await _read(receive)
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    await _json(send, 400, {"error": f"body is not valid JSON: {exc}"})
                    return
        try:
            status, payload = self.handle(method, parts, body)
        except (FaultConfigError, RuleError) as exc:
            status, payload = 400, {"error": str(exc)}
        await _json(send, status, payload)

    def handle(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        """Route one control request; returns (status, JSON payload)."""
        org = self.org
        head = parts[0] if parts else ""
        if head == "records" and len(parts) == 2:
            obj = org.schema.get(parts[1])
            if obj is None:
                return 404, {"error": f"no such object in the schema: {parts[1]}"}
            if method == "GET":
                return 200, org.store.records(obj.name)
            if method == "POST":
                return self._seed(obj.name, body)
        elif head == "stats" and method == "GET":
            return 200, org.stats()
        elif head == "faults":
            if method == "GET":
                return 200, org.faults.as_json()
            if method == "POST":
                if not isinstance(body, dict):
                    return 400, {"error": "expected a JSON object of fault settings"}
                org.faults.configure(body)
                return 200, org.faults.as_json()
        elif head == "reset" and method == "POST":
            org.reset()
            return 200, {"reset": True}
        elif head == "assignment_rules":
            if method == "POST":
                if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
                    return 400, {"error": 'expected {"active": true|false}'}
                org.set_lead_assignment(body["active"])
            if method in ("GET", "POST"):
                return 200, {
                    "active": org.lead_assignment_owner is not None,
                    "owner_id": org.lead_assignment_owner,
                }
        elif head == "validation_rules":
            if method == "POST":
                org.store.validation_rules = group_rules(parse_rules(body, org.schema))
            if method in ("GET", "POST"):
                return 200, [
                    r.as_json() for rules in org.store.validation_rules.values() for r in rules
                ]
        elif head == "read_only_records":
            if method == "POST":
                ids = body.get("ids") if isinstance(body, dict) else None
                if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                    return 400, {"error": 'expected {"ids": ["<record id>", ...]}'}
                normalized = [normalize_id(i) for i in ids]
                bad = [i for i, n in zip(ids, normalized, strict=True) if n is None]
                if bad:
                    return 400, {"error": f"malformed id(s): {', '.join(bad[:5])}"}
                org.store.read_only_ids = {n for n in normalized if n is not None}
            if method in ("GET", "POST"):
                return 200, {"ids": sorted(org.store.read_only_ids)}
        elif head == "refresh_token" and method == "POST":
            return 200, {"refresh_token": org.tokens.issue_refresh(org.user_id)}
        elif head == "info" and method == "GET":
            return 200, org.info()
        return 404, {"error": f"unknown control resource: {method} /__sim/{'/'.join(parts)}"}

    def _seed(self, obj_name: str, body: Any) -> tuple[int, Any]:
        records = body.get("records") if isinstance(body, dict) else body
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            return 400, {"error": "expected a JSON array of records (objects)"}
        ids: list[str] = []
        store = self.org.store
        try:
            with store.transaction():
                for index, record in enumerate(records):
                    try:
                        ids.append(store.insert(obj_name, record, seed=True))
                    except SfError as err:
                        err.index = index  # type: ignore[attr-defined]
                        raise
        except SfError as err:
            return 400, {
                "error": f"record {getattr(err, 'index', '?')}: {err.error_code}: {err.message}",
                "errors": err.rest_body(),
            }
        return 201, ids


async def _read(receive: Receive) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise ValueError("control request body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _json(send: Send, status: int, payload: Any) -> None:
    data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
