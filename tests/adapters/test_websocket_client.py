"""The reconnect policy shared by the websocket and ARI adapters (adapters._ws_client)."""

from __future__ import annotations

from itertools import islice

from adapters._ws_client import backoff, log_reason, redact_uri


def test_backoff_grows_to_a_ceiling_with_jitter() -> None:
    """Delays start jittered below the first step, grow geometrically and stay under the cap."""
    top = list(islice(backoff(1.0, 10.0, 2.0, rng=lambda: 1.0), 7))
    assert top == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    low = list(islice(backoff(1.0, 10.0, 2.0, rng=lambda: 0.0), 5))
    assert low == [0.0, 1.0, 2.0, 4.0, 5.0]  # never below half a step after the first


def test_redact_uri_hides_tokens_and_user_info() -> None:
    """Logged URIs never carry a query (api_key, token) or user:password."""
    uri = "wss://dispo:pw@pbx:8089/ari/events?app=d&api_key=dispo:pw"
    assert redact_uri(uri) == "wss://pbx:8089/ari/events"


def test_log_reason_drops_values() -> None:
    """Logged rejection reasons name the field but not the value (kept in quarantine)."""
    reason = "phone: Value error, not a phone number: 'call me' (got 'call me')"
    assert log_reason(reason) == "phone: Value error, not a phone number: '…' (got '…')"
