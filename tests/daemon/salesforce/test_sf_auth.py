"""OAuth token request forms for each flow (pure), and what the client makes of a key
that cannot sign."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from daemon.salesforce import AuthError, ConfigurationError, SalesforceClient
from daemon.salesforce.auth import AuthFlow, Credentials, default_audience, token_form


def test_client_credentials_form() -> None:
    """Client credentials send grant_type, client_id and client_secret in the body."""
    creds = Credentials(AuthFlow.CLIENT_CREDENTIALS, "https://x.my.salesforce.com", "cid", "sec")
    assert token_form(creds) == {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "client_secret": "sec",
    }
    assert "sec" not in repr(creds)


def test_refresh_token_form_sends_secret_only_when_configured() -> None:
    """The refresh flow includes client_secret only when one is configured."""
    creds = Credentials(AuthFlow.REFRESH_TOKEN, "https://x", "cid", refresh_token="rt")
    assert "client_secret" not in token_form(creds)
    with_secret = Credentials(AuthFlow.REFRESH_TOKEN, "https://x", "cid", "s", refresh_token="rt")
    assert token_form(with_secret)["client_secret"] == "s"


def test_jwt_assertion_claims(tmp_path: Path) -> None:
    """The JWT bearer assertion is RS256 with iss, sub, aud and exp within 3 minutes."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    creds = Credentials(
        AuthFlow.JWT, "https://login.salesforce.com", "cid", username="u@x", private_key_file=path
    )
    form = token_form(creds)
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(
        form["assertion"],
        key.public_key(),
        algorithms=["RS256"],
        audience="https://login.salesforce.com",
    )
    assert claims["iss"] == "cid" and claims["sub"] == "u@x"
    assert 0 < claims["exp"] - time.time() <= 180


def test_jwt_audience_defaults() -> None:
    """Sandboxes get test.salesforce.com, production login, anything else its own URL."""
    assert (
        default_audience("https://acme--uat.sandbox.my.salesforce.com")
        == "https://test.salesforce.com"
    )
    assert default_audience("https://acme.my.salesforce.com") == "https://login.salesforce.com"
    assert default_audience("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


def test_client_refuses_plain_http_unless_allowed() -> None:
    """http:// is refused unless allow_http; missing secrets are named."""
    with pytest.raises(ConfigurationError, match="http"):
        SalesforceClient(login_url="http://127.0.0.1:1", client_id="c", client_secret="s")
    SalesforceClient(
        login_url="http://127.0.0.1:1", client_id="c", client_secret="s", allow_http=True
    )
    with pytest.raises(ConfigurationError, match="client_secret"):
        SalesforceClient(login_url="https://x", client_id="c")


def _unusable_keys() -> dict[str, bytes]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "public key": rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "encrypted": rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        ),
        "EC key": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "truncated": pem[: len(pem) // 2],
        "certificate": _certificate(rsa_key),
    }


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    """The connected app's certificate: what gets pasted instead of the key."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dispo-sync")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("kind", ["public key", "encrypted", "EC key", "truncated", "certificate"])
async def test_unusable_jwt_private_key_is_an_auth_error_naming_the_key_file(
    tmp_path: Path, kind: str
) -> None:
    """auth = jwt with a key that cannot sign (a certificate or public key pasted by
    mistake, a passphrase, not RSA, a cut file): an AuthError (the rail pauses) whose line
    names the key file and what it must be, never the key itself; not a raw PyJWT or
    cryptography exception, which the rails would not catch."""
    pem = _unusable_keys()[kind]
    path = tmp_path / "server.key"
    path.write_bytes(pem)
    sf = SalesforceClient(
        login_url="http://127.0.0.1:9",
        auth="jwt",
        client_id="cid",
        username="u@example.com",
        private_key_file=path,
        allow_http=True,
    )
    async with sf:
        with pytest.raises(AuthError) as info:
            await sf.limits()
    text = str(info.value)
    assert f"private_key_file {path}" in text and "RSA private key in PEM" in text
    body_lines = [line for line in pem.decode().splitlines() if line and "-----" not in line]
    assert not any(line in text for line in body_lines)
    assert sf.token_requests == 0  # nothing was sent


async def test_unusable_jwt_private_key_text_names_the_credential() -> None:
    """The same for a key given as text (credential salesforce-private-key)."""
    sf = SalesforceClient(
        login_url="http://127.0.0.1:9",
        auth="jwt",
        client_id="cid",
        username="u@example.com",
        private_key=_unusable_keys()["public key"].decode(),
        allow_http=True,
    )
    async with sf:
        with pytest.raises(AuthError, match="salesforce-private-key"):
            await sf.limits()
