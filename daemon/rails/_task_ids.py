"""Finding Tasks again in orgs without a Task external ID field.

There a Task is inserted, and its Id remembered in the spool. An outcome claimed
again after a claim whose answer never came back (timeout, crash, lost lease) may
already have its Task; before inserting it, the rail looks it up by its key in
``CallObject`` (:data:`daemon.mapping.CALL_KEY_FIELD`, which the mapping fills with
``source:call_id``). Only re-claims pay for the lookup: one query per up to
:data:`~._leads.QUERY_BATCH` keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from daemon.mapping import CALL_KEY_FIELD
from daemon.salesforce import SalesforceClient

from ._leads import soql_chunks, soql_literal

__all__ = ["find_tasks"]

log = structlog.get_logger("dispo_sync.rails")


async def find_tasks(
    client: SalesforceClient, task_object: str, keys: Sequence[str], *, rail: str
) -> dict[str, str]:
    """key -> Id of the Task whose ``CallObject`` is exactly that key, for the keys found.

    SOQL compares text without regard to case, so matches are checked exactly here.
    Several Tasks with one key (made by hand, or by another tool) take the first by Id
    (Ids grow with creation: in practice the oldest), and are logged. Raises what the query raises.
    """
    found: dict[str, str] = {}
    extra: dict[str, int] = {}
    for chunk in soql_chunks(list(dict.fromkeys(keys))):
        soql = (
            f"SELECT Id, {CALL_KEY_FIELD} FROM {task_object} WHERE {CALL_KEY_FIELD} IN "
            f"({', '.join(soql_literal(k) for k in chunk)}) ORDER BY Id"
        )
        records: list[dict[str, Any]] = await client.query(soql, rail=rail)
        wanted = set(chunk)
        for record in records:
            key = record.get(CALL_KEY_FIELD)
            if not isinstance(key, str) or key not in wanted:
                continue
            if key in found:
                extra[key] = extra.get(key, 0) + 1
            else:
                found[key] = str(record["Id"])
    for key, n in extra.items():
        source, _, call_id = key.partition(":")
        log.warning(
            "task_lookup_ambiguous",
            rail=rail,
            source=source,
            call_id=call_id,
            task_id=found[key],
            others=n,
            note="several Tasks carry this call's key in CallObject; the first by Id is updated",
        )
    log.info("task_lookup", rail=rail, keys=len(keys), found=len(found))
    return found
