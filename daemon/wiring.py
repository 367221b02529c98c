"""Settings -> constructor keyword arguments for the Salesforce side (STYLE habit 11).

The pydantic :class:`~daemon.settings.Settings` stops here: the Salesforce
client, the mapping and the rails receive plain values.
"""

from __future__ import annotations

from typing import Any

from daemon.settings import Settings

__all__ = ["client_kwargs"]


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for :class:`daemon.salesforce.SalesforceClient`."""
    sf = settings.salesforce

    def secret(value: Any) -> str | None:
        return None if value is None else str(value.get_secret_value())

    return {
        "login_url": sf.login_url,
        "auth": sf.auth,
        "client_id": sf.client_id,
        "client_secret": secret(sf.client_secret),
        "username": sf.username,
        "password": secret(sf.password),
        "refresh_token": secret(sf.refresh_token),
        "private_key": secret(sf.private_key),
        "private_key_file": sf.private_key_file,
        "ca_file": sf.ca_file,
        "api_version": sf.api_version,
        # Settings only accept http:// for a loopback host (a local sfsim).
        "allow_http": sf.login_url.startswith("http://"),
        "connect_timeout_s": sf.connect_timeout_s,
        "read_timeout_s": sf.read_timeout_s,
    }
