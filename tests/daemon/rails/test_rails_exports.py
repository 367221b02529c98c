"""The public surface of the Salesforce client, mapping and rails packages is pinned."""

from __future__ import annotations

import daemon.mapping
import daemon.rails
import daemon.salesforce


def test_public_names_are_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert sorted(daemon.rails.__all__) == [
        "Action",
        "BulkRail",
        "BulkStats",
        "EventHook",
        "LeadLedger",
        "LeadResolver",
        "Rails",
        "RailsStatus",
        "Route",
        "Verdict",
        "Via",
        "route",
    ]
    assert sorted(daemon.mapping.__all__) == [
        "CALL_KEY_FIELD",
        "CLEAR",
        "Clear",
        "LeadNotFound",
        "Mapping",
        "MappingError",
        "load_mapping",
        "parse_mapping",
    ]
    for name in (
        "SalesforceClient",
        "QuotaView",
        "RetryableError",
        "PermanentError",
        "ConfigurationError",
        "AuthError",
        "map_salesforce_errors",
        "Backoff",
    ):
        assert name in daemon.salesforce.__all__
    for module in (daemon.rails, daemon.mapping, daemon.salesforce):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is exported but missing"
