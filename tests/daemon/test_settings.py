"""Settings: file + env + credential files, every problem reported once, secrets hidden."""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from adapters.config import FileConfig, WebhookConfig
from daemon.settings import (
    CREDENTIAL_FILES,
    SHUTDOWN_TIMEOUT_MAX_S,
    UNIT_TIMEOUT_STOP_S,
    SalesforceSettings,
    Settings,
    SettingsError,
    load_settings,
)
from spool.record import Disposition

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "config.example.toml"

MINIMAL = """
[salesforce]
login_url = "https://acme.my.salesforce.com"
client_id = "3MVGkey"
client_secret = "file-secret-value"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def problems_of(exc: pytest.ExceptionInfo[SettingsError]) -> dict[str, str]:
    return {p.key: f"{p.source} | {p.message}" for p in exc.value.problems}


def test_minimal_file_gives_documented_defaults(tmp_path: Path) -> None:
    """A file with only the required keys loads, and every other key has its default."""
    s = load_settings(write(tmp_path, MINIMAL), environ={})
    assert s.salesforce.login_url == "https://acme.my.salesforce.com"
    assert s.salesforce.auth == "client_credentials"
    assert s.salesforce.api_version == "62.0"
    assert s.spool.path == Path("/var/lib/dispo-sync/spool.db")
    assert s.http.listen == "127.0.0.1:9410"
    assert (s.http.host, s.http.port) == ("127.0.0.1", 9410)
    assert s.rails.bulk_interval_s == 60
    assert s.rails.bulk_max_records == 10_000
    assert s.rails.live_dispositions == (Disposition.DO_NOT_CALL, Disposition.CALLBACK_REQUESTED)
    assert s.salesforce.client_secret is not None
    assert s.salesforce.client_secret.get_secret_value() == "file-secret-value"


def test_example_config_loads_with_a_credential_file(tmp_path: Path) -> None:
    """The shipped example is valid once the secret comes from $CREDENTIALS_DIRECTORY."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "salesforce-client-secret").write_text("from-credential\n")
    s = load_settings(EXAMPLE, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert s.salesforce.client_secret is not None
    assert s.salesforce.client_secret.get_secret_value() == "from-credential"
    assert s.adapter[0]["type"] == "webhook"


def test_example_documents_every_key() -> None:
    """config.example.toml mentions every key of every section (set or commented out)."""
    text = EXAMPLE.read_text().split("every [[adapter]] key")[0]  # not the adapter reference
    for section, field in Settings.model_fields.items():
        if section == "adapter":
            assert "[[adapter]]" in text
            continue
        assert f"[{section}]" in text, section
        model = field.annotation
        assert model is not None
        for key in model.model_fields:
            if key == "private_key":  # PEM content: only as credential file
                assert "salesforce-private-key" in text
                continue
            assert re.search(rf"^#? ?{key} = ", text, re.M), f"{section}.{key} undocumented"


def test_example_shows_every_default() -> None:
    """Each key with a default is set in config.example.toml to exactly that default."""
    example = tomllib.loads(EXAMPLE.read_text())
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if section == "adapter" or not isinstance(model, type) or not issubclass(model, BaseModel):
            continue
        for key, info in model.model_fields.items():
            if info.is_required():
                assert key in example[section], f"{section}.{key} (required) is not shown"
                continue
            if info.get_default() is None:
                continue  # optional, shown commented out (test_example_documents_every_key)
            assert key in example[section], f"{section}.{key} is not set to its default"
            shown = model.model_validate({**example[section], key: example[section][key]})
            assert getattr(shown, key) == info.get_default(), f"{section}.{key}"


def test_daemon_zone_and_event_loop_are_checked(tmp_path: Path) -> None:
    """[daemon] default_tz must be an IANA zone; event_loop one of auto, uvloop, asyncio."""
    with pytest.raises(SettingsError) as exc:
        load_settings(
            write(tmp_path, MINIMAL + '[daemon]\ndefault_tz = "CST"\nevent_loop = "trio"\n'),
            environ={},
        )
    text = str(exc.value)
    assert "daemon.default_tz" in text and "IANA time zone" in text
    assert "daemon.event_loop" in text
    s = load_settings(
        write(tmp_path, MINIMAL + '[daemon]\ndefault_tz = "America/Chicago"\n'), environ={}
    )
    assert s.daemon.default_tz == "America/Chicago" and s.daemon.event_loop == "auto"


def test_env_overrides_file_and_parses_lists(tmp_path: Path) -> None:
    """DISPO_SECTION__KEY beats the file; lists are JSON."""
    env = {
        "DISPO_SPOOL__PATH": str(tmp_path / "s.db"),
        "DISPO_RAILS__LIVE_DISPOSITIONS": '["do_not_call"]',
        "DISPO_RAILS__BULK_INTERVAL_S": "5",
        "UNRELATED": "x",
    }
    s = load_settings(write(tmp_path, MINIMAL + '[spool]\npath = "/nope.db"\n'), environ=env)
    assert s.spool.path == tmp_path / "s.db"
    assert s.rails.live_dispositions == (Disposition.DO_NOT_CALL,)
    assert s.rails.bulk_interval_s == 5


def test_rail_timings_default_and_out_of_range_values_are_refused(tmp_path: Path) -> None:
    """[rails] bulk_lease_s, config_recheck_s and limits_interval_s default to the values the
    rails used when they were fixed; a value out of range, from the file or the environment,
    is refused naming the key, where it came from and the bound."""
    rails = load_settings(write(tmp_path, MINIMAL), environ={}).rails
    assert (rails.bulk_lease_s, rails.config_recheck_s, rails.limits_interval_s) == (900, 60, 300)

    text = MINIMAL + "[rails]\nbulk_lease_s = 30\nconfig_recheck_s = 7200\n"
    env = {"DISPO_RAILS__LIMITS_INTERVAL_S": "5"}
    with pytest.raises(SettingsError) as exc:
        load_settings(write(tmp_path, text), environ=env)
    found = problems_of(exc)
    path = tmp_path / "config.toml"
    assert found["rails.bulk_lease_s"].startswith(f"file {path} | ")
    assert "greater than or equal to 120" in found["rails.bulk_lease_s"]
    assert "less than or equal to 3600" in found["rails.config_recheck_s"]
    assert found["rails.limits_interval_s"].startswith("env DISPO_RAILS__LIMITS_INTERVAL_S | ")
    assert "greater than or equal to 60" in found["rails.limits_interval_s"]
    assert len(exc.value.problems) == 3


def test_every_problem_listed_once_with_key_source_and_expectation(tmp_path: Path) -> None:
    """One error lists each bad key with where it came from and what is expected."""
    creds = tmp_path / "creds"
    creds.mkdir()
    text = """
[salesforce]
login_url = "http://acme.example.com"
client_id = "x"
client_secret = "s"
api_version = "62"
clinet_id = "typo"
[spool]
max_pending = 0
[rails]
live_dispositions = ["do_not_call", "hung_up"]
[bogus]
x = 1
"""
    with pytest.raises(SettingsError) as exc:
        load_settings(
            write(tmp_path, text),
            environ={"DISPO_HTTP__LISTEN": "localhost", "CREDENTIALS_DIRECTORY": str(creds)},
        )
    found = problems_of(exc)
    path = tmp_path / "config.toml"
    assert found["salesforce.login_url"].startswith(f"file {path} | plain http://")
    assert "62.0" in found["salesforce.api_version"]
    assert "unknown key" in found["salesforce.clinet_id"]
    assert "greater than or equal to 1" in found["spool.max_pending"]
    assert "'hung_up'" in found["rails.live_dispositions[1]"]
    assert found["http.listen"].startswith("env DISPO_HTTP__LISTEN | expected host:port")
    assert "unknown section" in found["bogus"]
    keys = [p.key for p in exc.value.problems]
    assert len(keys) == len(set(keys)) == 7
    assert str(exc.value).startswith("invalid configuration (7 problems):")


def test_missing_required_keys_say_where_to_set_them(tmp_path: Path) -> None:
    """A missing secret names the file key, the env variable and the credential file."""
    text = '[salesforce]\nlogin_url = "https://a.my.salesforce.com"\nclient_id = "x"\n'
    with pytest.raises(SettingsError) as exc:
        load_settings(write(tmp_path, text), environ={})
    (problem,) = exc.value.problems
    assert problem.key == "salesforce.client_secret"
    assert problem.source == "not set"
    assert "required when auth = 'client_credentials'" in problem.message
    assert "DISPO_SALESFORCE__CLIENT_SECRET" in problem.message
    assert "credential file salesforce-client-secret" in problem.message


def test_missing_file_and_bad_toml_are_reported(tmp_path: Path) -> None:
    """A missing file and a TOML syntax error name the file and the line."""
    with pytest.raises(SettingsError) as exc:
        load_settings(tmp_path / "absent.toml", environ={})
    found = problems_of(exc)
    assert "file not found" in found["--config"]
    assert "salesforce.login_url" in found and "salesforce.client_id" in found

    with pytest.raises(SettingsError) as exc:
        load_settings(write(tmp_path, "[salesforce]\nlogin_url = \n"), environ={})
    assert "not valid TOML" in problems_of(exc)["--config"]
    assert "line 2" in problems_of(exc)["--config"]


def test_secrets_never_appear_in_errors_or_repr(tmp_path: Path) -> None:
    """Secret values stay hidden in error messages and in the settings' repr."""
    secret = "Sup3rS3cretValue"
    text = MINIMAL.replace("file-secret-value", secret) + f'password = ["{secret}"]\n'
    text += f'[http]\nlisten = "{secret}"\n'  # a secret pasted in the wrong place
    with pytest.raises(SettingsError) as exc:
        load_settings(write(tmp_path, text), environ={})
    assert secret not in str(exc.value)
    assert "salesforce.password" in problems_of(exc)

    s = load_settings(write(tmp_path, MINIMAL.replace("file-secret-value", secret)), environ={})
    assert secret not in repr(s) and secret not in str(s.model_dump())


def test_credential_files_map_to_keys_and_env_still_wins(tmp_path: Path) -> None:
    """Each recognised credential file fills its key; an env variable overrides it."""
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in CREDENTIAL_FILES:
        (creds / name).write_text(f"{name}-value\n")
    (creds / "adapter-0-secret").write_text("hook-secret\n")
    text = MINIMAL + '[[adapter]]\ntype = "webhook"\n'
    env = {"CREDENTIALS_DIRECTORY": str(creds), "DISPO_SALESFORCE__PASSWORD": "from-env"}
    s = load_settings(write(tmp_path, text), environ=env)
    sf = s.salesforce
    assert sf.client_secret is not None and sf.refresh_token is not None
    assert sf.client_secret.get_secret_value() == "salesforce-client-secret-value"
    assert sf.refresh_token.get_secret_value() == "salesforce-refresh-token-value"
    assert sf.password is not None and sf.password.get_secret_value() == "from-env"
    assert s.adapter[0]["secret"] == "hook-secret"


def test_env_beats_credential_file_for_adapter_secrets(tmp_path: Path) -> None:
    """README: 'Precedence: environment, then credential files, then the file.' Adapter
    secrets too: DISPO_ADAPTER's secret wins over adapter-0-secret, which wins over the
    file's; a table the environment gives without a secret still gets the credential."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "adapter-0-secret").write_text("from-credential-file\n")
    (creds / "adapter-hook-secret").write_text("hook-from-credential-file\n")
    table = {"type": "webhook", "preset": "json", "listen": "127.0.0.1:0"}
    tables = [
        {**table, "secret": "from-the-environment"},
        {**table, "name": "hook"},
    ]
    env = {"CREDENTIALS_DIRECTORY": str(creds), "DISPO_ADAPTER": json.dumps(tables)}
    s = load_settings(write(tmp_path, MINIMAL), environ=env)
    assert [a["secret"] for a in s.adapter] == [
        "from-the-environment",
        "hook-from-credential-file",
    ]
    in_file = MINIMAL + '[[adapter]]\ntype = "webhook"\nsecret = "from-the-file"\n'
    s = load_settings(write(tmp_path, in_file), environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert s.adapter[0]["secret"] == "from-credential-file"


def test_shutdown_timeout_stays_below_the_units_stop_timeout(tmp_path: Path) -> None:
    """systemd SIGKILLs the service TimeoutStopSec (30 s) after SIGTERM, so the drain
    deadline is at most 25 s; more is refused naming both, and the unit says 30."""
    unit = (EXAMPLE.parent / "dispo-sync.service").read_text()
    assert re.search(rf"^TimeoutStopSec={UNIT_TIMEOUT_STOP_S}$", unit, re.M)
    assert SHUTDOWN_TIMEOUT_MAX_S <= UNIT_TIMEOUT_STOP_S - 5
    s = load_settings(write(tmp_path, MINIMAL + "[daemon]\nshutdown_timeout_s = 25\n"), environ={})
    assert s.daemon.shutdown_timeout_s == 25
    with pytest.raises(SettingsError) as exc:
        load_settings(write(tmp_path, MINIMAL + "[daemon]\nshutdown_timeout_s = 60\n"), environ={})
    message = problems_of(exc)["daemon.shutdown_timeout_s"]
    assert "at most 25 seconds" in message and "TimeoutStopSec=30" in message, message
    assert "(got 60)" in message


def test_auth_flows_need_their_own_keys() -> None:
    """Each OAuth flow lists exactly the keys it still needs."""
    base = {"login_url": "https://a.my.salesforce.com", "client_id": "x"}
    jwt = SalesforceSettings.model_validate({**base, "auth": "jwt"})
    assert {k for k, _ in jwt.problems()} == {"username", "private_key_file"}
    pw = SalesforceSettings.model_validate({**base, "auth": "password", "client_secret": "s"})
    assert {k for k, _ in pw.problems()} == {"username", "password"}
    local = SalesforceSettings.model_validate(
        {
            **base,
            "login_url": "http://127.0.0.1:8443/",
            "auth": "refresh_token",
            "refresh_token": "r",
        }
    )
    assert local.problems() == [] and local.login_url == "http://127.0.0.1:8443"


def test_only_spool_section_needs_no_salesforce(tmp_path: Path) -> None:
    """Admin commands can read [spool] from a file without Salesforce keys."""
    path = write(tmp_path, f'[spool]\npath = "{tmp_path / "q.db"}"\n')
    assert load_settings(path, environ={}, only=("spool",)).spool.path == tmp_path / "q.db"


def test_a_wrong_key_does_not_hide_what_the_auth_flow_needs(tmp_path: Path) -> None:
    """A bad login_url and a missing secret are reported together, each once."""
    cfg = write(tmp_path, '[salesforce]\nlogin_url = "http://acme.example.com"\nclient_id = "k"\n')
    with pytest.raises(SettingsError) as exc:
        load_settings(cfg, environ={})
    assert [p.key for p in exc.value.problems] == [
        "salesforce.login_url",
        "salesforce.client_secret",
    ]
    cfg = write(tmp_path, '[salesforce]\nauth = "jwt"\nclient_id = 5\n')
    with pytest.raises(SettingsError) as exc:
        load_settings(cfg, environ={})
    keys = sorted(p.key for p in exc.value.problems)
    assert keys == [
        "salesforce.client_id",
        "salesforce.login_url",
        "salesforce.private_key_file",
        "salesforce.username",
    ]


def example_adapter_block(kind: str) -> tuple[dict[str, Any], set[str]]:
    """The commented-out reference block for one adapter type: (table, example keys)."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index(f'# type = "{kind}"')
    body: list[str] = []
    for line in lines[start:]:
        if line in ("#", "") or line == "# [[adapter]]":
            break
        body.append(line.removeprefix("# "))
    table = tomllib.loads("\n".join(body))
    examples = {line.split(" = ")[0] for line in body if "(example)" in line}
    return table, examples


REQUIRED = {
    "webhook": {"type": "webhook"},
    "websocket": {"type": "websocket", "url": "ws://dialer.invalid"},
    "ari": {"type": "ari", "url": "ws://pbx.invalid", "app": "dialer"},
    "file": {"type": "file", "path": "/var/log/cdr.csv"},
}


@pytest.mark.parametrize("kind", sorted(REQUIRED))
def test_example_lists_every_adapter_key_with_its_default(kind: str) -> None:
    """Each adapter type's reference block names every key, is valid, and shows defaults."""
    from adapters import ADAPTER_TYPES

    module = importlib.import_module(ADAPTER_TYPES[kind])
    table, examples = example_adapter_block(kind)
    if kind in ("webhook", "file"):
        model = WebhookConfig if kind == "webhook" else FileConfig
        keys = set(model.model_fields)

        def build(t: dict[str, Any]) -> Any:
            return model.model_validate(t)
    else:
        keys = set(module._KEYS)
        config = module.WebsocketConfig if kind == "websocket" else module.AriConfig

        def build(t: dict[str, Any]) -> Any:
            return config.from_table(t, 0)

    assert keys == set(table), f"{kind}: missing {keys - set(table)}, unknown {set(table) - keys}"
    assert module.validate(table, 0) == []
    shown = {k: v for k, v in table.items() if k not in examples}
    required = REQUIRED[kind]
    # The lines not marked (example) are exactly the defaults: they change nothing.
    assert build({**shown, **required}) == build(required)
