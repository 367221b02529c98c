"""Refresh token rotation with a store: the client keeps each rotated refresh token (before
it uses the access token that came with it), starts from the kept one, survives a store
that fails, and picks up a token another process rotated to. Against sfsim, whose
rotation spends the refresh token a refresh sends (Salesforce Help, "OAuth 2.0 Refresh
Token Flow")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
import structlog
import structlog.testing

from daemon.salesforce import AuthError, SalesforceClient


class MemoryStore:
    """A RefreshTokenStore in memory; shared by two clients, it plays the spool two
    processes (the service and check-config) both use."""

    where = "memory"

    def __init__(self, kept: str | None = None) -> None:
        self.kept = kept
        self.saved: list[str] = []
        self.loads = 0
        self.on_save: Any = None

    async def load(self) -> str | None:
        self.loads += 1
        return self.kept

    async def save(self, token: str) -> None:
        if self.on_save is not None:
            self.on_save(token)
        self.saved.append(token)
        self.kept = token


@pytest.fixture
async def org() -> AsyncIterator[Any]:
    from sfsim import SimOrg

    async with SimOrg(port=0, refresh_token_rotation=True) as sim:
        yield sim


def client_for(org: Any, refresh_token: str, **kw: Any) -> SalesforceClient:
    info = org.info
    return SalesforceClient(
        login_url=info["token_url"].removesuffix("/services/oauth2/token"),
        client_id=info["client_id"],
        auth="refresh_token",
        refresh_token=refresh_token,
        allow_http=True,
        **kw,
    )


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_a_rotated_token_is_kept_before_the_new_access_token_is_used(org: Any) -> None:
    """The store has the new refresh token before any API request goes out with the access
    token that came with it (a crash right after the refresh still finds it kept), and
    the log says it was kept, never what it is."""
    tokens = org.org.tokens
    configured = tokens.issue_refresh(org.org.user_id)
    store = MemoryStore()
    sent: list[str] = []
    sent_when_saved: list[int] = []
    store.on_save = lambda token: sent_when_saved.append(len(sent))
    with structlog.testing.capture_logs() as logs:
        async with client_for(
            org,
            configured,
            refresh_token_store=store,
            on_send=lambda rail, method, kind: sent.append(kind),
        ) as sf:
            await sf.limits()
            assert len(sent) == 1
    assert sent_when_saved == [0]
    (kept,) = store.saved
    assert tokens.refresh_user(configured) is None  # spent by the refresh
    assert tokens.refresh_user(kept) == org.org.user_id  # the one the next start needs
    (rotated,) = events(logs, "salesforce_refresh_token_rotated")
    assert rotated["log_level"] == "info" and rotated["kept"] == "memory"
    assert configured not in str(logs) and kept not in str(logs)


async def test_the_kept_token_is_used_instead_of_the_configured_one(org: Any) -> None:
    """A store that keeps a token (one rotated to by an earlier run) is read before the
    first refresh: its token is sent, not the configured one, which is spent already."""
    tokens = org.org.tokens
    configured = tokens.issue_refresh(org.org.user_id)
    kept = tokens.rotate_refresh(configured)  # an earlier run refreshed once
    store = MemoryStore(kept)
    with structlog.testing.capture_logs() as logs:
        async with client_for(org, configured, refresh_token_store=store) as sf:
            await sf.limits()
            assert sf.token_requests == 1
    assert tokens.refresh_user(kept) is None  # used (and spent) by this login
    assert store.saved and tokens.refresh_user(store.saved[-1]) == org.org.user_id
    assert events(logs, "salesforce_refresh_token_restored")
    assert not events(logs, "salesforce_auth_failed")


async def test_a_failing_store_is_logged_without_the_token_and_the_client_goes_on(
    org: Any,
) -> None:
    """A store that cannot be read, or cannot save: an error line naming the event (never
    the token, even when the store's exception quotes it), and the client keeps working on
    the token in hand; the next rotation tries to save again."""
    tokens = org.org.tokens
    configured = tokens.issue_refresh(org.org.user_id)
    tried: list[str] = []

    class BrokenStore:
        where = "a broken place"

        async def load(self) -> str | None:
            raise OSError("disk I/O error")

        async def save(self, token: str) -> None:
            tried.append(token)
            raise RuntimeError(f"cannot write {token}")

    with structlog.testing.capture_logs() as logs:
        async with client_for(org, configured, refresh_token_store=BrokenStore()) as sf:
            await sf.limits()
            org.org.faults.configure({"revoke_tokens": True})  # the session ends
            await sf.limits()  # refreshes with the rotated token held in memory
            assert sf.token_requests == 2
    assert len(tried) == 2
    (unreadable,) = events(logs, "salesforce_refresh_token_unreadable")
    assert unreadable["log_level"] == "error" and "OSError" in unreadable["error"]
    not_kept = events(logs, "salesforce_refresh_token_not_kept")
    assert [e["log_level"] for e in not_kept] == ["error", "error"]
    assert "RuntimeError" in not_kept[0]["error"]
    for token in (configured, *tried):
        assert token not in str(logs)


async def test_a_token_another_process_rotated_to_is_picked_up_after_invalid_grant(
    org: Any,
) -> None:
    """Two clients share one store (the service, and a check-config run beside it): when
    the other one rotates, the token in hand is spent; the refresh refused invalid_grant
    reads the store again and goes on with the token kept there, instead of stopping."""
    tokens = org.org.tokens
    configured = tokens.issue_refresh(org.org.user_id)
    store = MemoryStore()
    with structlog.testing.capture_logs() as logs:
        async with client_for(org, configured, refresh_token_store=store) as service:
            await service.limits()  # configured -> kept #1
            async with client_for(org, configured, refresh_token_store=store) as other:
                await other.limits()  # kept #1 (spent now) -> kept #2
            org.org.faults.configure({"revoke_tokens": True})  # the service's session ends
            await service.limits()  # kept #1 refused, kept #2 read and used -> kept #3
            assert service.token_requests == 3
    assert len(store.saved) == 3 and tokens.refresh_user(store.saved[-1]) == org.org.user_id
    (reloaded,) = events(logs, "salesforce_refresh_token_reloaded")
    assert reloaded["log_level"] == "warning"
    assert len(events(logs, "salesforce_auth_failed")) == 0


async def test_a_revoked_token_is_not_tried_again_when_the_store_has_nothing_newer(
    org: Any,
) -> None:
    """Refresh tokens revoked in the org: the store keeps the same one, so the refusal is an
    AuthError after one token request, as without a store."""
    tokens = org.org.tokens
    configured = tokens.issue_refresh(org.org.user_id)
    store = MemoryStore()
    async with client_for(org, configured, refresh_token_store=store) as sf:
        await sf.limits()
        org.org.faults.configure({"revoke_tokens": "all"})
        with pytest.raises(AuthError, match="invalid_grant"):
            await sf.limits()
        assert sf.token_requests == 2
