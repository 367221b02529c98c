"""OAuth 2.0 token requests (pure builders): which form fields each flow sends.

Reference §1: client credentials (default for a server daemon; My Domain host),
JWT bearer (RS256 assertion, ``exp`` within 3 minutes), refresh token, and
username-password (legacy; blocked by default in new orgs). Salesforce returns
no ``expires_in``: expiry is learned from a later 401 ``INVALID_SESSION_ID``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "AuthFlow",
    "Credentials",
    "PrivateKeyError",
    "RefreshTokenStore",
    "jwt_assertion",
    "signing_key",
    "token_form",
]


class AuthFlow(StrEnum):
    CLIENT_CREDENTIALS = "client_credentials"
    JWT = "jwt"
    REFRESH_TOKEN = "refresh_token"
    PASSWORD = "password"


@dataclass(frozen=True)
class Credentials:
    """Everything a flow may need. ``repr`` never shows a secret."""

    flow: AuthFlow
    login_url: str
    client_id: str
    client_secret: str | None = None
    username: str | None = None
    password: str | None = None
    refresh_token: str | None = None
    private_key: str | None = None  # PEM text
    private_key_file: Path | None = None
    jwt_audience: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(flow={self.flow.value}, login_url={self.login_url}, client_id=...)"

    def problems(self) -> list[str]:
        needs = {
            AuthFlow.CLIENT_CREDENTIALS: ["client_secret"],
            AuthFlow.PASSWORD: ["client_secret", "username", "password"],
            AuthFlow.REFRESH_TOKEN: ["refresh_token"],
            AuthFlow.JWT: ["username"],
        }[self.flow]
        out = [
            f"{k} is required for auth = {self.flow.value!r}" for k in needs if not getattr(self, k)
        ]
        if self.flow is AuthFlow.JWT and not self.private_key and self.private_key_file is None:
            out.append("private_key_file is required for auth = 'jwt'")
        return out


class RefreshTokenStore(Protocol):
    """Where a refresh token the connected app rotated to is kept between runs.

    With refresh token rotation on, each refresh answers with a new refresh token and the
    one sent is invalidated (Salesforce Help, "OAuth 2.0 Refresh Token Flow"): the next
    start must use the newest one, not the configured one. The client calls :meth:`load`
    before its first refresh and after a refresh refused with ``invalid_grant`` (another
    process may have rotated and kept a newer one), and :meth:`save` with each new token
    before it uses the access token that came with it.
    """

    #: Where the token is kept, for log lines (never the token itself).
    where: str

    async def load(self) -> str | None:
        """The refresh token to use instead of the configured one (None: the configured)."""
        ...

    async def save(self, token: str) -> None:
        """Keep ``token`` for the next start (raise if it cannot be kept)."""
        ...


def default_audience(login_url: str) -> str:
    """The JWT ``aud``: login or test for salesforce.com hosts, else the login URL itself."""
    host = (urlsplit(login_url).hostname or "").lower()
    if host.endswith("salesforce.com"):
        if host.startswith("test.") or ".sandbox." in host or "--" in host:
            return "https://test.salesforce.com"
        return "https://login.salesforce.com"
    return login_url.rstrip("/")


class PrivateKeyError(ValueError):
    """The JWT private key cannot sign. The message says where the key came from and what
    to fix; it never quotes the key (nor the parser's text about it)."""


_KEY_FIX = (
    "it must be the connected app's RSA private key in PEM form, unencrypted "
    "(-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----), not its "
    "certificate or public key"
)


def signing_key(creds: Credentials) -> RSAPrivateKey:
    """The RSA private key the JWT bearer assertion is signed with (RS256, §1.5).

    Loaded here rather than left to PyJWT, whose failures for an unusable key are of
    every kind (``InvalidKeyError`` for a certificate or a truncated file, ``TypeError``
    for an encrypted key, ``AttributeError`` for a public key): each becomes one
    :class:`PrivateKeyError` naming the setting to fix.
    """
    if creds.private_key is not None:
        where = "private_key (credential salesforce-private-key)"
        pem = creds.private_key.encode("utf-8")
    else:
        assert creds.private_key_file is not None
        where = f"private_key_file {creds.private_key_file}"
        pem = creds.private_key_file.read_bytes()  # OSError: the caller names the file
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        # Raised for a passphrase-protected key; the daemon has no passphrase setting.
        raise PrivateKeyError(
            f"{where}: the key is encrypted with a passphrase; {_KEY_FIX}"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        # from None: the parser's message is not shown (it is about the key's bytes).
        raise PrivateKeyError(f"{where}: not a usable private key; {_KEY_FIX}") from None
    if not isinstance(key, RSAPrivateKey):
        raise PrivateKeyError(f"{where}: not an RSA key, which RS256 needs; {_KEY_FIX}")
    return key


def jwt_assertion(creds: Credentials, *, now: float | None = None) -> str:
    key = signing_key(creds)
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": creds.client_id,
        "sub": creds.username,
        "aud": creds.jwt_audience or default_audience(creds.login_url),
        # Salesforce requires exp within 3 minutes of now (§1.5).
        "exp": issued + 170,
    }
    try:
        return jwt.encode(claims, key, algorithm="RS256")
    except jwt.PyJWTError as exc:
        # A loaded RSA key PyJWT still refuses (its policy on key sizes, say).
        raise PrivateKeyError(f"the JWT private key cannot sign: {type(exc).__name__}") from None


def token_form(creds: Credentials) -> dict[str, str]:
    """Form fields for ``POST /services/oauth2/token``."""
    flow = creds.flow
    if flow is AuthFlow.CLIENT_CREDENTIALS:
        return {
            "grant_type": "client_credentials",
            "client_id": creds.client_id,
            "client_secret": creds.client_secret or "",
        }
    if flow is AuthFlow.PASSWORD:
        return {
            "grant_type": "password",
            "client_id": creds.client_id,
            "client_secret": creds.client_secret or "",
            "username": creds.username or "",
            "password": creds.password or "",
        }
    if flow is AuthFlow.REFRESH_TOKEN:
        form = {
            "grant_type": "refresh_token",
            "client_id": creds.client_id,
            "refresh_token": creds.refresh_token or "",
        }
        if creds.client_secret:
            # Only when the app has "Require secret for refresh token flow" (§1.4).
            form["client_secret"] = creds.client_secret
        return form
    return {
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "assertion": jwt_assertion(creds),
    }
