"""Salesforce client: auth, REST, composite, collections, Bulk 2.0 ingest, limits.

>>> async with SalesforceClient(login_url="https://acme.my.salesforce.com",
...                             client_id="...", client_secret="...") as sf:  # doctest: +SKIP
...     await sf.limits()
...     results = await sf.upsert_collection("Task", "Call_Id__c", records)

Errors (see :mod:`.errors` for the tree): ``RetryableError`` -> back off;
``PermanentError`` -> dead letter; ``ConfigurationError`` / ``AuthError`` -> pause.
"""

from .auth import AuthFlow
from .backoff import Backoff, backoff
from .client import CallHook, SalesforceClient, SendHook, map_salesforce_errors
from .errors import (
    AuthError,
    ClientClosed,
    ConfigurationError,
    Kind,
    LockError,
    PermanentError,
    RecordError,
    RequestLimitError,
    RetryableError,
    SalesforceError,
    ServerError,
    SessionExpired,
    TlsUntrustedError,
    TransportError,
    classify_code,
)
from .limits import ApiUsage, QuotaState, QuotaView, parse_limit_info
from .wire import MAX_COLLECTION, MAX_UPLOAD_BYTES, CsvRows, ItemResult, ResultRow

__all__ = [
    "MAX_COLLECTION",
    "MAX_UPLOAD_BYTES",
    "ApiUsage",
    "AuthError",
    "AuthFlow",
    "Backoff",
    "CallHook",
    "ClientClosed",
    "ConfigurationError",
    "CsvRows",
    "ItemResult",
    "Kind",
    "LockError",
    "PermanentError",
    "QuotaState",
    "QuotaView",
    "RecordError",
    "RequestLimitError",
    "ResultRow",
    "RetryableError",
    "SalesforceClient",
    "SalesforceError",
    "SendHook",
    "ServerError",
    "SessionExpired",
    "TlsUntrustedError",
    "TransportError",
    "backoff",
    "classify_code",
    "map_salesforce_errors",
    "parse_limit_info",
]
