"""The dispo-sync command line: help in an admin's words, options, config errors, exit codes."""

from __future__ import annotations

import argparse
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import EXIT_CONFIG, build_parser, main
from daemon.settings import Settings

COMMANDS = ["run", "demo", "status", "dead-letters", "check-config", "ingest"]


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`dispo-sync COMMAND --help` explains each command and exits 0."""
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert f"dispo-sync {command}" in text
        assert len(text.split()) > 25, command
    for action in ["list", "show", "retry", "drop", "export"]:
        with pytest.raises(SystemExit):
            main(["dead-letters", action, "--help"])
        assert "usage: dispo-sync dead-letters " + action in capsys.readouterr().out


def test_top_level_help_lists_commands_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """`dispo-sync --help` names every command and the exit codes."""
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in [*COMMANDS, "sim"]:
        assert command in text
    assert "78 the configuration is invalid" in text


def test_retry_needs_a_target() -> None:
    """`dead-letters retry` without an ID, --all or --error-code is a usage error."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["dead-letters", "retry"])
    assert exc.value.code == 2


def test_invalid_config_exits_78_listing_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid file makes check-config exit 78 and print each problem, no secret."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[salesforce]\nlogin_url = "ftp://x"\nclient_id = "id"\nclient_secret = "S3cret-xyz"\n'
        "[spool]\nmax_pending = -5\n"
    )
    assert main(["check-config", "--config", str(cfg)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "invalid configuration (2 problems)" in err
    assert "salesforce.login_url" in err and "spool.max_pending" in err
    assert "S3cret-xyz" not in err


def test_check_config_reports_pass_and_fail_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config prints a PASS/FAIL list and exits 1 when Salesforce cannot be reached."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[salesforce]\nlogin_url = "http://127.0.0.1:{port}"\nclient_id = "id"\n'
        f'client_secret = "s"\nconnect_timeout_s = 2\n[spool]\npath = "{tmp_path / "spool.db"}"\n'
        '[log]\nformat = "json"\n'
    )
    assert main(["check-config", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "PASS  configuration file" in out
    assert "PASS  spool directory" in out
    assert "FAIL  adapters: no [[adapter]] section" in out
    assert "PASS  mapping: built-in mapping is valid" in out
    assert "FAIL  salesforce login" in out


def test_sim_delegates_to_sfsim(capsys: pytest.CaptureFixture[str]) -> None:
    """`dispo-sync sim --help` is sfsim's own help (arguments are passed through)."""
    with pytest.raises(SystemExit) as exc:
        main(["sim", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: dispo-sync sim" in out and "--api-limit" in out


def test_log_options_before_sim_are_taken(capsys: pytest.CaptureFixture[str]) -> None:
    """`dispo-sync --log-level warning sim --help`, as the epilog allows the log options
    before any COMMAND, is sfsim's help, not "unrecognized arguments"; a bad value is a
    usage error naming the option."""
    with pytest.raises(SystemExit) as exc:
        main(["--log-level", "warning", "--log-format=json", "sim", "--help"])
    assert exc.value.code == 0
    assert "--api-limit" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--log-level", "loud", "sim"])
    assert exc.value.code == 2
    assert "--log-level: invalid choice: 'loud'" in capsys.readouterr().err


def test_admin_commands_need_no_salesforce_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status reads [spool] path from a config file that has no [salesforce] section."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[spool]\npath = "{tmp_path / "absent.db"}"\n')
    assert main(["status", "--config", str(cfg)]) == 1
    assert f"no spool file at {tmp_path / 'absent.db'}" in capsys.readouterr().out


async def test_check_config_against_an_org_passes_then_names_a_bad_field(
    tmp_path: Path,
) -> None:
    """check-config logs in to sfsim, describes Task and Lead; a bogus mapped field fails."""
    from daemon.checks import salesforce_checks
    from daemon.settings import load_settings
    from sfsim.testing import running_sim

    async with running_sim(tls=False) as sim:
        info = sim.info
        base = (
            f'[salesforce]\nlogin_url = "{info["instance_url"]}"\n'
            f'client_id = "{info["client_id"]}"\nclient_secret = "{info["client_secret"]}"\n'
        )
        cfg = tmp_path / "c.toml"
        cfg.write_text(base)
        checks = await salesforce_checks(load_settings(cfg, environ={}))
        by_name = {c.name: c for c in checks}
        for name in (
            "mapping",
            "salesforce login",
            "describe Task",
            "describe Lead",
            "mapped fields",
            "API quota",
        ):
            assert by_name[name].ok is True, (name, by_name[name].detail)
        # sfsim's Call_Id__c is Unique but not case-sensitive (Salesforce's default): a
        # warning line that does not fail the check.
        [note] = [c for c in checks if c.warning]
        assert note.ok is True and "Task.Call_Id__c is not case-sensitive" in note.detail
        assert note.line().startswith("WARN  mapped field: ")

        default = Path(__import__("daemon.mapping").mapping.__file__).parent / "default.toml"
        bad = tmp_path / "mapping.toml"
        bad.write_text(
            default.read_text().replace(
                'Status = "Completed"', 'Status = "Completed"\nCall_Mood__c = "{disposition}"'
            )
        )
        cfg.write_text(base + f'[mapping]\nfile = "{bad}"\n')
        checks = await salesforce_checks(load_settings(cfg, environ={}))
        failed = [c for c in checks if c.ok is not True]
        assert [c.name for c in failed] == ["mapped field"]
        assert "Call_Mood__c" in failed[0].detail

        cfg.write_text(base.replace(info["client_secret"], "wrong-secret"))
        checks = await salesforce_checks(load_settings(cfg, environ={}))
        login = next(c for c in checks if c.name == "salesforce login")
        assert login.ok is False and "invalid_client" in login.detail
        assert "wrong-secret" not in login.detail


async def test_check_config_without_a_task_key_field_warns_and_passes(tmp_path: Path) -> None:
    """A mapping with task.external_id_field = "" passes check-config against sfsim and
    prints one WARN line on what the insert fallback costs (no Bulk rail)."""
    from daemon.checks import salesforce_checks
    from daemon.settings import load_settings
    from sfsim.testing import running_sim

    default = Path(__import__("daemon.mapping").mapping.__file__).parent / "default.toml"
    text = default.read_text()
    assert 'external_id_field = "Call_Id__c"' in text and 'CallObject = "{call_id}"' in text
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        text.replace('external_id_field = "Call_Id__c"', 'external_id_field = ""').replace(
            'CallObject = "{call_id}"', 'CallObject = "{external_key}"'
        )
    )
    async with running_sim(tls=False) as sim:
        info = sim.info
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'[salesforce]\nlogin_url = "{info["instance_url"]}"\n'
            f'client_id = "{info["client_id"]}"\nclient_secret = "{info["client_secret"]}"\n'
            f'[mapping]\nfile = "{mapping}"\n'
        )
        checks = await salesforce_checks(load_settings(cfg, environ={}))
    assert [c for c in checks if c.ok is not True] == []
    assert any(c.name == "mapped fields" for c in checks)
    [note] = [c for c in checks if c.warning]
    line = note.line()
    assert line.startswith("WARN  mapped field: task.external_id_field: no Task external ID field")
    assert "sObject Collections" in line and "case-sensitive" in line


def all_help_texts() -> str:
    parser = build_parser()
    texts = [parser.format_help()]
    pending = [parser]
    while pending:
        for action in pending.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    texts.append(sub.format_help())
                    pending.append(sub)
    return "\n".join(texts)


def test_help_states_the_settings_defaults_truly() -> None:
    """Every '[section] key, which defaults to X' in --help is the default in settings.py."""
    text = " ".join(all_help_texts().split())
    claims = re.findall(r"\[(\w+)\] (\w+), which defaults to ([\w/]+)", text)
    assert len(claims) >= 3
    for section, key, value in claims:
        model = Settings.model_fields[section].annotation
        assert model is not None
        assert str(model.model_fields[key].get_default()) == value, (section, key)


def run_config(tmp_path: Path, *, salesforce: str = "", extra: str = "", fmt: str = "json") -> Path:
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        '[salesforce]\nlogin_url = "https://example.my.salesforce.com"\nclient_id = "id"\n'
        f'client_secret = "secret-value"\n{salesforce}[spool]\npath = "{tmp_path / "spool.db"}"\n'
        f'[http]\nlisten = "127.0.0.1:0"\n[log]\nformat = "{fmt}"\n{extra}'
    )
    return cfg


def json_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_run_with_an_unusable_mapping_or_ca_file_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: exit 78 = invalid configuration, which systemd does not restart on. A broken
    [mapping] file or [salesforce] ca_file cannot be fixed by a restart either: `run` exits
    78 before READY, with a line naming the file and the problem."""
    mapping = tmp_path / "mapping.toml"
    mapping.write_text("[task\nbroken")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not a certificate\n")
    for sections, key, path, problem in (
        ({"extra": f'[mapping]\nfile = "{mapping}"\n'}, "mapping.file", mapping, "not valid TOML"),
        (
            {"salesforce": f'ca_file = "{ca_file}"\n'},
            "salesforce.ca_file",
            ca_file,
            "cannot load it as a PEM CA bundle",
        ),
    ):
        cfg = run_config(tmp_path, **sections)
        assert main(["run", "--config", str(cfg)]) == EXIT_CONFIG, key
        events = json_events(capsys.readouterr().out)
        (line,) = [e for e in events if e["event"] == "invalid configuration"]
        assert line["problem"].startswith(f"{key} (file {path}): {problem}"), line
        assert "dispo-sync ready" not in [e["event"] for e in events]

    # check-config lists the CA file among its checks instead of stopping on a traceback.
    cfg = run_config(tmp_path, salesforce=f'ca_file = "{ca_file}"\n')
    assert main(["check-config", "--config", str(cfg)]) == 1
    assert f"FAIL  salesforce ca_file: {ca_file}: cannot load it" in capsys.readouterr().out


def test_a_mapping_file_not_in_utf8_fails_check_config_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mapping file saved as Latin-1 (an accented literal) is a mapping problem, not a
    UnicodeDecodeError traceback: check-config prints a FAIL line naming the file and the
    byte, and exits 1; run exits 78 (not restarted by systemd) with the same problem."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mapping = tmp_path / "mapping.toml"
    text = '[task.fields]\nSubject = "Appel : {disposition_label} (r\u00e9sultat)"\n'
    mapping.write_bytes(text.encode("latin-1"))
    problem = "not UTF-8 text: the byte at offset 55 (line 2) is 0xe9; save the file as UTF-8"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[salesforce]\nlogin_url = "http://127.0.0.1:{port}"\nclient_id = "id"\n'
        f'client_secret = "s"\nconnect_timeout_s = 2\n[spool]\npath = "{tmp_path / "spool.db"}"\n'
        f'[mapping]\nfile = "{mapping}"\n[log]\nformat = "json"\n'
    )
    assert main(["check-config", "--config", str(cfg)]) == 1
    assert f"FAIL  mapping {mapping}: {problem}" in capsys.readouterr().out.splitlines()

    cfg = run_config(tmp_path, extra=f'[mapping]\nfile = "{mapping}"\n')
    assert main(["run", "--config", str(cfg)]) == EXIT_CONFIG
    events = json_events(capsys.readouterr().out)
    (line,) = [e for e in events if e["event"] == "invalid configuration"]
    assert line["problem"] == f"mapping.file (file {mapping}): {problem}"


def test_log_options_may_follow_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dispo-sync run --log-format json` (as appended to ExecStart=) works like
    `dispo-sync --log-format json run`; neither form overrides the other when absent."""
    parse = build_parser().parse_args
    assert parse(["--log-format", "json", "run"]).log_format == "json"
    after = parse(["--log-level", "debug", "run", "--config", "c.toml", "--log-format", "json"])
    assert (after.log_format, after.log_level) == ("json", "debug")
    assert parse(["dead-letters", "list", "--log-level", "error"]).log_level == "error"
    plain = parse(["ingest", "f.csv"])
    assert (plain.log_format, plain.log_level) == (None, None)

    # For real: the file says logfmt, the option after the command says json.
    mapping = tmp_path / "mapping.toml"
    mapping.write_text("[task\nbroken")
    cfg = run_config(tmp_path, extra=f'[mapping]\nfile = "{mapping}"\n', fmt="logfmt")
    assert main(["run", "--config", str(cfg), "--log-format", "json"]) == EXIT_CONFIG
    out = capsys.readouterr().out
    assert out.strip() and all(line.startswith("{") for line in out.splitlines()), out
