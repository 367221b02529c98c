"""``[[adapter]]`` tables for the ``webhook`` and ``file`` adapters (pydantic models).

Every table has ``type`` and ``name`` plus the type's own keys; unknown keys are
refused. Problems are reported as ``adapter[<index>].<key>: <what is wrong>``
(see :func:`table_problems`) so ``check-config`` shows all of them at once.

Webhook::

    [[adapter]]
    type = "webhook"
    preset = "vicidial"                 # vicidial | twilio | json (default json)
    name = "vicidial"                   # the outcomes' `source` (default: the preset)
    listen = "0.0.0.0:8081"             # host:port (port 0 = any free port)
    path = "/vicidial"                  # vicidial: <path>/dispo and <path>/no-agent
    secret = "..."                      # better: credential file adapter-<name>-secret
    trusted = false                     # true = no authentication (trusted network only)
    public_url = "https://hooks.example.com/twilio"   # twilio: the URL Twilio signs
    proxy_headers = false               # twilio: rebuild the URL from X-Forwarded-Proto/Host
    max_body_bytes = 1048576
    read_timeout_s = 30.0               # a body that trickles in slower is refused (408)
    max_connections = 1000              # concurrent connections; beyond: 503
    tz = "America/Chicago"              # zone of naive timestamps (VICIdial, CDR)
    params = { phone_number = "phone" } # vicidial: our name -> the query parameter used
    lead_param = "lead"                 # twilio: query parameter carrying the Lead (Id or key)
    signature_header = "X-Signature"    # json: "sha256=<hex hmac-sha256(body)>"
    dispositions = { WN = "wrong_number" }

File (backfill; also ``dispo-sync ingest FILE``)::

    [[adapter]]
    type = "file"
    name = "cdr"
    path = "/var/log/asterisk/cdr-csv/Master.csv"
    format = "asterisk-cdr"             # or "csv" with a header mapping
    mapping = { call_id = "Call ID", disposition = "Result", ended_at = "End" }
    tz = "UTC"
    watch_interval_s = 0                # > 0: pick up appended rows every N seconds
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.dispositions import Mapped, parse_overrides

__all__ = [
    "FileConfig",
    "WebhookConfig",
    "check_tz",
    "parse_listen",
    "table_problems",
]

_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"

#: VICIdial variable names we read (the keys of ``params``); values are the
#: query parameter names the admin used in the URL template.
VICIDIAL_PARAMS = (
    "token",
    "lead_id",
    "vendor_lead_code",
    "phone_number",
    "dispo",
    "status",
    "dispo_name",
    "user",
    "campaign",
    "uniqueid",
    "call_id",
    "talk_time",
    "callback_datetime",
    "call_notes",
    "term_reason",
    "epoch",
    "list_id",
    "recording_filename",
)

#: CallOutcome fields (and lead_*) a generic CSV can map.
CSV_FIELDS = (
    "call_id",
    "disposition",
    "detail",
    "agent_id",
    "campaign",
    "phone",
    "direction",
    "started_at",
    "ended_at",
    "duration_s",
    "talk_s",
    "callback_at",
    "recording_url",
    "notes",
    "source_seq",
    "lead_id",
    "lead_external_key",
    "lead_phone",
)


def check_tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (an IANA name like 'Europe/Paris')"
        ) from None
    return value


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8081`` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, pattern=_NAME_PATTERN)
    tz: str | None = None
    dispositions: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_tz(value)

    @field_validator("dispositions")
    @classmethod
    def _dispositions(cls, value: dict[str, Any]) -> dict[str, Any]:
        _, problems = parse_overrides(value, "dispositions")
        if problems:
            raise ValueError("; ".join(p.removeprefix("dispositions.") for p in problems))
        return value

    def overrides(self) -> dict[str, Mapped]:
        return parse_overrides(self.dispositions)[0]


class WebhookConfig(_Table):
    """``type = "webhook"``."""

    type: Literal["webhook"] = "webhook"
    preset: Literal["vicidial", "twilio", "json"] = "json"
    listen: str = "127.0.0.1:8081"
    path: str | None = None
    secret: str | None = Field(default=None, repr=False)
    trusted: bool = False
    public_url: str | None = None
    proxy_headers: bool = False
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    params: dict[str, str] = Field(default_factory=dict)
    lead_param: str | None = None
    signature_header: str = "X-Signature"
    retry_after_s: float = Field(default=5.0, gt=0, le=3600)
    # Timeouts / limits
    read_timeout_s: float = Field(default=30.0, gt=0, le=600)  # whole body must arrive in this
    max_connections: int = Field(default=1000, ge=1, le=100_000)  # more: 503 from uvicorn
    max_batch: int = Field(default=1000, ge=1, le=10_000)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "?" in value):
            raise ValueError(f"must be an absolute path without query, got {value!r}")
        return None if value is None else value.rstrip("/") or "/"

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and len(value.strip()) < 8:
            raise ValueError("must be at least 8 characters (or leave it out with trusted = true)")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        if value is not None and "?" in value:
            raise ValueError("must not contain a query string (the request's own is appended)")
        return value

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(VICIDIAL_PARAMS))
        if unknown:
            raise ValueError(
                f"unknown VICIdial variable(s) {', '.join(unknown)}; "
                f"known: {', '.join(VICIDIAL_PARAMS)}"
            )
        return value

    @property
    def source(self) -> str:
        return self.name or self.preset

    @property
    def base_path(self) -> str:
        if self.path is not None:
            return self.path
        return {"vicidial": "/vicidial", "twilio": "/twilio", "json": "/outcomes"}[self.preset]

    def auth_problem(self) -> str | None:
        # A missing secret is refused by start(), not here: the secret often comes
        # from a credential file that only exists on the production host.
        if self.params and self.preset != "vicidial":
            return "params: only the vicidial preset has query parameters to remap"
        return None


class FileConfig(_Table):
    """``type = "file"``."""

    type: Literal["file"] = "file"
    path: str
    format: Literal["asterisk-cdr", "csv"] = "asterisk-cdr"
    mapping: dict[str, str] = Field(default_factory=dict)
    direction: Literal["outbound", "inbound"] = "outbound"
    watch_interval_s: float = Field(default=0.0, ge=0, le=86400)
    batch_size: int = Field(default=500, ge=1, le=10_000)

    @field_validator("mapping")
    @classmethod
    def _mapping(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(CSV_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(unknown)}; known: {', '.join(CSV_FIELDS)}"
            )
        return value

    @property
    def source(self) -> str:
        return self.name or ("cdr" if self.format == "asterisk-cdr" else "csv")


def table_problems(
    model: type[BaseModel], table: Mapping[str, Any], index: int
) -> tuple[BaseModel | None, list[str]]:
    """Validate one table: (model or None, ``adapter[i].key: message`` lines)."""
    try:
        cfg = model.model_validate(dict(table))
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(table)"
            if err["type"] == "extra_forbidden":
                msg = f"unknown key for type = {table.get('type')!r}"
            elif err["type"] == "missing":
                msg = "required"
            else:
                msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"adapter[{index}].{loc}: {msg}")
        return None, lines
    problem = getattr(cfg, "auth_problem", lambda: None)()
    if problem:
        return cfg, [f"adapter[{index}].{problem}"]
    return cfg, []
