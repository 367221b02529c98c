"""`python -m sfsim` / run_sim_cli: the --print-json line, SIGTERM, --tls, --state-dir."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from sfsim.cli import run_sim_cli

INFO_KEYS = {
    "instance_url",
    "token_url",
    "client_id",
    "client_secret",
    "username",
    "password",
    "ca_file",
}


@asynccontextmanager
async def _sim_process(
    *args: str,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, Any]]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sfsim",
        "--print-json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line, (await proc.stderr.read()).decode() if proc.stderr else "no output"
        yield proc, json.loads(line)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _stop(proc: asyncio.subprocess.Process) -> tuple[int, bytes]:
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None
    rest = await asyncio.wait_for(proc.stdout.read(), timeout=30)
    return await asyncio.wait_for(proc.wait(), timeout=30), rest


async def _token(client: httpx.AsyncClient, info: dict[str, Any]) -> str:
    r = await client.post(
        info["token_url"],
        data={
            "grant_type": "client_credentials",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
        },
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


async def test_print_json_line_and_sigterm_exit() -> None:
    """One JSON line with the documented keys, a working org, and exit 0 on SIGTERM."""
    async with _sim_process("--port", "0") as (proc, info):
        assert set(info) == INFO_KEYS and info["ca_file"] is None
        assert info["instance_url"].startswith("http://127.0.0.1:")
        assert not info["instance_url"].endswith(":0")
        async with httpx.AsyncClient() as c:
            token = await _token(c, info)
            auth = {"Authorization": f"Bearer {token}"}
            base = f"{info['instance_url']}/services/data/v62.0"
            r = await c.get(f"{base}/limits", headers=auth)
            assert r.status_code == 200
            # A bulk job makes the sim log; none of that may reach stdout.
            job = (
                await c.post(
                    f"{base}/jobs/ingest",
                    headers=auth,
                    json={"object": "Task", "operation": "insert"},
                )
            ).json()
            await c.put(
                f"{base}/jobs/ingest/{job['id']}/batches",
                content=b"Subject\nx\n",
                headers={**auth, "Content-Type": "text/csv"},
            )
            await c.patch(
                f"{base}/jobs/ingest/{job['id']}", headers=auth, json={"state": "UploadComplete"}
            )
            for _ in range(600):  # another process: poll with a deadline (30 s)
                state = (await c.get(f"{base}/jobs/ingest/{job['id']}", headers=auth)).json()
                if state["state"] == "JobComplete":
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"bulk job never completed: {state}")
        code, rest = await _stop(proc)
        assert code == 0 and rest == b""


async def test_tls_with_generated_ca() -> None:
    """--tls serves HTTPS that httpx verifies with ca_file (and refuses without it)."""
    async with _sim_process("--tls") as (proc, info):
        assert info["instance_url"].startswith("https://")
        ca_pem = await asyncio.to_thread(Path(info["ca_file"]).read_text)
        assert ca_pem.startswith("-----BEGIN CERTIFICATE-----")
        ctx = ssl.create_default_context(cafile=info["ca_file"])
        async with httpx.AsyncClient(verify=ctx) as c:
            assert (await c.get(f"{info['instance_url']}/services/data/")).status_code == 200
            await _token(c, info)
        async with httpx.AsyncClient() as c:
            with pytest.raises(httpx.ConnectError):
                await c.get(f"{info['instance_url']}/services/data/")
        code, _ = await _stop(proc)
        assert code == 0


async def test_state_dir_keeps_records_and_counters(tmp_path: Path) -> None:
    """Records and the API counter survive a stop and restart with --state-dir."""
    state = str(tmp_path / "state")
    args = ("--state-dir", state, "--client-id", "cid", "--client-secret", "sec")
    async with _sim_process(*args) as (proc, info):
        async with httpx.AsyncClient() as c:
            token = await _token(c, info)
            r = await c.patch(
                f"{info['instance_url']}/services/data/v62.0/sobjects/Task/Call_Id__c/keep-1",
                json={"Subject": "Call"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201
        assert (await _stop(proc))[0] == 0
    async with _sim_process(*args) as (proc, info):
        async with httpx.AsyncClient() as c:
            tasks = (await c.get(f"{info['instance_url']}/__sim/records/Task")).json()
            assert [t["Call_Id__c"] for t in tasks] == ["keep-1"]
            stats = (await c.get(f"{info['instance_url']}/__sim/stats")).json()
            assert stats["api_calls"]["total"] == 1
            # The old session is still valid after the restart.
            r = await c.get(
                f"{info['instance_url']}/services/data/v62.0/limits",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200
        assert (await _stop(proc))[0] == 0


def test_bad_schema_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable --schema file exits 2 with a message naming the option."""
    code = run_sim_cli(["--schema", str(tmp_path / "nope.json")])
    assert code == 2
    assert "--schema" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Invalid numbers are refused by argparse with a plain message."""
    with pytest.raises(SystemExit) as exc:
        run_sim_cli(["--api-limit", "-5"])
    assert exc.value.code == 2
    assert "must be greater than 0" in capsys.readouterr().err


def test_port_in_use_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that is already taken exits 1 with a message naming the address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        handlers = list(logging.getLogger().handlers)
        configured = structlog.is_configured()
        assert run_sim_cli(["--port", str(port)]) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    # In-process calls leave no logging configuration behind.
    assert logging.getLogger().handlers == handlers
    assert structlog.is_configured() == configured


async def test_sigint_also_exits_0() -> None:
    """Ctrl-C (SIGINT) stops the sim cleanly, like SIGTERM."""
    async with _sim_process() as (proc, _info):
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


async def test_validation_rules_file(tmp_path: Path) -> None:
    """--validation-rules FILE makes the org enforce those rules from the start."""
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            [
                {
                    "object": "Task",
                    "field": "Subject",
                    "condition": "blank",
                    "message": "Subject please",
                }
            ]
        )
    )
    async with _sim_process("--validation-rules", str(rules)) as (proc, info):
        async with httpx.AsyncClient() as c:
            token = await _token(c, info)
            r = await c.post(
                f"{info['instance_url']}/services/data/v62.0/sobjects/Task/",
                json={},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 400
            assert r.json()[0]["message"] == "Subject please"
        assert (await _stop(proc))[0] == 0


def test_bad_validation_rules_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rules file naming an unknown field exits 2 saying which rule and key is wrong."""
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps([{"object": "Task", "field": "Nope", "condition": "blank", "message": "m"}])
    )
    assert run_sim_cli(["--validation-rules", str(rules)]) == 2
    assert "rules[0].field" in capsys.readouterr().err
