"""The rails: live REST, sObject Collections and Bulk API 2.0, with their router.

Usage (the daemon's TaskGroup owns ``run``; tests await ``drain``)::

    from daemon.mapping import load_mapping
    from daemon.rails import Rails
    from daemon.salesforce import QuotaView, SalesforceClient
    from spool import open_spool

    async with open_spool(path) as spool, SalesforceClient(
        login_url="https://acme.my.salesforce.com", auth="client_credentials",
        client_id=cid, client_secret=secret, quota=QuotaView(reserve=0.1, max_share=0.5),
    ) as sf:
        rails = Rails(spool=spool, client=sf, mapping=load_mapping(None),
                      bulk_interval_s=60, bulk_max_records=10_000,
                      on_event=lambda name, fields: metrics.observe(name, fields))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(rails.run(stop))      # until stop.set()
        # after spool.put(...) of an urgent outcome, rails.wake() skips the idle poll
        rails.status()   # paused rails + reasons, quota snapshot, current route (/readyz)

    await rails.drain(timeout_s=30)          # tests: flush everything, then return
"""

from ._leads import LeadLedger, LeadResolver
from ._rest import Action, Verdict
from .bulk import BulkRail, BulkStats
from .flusher import EventHook, Rails, RailsStatus
from .router import Route, Via, route

__all__ = [
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
