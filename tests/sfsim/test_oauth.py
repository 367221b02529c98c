"""The OAuth token endpoint over real sockets: every flow, its errors, expiry and revocation."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
import pytest_asyncio
import trustme

from sfsim.server import SimOrg
from sfsim.testing import SimControl

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture(scope="module")
def jwt_keys() -> tuple[bytes, bytes]:
    """(private key PEM, certificate PEM) of a connected app's signing key."""
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("jwt.example", key_type=trustme.KeyType.RSA)
    return leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes()


@pytest_asyncio.fixture
async def jwt_sim(jwt_keys: tuple[bytes, bytes]) -> AsyncIterator[SimOrg]:
    async with SimOrg(jwt_cert_pem=jwt_keys[1]) as org:
        yield org


async def _token(sim: SimOrg, data: dict[str, str], **kw: object) -> httpx.Response:
    async with httpx.AsyncClient(verify=False) as c:
        return await c.post(sim.info["token_url"], data=data, **kw)  # type: ignore[arg-type]


def _cc(sim: SimOrg, **over: str) -> dict[str, str]:
    info = sim.info
    return {
        "grant_type": "client_credentials",
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
        **over,
    }


async def _api_status(sim: SimOrg, token: str) -> int:
    async with httpx.AsyncClient(verify=False) as c:
        r = await c.get(
            f"{sim.instance_url}/services/data/v62.0/limits",
            headers={"Authorization": f"Bearer {token}"},
        )
    return r.status_code


async def test_client_credentials_in_body(sim: SimOrg) -> None:
    """client_credentials with body fields returns the documented response shape."""
    r = await _token(sim, _cc(sim))
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
        "scope",
    }
    assert "expires_in" not in body
    assert body["token_type"] == "Bearer" and body["instance_url"] == sim.instance_url
    assert len(body["issued_at"]) == 13 and body["issued_at"].isdigit()
    assert abs(int(body["issued_at"]) / 1000 - time.time()) < 60
    assert body["id"].startswith(f"{sim.instance_url}/id/00D")
    assert await _api_status(sim, body["access_token"]) == 200


async def test_client_credentials_with_basic_auth(sim: SimOrg) -> None:
    """client_credentials with HTTP Basic (as simple-salesforce sends it) works."""
    info = sim.info
    basic = base64.b64encode(f"{info['client_id']}:{info['client_secret']}".encode()).decode()
    r = await _token(
        sim, {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert r.status_code == 200 and r.json()["access_token"]


@pytest.mark.parametrize(
    ("over", "error", "description"),
    [
        ({"client_id": "wrong"}, "invalid_client_id", "client identifier invalid"),
        ({"client_secret": "wrong"}, "invalid_client", "invalid client credentials"),
        (
            {"grant_type": "authorization_code"},
            "unsupported_grant_type",
            "grant type not supported",
        ),
    ],
)
async def test_token_errors(
    sim: SimOrg, over: dict[str, str], error: str, description: str
) -> None:
    """Bad credentials or grants answer 400 with the documented error pair."""
    r = await _token(sim, _cc(sim, **over))
    assert r.status_code == 400
    assert r.json() == {"error": error, "error_description": description}


async def test_password_flow(sim: SimOrg) -> None:
    """The password flow issues a token; a wrong password is invalid_grant."""
    info = sim.info
    form = {
        "grant_type": "password",
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
        "username": info["username"],
        "password": info["password"],
    }
    r = await _token(sim, form)
    assert r.status_code == 200 and "refresh_token" not in r.json()
    r = await _token(sim, {**form, "password": "nope"})
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_grant", "error_description": "authentication failure"}


async def test_refresh_token_flow(sim: SimOrg, control: SimControl) -> None:
    """A refresh token minted through the control API buys new access tokens."""
    async with httpx.AsyncClient() as c:
        refresh = (await c.post(f"{sim.instance_url}/__sim/refresh_token")).json()["refresh_token"]
    info = sim.info
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": info["client_id"]}
    r = await _token(sim, form)
    assert r.status_code == 200
    assert await _api_status(sim, r.json()["access_token"]) == 200
    r = await _token(sim, {**form, "refresh_token": "5Aep861bogus"})
    assert r.status_code == 400
    assert r.json()["error_description"] == "expired access/refresh token"


def _assertion(key: bytes, sim: SimOrg, **over: object) -> str:
    claims: dict[str, object] = {
        "iss": sim.info["client_id"],
        "sub": sim.info["username"],
        "aud": "https://login.salesforce.com",
        "exp": str(int(time.time()) + 180),
    }
    claims.update(over)
    return jwt.encode(claims, key, algorithm="RS256")


async def test_jwt_bearer_flow(jwt_sim: SimOrg, jwt_keys: tuple[bytes, bytes]) -> None:
    """A valid RS256 assertion (exp as a string, like simple-salesforce) gets a token."""
    r = await _token(
        jwt_sim, {"grant_type": JWT_GRANT, "assertion": _assertion(jwt_keys[0], jwt_sim)}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and "refresh_token" not in body
    assert await _api_status(jwt_sim, body["access_token"]) == 200


@pytest.mark.parametrize(
    ("over", "description"),
    [
        ({"aud": "https://evil.example.com"}, "Audience validation failed"),
        ({"exp": int(time.time()) + 3600}, "expired authorization code"),
        ({"exp": int(time.time()) - 10}, "expired authorization code"),
        ({"sub": "someone@else.com"}, "user hasn't approved this consumer"),
    ],
)
async def test_jwt_claim_errors(
    jwt_sim: SimOrg, jwt_keys: tuple[bytes, bytes], over: dict[str, object], description: str
) -> None:
    """Wrong audience, exp beyond 3 minutes or past, or an unknown subject are refused."""
    r = await _token(
        jwt_sim, {"grant_type": JWT_GRANT, "assertion": _assertion(jwt_keys[0], jwt_sim, **over)}
    )
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_grant", "error_description": description}


async def test_jwt_audience_may_name_the_sim_itself(
    jwt_sim: SimOrg, jwt_keys: tuple[bytes, bytes]
) -> None:
    """aud may be the sim's own URL, by 127.0.0.1 or localhost (a login_url pointing at it)."""
    port = jwt_sim.instance_url.rsplit(":", 1)[1]
    for aud in (jwt_sim.instance_url, f"http://localhost:{port}/"):
        r = await _token(
            jwt_sim,
            {"grant_type": JWT_GRANT, "assertion": _assertion(jwt_keys[0], jwt_sim, aud=aud)},
        )
        assert r.status_code == 200, (aud, r.text)


async def test_jwt_signed_by_another_key_is_invalid(jwt_sim: SimOrg) -> None:
    """An assertion not signed by the configured certificate's key is invalid."""
    other_ca = trustme.CA(key_type=trustme.KeyType.RSA)
    other = other_ca.issue_cert("x", key_type=trustme.KeyType.RSA).private_key_pem.bytes()
    r = await _token(jwt_sim, {"grant_type": JWT_GRANT, "assertion": _assertion(other, jwt_sim)})
    assert r.status_code == 400
    assert r.json()["error_description"] == "invalid assertion"


async def test_tokens_expire_after_ttl() -> None:
    """After --token-ttl an access token gets 401 INVALID_SESSION_ID."""
    async with SimOrg(token_ttl=0.3) as sim:
        token = (await _token(sim, _cc(sim))).json()["access_token"]
        assert await _api_status(sim, token) == 200
        deadline = time.monotonic() + 10
        while await _api_status(sim, token) != 401:
            assert time.monotonic() < deadline, "token never expired"
            await asyncio.sleep(0.05)


async def test_revoked_tokens_get_401(sim: SimOrg, control: SimControl) -> None:
    """Token revocation (fault) makes existing tokens fail; a new login works again."""
    token = (await _token(sim, _cc(sim))).json()["access_token"]
    await control.faults(revoke_tokens=True)
    assert await _api_status(sim, token) == 401
    fresh = (await _token(sim, _cc(sim))).json()["access_token"]
    assert await _api_status(sim, fresh) == 200


async def test_soap_login(sim: SimOrg) -> None:
    """The SOAP login call returns a sessionId usable as a bearer token; bad ones fault."""
    info = sim.info
    envelope = (
        '<?xml version="1.0" encoding="utf-8" ?><env:Envelope '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:env="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:urn="urn:partner.soap.sforce.com"><env:Body><n1:login '
        'xmlns:n1="urn:partner.soap.sforce.com"><n1:username>{u}</n1:username>'
        "<n1:password>{p}</n1:password></n1:login></env:Body></env:Envelope>"
    )
    async with httpx.AsyncClient() as c:
        url = f"{sim.instance_url}/services/Soap/u/59.0"
        r = await c.post(
            url,
            content=envelope.format(u=info["username"], p=info["password"]),
            headers={"SOAPAction": "login", "content-type": "text/xml"},
        )
        assert r.status_code == 200
        session = r.text.split("<sessionId>")[1].split("</sessionId>")[0]
        assert f"<serverUrl>{sim.instance_url}/services/Soap/u/59.0/" in r.text
        assert await _api_status(sim, session) == 200
        r = await c.post(url, content=envelope.format(u=info["username"], p="bad"))
        assert r.status_code == 500 and "INVALID_LOGIN" in r.text


async def test_identity_url_from_token_response(sim: SimOrg) -> None:
    """The token's `id` URL answers with the user and org; without a token it is refused."""
    body = (await _token(sim, _cc(sim))).json()
    async with httpx.AsyncClient() as c:
        auth = {"Authorization": f"Bearer {body['access_token']}"}
        r = await c.get(body["id"], headers=auth)
        assert r.status_code == 200
        ident = r.json()
        assert ident["username"] == sim.info["username"]
        assert body["id"].endswith(f"/{ident['organization_id']}/{ident['user_id']}")
        r = await c.get(f"{sim.instance_url}/services/oauth2/userinfo", headers=auth)
        assert r.json()["preferred_username"] == sim.info["username"]
        assert (await c.get(body["id"])).status_code == 403


def test_token_store_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the cap the oldest access token is revoked; the newest ones keep working."""
    import sfsim.oauth as oauth

    monkeypatch.setattr(oauth, "MAX_ACTIVE_TOKENS", 3)
    store = oauth.TokenStore("00D000000000001AAA", ttl_s=3600)
    tokens = [store.issue("005", "test") for _ in range(5)]
    assert store.check(tokens[0]) is None and store.check(tokens[1]) is None
    assert all(store.check(t) is not None for t in tokens[2:])
