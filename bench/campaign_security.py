"""Security campaign (issue 7): what a stranger on the network cannot do to dispo-sync.

Each check runs the real thing (``dispo-sync run`` and ``dispo-sync sim`` as child
processes, requests over loopback) and reports what it saw; ``ok`` is the verdict:

* ``refuses_start_without_secret``: a webhook without a secret stops the daemon at
  start (exit status, message) unless ``trusted = true``;
* ``unauthenticated``: each webhook preset answers 401/403 to no, wrong and forged
  credentials, stores nothing and quarantines nothing; the right ones give 200;
* ``constant_time``: every credential compare of a request goes through
  ``hmac.compare_digest`` (a spy counts the calls, in process);
* ``twilio_signature``: a tampered parameter, another URL, a missing signature and a
  malformed ``bodySHA256`` are refused (never a 5xx);
* ``body_limit``: bodies past ``max_body_bytes`` get 413 (declared or chunked);
* ``tls``: against ``sfsim --tls`` without ``ca_file`` nothing reaches the org and the
  log names the certificate failure; with ``ca_file`` the outcome arrives;
* ``secrets_in_logs``: a full run at DEBUG with every kind of secret configured, bad
  and unauthenticated requests included: every log line is searched for each secret
  and for every access token sfsim issued (zero hits);
* ``file_modes``: the spool file and its -wal/-shm (the quarantine is a table in it)
  are 0600 under a umask of 022;
* ``systemd_exposure``: ``systemd-analyze security --offline=true`` of the unit.

    .venv/bin/python -m bench.campaign_security      # prints one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench._campaign import (
    DaemonExited,
    DaemonProcess,
    SimProcess,
    campaign_main,
    config_text,
    daemon_process,
    load_average,
    poll,
    read_spool,
    sim_process,
    start_daemon,
)

__all__ = ["CHECKS", "main", "run_security"]

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "dispo-sync.service"
ENDED = "2026-11-24T12:00:00+00:00"
# `==` / `!=` next to a secret, token or signature name would be a timing leak.
LEAK = re.compile(r"(secret|token|signature|digest)\w*\s*[!=]=|[!=]=\s*[\w.]*(secret|token|sig)")

JSON_SECRET = "json-hmac-secret-Zq81"
VICI_TOKEN = "vici-token-Hw27x"
TWILIO_TOKEN = "twilio-auth-token-Kp93"
WS_TOKEN = "ws-bearer-token-Yt55"


def hmac_header(body: bytes, secret: str = JSON_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def twilio_signature(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> str:
    """Twilio's documented algorithm, written out here (not the adapter's own code)."""
    data = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def webhook_tables(*, max_body_bytes: int = 1_048_576) -> list[dict[str, Any]]:
    common = {"type": "webhook", "listen": "127.0.0.1:0", "max_body_bytes": max_body_bytes}
    return [
        {**common, "preset": "json", "name": "hook", "path": "/hook", "secret": JSON_SECRET},
        {**common, "preset": "vicidial", "name": "vici", "path": "/vicidial", "secret": VICI_TOKEN},
        {**common, "preset": "twilio", "name": "twil", "path": "/twilio", "secret": TWILIO_TOKEN},
    ]


def outcome_body(call_id: str, **over: Any) -> bytes:
    body = {"call_id": call_id, "disposition": "voicemail", "ended_at": ENDED, **over}
    return json.dumps(body).encode()


def spool_counts(path: Path) -> dict[str, int]:
    if not path.exists():
        return {"outcomes": 0, "quarantine": 0}
    (o,) = read_spool(path, "SELECT count(*) FROM outcomes")[0]
    (q,) = read_spool(path, "SELECT count(*) FROM quarantine")[0]
    return {"outcomes": int(o), "quarantine": int(q)}


@contextlib.asynccontextmanager
async def _stack(tmp: Path, **sim_kw: Any) -> AsyncIterator[tuple[SimProcess, DaemonProcess, Path]]:
    spool = tmp / "spool.db"
    async with (
        sim_process(**sim_kw) as sim,
        daemon_process(tmp, config_text(sim.info, spool, webhook_tables())) as d,
    ):
        yield sim, d, spool


# --------------------------------------------------------------------------- checks


async def check_refuses_start_without_secret(tmp: Path) -> dict[str, Any]:
    table = {
        "type": "webhook",
        "preset": "json",
        "name": "open",
        "listen": "127.0.0.1:0",
        "path": "/open",
    }
    sim = {"instance_url": "http://127.0.0.1:9", "client_id": "x", "client_secret": "y"}
    started = time.monotonic()
    message = ""
    returncode: int | None = None
    try:
        d = await start_daemon(tmp / "nosecret", config_text(sim, tmp / "a.db", [table]))
    except DaemonExited as exc:
        returncode, message = exc.returncode, exc.tail
    else:
        await d.stop()
    refused_s = round(time.monotonic() - started, 2)
    trusted_ok = False
    trusted = {**table, "trusted": True}
    d = await start_daemon(tmp / "trusted", config_text(sim, tmp / "b.db", [trusted]))
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            url = f"http://127.0.0.1:{d.ports['open']}/open"
            r = await c.post(url, content=outcome_body("t1"))
        trusted_ok = r.status_code == 200
    finally:
        await d.stop()
    names_it = "no secret" in message
    return {
        "ok": returncode not in (None, 0) and names_it and trusted_ok,
        "exit_status": returncode,
        "message_names_missing_secret": names_it,
        "refused_within_s": refused_s,
        "trusted_true_accepts": trusted_ok,
    }


async def check_unauthenticated(tmp: Path) -> dict[str, Any]:
    async with _stack(tmp / "unauth") as (_, d, spool):
        hook = f"http://127.0.0.1:{d.ports['hook']}/hook"
        vici = f"http://127.0.0.1:{d.ports['vici']}/vicidial"
        twil = f"http://127.0.0.1:{d.ports['twil']}/twilio"
        body = outcome_body("u1")
        tw = {"CallSid": "CAu1", "CallStatus": "busy", "To": "+15125550100"}
        vq = {"uniqueid": "1710.1", "status": "NA", "phone_number": "5125550100"}
        bad: dict[str, Callable[[httpx.AsyncClient], Any]] = {
            "json_no_auth": lambda c: c.post(hook, content=body),
            "json_wrong_hmac": lambda c: c.post(
                hook, content=body, headers={"X-Signature": hmac_header(body, "guess")}
            ),
            "json_hmac_of_other_body": lambda c: c.post(
                hook, content=body, headers={"X-Signature": hmac_header(b"{}")}
            ),
            "json_wrong_bearer": lambda c: c.post(
                hook, content=body, headers={"Authorization": "Bearer guess"}
            ),
            "json_secret_as_basic": lambda c: c.post(hook, content=body, auth=("x", JSON_SECRET)),
            "vicidial_no_token": lambda c: c.get(f"{vici}/no-agent", params=vq),
            "vicidial_wrong_token": lambda c: c.get(
                f"{vici}/no-agent", params={**vq, "token": "guess"}
            ),
            "vicidial_token_prefix": lambda c: c.get(
                f"{vici}/no-agent", params={**vq, "token": VICI_TOKEN[:-1]}
            ),
            "twilio_no_signature": lambda c: c.post(twil, data=tw),
            "twilio_wrong_signature": lambda c: c.post(
                twil, data=tw, headers={"X-Twilio-Signature": twilio_signature(twil, tw, "guess")}
            ),
        }
        good: dict[str, Callable[[httpx.AsyncClient], Any]] = {
            "json_hmac": lambda c: c.post(
                hook,
                content=outcome_body("g1"),
                headers={"X-Signature": hmac_header(outcome_body("g1"))},
            ),
            "json_bearer": lambda c: c.post(
                hook, content=outcome_body("g2"), headers={"Authorization": f"Bearer {JSON_SECRET}"}
            ),
            "vicidial_token": lambda c: c.get(
                f"{vici}/no-agent", params={**vq, "token": VICI_TOKEN}
            ),
            "twilio_signed": lambda c: c.post(
                twil, data=tw, headers={"X-Twilio-Signature": twilio_signature(twil, tw)}
            ),
        }
        statuses: dict[str, int] = {}
        async with httpx.AsyncClient(timeout=10) as c:
            for name, send in bad.items():
                statuses[name] = (await send(c)).status_code
            after_bad = spool_counts(spool)
            for name, send in good.items():
                statuses[name] = (await send(c)).status_code
        after_good = spool_counts(spool)
    refused = all(statuses[n] in (401, 403) for n in bad)
    accepted = all(statuses[n] == 200 for n in good)
    return {
        "ok": refused
        and accepted
        and after_bad == {"outcomes": 0, "quarantine": 0}
        and after_good["outcomes"] == len(good),
        "statuses": statuses,
        "stored_after_unauthenticated": after_bad,
        "stored_after_authenticated": after_good,
    }


async def check_constant_time(tmp: Path) -> dict[str, Any]:
    """In process: every request's credential check calls hmac.compare_digest."""
    from adapters import webhook as webhook_module
    from adapters.webhook import build
    from spool import open_spool

    calls: list[tuple[bytes | str, bytes | str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    per_preset: dict[str, int] = {}
    source_hits = sorted(
        f"{p.name}:{n}"
        for p in (ROOT / "adapters").glob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "compare_digest(" in line
    )
    suspicious = sorted(
        f"{p.name}:{n}: {line.strip()}"
        for p in (ROOT / "adapters").glob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if LEAK.search(line) and "is None" not in line and "is not None" not in line
    )
    hmac.compare_digest = spy
    try:
        async with open_spool(tmp / "ct.db") as spool:
            for table in webhook_tables():
                adapter = build(table, spool)
                await adapter.start()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(adapter.run())
                    base = f"http://127.0.0.1:{adapter.bound_port}{table['path']}"
                    before = len(calls)
                    async with httpx.AsyncClient(timeout=10) as c:
                        if table["preset"] == "json":
                            await c.post(base, content=b"{}", headers={"X-Signature": "sha256=00"})
                            await c.post(base, content=b"{}", headers={"Authorization": "Bearer x"})
                        elif table["preset"] == "vicidial":
                            await c.get(f"{base}/dispo", params={"token": "x", "uniqueid": "1"})
                        else:
                            await c.post(
                                base, data={"CallSid": "CA1"}, headers={"X-Twilio-Signature": "x"}
                            )
                    per_preset[str(table["preset"])] = len(calls) - before
                    await adapter.stop()
    finally:
        hmac.compare_digest = real
    # the adapters call the module attribute, so the spy saw every call
    assert webhook_module.__dict__["hmac"] is hmac
    return {
        "ok": all(n >= 1 for n in per_preset.values()) and not suspicious and len(per_preset) == 3,
        "compare_digest_calls_per_preset": per_preset,
        "compare_digest_sites": source_hits,
        "equality_on_secrets": suspicious,
    }


async def check_twilio_signature(tmp: Path) -> dict[str, Any]:
    async with _stack(tmp / "twilio") as (_, d, spool):
        url = f"http://127.0.0.1:{d.ports['twil']}/twilio"
        params = {"CallSid": "CAt1", "CallStatus": "no-answer", "To": "+15125550100"}
        sig = twilio_signature(url, params)
        cases: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
            "signed": (url, params, {"X-Twilio-Signature": sig}),
            "tampered_value": (
                url,
                {**params, "CallStatus": "completed"},
                {"X-Twilio-Signature": sig},
            ),
            "added_param": (url, {**params, "Extra": "1"}, {"X-Twilio-Signature": sig}),
            "other_url": (url + "/x", params, {"X-Twilio-Signature": sig}),
            "missing": (url, params, {}),
            "not_base64": (url, params, {"X-Twilio-Signature": "%%%"}),
            "non_ascii_signature": (url, params, {"X-Twilio-Signature": "\u00e9"}),
            "body_sha_non_ascii": (url + "?bodySHA256=%C3%A9", {}, {"X-Twilio-Signature": sig}),
            "body_sha_wrong": (url + "?bodySHA256=00", {}, {"X-Twilio-Signature": sig}),
        }
        statuses: dict[str, int] = {}
        async with httpx.AsyncClient(timeout=10) as c:
            for name, (u, p, headers) in cases.items():
                statuses[name] = (
                    await c.post(
                        u, data=p, headers={k.encode(): v.encode() for k, v in headers.items()}
                    )
                ).status_code
        counts = spool_counts(spool)
    refused = {k: v for k, v in statuses.items() if k != "signed"}
    return {
        "ok": statuses["signed"] == 200
        and all(v == 403 for v in refused.values())
        and counts["outcomes"] == 1,
        "statuses": statuses,
        "stored": counts,
    }


async def check_body_limit(tmp: Path) -> dict[str, Any]:
    limit = 4096
    spool = tmp / "limit" / "spool.db"
    async with sim_process() as sim:
        cfg = config_text(sim.info, spool, webhook_tables(max_body_bytes=limit))
        async with daemon_process(tmp / "limit", cfg) as d:
            hook = f"http://127.0.0.1:{d.ports['hook']}/hook"
            twil = f"http://127.0.0.1:{d.ports['twil']}/twilio"
            big = outcome_body("b1", notes="x" * (limit + 10))
            auth = {"X-Signature": hmac_header(big)}

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(0, len(big), 1000):
                    yield big[i : i + 1000]

            statuses: dict[str, int] = {}
            async with httpx.AsyncClient(timeout=10) as c:
                statuses["declared"] = (await c.post(hook, content=big, headers=auth)).status_code
                statuses["chunked"] = (
                    await c.post(hook, content=chunks(), headers=auth)
                ).status_code
                statuses["unauthenticated_huge"] = (
                    await c.post(hook, content=b"[" + b"1," * 100_000 + b"1]")
                ).status_code
                statuses["twilio_form"] = (
                    await c.post(twil, data={"CallSid": "CA1", "Junk": "y" * limit})
                ).status_code
                small = outcome_body("b2")
                statuses["under_limit"] = (
                    await c.post(hook, content=small, headers={"X-Signature": hmac_header(small)})
                ).status_code
        counts = spool_counts(spool)
    over = {k: v for k, v in statuses.items() if k != "under_limit"}
    return {
        "ok": all(v == 413 for v in over.values())
        and statuses["under_limit"] == 200
        and counts == {"outcomes": 1, "quarantine": 0},
        "max_body_bytes": limit,
        "statuses": statuses,
        "stored": counts,
    }


async def check_tls(tmp: Path) -> dict[str, Any]:
    from spool import CallOutcome, Disposition, open_spool

    out: dict[str, Any] = {}
    async with sim_process(tls=True) as sim:
        ca = sim.info["ca_file"]
        for name, extra in (("without_ca_file", {}), ("with_ca_file", {"ca_file": ca})):
            work = tmp / f"tls-{name}"
            work.mkdir(parents=True)
            spool_path = work / "spool.db"
            async with open_spool(spool_path) as spool:
                await spool.put(
                    CallOutcome(
                        source="sec",
                        call_id=f"tls-{name}",
                        disposition=Disposition.DO_NOT_CALL,
                        ended_at=datetime.fromisoformat(ENDED),
                    )
                )
            cfg = config_text(sim.info, spool_path, webhook_tables()[:1], salesforce=extra)
            check = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "daemon",
                "check-config",
                "--config",
                str(_write(work / "check.toml", cfg)),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            check_out, _ = await check.communicate()
            async with daemon_process(work, cfg) as d:

                def tls_lines(d: DaemonProcess = d) -> list[dict[str, Any]]:
                    return [e for e in d.lines() if "CERTIFICATE_VERIFY_FAILED" in json.dumps(e)]

                def sent(path: Path = spool_path) -> bool:
                    sql = "SELECT count(*) FROM outcomes WHERE state = 2"
                    return bool(read_spool(path, sql)[0][0] == 1)

                with contextlib.suppress(TimeoutError):
                    # without the CA: the daemon's first login attempt fails and says why
                    await poll(lambda: sent() or bool(tls_lines()), within_s=30, what="a login")
                async with httpx.AsyncClient(timeout=5) as c:
                    ready = (
                        await c.get(f"http://127.0.0.1:{d.ports['health']}/readyz")
                    ).status_code
            tasks = await sim.records("Task")
            out[name] = {
                "sent": sent(),
                "tasks_in_org": sum(
                    1 for t in tasks if str(t.get("Call_Id__c", "")).endswith(name)
                ),
                "log_lines_naming_certificate_failure": len(tls_lines()),
                "log_level_of_that_line": sorted({str(e.get("level")) for e in tls_lines()}),
                "readyz": ready,
                "check_config_exit": check.returncode,
                "check_config_says": _first_line(check_out.decode(), "CERTIFICATE"),
            }
    no, yes = out["without_ca_file"], out["with_ca_file"]
    out["ok"] = (
        not no["sent"]
        and no["tasks_in_org"] == 0
        and no["log_lines_naming_certificate_failure"] > 0
        and no["check_config_exit"] != 0
        and yes["sent"]
        and yes["tasks_in_org"] == 1
        and yes["check_config_exit"] == 0
        and no["readyz"] != 200
    )
    return out


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _first_line(text: str, needle: str) -> str:
    return next((ln.strip()[:200] for ln in text.splitlines() if needle in ln), "")


async def check_secrets_in_logs(tmp: Path) -> dict[str, Any]:
    """A full run at DEBUG; every log line searched for every secret and issued token."""
    from websockets.asyncio.server import ServerConnection, serve

    work = tmp / "secrets"
    work.mkdir(parents=True)
    acks: list[str] = []
    frames = [
        json.dumps(
            {
                "id": f"e{i}",
                "type": "call.ended",
                "data": {"call_id": f"ws-{i}", "status": "busy", "ended_at": ENDED},
            }
        )
        for i in range(5)
    ] + ["{not json", json.dumps({"id": "bad", "type": "call.ended", "data": {"status": 1}})]
    seen_auth: list[str] = []

    async def feed(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen_auth.append(ws.request.headers.get("Authorization", ""))
        for f in frames:
            await ws.send(f)
        async for message in ws:
            acks.append(str(json.loads(message).get("id")))

    ws_table = {
        "type": "websocket",
        "name": "feed",
        "auth": "bearer",
        "secret": WS_TOKEN,
        "event_types": ["call.ended"],
        "ack": "each",
        "ack_message": {"type": "ack", "id": "{id}"},
        "fields": {
            "call_id": "data.call_id",
            "disposition": "data.status",
            "ended_at": "data.ended_at",
        },
    }
    async with serve(feed, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        ws_table["url"] = f"ws://127.0.0.1:{port}/events"
        async with sim_process(state_dir=work / "sim-state") as sim:
            sim_info = dict(sim.info)
            spool = work / "spool.db"
            cfg = config_text(
                sim_info,
                spool,
                [*webhook_tables(), ws_table],
                level="debug",
                rails={"bulk_interval_s": 1, "bulk_min_records": 2},
            )
            async with daemon_process(work, cfg) as d:
                hook = f"http://127.0.0.1:{d.ports['hook']}/hook"
                vici = f"http://127.0.0.1:{d.ports['vici']}/vicidial"
                twil = f"http://127.0.0.1:{d.ports['twil']}/twilio"
                async with httpx.AsyncClient(timeout=10) as c:
                    for i in range(6):
                        body = outcome_body(f"s{i}", live=i % 2 == 0, lead={"phone": "5125550100"})
                        await c.post(hook, content=body, headers={"X-Signature": hmac_header(body)})
                    await c.post(
                        hook, content=b"{bad", headers={"X-Signature": hmac_header(b"{bad")}
                    )
                    await c.post(
                        hook, content=b"{}", headers={"Authorization": f"Bearer {JSON_SECRET}x"}
                    )
                    vq = {"uniqueid": "1710.9", "status": "SALE", "phone_number": "5125550100"}
                    await c.get(f"{vici}/dispo", params={**vq, "token": VICI_TOKEN})
                    await c.get(f"{vici}/dispo", params={"token": VICI_TOKEN, "status": "?"})
                    await c.get(f"{vici}/dispo", params={**vq, "token": VICI_TOKEN + "x"})
                    tw = {"CallSid": "CAs1", "CallStatus": "busy", "To": "+15125550100"}
                    await c.post(
                        twil, data=tw, headers={"X-Twilio-Signature": twilio_signature(twil, tw)}
                    )
                    await c.post(twil, data=tw, headers={"X-Twilio-Signature": "forged"})
                await poll(lambda: len(acks) >= 6, within_s=20, what="websocket acks")
                await poll(
                    lambda: (
                        read_spool(spool, "SELECT count(*) FROM outcomes WHERE state = 2")[0][0]
                        >= 13
                    ),
                    within_s=60,
                    what="13 outcomes sent to the org",
                )
            log_lines = d.raw_lines()
        state = sim.state()
    tokens: set[str] = set()
    for doc in state.values():
        _collect_tokens(doc, tokens)
    secrets = {
        "salesforce_client_secret": str(sim_info["client_secret"]),
        "json_webhook_secret": JSON_SECRET,
        "vicidial_token": VICI_TOKEN,
        "twilio_auth_token": TWILIO_TOKEN,
        "websocket_token": WS_TOKEN,
    }
    hits = {name: sum(1 for ln in log_lines if value in ln) for name, value in secrets.items()}
    token_hits = sum(1 for ln in log_lines for t in tokens if t in ln)
    return {
        "ok": sum(hits.values()) == 0
        and token_hits == 0
        and len(tokens) > 0
        and len(log_lines) > 100
        and seen_auth == [f"Bearer {WS_TOKEN}"] * len(seen_auth),
        "log_lines": len(log_lines),
        "debug_lines": sum(1 for ln in log_lines if '"level": "debug"' in ln),
        "hits": hits,
        "access_tokens_issued": len(tokens),
        "access_token_hits": token_hits,
    }


def _collect_tokens(doc: Any, out: set[str]) -> None:
    """Access and refresh tokens in sfsim's saved state (the ``access`` / ``refresh`` maps)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("access", "refresh") and isinstance(value, dict):
                out.update(str(t) for t in value)
            else:
                _collect_tokens(value, out)
    elif isinstance(doc, list):
        for value in doc:
            _collect_tokens(value, out)


async def check_file_modes(tmp: Path) -> dict[str, Any]:
    work = tmp / "modes"
    old = os.umask(0o022)
    try:
        async with _stack(work) as (_, d, spool):
            url = f"http://127.0.0.1:{d.ports['hook']}/hook"
            async with httpx.AsyncClient(timeout=10) as c:
                bad = b'{"call_id": 5}'
                r = await c.post(url, content=bad, headers={"X-Signature": hmac_header(bad)})
            modes = {
                p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(work.glob("spool.db*"))
            }
            quarantined = spool_counts(spool)["quarantine"]
    finally:
        os.umask(old)
    return {
        "ok": r.status_code == 400
        and quarantined == 1
        and len(modes) >= 2
        and all(m == "0o600" for m in modes.values()),
        "umask": "0o022",
        "modes": modes,
        "quarantine_rows_in_spool_file": quarantined,
    }


def check_systemd_exposure() -> dict[str, Any]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return {"ok": None, "skipped": "systemd-analyze not installed"}
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    score = float(match.group(1)) if match else None
    return {
        "ok": score is not None and score <= 2.0,
        "exposure": score,
        "unit": "systemd/dispo-sync.service",
    }


async def _sync(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.to_thread(fn)


CHECKS: dict[str, Callable[[Path], Any]] = {
    "refuses_start_without_secret": check_refuses_start_without_secret,
    "unauthenticated": check_unauthenticated,
    "constant_time": check_constant_time,
    "twilio_signature": check_twilio_signature,
    "body_limit": check_body_limit,
    "tls": check_tls,
    "secrets_in_logs": check_secrets_in_logs,
    "file_modes": check_file_modes,
    "systemd_exposure": lambda _tmp: _sync(check_systemd_exposure),
}


async def run_security(tmp: Path, only: list[str] | None = None) -> dict[str, Any]:
    started = time.monotonic()
    out: dict[str, Any] = {"campaign": "security", "load_average": load_average()}
    for name, check in CHECKS.items():
        if only and name not in only:
            continue
        try:
            out[name] = await check(tmp)
        except Exception as exc:  # a check that blew up is a failed check, reported as such
            out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    results = [v for k, v in out.items() if isinstance(v, dict)]
    out["failed"] = sorted(
        k for k, v in out.items() if isinstance(v, dict) and v.get("ok") is False
    )
    out["ok"] = all(v.get("ok") is not False for v in results)
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=sorted(CHECKS), help="run only these checks")
    args = p.parse_args(argv)
    from daemon.logging import configure_logging

    # the in-process adapters' log lines go to stderr: stdout carries only the JSON
    configure_logging("logfmt", "warning", stream=sys.stderr, environ={})
    return campaign_main(lambda work: run_security(work, args.only), None, "campaign-security-")


if __name__ == "__main__":
    sys.exit(main())
