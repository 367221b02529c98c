"""sfsim: a local Salesforce org that speaks the real wire protocol.

Start it with ``dispo-sync sim`` / ``python -m sfsim`` (:func:`run_sim_cli`), or in-process::

    async with SimOrg(port=0, tls=False) as org:
        org.info  # instance_url, token_url, client_id, client_secret, username, password, ca_file

Testing helpers (``sfsim.testing``): ``running_sim(**kw)``, ``sim_client(sim)`` (an authorized
httpx client based at ``/services/data/v62.0/``), ``fetch_token(sim)``, ``SimControl`` (seed
records, read records, stats, faults, reset) and ``sim_fixture(**kw)`` for pytest-asyncio.
Third-party clients on ``requests`` (simple-salesforce) need ``session.trust_env = False``: this
machine sets REQUESTS_CA_BUNDLE, which overrides ``session.verify = ca_file``.

Control API extras: ``POST /__sim/assignment_rules {"active": true}`` (a Lead assignment rule
that only ``Sforce-Auto-Assign: FALSE`` avoids), ``POST /__sim/validation_rules [...]`` (the org's
own rules: FIELD_CUSTOM_VALIDATION_EXCEPTION, see ``sfsim.rules``), ``POST /__sim/read_only_records
{"ids": [...]}`` (records the user may read but not edit: INSUFFICIENT_ACCESS_OR_READONLY),
``POST /__sim/refresh_token``, ``GET /__sim/info``. Seed a Lead with ``IsConverted: true`` to get
CANNOT_UPDATE_CONVERTED_LEAD. ``SimOrg(refresh_token_rotation=True)`` turns on refresh token
rotation (each refresh answers with a new refresh token and spends the old one).

README-internal (plug-in points for the Bulk API 2.0 engineer)
---------------------------------------------------------------
- ``sfsim/bulk.py`` exposes ``create_plugin(org: sfsim.org.Org) -> sfsim.plugin.SimPlugin``; the org
  imports it at start-up if the module exists. The protocol (``sfsim/plugin.py``): ``name``,
  ``routes()`` (Starlette routes mounted under ``/services/data/v{version}``, ``version`` is a path
  parameter), ``path_prefixes()`` (e.g. ``["/jobs/"]``), ``stats()`` (merged into /__sim/stats,
  e.g. ``{"bulk_jobs": {"JobComplete": 2}}``), ``reset()``, ``dump_state()``/``load_state()``
  (``--state-dir``), and ``async run()`` (background processing, cancelled on shutdown).
- Before a plugin route runs, the app has checked the version and the bearer token, counted the
  API call (kind = plugin name), enforced the daily limit and applied request faults; it adds
  ``Sforce-Limit-Info`` to the plugin's response.
- Every record write goes through ``org.store`` (:class:`sfsim.store.RecordStore`):
  ``insert(obj, fields) -> id``, ``update(obj, id, fields)``, ``upsert(obj, ext_field, value,
  fields) -> (id, created)``, ``delete(obj, id)``, each raising :class:`sfsim.errors.SfError`
  (``.error_code``, ``.message``, ``.fields``, ``.bulk_error()`` = ``CODE:message:fields --``).
  Values are JSON-typed (None clears a field). The store is not thread-safe: call it on the loop
  thread, in chunks, yielding between chunks.
- Bulk helpers on the store: ``resolve_column(obj, header) -> Column`` (plain and
  ``Type:Rel.Field`` relationship columns), ``resolve_reference(target, field, value)``,
  ``csv_row_to_fields(columns, cells, creating=...)`` (empty = ignore, ``#N/A`` = null), and
  ``find(obj, field, value)``.
- Faults: ``org.faults.take_job_failure() -> errorMessage | None`` (whole-job failure);
  ``org.faults.lock_row`` is the store's lock hook (UNABLE_TO_LOCK_ROW on a rate of rows) and may be
  called directly for the "shared parent in concurrent batches" rule.
- Per-row save rules a second save path must keep calling: ``store._check_lock(obj, id)`` (lock
  faults and converted Leads) and ``store._derive(obj, row, old)`` (computed fields and the org's
  validation rules). References resolved from relationship columns are not re-checked against
  converted Leads ([U] whether a real org refuses a Task on a converted Lead; REST does not either).
- Limits: ``org.usage.add_bulk_batches(n)`` for DailyBulkApiBatches; ``org.config.bulk_rate``.
- Ids: ``org.ids.new("750")`` for job ids; ``sfsim.ids.normalize_id`` to validate ids.
"""

from __future__ import annotations

from sfsim.cli import run_sim_cli
from sfsim.errors import SfError
from sfsim.org import Org, SimConfig
from sfsim.schema import Schema, SchemaError, default_schema, load_schema
from sfsim.server import SimOrg
from sfsim.store import RecordStore

__all__ = [
    "Org",
    "RecordStore",
    "Schema",
    "SchemaError",
    "SfError",
    "SimConfig",
    "SimOrg",
    "default_schema",
    "load_schema",
    "run_sim_cli",
]
