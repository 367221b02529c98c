"""Helpers of the Salesforce client tests."""

from __future__ import annotations

from typing import Any

from daemon.salesforce import SalesforceClient


def client_for(sim: Any, **kw: Any) -> SalesforceClient:
    """A client-credentials client of ``sim`` over plain http (loopback)."""
    info = sim.info
    kw.setdefault("client_secret", info["client_secret"])
    return SalesforceClient(
        login_url=info["token_url"].removesuffix("/services/oauth2/token"),
        client_id=info["client_id"],
        allow_http=True,
        **kw,
    )
