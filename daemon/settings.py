"""Settings: one TOML file, environment overrides, systemd credentials.

This is the only module that reads the environment (STYLE habit 11). It is used
once, at the edge (``daemon.cli``), and the resulting frozen :class:`Settings`
is passed down; constructors elsewhere take plain keyword arguments.

Sources, strongest first:

1. environment variables ``DISPO_<SECTION>__<KEY>`` (e.g.
   ``DISPO_SALESFORCE__CLIENT_ID``; lists and tables as JSON), parsed by
   pydantic-settings' :class:`EnvSettingsSource`;
2. files in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``), for
   secrets only: see :data:`CREDENTIAL_FILES`;
3. the TOML file (``--config``, default ``/etc/dispo-sync/config.toml``).

Every problem is reported at once, each naming the key, the source it came
from and what is expected (:class:`SettingsError`). Secret values are
:class:`pydantic.SecretStr` and never appear in an error message or a log.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import tomllib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as _EnvParseError

from spool.record import Disposition

__all__ = [
    "CREDENTIAL_FILES",
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "SHUTDOWN_TIMEOUT_MAX_S",
    "UNIT_TIMEOUT_STOP_S",
    "DaemonSettings",
    "HttpSettings",
    "LogSettings",
    "MappingSettings",
    "Problem",
    "RailsSettings",
    "SalesforceSettings",
    "Settings",
    "SettingsError",
    "SpoolSettings",
    "load_settings",
    "parse_listen",
]

DEFAULT_CONFIG_PATH = Path("/etc/dispo-sync/config.toml")
ENV_PREFIX = "DISPO_"

# systemd/dispo-sync.service's TimeoutStopSec: SIGKILL that long after SIGTERM.
UNIT_TIMEOUT_STOP_S = 30
# [daemon] shutdown_timeout_s at most: the drain deadline, then a few seconds to cancel
# what is left, stop the HTTP server (up to 2 s) and close the spool (a WAL checkpoint).
SHUTDOWN_TIMEOUT_MAX_S = 25.0

# Credential file name (in $CREDENTIALS_DIRECTORY) -> the key it fills.
CREDENTIAL_FILES: dict[str, tuple[str, str]] = {
    "salesforce-client-secret": ("salesforce", "client_secret"),
    "salesforce-password": ("salesforce", "password"),
    "salesforce-refresh-token": ("salesforce", "refresh_token"),
    "salesforce-private-key": ("salesforce", "private_key"),
}
# Adapter secrets: "adapter-<index>-secret" or "adapter-<name>-secret".
_ADAPTER_CREDENTIAL = re.compile(r"^adapter-(?P<which>[A-Za-z0-9_.\-]+)-secret$")

# Key names whose values are never echoed back in an error message.
_SECRET_KEY = re.compile(r"secret|password|passwd|token|private_key|api_key", re.IGNORECASE)

_SECTIONS = ("salesforce", "spool", "http", "rails", "mapping", "log", "daemon")


class SettingsError(Exception):
    """The configuration is invalid. ``problems`` lists every problem once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        lines = [f"invalid configuration ({count} problem{'s' if count != 1 else ''}):"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Problem:
    """One configuration problem: which key, where it came from, what is expected."""

    key: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.key} ({self.source}): {self.message}"


# --------------------------------------------------------------------------- sections

_Frozen = ConfigDict(frozen=True, extra="forbid")


def parse_listen(value: str) -> tuple[str, int]:
    """``"host:port"`` (IPv6 as ``[::1]:9410``) -> ``(host, port)``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port such as 127.0.0.1:9410, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SalesforceSettings(BaseModel):
    """``[salesforce]``: how to reach and authenticate against the org."""

    model_config = _Frozen

    login_url: str
    auth: Literal["client_credentials", "jwt", "refresh_token", "password"] = "client_credentials"
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    username: str | None = None  # jwt (subject) and password flows
    password: SecretStr | None = None  # password flow (+ security token if the org needs one)
    refresh_token: SecretStr | None = None  # refresh_token flow
    private_key_file: Path | None = None  # jwt flow: PEM private key file
    private_key: SecretStr | None = None  # jwt flow: PEM text (credential salesforce-private-key)
    ca_file: Path | None = None  # extra CA bundle (a private CA, or sfsim --tls)
    api_version: str = "62.0"
    # Timeouts
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    read_timeout_s: float = Field(default=120.0, gt=0, le=900)

    @field_validator("login_url")
    @classmethod
    def _check_login_url(cls, value: str) -> str:
        match = re.match(r"^(https?)://([^/:?#]+|\[[0-9a-fA-F:]+\])(:\d+)?/?$", value)
        if not match:
            raise ValueError(
                "expected the token endpoint base such as https://yourdomain.my.salesforce.com "
                "(scheme and host only)"
            )
        scheme, host = match.group(1), match.group(2).strip("[]")
        if scheme == "http" and not _is_loopback(host):
            # Tokens and client secrets must never cross a network in clear text;
            # plain http is only for a local sfsim.
            raise ValueError("plain http:// is only allowed for a loopback host; use https://")
        return value.rstrip("/")

    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, value: str) -> str:
        if not re.fullmatch(r"\d{2,3}\.0", value):
            raise ValueError("expected a REST API version such as 62.0")
        return value

    @field_validator("ca_file", "private_key_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    def problems(self) -> list[tuple[str, str]]:
        """Cross-key checks: what each auth flow needs. (key, message) pairs."""
        out: list[tuple[str, str]] = []
        needs: dict[str, list[str]] = {
            "client_credentials": ["client_secret"],
            "password": ["client_secret", "username", "password"],
            "refresh_token": ["refresh_token"],
            "jwt": ["username"],
        }
        for key in needs[self.auth]:
            if getattr(self, key) is None:
                out.append((key, f"required when auth = {self.auth!r}"))
        if self.auth == "jwt" and self.private_key is None and self.private_key_file is None:
            out.append(
                (
                    "private_key_file",
                    "auth = 'jwt' needs the connected app's private key: set private_key_file "
                    "or the credential file salesforce-private-key",
                )
            )
        for key in ("ca_file", "private_key_file"):
            path: Path | None = getattr(self, key)
            if path is not None and not path.is_file():
                out.append((key, f"file not found or not readable: {path}"))
        return out


class SpoolSettings(BaseModel):
    """``[spool]``: the durable SQLite queue."""

    model_config = _Frozen

    path: Path = Path("/var/lib/dispo-sync/spool.db")
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # Limits
    max_pending: int = Field(default=1_000_000, ge=1)
    max_bytes: int = Field(default=0, ge=0)  # 0 = no size cap besides max_pending
    retention_days: float = Field(default=7.0, gt=0)
    lease_s: float = Field(default=120.0, gt=0)

    @field_validator("synchronous", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class HttpSettings(BaseModel):
    """``[http]``: /healthz, /readyz and /metrics."""

    model_config = _Frozen

    listen: str = "127.0.0.1:9410"

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


class RailsSettings(BaseModel):
    """``[rails]``: which outcomes go out at once, and how bulk jobs are batched."""

    model_config = _Frozen

    bulk_interval_s: float = Field(default=60.0, ge=1, le=86400)
    bulk_max_records: int = Field(default=10_000, ge=1, le=150_000_000)
    # A smaller backlog goes through sObject Collections (200 per call), which costs
    # fewer API calls than a Bulk job's create/upload/poll/results for it.
    bulk_min_records: int = Field(default=2_000, ge=1, le=150_000_000)
    # Milliseconds the live rail waits after an urgent outcome for others to share its
    # API call (0: each goes at once; those already waiting together still share one).
    live_linger_ms: float = Field(default=0.0, ge=0, le=5000)
    live_dispositions: tuple[Disposition, ...] = (
        Disposition.DO_NOT_CALL,
        Disposition.CALLBACK_REQUESTED,
    )
    # Limits: the org's daily API allocation is shared with every other integration.
    quota_reserve: float = Field(default=0.10, ge=0, lt=1)  # kept for urgent outcomes
    quota_max_share: float = Field(default=0.50, gt=0, le=1)  # most this daemon may spend
    # Timings
    # Seconds a Bulk batch's records stay reserved for it, renewed every third of that
    # while its job is polled (polls come up to 36 s apart: hence at least 120). A batch
    # stalled longer gives its records back to pending, for any rail to send again.
    bulk_lease_s: float = Field(default=900.0, ge=120, le=86400)
    # Seconds a rail paused by a configuration error (a Bulk job Failed on the file, an
    # unknown field, a refused login) waits before it tries again.
    config_recheck_s: float = Field(default=60.0, ge=1, le=3600)
    # Seconds between reads of /limits (a fifth of it while the quota is exhausted); each
    # read is one API call and Salesforce updates the figures only every few minutes.
    limits_interval_s: float = Field(default=300.0, ge=60, le=86400)


class MappingSettings(BaseModel):
    """``[mapping]``: how a call outcome becomes Task and Lead fields."""

    model_config = _Frozen

    file: Path | None = None  # empty = the built-in mapping

    @field_validator("file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class LogSettings(BaseModel):
    """``[log]``: log format and level."""

    model_config = _Frozen

    format: Literal["auto", "console", "logfmt", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("format", "level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class DaemonSettings(BaseModel):
    """``[daemon]``: shutdown and status timing, time zone, event loop."""

    model_config = _Frozen

    # At most SHUTDOWN_TIMEOUT_MAX_S: see _check_shutdown_timeout.
    shutdown_timeout_s: float = Field(default=25.0, gt=0)
    status_interval_s: float = Field(default=5.0, gt=0, le=3600)
    # Zone of dialer timestamps written without an offset (VICIdial, CDR files),
    # for adapters without their own ``tz`` and for ``dispo-sync ingest``.
    default_tz: str = "UTC"
    # "auto": uvloop when installed, else asyncio's own loop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    @field_validator("shutdown_timeout_s")
    @classmethod
    def _check_shutdown_timeout(cls, value: float) -> float:
        # systemd SIGKILLs the service TimeoutStopSec after SIGTERM; the drain deadline must
        # leave time after it to stop the HTTP server and close (flush) the spool.
        if value > SHUTDOWN_TIMEOUT_MAX_S:
            raise ValueError(
                f"at most {SHUTDOWN_TIMEOUT_MAX_S:g} seconds: systemd/dispo-sync.service has "
                f"TimeoutStopSec={UNIT_TIMEOUT_STOP_S} and kills the service then; the last "
                f"{UNIT_TIMEOUT_STOP_S - SHUTDOWN_TIMEOUT_MAX_S:g} seconds are for closing "
                "the spool"
            )
        return value

    @field_validator("default_tz")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "expected an IANA time zone name such as 'America/Chicago' or 'UTC'"
            ) from None
        return value

    @field_validator("event_loop")
    @classmethod
    def _check_loop(cls, value: str) -> str:
        if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ValueError("uvloop is not installed here; use 'auto' or 'asyncio'")
        return value


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
    )

    salesforce: SalesforceSettings
    spool: SpoolSettings = SpoolSettings()
    http: HttpSettings = HttpSettings()
    rails: RailsSettings = RailsSettings()
    mapping: MappingSettings = MappingSettings()
    log: LogSettings = LogSettings()
    daemon: DaemonSettings = DaemonSettings()
    adapter: tuple[dict[str, Any], ...] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() reads and merges every source itself so that it can say
        # where each value came from; the model only validates what it is given.
        return (init_settings,)


# --------------------------------------------------------------------------- sources


class _MappedEnvSource(EnvSettingsSource):
    """pydantic-settings' env parsing, over an injectable mapping (tests)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._environ.items() if k.upper().startswith(ENV_PREFIX)}


class CredentialsDirectorySource(PydanticBaseSettingsSource):
    """Secrets from ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``).

    Each file holds one secret; a single trailing newline is stripped.
    """

    def __init__(self, settings_cls: type[BaseSettings], directory: Path | None) -> None:
        super().__init__(settings_cls)
        self.directory = directory
        self.used: dict[tuple[str, ...], str] = {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Not used: __call__ builds the nested dict directly.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.directory is None or not self.directory.is_dir():
            return out
        for entry in sorted(self.directory.iterdir()):
            if entry.name in CREDENTIAL_FILES:
                section, key = CREDENTIAL_FILES[entry.name]
                out.setdefault(section, {})[key] = _read_secret(entry)
                self.used[(section, key)] = entry.name
        return out

    def adapter_secrets(self, tables: list[Any], *, from_environment: Container[int] = ()) -> None:
        """Fill ``secret`` of adapter tables from ``adapter-<index|name>-secret``.

        ``from_environment``: indexes of tables whose ``secret`` the environment set;
        the environment is the stronger source, so their credential file is ignored.
        """
        if self.directory is None or not self.directory.is_dir():
            return
        for entry in sorted(self.directory.iterdir()):
            match = _ADAPTER_CREDENTIAL.match(entry.name)
            if not match:
                continue
            which = match.group("which")
            for index, table in enumerate(tables):
                # Not a table: reported by validation; skipped here so indexes stay true.
                if not isinstance(table, dict) or index in from_environment:
                    continue
                if which == str(index) or which == table.get("name"):
                    table["secret"] = _read_secret(entry)
                    self.used[("adapter", str(index), "secret")] = entry.name


def _read_secret(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text


# --------------------------------------------------------------------------- loading


def _flatten(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    for key, value in data.items():
        path = (*prefix, str(key))
        yield path
        if isinstance(value, Mapping):
            yield from _flatten(value, path)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from _flatten(item, (*path, str(index)))


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(p.upper() for p in path)


def _secret_values(data: Any, key: str = "") -> Iterable[str]:
    if isinstance(data, Mapping):
        for k, v in data.items():
            yield from _secret_values(v, str(k))
    elif isinstance(data, list | tuple):
        for item in data:
            yield from _secret_values(item, key)
    elif isinstance(data, str) and data and _SECRET_KEY.search(key):
        yield data


class _Provenance:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.where: dict[tuple[str, ...], str] = {}

    def record(self, data: Mapping[str, Any], label: Any) -> None:
        for path in _flatten(data):
            self.where[path] = label(path) if callable(label) else label

    def source_of(self, path: tuple[str, ...]) -> str:
        # The most specific recorded prefix names the source.
        for end in range(len(path), 0, -1):
            found = self.where.get(path[:end])
            if found is not None:
                return found
        return "not set"

    def where_to_set(self, path: tuple[str, ...]) -> str:
        places = [f"the config file {self.config_path}", _env_name(path)]
        for name, target in CREDENTIAL_FILES.items():
            if target == path:
                places.append(f"credential file {name}")
        return "set it in " + ", ".join(places[:-1]) + " or " + places[-1]


def load_settings(
    config_path: Path | str = DEFAULT_CONFIG_PATH,
    *,
    environ: Mapping[str, str] | None = None,
    credentials_dir: Path | str | None = None,
    only: Iterable[str] | None = None,
) -> Settings:
    """Read, merge and validate the configuration; raise :class:`SettingsError`.

    ``environ`` defaults to ``os.environ``; ``credentials_dir`` to
    ``$CREDENTIALS_DIRECTORY``. With ``only`` (section names), the other
    sections are not validated (the admin commands need just ``[spool]``), and
    their defaults or placeholders stand in.
    """
    env = os.environ if environ is None else environ
    config_path = Path(config_path)
    if credentials_dir is None and env.get("CREDENTIALS_DIRECTORY"):
        credentials_dir = env["CREDENTIALS_DIRECTORY"]
    cred_dir = Path(credentials_dir) if credentials_dir else None
    prov = _Provenance(config_path)
    problems: list[Problem] = []

    # 3. the file
    file_data: dict[str, Any] = {}
    file_label = f"file {config_path}"
    try:
        with config_path.open("rb") as fh:
            file_data = tomllib.load(fh)
    except FileNotFoundError:
        problems.append(
            Problem("--config", file_label, "file not found (create it from config.example.toml)")
        )
    except PermissionError:
        problems.append(Problem("--config", file_label, "not readable by this user"))
    except IsADirectoryError:
        problems.append(Problem("--config", file_label, "is a directory, expected a TOML file"))
    except tomllib.TOMLDecodeError as exc:
        problems.append(Problem("--config", file_label, f"not valid TOML: {exc}"))
    prov.record(file_data, file_label)

    # 2. credentials
    creds = CredentialsDirectorySource(Settings, cred_dir)
    try:
        cred_data = creds()
    except OSError as exc:
        cred_data = {}
        problems.append(
            Problem(
                "$CREDENTIALS_DIRECTORY", f"directory {cred_dir}", f"unreadable: {exc.strerror}"
            )
        )

    # 1. environment
    try:
        env_data = _MappedEnvSource(Settings, env)()
    except _EnvParseError as exc:
        env_data = {}
        problems.append(Problem("environment", "env", f"{exc} (lists and tables must be JSON)"))
    prov.record(env_data, lambda path: f"env {_env_name(path)}")

    merged = _merge(_merge(file_data, cred_data), env_data)
    tables = merged.get("adapter", [])
    if isinstance(tables, list):
        tables = [dict(t) if isinstance(t, Mapping) else t for t in tables]
        merged["adapter"] = tables
        # DISPO_ADAPTER replaces the whole list: a secret in it beats the credential file.
        env_secrets = {
            int(path[1])
            for path in _flatten(env_data)
            if len(path) == 3 and path[0] == "adapter" and path[1].isdigit() and path[2] == "secret"
        }
        try:
            creds.adapter_secrets(tables, from_environment=env_secrets)
        except OSError as exc:
            problems.append(
                Problem("$CREDENTIALS_DIRECTORY", f"directory {cred_dir}", f"unreadable: {exc}")
            )
    for path, name in creds.used.items():
        prov.where[path] = f"credential {name}"
    secrets = sorted(set(_secret_values(merged)), key=len, reverse=True)

    wanted = set(only) if only is not None else None
    if wanted is not None:
        # Admin commands: validate only what they use; keep the rest out of the way.
        merged = {k: v for k, v in merged.items() if k in wanted}
        if "salesforce" not in wanted:
            merged["salesforce"] = {"login_url": "https://unused.invalid", "client_id": "unused"}

    for key in merged:
        if key not in _SECTIONS and key != "adapter":
            problems.append(
                Problem(
                    key,
                    prov.source_of((key,)),
                    "unknown section; expected one of " + ", ".join((*_SECTIONS, "[[adapter]]")),
                )
            )

    # A missing [salesforce] section is reported key by key, not as one blob.
    merged.setdefault("salesforce", {})
    settings: Settings | None = None
    try:
        settings = Settings(**{k: v for k, v in merged.items() if k in (*_SECTIONS, "adapter")})
    except ValidationError as exc:
        problems += _translate(exc, prov, secrets)

    if wanted is None or "salesforce" in wanted:
        # Cross-key checks (what the auth flow needs) run even when other keys of
        # the section are wrong, so fixing one problem never reveals another.
        salesforce, bad_keys = _salesforce_for_cross_checks(merged["salesforce"])
        for key, message in salesforce.problems() if salesforce is not None else []:
            if key in bad_keys:
                continue  # already reported by the validation above
            path = ("salesforce", key)
            source = prov.where.get(path, "not set")
            hint = f"; {prov.where_to_set(path)}" if source == "not set" else ""
            problems.append(Problem(_key(path), source, message + hint))
    if (wanted is None or "adapter" in wanted) and isinstance(merged.get("adapter"), list):
        problems += _adapter_problems(merged["adapter"], prov, secrets)

    if problems:
        raise SettingsError(_dedupe(problems))
    assert settings is not None
    return settings


# Stand-ins for required [salesforce] keys that were already reported as wrong.
_SALESFORCE_STAND_INS = {"login_url": "https://stand-in.invalid", "client_id": "stand-in"}


def _salesforce_for_cross_checks(
    raw: Any,
) -> tuple[SalesforceSettings | None, set[str]]:
    """The section validated without its wrong keys (None if that is impossible)."""
    if not isinstance(raw, Mapping):
        return None, set()
    try:
        return SalesforceSettings.model_validate(raw), set()
    except ValidationError as exc:
        bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    if "auth" in bad:
        return None, bad  # which flow's needs to check is unknown
    kept = {k: v for k, v in raw.items() if k not in bad}
    for key, stand_in in _SALESFORCE_STAND_INS.items():
        kept.setdefault(key, stand_in)
    try:
        return SalesforceSettings.model_validate(kept), bad
    except ValidationError:
        return None, bad


def _adapter_problems(
    tables: list[dict[str, Any]], prov: _Provenance, secrets: list[str]
) -> list[Problem]:
    try:
        from adapters import validate_adapter_configs  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # pragma: no cover - adapters package not wired yet
        return []
    out: list[Problem] = []
    for line in validate_adapter_configs(tables):
        key, _, message = str(line).partition(": ")
        match = re.match(r"^adapter\[(\d+)\](?:\.(\w+))?", key)
        path: tuple[str, ...] = ("adapter",)
        if match:
            path = ("adapter", match.group(1)) + ((match.group(2),) if match.group(2) else ())
        out.append(Problem(key, prov.source_of(path), _scrub(message or line, secrets)))
    return out


def _translate(exc: ValidationError, prov: _Provenance, secrets: list[str]) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        key = _key(loc) if loc else "(config)"
        source = prov.source_of(loc)
        kind = err["type"]
        if kind == "missing":
            out.append(Problem(key, "not set", f"required; {prov.where_to_set(loc)}"))
            continue
        if kind == "extra_forbidden":
            out.append(Problem(key, source, "unknown key (misspelt? see config.example.toml)"))
            continue
        message = str(err["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        leaf = loc[-1] if loc else ""
        value = err.get("input")
        shown = repr(value)
        if (
            not _SECRET_KEY.search(leaf)
            and isinstance(value, str | int | float | bool)
            and shown not in message
        ):
            message = f"{message} (got {shown[:77] + '...' if len(shown) > 80 else shown})"
        out.append(Problem(key, source, _scrub(message, secrets)))
    return out


def _key(path: tuple[str, ...]) -> str:
    """``("adapter", "0", "secret")`` -> ``adapter[0].secret``."""
    out = ""
    for part in path:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out: list[Problem] = []
    for problem in problems:
        ident = (problem.key, problem.message)
        if ident not in seen:
            seen.add(ident)
            out.append(problem)
    return out
