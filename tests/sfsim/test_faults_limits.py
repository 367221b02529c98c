"""Daily limit and fault injection over real sockets: 403 past the limit, 5xx, drops, locks."""

from __future__ import annotations

import time

import httpx
import pytest

from sfsim.faults import FaultConfigError, Faults
from sfsim.server import SimOrg
from sfsim.testing import SimControl, sim_client


async def test_daily_limit_exhaustion_gives_403() -> None:
    """Past --api-limit every call is 403 REQUEST_LIMIT_EXCEEDED and nothing is written."""
    async with SimOrg(api_limit=3) as sim, sim_client(sim) as sf:
        for i in range(3):
            r = await sf.post("sobjects/Task/", json={"Subject": str(i)})
            assert r.status_code == 201
            assert r.headers["sforce-limit-info"] == f"api-usage={i + 1}/3"
        r = await sf.post("sobjects/Task/", json={"Subject": "over"})
        assert r.status_code == 403
        assert r.json() == [
            {
                "message": "TotalRequests Limit exceeded.",
                "errorCode": "REQUEST_LIMIT_EXCEEDED",
                "fields": [],
            }
        ]
        assert r.headers["sforce-limit-info"] == "api-usage=3/3"
        assert len(sim.org.store.records("Task")) == 3


async def test_exhaust_fault_and_limits_resource(
    sim: SimOrg, sf: httpx.AsyncClient, control: SimControl
) -> None:
    """The exhaust fault uses up the allocation; stats count the refusals."""
    assert (await sf.get("limits")).json()["DailyApiRequests"]["Remaining"] == 99999
    await control.faults(exhaust_daily_limit=True)
    r = await sf.get("limits")
    assert r.status_code == 403
    stats = await control.stats()
    assert stats["api_calls"]["total"] == 100000 and stats["api_calls"]["refused"] == 1


async def test_injected_errors_next_n(sf: httpx.AsyncClient, control: SimControl) -> None:
    """error_next answers the next N requests with the chosen 5xx, then recovers."""
    await control.faults(error_next=2, error_status=503)
    r1 = await sf.get("limits")
    r2 = await sf.post("sobjects/Task/", json={"Subject": "x"})
    r3 = await sf.get("limits")
    assert (r1.status_code, r2.status_code, r3.status_code) == (503, 503, 200)
    assert r1.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert await control.records("Task") == []
    assert (await control.faults())["counters"]["errors"] == 2


async def test_error_rate_is_roughly_respected(sf: httpx.AsyncClient, control: SimControl) -> None:
    """error_rate=0.5 with a seed fails about half the requests with 500."""
    await control.faults(error_rate=0.5, error_status=500, seed=7)
    statuses = [(await sf.get("limits")).status_code for _ in range(60)]
    assert 15 <= statuses.count(500) <= 45
    assert set(statuses) == {200, 500}


async def test_dropped_connection_before_processing(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """A dropped connection breaks the response and the write does not happen."""
    await control.faults(drop_next=1)
    with pytest.raises(httpx.RemoteProtocolError):
        await sf.post("sobjects/Task/", json={"Subject": "lost"})
    assert await control.records("Task") == []
    assert (await sf.get("limits")).status_code == 200


async def test_dropped_connection_after_processing(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """With drop_after_processing the write lands although the client sees a broken reply."""
    await control.faults(drop_next=1, drop_after_processing=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await sf.patch("sobjects/Task/Call_Id__c/c-1", json={"Subject": "landed"})
    tasks = await control.records("Task")
    assert [t["Call_Id__c"] for t in tasks] == ["c-1"]


async def test_latency_is_added(sf: httpx.AsyncClient, control: SimControl) -> None:
    """A fixed latency delays each API request by at least that much."""
    await control.faults(latency_ms=150)
    start = time.monotonic()
    await sf.get("limits")
    assert time.monotonic() - start >= 0.15
    await control.faults(clear=True)
    start = time.monotonic()
    await sf.get("limits")
    assert time.monotonic() - start < 0.15


async def test_lock_faults_on_rows(sf: httpx.AsyncClient, control: SimControl) -> None:
    """lock_next makes the next row writes fail with UNABLE_TO_LOCK_ROW on every write path."""
    await control.faults(lock_next=2)
    r = await sf.post("sobjects/Task/", json={"Subject": "x"})
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "UNABLE_TO_LOCK_ROW"
    r = await sf.post(
        "composite/sobjects",
        json={
            "records": [
                {"attributes": {"type": "Task"}, "Subject": "a"},
                {"attributes": {"type": "Task"}, "Subject": "b"},
            ]
        },
    )
    items = r.json()
    assert items[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    assert items[1]["success"] is True


async def test_fault_kinds_filter(sf: httpx.AsyncClient, control: SimControl) -> None:
    """Faults limited to a kind leave other kinds alone."""
    await control.faults(error_rate=1.0, kinds=["query"])
    assert (await sf.get("limits")).status_code == 200
    assert (await sf.get("query", params={"q": "SELECT Id FROM Lead"})).status_code == 503


async def test_token_endpoint_faults_only_when_asked(sim: SimOrg, control: SimControl) -> None:
    """The token endpoint is spared by default and fails when 'oauth' is in kinds."""
    form = {
        "grant_type": "client_credentials",
        "client_id": sim.info["client_id"],
        "client_secret": sim.info["client_secret"],
    }
    async with httpx.AsyncClient() as c:
        await control.faults(error_rate=1.0)
        assert (await c.post(sim.info["token_url"], data=form)).status_code == 200
        await control.faults(kinds=["oauth"])
        assert (await c.post(sim.info["token_url"], data=form)).status_code == 503


async def test_bad_fault_settings_are_rejected(sim: SimOrg) -> None:
    """Unknown keys or out-of-range values are refused with a message naming the key."""
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{sim.instance_url}/__sim/faults", json={"error_rate": 2})
        assert r.status_code == 400 and "error_rate" in r.json()["error"]
        r = await c.post(f"{sim.instance_url}/__sim/faults", json={"explode": True})
        assert r.status_code == 400 and "explode" in r.json()["error"]


def test_job_failure_fault_for_bulk() -> None:
    """take_job_failure hands out the configured whole-job failures, then none."""
    faults = Faults()
    faults.configure({"fail_next_jobs": 1, "job_failure_message": "InvalidBatch : boom"})
    assert faults.take_job_failure() == "InvalidBatch : boom"
    assert faults.take_job_failure() is None
    with pytest.raises(FaultConfigError):
        faults.configure({"latency_ms": {"dist": "zipf"}})


def test_latency_distributions() -> None:
    """Uniform latency stays within its bounds; exponential is non-negative."""
    faults = Faults()
    faults.configure({"latency_ms": {"dist": "uniform", "min_ms": 10, "max_ms": 20}, "seed": 1})
    assert all(0.010 <= faults.latency_s() <= 0.020 for _ in range(100))
    faults.configure({"latency_ms": {"dist": "exponential", "mean_ms": 5}})
    assert all(faults.latency_s() >= 0 for _ in range(100))


async def test_upsert_race_gives_duplicate_value_then_update_works(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """A lost upsert race is DUPLICATE_VALUE naming the winner; retrying updates that record."""
    await control.faults(upsert_race_next=1)
    r = await sf.patch("sobjects/Task/Call_Id__c/race-1", json={"Subject": "Call"})
    assert r.status_code == 400
    err = r.json()[0]
    assert err["errorCode"] == "DUPLICATE_VALUE"
    tasks = await control.records("Task")
    assert len(tasks) == 1 and tasks[0]["Id"] in err["message"]
    r = await sf.patch("sobjects/Task/Call_Id__c/race-1", json={"Subject": "Call"})
    assert r.status_code == 200 and r.json()["id"] == tasks[0]["Id"]
