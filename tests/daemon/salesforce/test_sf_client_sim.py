"""The Salesforce client against sfsim over loopback: auth, refresh, errors, quota."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from sfkit import client_for

from daemon.salesforce import (
    AuthError,
    ClientClosed,
    ConfigurationError,
    Kind,
    QuotaView,
    SalesforceClient,
    TlsUntrustedError,
    TransportError,
)
from daemon.salesforce.wire import sobject_path


async def test_client_credentials_login_and_limits_feed_the_quota(sim: Any) -> None:
    """One token request, then /limits fills the quota view from the org."""
    async with client_for(sim, quota=QuotaView()) as sf:
        body = await sf.limits()
        assert "DailyApiRequests" in body
        assert sf.token_requests == 1
        assert sf.quota.usage is not None and sf.quota.usage.max > 0
        assert sf.quota.calls_by_rail == {"admin": 1}


async def test_password_flow_works(sim: Any) -> None:
    """The legacy username-password flow logs in."""
    info = sim.info
    async with client_for(
        sim, auth="password", username=info["username"], password=info["password"]
    ) as sf:
        await sf.limits()
        assert sf.instance_url is not None


async def test_bad_secret_is_an_auth_error_that_says_what_is_wrong(sim: Any) -> None:
    """A wrong client secret raises AuthError naming the OAuth error, once, no spinning."""
    async with client_for(sim, client_secret="wrong") as sf:
        with pytest.raises(AuthError, match="invalid_client"):
            await sf.limits()
        assert sf.token_requests == 1


async def test_expired_session_triggers_one_refresh_for_many_requests(sim: Any) -> None:
    """Twenty concurrent requests seeing INVALID_SESSION_ID cause exactly one refresh."""
    async with client_for(sim) as sf:
        await sf.limits()
        sim.org.faults.configure({"revoke_tokens": True})
        await asyncio.gather(*(sf.limits() for _ in range(20)))
        assert sf.token_requests == 2


async def test_upsert_path_encodes_external_key(sim: Any) -> None:
    """A Task upserted by an external key with ':' and '/' lands under that exact key."""
    async with client_for(sim) as sf:
        path = sobject_path(sf.api_version, "Task", "Call_Id__c", "vici:a/b c")
        response = await sf.request(
            "PATCH", path, json={"Subject": "Call", "Status": "Completed"}, rail="live"
        )
        assert response.status_code == 201
        assert sim.org.store.find("Task", "Call_Id__c", "vici:a/b c")


async def test_connection_refused_is_a_transport_error() -> None:
    """Nothing listening: a retryable TransportError, not an httpx exception."""
    sf = SalesforceClient(
        login_url="http://127.0.0.1:9",
        client_id="c",
        client_secret="s",
        allow_http=True,
        connect_timeout_s=1.0,
    )
    async with sf:
        with pytest.raises(TransportError) as info:
            await sf.limits()
    assert not isinstance(info.value, TlsUntrustedError)  # only a refused certificate is


async def test_closed_client_refuses_use(sim: Any) -> None:
    """Using the client after aclose() raises ClientClosed; closing twice is fine."""
    sf = client_for(sim)
    async with sf:
        pass
    await sf.aclose()
    with pytest.raises(ClientClosed):
        await sf.limits()


async def test_refresh_token_flow_logs_in_and_heals_an_expired_session(sim: Any) -> None:
    """auth = refresh_token: the token endpoint mints access from the refresh token, and an
    expired access token is refreshed once the same way."""
    refresh = sim.org.tokens.issue_refresh(sim.org.user_id)
    async with client_for(sim, auth="refresh_token", refresh_token=refresh) as sf:
        await sf.limits()
        sim.org.faults.configure({"revoke_tokens": True})
        await sf.limits()
        assert sf.token_requests == 2


async def test_revoked_refresh_token_is_an_auth_error_that_says_what_to_fix(sim: Any) -> None:
    """A refresh token revoked in the org will not heal: AuthError naming the fix, once."""
    refresh = sim.org.tokens.issue_refresh(sim.org.user_id)
    async with client_for(sim, auth="refresh_token", refresh_token=refresh) as sf:
        await sf.limits()
        sim.org.faults.configure({"revoke_tokens": "all"})
        with pytest.raises(AuthError, match="invalid_grant"):
            await sf.limits()
        assert sf.token_requests == 2


async def test_jwt_bearer_flow_logs_in(tmp_path: Any) -> None:
    """auth = jwt: an RS256 assertion signed with the connected app's key gets a token."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from sfsim import SimOrg

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "server.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    async with (
        SimOrg(port=0, jwt_cert_pem=public) as org,
        client_for(
            org,
            auth="jwt",
            client_secret=None,
            username=org.info["username"],
            private_key_file=path,
        ) as sf,
    ):
        await sf.limits()
        assert sf.instance_url is not None and sf.token_requests == 1


async def test_tls_is_verified_and_an_extra_ca_file_is_trusted() -> None:
    """Over https the org's certificate is verified: unknown CA refused, trusted with ca_file."""
    from sfsim import SimOrg

    async with SimOrg(port=0, tls=True) as org:
        info = org.info
        base = {
            "login_url": info["token_url"].removesuffix("/services/oauth2/token"),
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
        }
        assert base["login_url"].startswith("https://")
        async with SalesforceClient(**base) as untrusting:
            with pytest.raises(TlsUntrustedError):  # a TransportError that says what it is
                await untrusting.limits()
        async with SalesforceClient(**base, ca_file=info["ca_file"]) as sf:
            await sf.limits()
            assert sf.instance_url is not None and sf.instance_url.startswith("https://")


async def test_failed_refresh_is_shared_by_every_request_that_waited_for_it(sim: Any) -> None:
    """Twenty concurrent requests see INVALID_SESSION_ID and the refresh token was revoked:
    one refresh attempt answers all of them (the same AuthError), not one each in turn."""
    refresh = sim.org.tokens.issue_refresh(sim.org.user_id)
    async with client_for(sim, auth="refresh_token", refresh_token=refresh) as sf:
        await sf.limits()
        sim.org.faults.configure({"revoke_tokens": "all"})
        results = await asyncio.gather(*(sf.limits() for _ in range(20)), return_exceptions=True)
        assert all(isinstance(r, AuthError) for r in results), results
        assert sf.token_requests == 2
        # Settled: the next call tries again (a refresh token put back would heal it).
        with pytest.raises(AuthError):
            await sf.limits()
        assert sf.token_requests == 3


async def test_concurrent_first_logins_with_bad_credentials_make_one_token_request(
    sim: Any,
) -> None:
    """Twenty requests start at once with a wrong secret: one token request, one AuthError
    shared by all of them."""
    async with client_for(sim, client_secret="wrong") as sf:
        results = await asyncio.gather(*(sf.limits() for _ in range(20)), return_exceptions=True)
        assert all(isinstance(r, AuthError) for r in results), results
        assert sf.token_requests == 1


async def test_rotated_refresh_token_is_used_for_the_next_refresh() -> None:
    """With refresh token rotation on, each refresh answers with a new refresh token and
    spends the one used (Salesforce Help, "OAuth 2.0 Refresh Token Flow"): the client keeps
    the new one, so the refresh after the next expiry still works, and says so once."""
    from sfsim import SimOrg

    async with SimOrg(port=0, refresh_token_rotation=True) as org:
        refresh = org.org.tokens.issue_refresh(org.org.user_id)
        async with client_for(org, auth="refresh_token", refresh_token=refresh) as sf:
            with structlog.testing.capture_logs() as logs:
                await sf.limits()  # spends `refresh`, gets a new one
                assert org.org.tokens.refresh_user(refresh) is None
                for _ in range(2):
                    org.org.faults.configure({"revoke_tokens": True})  # the session ends
                    await sf.limits()
            assert sf.token_requests == 3
    rotated = [e for e in logs if e["event"] == "salesforce_refresh_token_rotated"]
    assert len(rotated) == 1 and rotated[0]["log_level"] == "warning"
    assert refresh not in str(logs)


async def test_retired_api_version_pauses_with_the_setting_to_change(sim: Any) -> None:
    """A retired API version answers 410 GONE to every request: a ConfigurationError (the
    rail pauses) that names the setting, not a PermanentError that dead-letters records."""
    async with client_for(sim, api_version="30.0") as sf:
        with pytest.raises(ConfigurationError, match=r"retired.*\[salesforce\] api_version"):
            await sf.limits()


async def test_a_record_the_user_may_not_edit_is_refused_for_that_record_only(sim: Any) -> None:
    """A sharing refusal (INSUFFICIENT_ACCESS_OR_READONLY) on one record of a collections or
    composite call is permanent for that record; the others are written."""
    st = sim.org.store
    locked, free = (
        st.insert("Lead", {"LastName": n, "Company": "Acme"}) for n in ("Locked", "Free")
    )
    sim.org.store.read_only_ids = {locked}
    async with client_for(sim) as sf:
        results = await sf.update_collection(
            "Lead", [{"Id": locked, "Status": "Working"}, {"Id": free, "Status": "Working"}]
        )
        refused, written = results
        assert written.success and not refused.success
        assert refused.error is not None
        assert refused.error.code == "INSUFFICIENT_ACCESS_OR_READONLY"
        assert refused.error.kind is Kind.PERMANENT
        path = sobject_path(sf.api_version, "Lead", locked)
        sub = {"method": "PATCH", "url": path, "referenceId": "lead", "body": {"Status": "New"}}
        [(_, result)] = (await sf.composite([sub])).items()
        assert result.error is not None and result.error.kind is Kind.PERMANENT
