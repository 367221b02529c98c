"""The one error type every sfsim write path raises, shaped like a Salesforce REST error.

``SfError`` carries what the wire needs: the HTTP status of a single-record REST call, the
``errorCode`` (REST) / ``statusCode`` (collections, bulk) and the message, plus ``fields``.
Each transport renders it in its own shape (reference §2.8, §3.2, §4.8):

- REST:         ``[{"message": ..., "errorCode": ..., "fields": [...]}]`` with ``status``
- collections:  ``{"statusCode": ..., "message": ..., "fields": [...]}`` inside the item
- bulk results: ``CODE:message:fields --`` in ``sf__Error``
"""

from __future__ import annotations

from typing import Any

__all__ = ["SfError", "not_found"]


class SfError(Exception):
    """A Salesforce error: HTTP status, error code, message and the fields it concerns."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        fields: list[str] | None = None,
    ) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields: list[str] = list(fields or [])

    def rest_body(self) -> list[dict[str, Any]]:
        """The REST error body: a JSON array with one error object."""
        return [{"message": self.message, "errorCode": self.error_code, "fields": self.fields}]

    def item_error(self) -> dict[str, Any]:
        """The per-record error of sObject Collections (``statusCode``, not ``errorCode``)."""
        return {"statusCode": self.error_code, "message": self.message, "fields": self.fields}

    def bulk_error(self) -> str:
        """The ``sf__Error`` cell of a Bulk 2.0 failedResults row: ``CODE:message:fields --``."""
        return f"{self.error_code}:{self.message}:{','.join(self.fields)} --"

    def __repr__(self) -> str:
        return f"SfError({self.status}, {self.error_code!r}, {self.message!r}, {self.fields!r})"


def not_found(message: str = "The requested resource does not exist") -> SfError:
    """404 NOT_FOUND, the answer for an unknown URI, object or record."""
    return SfError(404, "NOT_FOUND", message)
