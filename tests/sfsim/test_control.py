"""The /__sim/ control API: seed, read, stats, reset, and loopback-only access."""

from __future__ import annotations

import httpx

from sfsim.control import ControlApi
from sfsim.org import Org
from sfsim.server import SimOrg
from sfsim.testing import SimControl


async def test_seed_and_read_records(sim: SimOrg, control: SimControl) -> None:
    """Seeded records (read-only fields allowed) come back with every field."""
    ids = await control.seed(
        "Lead", [{"LastName": "A", "Company": "C", "IsConverted": True}, {"LastName": "B"}]
    )
    assert len(ids) == 2 and all(i.startswith("00Q") for i in ids)
    records = await control.records("Lead")
    assert [r["Id"] for r in records] == ids
    assert records[0]["IsConverted"] is True and records[1]["Company"] is None
    assert "Callback_At__c" in records[0]


async def test_seed_errors_name_the_record(sim: SimOrg) -> None:
    """A bad seed record fails the whole seed with its index and code; nothing is stored."""
    async with httpx.AsyncClient() as c:
        r = await c.post(
            f"{sim.instance_url}/__sim/records/Task", json=[{"Subject": "ok"}, {"CallType": "bad"}]
        )
        assert r.status_code == 400
        assert r.json()["error"].startswith("record 1: INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
        assert (await c.get(f"{sim.instance_url}/__sim/records/Task")).json() == []
        r = await c.get(f"{sim.instance_url}/__sim/records/Widget")
        assert r.status_code == 404


async def test_stats_and_reset(sim: SimOrg, sf: httpx.AsyncClient, control: SimControl) -> None:
    """Stats count API calls per kind and records per object; reset empties the org."""
    await sf.post("sobjects/Task/", json={"Subject": "x"})
    await sf.get("query", params={"q": "SELECT Id FROM Task"})
    stats = await control.stats()
    assert stats["api_calls"]["total"] == 2
    assert stats["api_calls"]["by_kind"] == {"sobjects": 1, "query": 1}
    assert stats["records"]["Task"] == 1 and stats["records"]["User"] == 1
    assert "bulk_jobs" in stats
    await control.reset()
    stats = await control.stats()
    assert stats["records"]["Task"] == 0 and stats["api_calls"]["total"] == 0
    # Tokens survive a reset, so connected clients keep working.
    assert (await sf.get("limits")).status_code == 200


async def test_info_endpoint(sim: SimOrg) -> None:
    """/__sim/info returns the same connection info as SimOrg.info."""
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{sim.instance_url}/__sim/info")).json() == sim.info


def test_control_is_loopback_only() -> None:
    """From a non-loopback address the control API needs a valid bearer token."""
    org = Org()
    api = ControlApi(org)
    remote = {"client": ("10.1.2.3", 5555), "headers": []}
    assert api._allowed({"client": ("127.0.0.1", 1), "headers": []})
    assert api._allowed({"client": ("::1", 1), "headers": []})
    assert not api._allowed(remote)
    token = org.tokens.issue(org.user_id, "test")
    assert api._allowed({**remote, "headers": [(b"authorization", f"Bearer {token}".encode())]})
    assert not api._allowed({**remote, "headers": [(b"authorization", b"Bearer nope")]})
