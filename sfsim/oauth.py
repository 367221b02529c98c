"""The OAuth 2.0 token endpoint and the access-token store (reference §1).

Flows: ``client_credentials`` (body fields or HTTP Basic), ``password``, ``refresh_token`` and the
JWT bearer flow (RS256 verified against the configured certificate, ``exp`` within 3 minutes,
``iss`` = client_id, ``aud`` = login/test host or this sim, ``sub`` = the username).
Success is 200 with ``issued_at`` as 13-digit *milliseconds* in a string and no ``expires_in``
(§1.1, §1.6); errors are 400 ``{"error": ..., "error_description": ...}`` (§1.7).

Tokens expire ``token_ttl`` seconds after issue (absolute, [U]: a real org extends sessions on
activity; expiring strictly is the safer thing to test clients against).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt

__all__ = ["JWT_GRANT", "OAuthConfig", "TokenInfo", "TokenStore", "token_endpoint"]

JWT_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: At most this many live access tokens; beyond it the oldest is revoked.
MAX_ACTIVE_TOKENS: Final = 20_000
#: The JWT ``exp`` claim must fall within this many seconds from now (§1.5).
JWT_MAX_LIFETIME_S: Final = 180


@dataclass(slots=True)
class OAuthConfig:
    """The connected app and integration user the sim accepts."""

    client_id: str
    client_secret: str
    username: str
    password: str
    security_token: str = ""
    #: PEM certificate (or public key) the JWT bearer flow verifies against; None disables it.
    jwt_cert_pem: bytes | None = None
    #: Orgs block the username-password flow by default since Summer '23 (§1.3); the sim allows
    #: it unless told otherwise, because its info line hands out a password on purpose.
    password_flow: bool = True
    client_credentials_flow: bool = True
    #: Refresh token rotation (the connected app's "Enable Refresh Token Rotation"): each
    #: refresh_token grant answers with a new ``refresh_token`` and invalidates the one used.
    #: Off by default, as on a real connected app (§1.4 [U]).
    refresh_token_rotation: bool = False


@dataclass(slots=True)
class TokenInfo:
    """An issued access token."""

    user_id: str
    flow: str
    expires_at: float  # wall-clock seconds


class TokenStore:
    """Access and refresh tokens with expiry and revocation."""

    def __init__(self, org_id: str, ttl_s: float) -> None:
        self.org_id = org_id
        self.ttl_s = ttl_s
        self._access: dict[str, TokenInfo] = {}
        self._refresh: dict[str, str] = {}
        self.issued = 0

    def issue(self, user_id: str, flow: str) -> str:
        """A new access token, shaped like a real session id (``00D...!...``)."""
        now = time.time()
        if len(self._access) >= MAX_ACTIVE_TOKENS:
            self._purge(now)
            # Still full (a client logging in per request): the oldest sessions end first, so
            # memory stays bounded by the store, not by the client's habits.
            while len(self._access) >= MAX_ACTIVE_TOKENS:
                del self._access[next(iter(self._access))]
        token = f"{self.org_id[:15]}!{secrets.token_urlsafe(72)}"
        self._access[token] = TokenInfo(user_id, flow, now + self.ttl_s)
        self.issued += 1
        return token

    def check(self, token: str) -> TokenInfo | None:
        """The token's info if it is known and unexpired, else None (expired ones are dropped)."""
        info = self._access.get(token)
        if info is None:
            return None
        if time.time() >= info.expires_at:
            del self._access[token]
            return None
        return info

    def issue_refresh(self, user_id: str) -> str:
        """A refresh token for ``user_id`` (minted through the control API)."""
        token = f"5Aep861{secrets.token_urlsafe(60)}"
        self._refresh[token] = user_id
        return token

    def refresh_user(self, token: str) -> str | None:
        """The user a refresh token belongs to, or None."""
        return self._refresh.get(token)

    def rotate_refresh(self, token: str) -> str:
        """Rotation: a new refresh token for ``token``'s user; ``token`` stops working."""
        user_id = self._refresh.pop(token)
        return self.issue_refresh(user_id)

    def revoke(self, *, refresh_too: bool = False) -> int:
        """Revoke every access token (and refresh tokens when asked); returns how many."""
        n = len(self._access)
        self._access.clear()
        if refresh_too:
            n += len(self._refresh)
            self._refresh.clear()
        return n

    def active(self) -> int:
        """Number of unexpired access tokens."""
        self._purge(time.time())
        return len(self._access)

    def _purge(self, now: float) -> None:
        for token in [t for t, i in self._access.items() if now >= i.expires_at]:
            del self._access[token]

    def dump(self) -> dict[str, Any]:
        """JSON-ready state, so a restarted sim keeps sessions valid."""
        return {
            "access": {t: [i.user_id, i.flow, i.expires_at] for t, i in self._access.items()},
            "refresh": dict(self._refresh),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore a ``dump()``."""
        self._access = {
            t: TokenInfo(str(v[0]), str(v[1]), float(v[2]))
            for t, v in (state.get("access") or {}).items()
        }
        self._refresh = {str(k): str(v) for k, v in (state.get("refresh") or {}).items()}


def _err(error: str, description: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": error, "error_description": description}


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = raw.partition(":")
    return (client_id, secret) if sep else None


def token_endpoint(
    *,
    config: OAuthConfig,
    tokens: TokenStore,
    form: Mapping[str, str],
    authorization: str | None,
    instance_url: str,
    user_id: str,
    accepted_audiences: frozenset[str],
) -> tuple[int, dict[str, Any]]:
    """Handle one ``POST /services/oauth2/token``; returns (status, JSON body)."""
    grant = form.get("grant_type", "")
    client_id = form.get("client_id")
    client_secret = form.get("client_secret")
    basic = _basic_credentials(authorization)
    if basic is not None and client_id is None:
        client_id, client_secret = basic

    def check_client(secret_required: bool = True) -> tuple[int, dict[str, Any]] | None:
        if client_id != config.client_id:
            return _err("invalid_client_id", "client identifier invalid")
        if (secret_required or client_secret is not None) and not (
            client_secret is not None
            and hmac.compare_digest(client_secret.encode(), config.client_secret.encode())
        ):
            return _err("invalid_client", "invalid client credentials")
        return None

    flow: str
    rotated: str | None = None
    if grant == "client_credentials":
        problem = check_client()
        if problem:
            return problem
        if not config.client_credentials_flow:
            return _err("invalid_grant", "no client credentials user enabled")
        flow = "client_credentials"
    elif grant == "password":
        problem = check_client()
        if problem:
            return problem
        password = form.get("password", "")
        ok_passwords = {config.password, config.password + config.security_token}
        if (
            not config.password_flow
            or form.get("username") != config.username
            or password not in ok_passwords
        ):
            return _err("invalid_grant", "authentication failure")
        flow = "password"
    elif grant == "refresh_token":
        # The secret is checked only when the client sends one ("Require secret for refresh
        # token flow" off), as jsforce does (§1.4).
        problem = check_client(secret_required=False)
        if problem:
            return problem
        used = form.get("refresh_token", "")
        if tokens.refresh_user(used) is None:
            return _err("invalid_grant", "expired access/refresh token")
        # [U] a new refresh_token comes back only with rotation enabled (§1.4); with it, the
        # one just used is spent and only the new one works for the next refresh.
        if config.refresh_token_rotation:
            rotated = tokens.rotate_refresh(used)
        flow = "refresh_token"
    elif grant == JWT_GRANT:
        problem2 = _check_jwt(config, form.get("assertion", ""), accepted_audiences)
        if problem2:
            return problem2
        flow = "jwt"
    else:
        return _err("unsupported_grant_type", "grant type not supported")

    access = tokens.issue(user_id, flow)
    identity = f"{instance_url}/id/{tokens.org_id}/{user_id}"
    body: dict[str, Any] = {
        "access_token": access,
        "instance_url": instance_url,
        "id": identity,
        "token_type": "Bearer",
        "scope": "api",
    }
    if rotated is not None:
        body["refresh_token"] = rotated
    if flow != "jwt":
        # [U] whether JWT responses carry signature/issued_at (§1.5): left out, the stricter
        # choice for clients that must not depend on them.
        issued_at = str(int(time.time() * 1000))
        mac = hmac.new(
            config.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
        )
        body["issued_at"] = issued_at
        body["signature"] = base64.b64encode(mac.digest()).decode()
    return 200, body


def _check_jwt(
    config: OAuthConfig, assertion: str, audiences: frozenset[str]
) -> tuple[int, dict[str, Any]] | None:
    if config.jwt_cert_pem is None:
        return _err("invalid_grant", "invalid assertion")
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        return _err("invalid_grant", "invalid assertion")
    if header.get("alg") != "RS256":
        return _err("invalid_grant", "invalid assertion")
    try:
        key = _public_key(config.jwt_cert_pem)
        claims = jwt.decode(
            assertion,
            key,
            algorithms=["RS256"],
            options={
                "verify_exp": False,
                "verify_aud": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_iss": False,
                "verify_sub": False,
            },
        )
    except (jwt.PyJWTError, ValueError):
        return _err("invalid_grant", "invalid assertion")
    if claims.get("iss") != config.client_id:
        return _err("invalid_client_id", "client identifier invalid")
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a.rstrip("/") in audiences for a in auds):
        return _err("invalid_grant", "Audience validation failed")
    # simple-salesforce sends exp as a string of seconds (§1.5): accept digits in a string.
    exp_raw = claims.get("exp")
    try:
        exp = float(exp_raw) if not isinstance(exp_raw, bool) else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        exp = None
    now = time.time()
    if exp is None or exp <= now or exp > now + JWT_MAX_LIFETIME_S + 1:
        return _err("invalid_grant", "expired authorization code")
    subject = claims.get("prn", claims.get("sub"))
    if subject != config.username:
        return _err("invalid_grant", "user hasn't approved this consumer")
    return None


def _public_key(pem: bytes) -> Any:
    """The RSA public key of a PEM certificate or public key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if b"BEGIN CERTIFICATE" in pem:
        return x509.load_pem_x509_certificate(pem).public_key()
    return serialization.load_pem_public_key(pem)
