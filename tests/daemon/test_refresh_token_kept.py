"""`auth = "refresh_token"` with refresh token rotation on: the service keeps each rotated
refresh token in the spool, so a restart still logs in; a refresh token configured anew wins
over the kept one; check-config uses the token the service would use, and keeps the one it
rotates to. Against sfsim with rotation on (the refresh token a refresh sends is spent, as
Salesforce Help's "OAuth 2.0 Refresh Token Flow" says)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from daemon.notify import Notifier
from daemon.runner import Daemon
from daemon.settings import Settings, load_settings

T_END = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
async def org() -> AsyncIterator[Any]:
    from sfsim.testing import running_sim

    async with running_sim(tls=False, refresh_token_rotation=True) as sim:
        yield sim


def settings_for(org: Any, tmp_path: Path, refresh_token: str) -> Settings:
    info = org.info
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""
[salesforce]
login_url = "{info["instance_url"]}"
client_id = "{info["client_id"]}"
auth = "refresh_token"
refresh_token = "{refresh_token}"
[spool]
path = "{tmp_path / "spool.db"}"
[http]
listen = "127.0.0.1:0"
[daemon]
status_interval_s = 0.1
"""
    )
    return load_settings(cfg, environ={})


async def put_outcome(settings: Settings, call_id: str) -> None:
    from spool import CallOutcome, Disposition, open_spool

    async with open_spool(settings.spool.path) as spool:
        await spool.put(
            CallOutcome(
                source="vicidial",
                call_id=call_id,
                disposition=Disposition.DO_NOT_CALL,  # urgent: the live rail sends it at once
                ended_at=T_END,
            )
        )


async def run_once(settings: Settings, logs: Sequence[Mapping[str, Any]]) -> str:
    """Start the service, send what the spool holds, stop: 'sent' once nothing is left to
    send, 'auth failed' as soon as Salesforce refuses the login."""
    from spool import read_stats

    daemon = Daemon(settings, notifier=Notifier(None), install_signal_handlers=False)
    seen = len(logs)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(daemon.run())
        async with asyncio.timeout(30):
            while True:
                if any(e["event"] == "salesforce_auth_failed" for e in logs[seen:]):
                    result = "auth failed"
                    break
                stats = read_stats(settings.spool.path)
                if stats.pending == 0 and stats.inflight == 0:
                    result = "sent"
                    break
                await asyncio.sleep(0.05)
        daemon.request_stop()
    assert task.result() == 0
    return result


async def test_the_service_still_logs_in_after_a_restart_that_follows_a_rotation(
    org: Any, tmp_path: Path
) -> None:
    """The first start's login spends the configured refresh token (rotation); the next
    start (a systemd restart, an upgrade) uses the rotated one kept in the spool, where
    it used the spent configured one and stopped on invalid_grant."""
    tokens = org.org.tokens
    configured = tokens.issue_refresh(org.org.user_id)
    settings = settings_for(org, tmp_path, configured)
    with structlog.testing.capture_logs() as logs:
        await put_outcome(settings, "c1")
        assert await run_once(settings, logs) == "sent"
        assert tokens.refresh_user(configured) is None  # spent by the first login
        first_run = len(logs)
        await put_outcome(settings, "c2")
        assert await run_once(settings, logs) == "sent"
    assert any(e["event"] == "salesforce_refresh_token_restored" for e in logs[first_run:])
    assert not any(e["event"] == "salesforce_auth_failed" for e in logs)
    rotated = [e for e in logs if e["event"] == "salesforce_refresh_token_rotated"]
    assert rotated and all("spool" in e["kept"] for e in rotated)
    kept = await kept_token(settings)
    assert kept is not None
    assert tokens.refresh_user(kept) == org.org.user_id  # and the start after that too
    assert configured not in str(logs) and kept not in str(logs)


async def kept_token(settings: Settings) -> str | None:
    """The refresh token the spool keeps (None: none kept)."""
    from spool import open_spool

    async with open_spool(settings.spool.path) as spool:
        raw = await spool.get_state("salesforce_refresh_token")
    return None if raw is None else str(json.loads(raw)["token"])


async def test_a_refresh_token_configured_anew_wins_over_the_kept_one(
    org: Any, tmp_path: Path
) -> None:
    """The admin puts a new refresh token in place (say, after revoking the old one): the
    next start uses it, not the token the spool keeps from the old one, and the start
    after that uses the one the new token rotated to."""
    tokens = org.org.tokens
    old = tokens.issue_refresh(org.org.user_id)
    with structlog.testing.capture_logs() as logs:
        await put_outcome(settings_for(org, tmp_path, old), "c1")
        assert await run_once(settings_for(org, tmp_path, old), logs) == "sent"
        kept_from_old = await kept_token(settings_for(org, tmp_path, old))

        new = tokens.issue_refresh(org.org.user_id)
        settings = settings_for(org, tmp_path, new)
        await put_outcome(settings, "c2")
        assert await run_once(settings, logs) == "sent"
        assert tokens.refresh_user(new) is None  # the configured one was used

        await put_outcome(settings, "c3")
        assert await run_once(settings, logs) == "sent"
    assert not any(e["event"] == "salesforce_auth_failed" for e in logs)
    assert kept_from_old is not None
    assert tokens.refresh_user(kept_from_old) is not None  # never used after the change
    assert any(e["event"] == "salesforce_refresh_token_kept_ignored" for e in logs)
    assert tokens.refresh_user(await kept_token(settings) or "") == org.org.user_id


async def test_check_config_logs_in_with_the_token_the_service_would_use_and_keeps_the_next(
    org: Any, tmp_path: Path
) -> None:
    """After the service has rotated the configured token away, check-config logs in with
    the kept one (where it sent the spent configured one and FAILed the login), keeps the
    one its own login rotated to, and the service starts fine after it."""
    from daemon.checks import salesforce_checks

    tokens = org.org.tokens
    configured = tokens.issue_refresh(org.org.user_id)
    settings = settings_for(org, tmp_path, configured)
    with structlog.testing.capture_logs() as logs:
        await put_outcome(settings, "c1")
        assert await run_once(settings, logs) == "sent"
        before = await kept_token(settings)

        checks = await salesforce_checks(settings)
        by_name = {c.name: c for c in checks}
        login = by_name["salesforce login"]
        assert login.ok is True, login.line()
        assert "kept in the spool file" in login.detail
        assert all(c.ok is True for c in checks), [c.line() for c in checks]
        after = await kept_token(settings)
        assert before is not None and after is not None and after != before
        assert tokens.refresh_user(before) is None

        await put_outcome(settings, "c2")
        assert await run_once(settings, logs) == "sent"
    assert not any(e["event"] == "salesforce_auth_failed" for e in logs)
    assert configured not in str(logs) and after not in str(logs)


async def test_check_config_before_the_first_start_fails_when_the_token_it_spent_is_lost(
    org: Any, tmp_path: Path
) -> None:
    """No spool file yet (check-config before the service ever ran): its login spends the
    configured token and there is nowhere to keep the new one (the spool is not created
    by check-config): a FAIL line says so, instead of a PASS before a service that cannot
    log in."""
    from daemon.checks import salesforce_checks

    tokens = org.org.tokens
    configured = tokens.issue_refresh(org.org.user_id)
    settings = settings_for(org, tmp_path, configured)
    checks = await salesforce_checks(settings)
    by_name = {c.name: c for c in checks}
    assert by_name["salesforce login"].ok is True
    lost = by_name["salesforce refresh token"]
    assert lost.ok is False and "put a new refresh token in place" in lost.detail
    assert not settings.spool.path.exists()
    assert tokens.refresh_user(configured) is None


async def test_check_config_without_rotation_needs_no_spool(org: Any, tmp_path: Path) -> None:
    """Rotation off (the usual case): check-config logs in with the configured token and
    says nothing about keeping one; no spool file is created."""
    from daemon.checks import salesforce_checks

    org.org.oauth.refresh_token_rotation = False
    configured = org.org.tokens.issue_refresh(org.org.user_id)
    settings = settings_for(org, tmp_path, configured)
    checks = await salesforce_checks(settings)
    assert all(c.ok is True for c in checks), [c.line() for c in checks]
    assert "salesforce refresh token" not in {c.name for c in checks}
    assert not settings.spool.path.exists()


async def test_a_kept_value_that_cannot_be_read_falls_back_to_the_configured_token(
    tmp_path: Path,
) -> None:
    """A damaged kept value (not the JSON the service writes) is ignored with a warning."""
    from daemon.wiring import SpoolRefreshTokens
    from spool import open_spool

    async with open_spool(tmp_path / "s.db") as spool:
        store = SpoolRefreshTokens(spool, "configured", path=tmp_path / "s.db")
        assert await store.load() is None
        await spool.set_state("salesforce_refresh_token", "not json")
        with structlog.testing.capture_logs() as logs:
            assert await store.load() is None
        assert logs[0]["event"] == "salesforce_refresh_token_kept_unreadable"
        await store.save("rotated")
        assert await store.load() == "rotated"
        assert await SpoolRefreshTokens(spool, "another", path="x").load() is None
