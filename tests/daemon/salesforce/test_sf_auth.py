"""OAuth token request forms for each flow (pure)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from daemon.salesforce import ConfigurationError, SalesforceClient
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
