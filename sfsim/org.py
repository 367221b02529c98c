"""The emulated org's state: schema, records, tokens, API usage, faults and plugins.

Pure state and policy with no sockets: the ASGI app (``sfsim.app``) and the server
(``sfsim.server``) are the I/O shell around one ``Org``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sfsim.faults import Faults
from sfsim.ids import IdGenerator
from sfsim.limits import DEFAULT_API_LIMIT, ApiUsage
from sfsim.oauth import OAuthConfig, TokenStore
from sfsim.plugin import SimPlugin
from sfsim.rules import group_rules, parse_rules
from sfsim.schema import Schema, default_schema
from sfsim.store import RecordStore

__all__ = ["LATEST_VERSION", "MIN_VERSION", "Org", "SimConfig", "version_label"]

#: Newest API version the sim speaks (Spring '26).
LATEST_VERSION: Final = 66
#: Versions 21.0-30.0 were retired in Summer '25 (§2.1): below this, 410 GONE.
MIN_VERSION: Final = 31
_STATE_FILE: Final = "sfsim-state.json"
_CREDENTIALS: Final = ("client_id", "client_secret", "username", "password")


def version_label(major: int) -> str:
    """Release name of an API version: 20 = Winter '11, then Spring, Summer, Winter."""
    idx = major - 20
    season = ("Winter", "Spring", "Summer")[idx % 3]
    return f"{season} '{11 + idx // 3:02d}"


@dataclass(slots=True)
class SimConfig:
    """How the sim is set up (the CLI flags and ``SimOrg`` keywords)."""

    # Limits
    api_limit: int = DEFAULT_API_LIMIT
    token_ttl: float = 7200.0
    bulk_rate: float | None = None
    # Identity of the connected app and integration user (generated when not given)
    client_id: str = field(default_factory=lambda: "3MVG9" + secrets.token_urlsafe(60)[:80])
    client_secret: str = field(default_factory=lambda: secrets.token_hex(32).upper())
    username: str = "integration@dispo-sync.sim"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    security_token: str = ""
    jwt_cert_pem: bytes | None = None
    password_flow: bool = True
    #: Refresh token rotation on the connected app (``sfsim.oauth.OAuthConfig``); off by default.
    refresh_token_rotation: bool = False
    #: Credentials given explicitly (by name); the others are restored from ``state_dir``, so a
    #: restarted sim keeps the client id/secret and password a user pasted into a config.
    fixed_credentials: frozenset[str] = frozenset()
    # Where state persists across restarts; None keeps everything in memory only
    state_dir: Path | None = None
    # Seed for fault randomness (None: random)
    seed: int | None = None
    #: The org's validation rules as JSON (``sfsim.rules``), applied at start.
    validation_rules: list[dict[str, Any]] = field(default_factory=list)


class Org:
    """One emulated Salesforce org."""

    def __init__(self, config: SimConfig | None = None, schema: Schema | None = None) -> None:
        self.config = config or SimConfig()
        self.schema = schema or default_schema()
        self.ids = IdGenerator()
        self.org_id = self.ids.new("00D")
        self.usage = ApiUsage(self.config.api_limit)
        self.tokens = TokenStore(self.org_id, self.config.token_ttl)
        self.faults = Faults(on_revoke=self._revoke, on_exhaust=self.usage.exhaust)
        if self.config.seed is not None:
            self.faults.configure({"seed": self.config.seed})
        self.store = RecordStore(self.schema, ids=self.ids, lock_hook=self.faults.lock_row)
        self.store.race_hook = self.faults.upsert_race
        if self.config.validation_rules:
            self.store.validation_rules = group_rules(
                parse_rules(self.config.validation_rules, self.schema)
            )
        self.oauth = OAuthConfig(
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            username=self.config.username,
            password=self.config.password,
            security_token=self.config.security_token,
            jwt_cert_pem=self.config.jwt_cert_pem,
            password_flow=self.config.password_flow,
            refresh_token_rotation=self.config.refresh_token_rotation,
        )
        #: Set by the server once it listens: ``http(s)://host:port``.
        self.instance_url = ""
        #: When set, active Lead assignment rules give new and updated Leads this owner unless
        #: the request says ``Sforce-Auto-Assign: FALSE`` (§2.10, §7.11).
        self.lead_assignment_owner: str | None = None
        #: PEM file of the CA that signed the server certificate (``--tls``), else None.
        self.ca_file: str | None = None
        self.user_id = ""
        self._seed_user()
        self.plugins: list[SimPlugin] = _load_plugins(self)

    # ---------------------------------------------------------------- identity

    def _seed_user(self) -> None:
        user = self.schema.get("User")
        if user is None:
            self.user_id = self.ids.new("005")
            return
        values: dict[str, Any] = {
            "Username": self.config.username,
            "LastName": "Integration",
            "FirstName": "Dispo",
            "Email": "integration@example.com",
            "Alias": "dispo",
            "TimeZoneSidKey": "GMT",
            "IsActive": True,
        }
        fields = {k: v for k, v in values.items() if user.field(k) is not None}
        self.user_id = self.store.insert(user.name, fields, seed=True)
        self.store.user_id = self.user_id

    def set_lead_assignment(self, active: bool) -> str | None:
        """Turn the simulated Lead assignment rule on (owner: a queue user) or off."""
        if not active:
            self.lead_assignment_owner = None
            return None
        user = self.schema.get("User")
        if user is None:
            self.lead_assignment_owner = self.ids.new("005")
            return self.lead_assignment_owner
        username = "lead-queue@dispo-sync.sim"
        found = self.store.find(user.name, "Username", username)
        if found:
            self.lead_assignment_owner = found[0]
        else:
            values: dict[str, Any] = {
                "Username": username,
                "LastName": "Lead Queue",
                "Email": "lead-queue@example.com",
                "Alias": "leadq",
                "TimeZoneSidKey": "GMT",
                "IsActive": True,
            }
            fields = {k: v for k, v in values.items() if user.field(k) is not None}
            self.lead_assignment_owner = self.store.insert(user.name, fields, seed=True)
        return self.lead_assignment_owner

    def _revoke(self, refresh_too: bool) -> None:
        self.tokens.revoke(refresh_too=refresh_too)

    # ---------------------------------------------------------------- control

    def info(self, ca_file: str | None = None) -> dict[str, Any]:
        """What a client needs to connect (the ``--print-json`` line)."""
        return {
            "instance_url": self.instance_url,
            "token_url": f"{self.instance_url}/services/oauth2/token",
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "username": self.config.username,
            "password": self.config.password,
            "ca_file": ca_file if ca_file is not None else self.ca_file,
        }

    def stats(self) -> dict[str, Any]:
        """``GET /__sim/stats``: API calls in total and per kind, records per object, plugins."""
        out: dict[str, Any] = {
            "api_calls": {
                "total": self.usage.used,
                "limit": self.usage.limit,
                "refused": self.usage.refused,
                "by_kind": dict(self.usage.by_kind),
            },
            "bulk_batches": self.usage.bulk_batches,
            "records": self.store.counts(),
            "tokens": {"issued": self.tokens.issued, "active": self.tokens.active()},
            "faults": self.faults.settings.counters,
            "bulk_jobs": {},
        }
        for plugin in self.plugins:
            out.update(plugin.stats())
        return out

    def reset(self) -> None:
        """``POST /__sim/reset``: records, counters, faults and plugin state back to a fresh org.

        Issued tokens stay valid so connected clients keep working.
        """
        self.store.reset()
        self.store.validation_rules = group_rules(
            parse_rules(self.config.validation_rules, self.schema)
        )
        self.lead_assignment_owner = None
        self._seed_user()
        self.usage.used = 0
        self.usage.refused = 0
        self.usage.by_kind.clear()
        self.usage.bulk_batches = 0
        self.faults.configure({"clear": True})
        for plugin in self.plugins:
            plugin.reset()

    # ---------------------------------------------------------------- persistence

    def save_state(self) -> Path | None:
        """Write records, tokens, counters and plugin state to ``state_dir`` (atomically)."""
        if self.config.state_dir is None:
            return None
        state = {
            "version": 1,
            "org_id": self.org_id,
            "credentials": {name: getattr(self.config, name) for name in _CREDENTIALS},
            "user_id": self.user_id,
            "store": self.store.dump(),
            "tokens": self.tokens.dump(),
            "usage": {
                "used": self.usage.used,
                "by_kind": dict(self.usage.by_kind),
                "bulk_batches": self.usage.bulk_batches,
            },
            "plugins": {p.name: p.dump_state() for p in self.plugins},
        }
        directory = self.config.state_dir
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / _STATE_FILE
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(state, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        return path

    def load_state(self) -> bool:
        """Load ``state_dir``'s saved state if there is one; True when something was loaded."""
        if self.config.state_dir is None:
            return False
        path = self.config.state_dir / _STATE_FILE
        if not path.exists():
            return False
        state = json.loads(path.read_text(encoding="utf-8"))
        saved_credentials = state.get("credentials") or {}
        for name in _CREDENTIALS:
            value = saved_credentials.get(name)
            if isinstance(value, str) and value and name not in self.config.fixed_credentials:
                setattr(self.config, name, value)
                setattr(self.oauth, name, value)
        self.org_id = str(state.get("org_id") or self.org_id)
        self.tokens.org_id = self.org_id
        self.store.load(state.get("store") or {})
        self.user_id = str(state.get("user_id") or self.user_id)
        self.store.user_id = self.user_id
        self.tokens.load(state.get("tokens") or {})
        usage = state.get("usage") or {}
        self.usage.used = int(usage.get("used", 0))
        self.usage.by_kind.update(usage.get("by_kind") or {})
        self.usage.bulk_batches = int(usage.get("bulk_batches", 0))
        saved = state.get("plugins") or {}
        for plugin in self.plugins:
            if plugin.name in saved:
                plugin.load_state(saved[plugin.name])
        return True


def _load_plugins(org: Org) -> list[SimPlugin]:
    """Plugins found by module name (``sfsim.bulk``), each built with ``create_plugin(org)``."""
    plugins: list[SimPlugin] = []
    for module_name in ("sfsim.bulk",):
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        factory = getattr(module, "create_plugin", None)
        if factory is not None:
            plugins.append(factory(org))
    return plugins
