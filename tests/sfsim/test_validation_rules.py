"""The org's validation rules (control API) fail saves with FIELD_CUSTOM_VALIDATION_EXCEPTION."""

from __future__ import annotations

import asyncio

import httpx

from sfsim.server import SimOrg
from sfsim.testing import SimControl

RULES = [
    {
        "object": "Task",
        "field": "CallDisposition",
        "condition": "blank",
        "message": "Call Result is required for calls",
        "error_field": "CallDisposition",
    },
    {
        "object": "Lead",
        "field": "Last_Call_Outcome__c",
        "condition": "not_in",
        "value": [None, "busy", "connected"],
        "message": "Unknown outcome",
    },
]


async def _set_rules(sim: SimOrg, rules: object) -> httpx.Response:
    async with httpx.AsyncClient() as c:
        return await c.post(f"{sim.instance_url}/__sim/validation_rules", json=rules)


async def test_rules_fail_rest_and_collection_saves(
    sim: SimOrg, sf: httpx.AsyncClient, control: SimControl
) -> None:
    """A save breaking a rule gets the rule's message and error field; others save."""
    assert (await _set_rules(sim, RULES)).status_code == 200
    r = await sf.post("sobjects/Task/", json={"Subject": "Call"})
    assert r.status_code == 400
    assert r.json() == [
        {
            "message": "Call Result is required for calls",
            "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "fields": ["CallDisposition"],
        }
    ]
    assert (await sf.post("sobjects/Task/", json={"CallDisposition": "Busy"})).status_code == 201
    (lead,) = await control.seed("Lead", [{"LastName": "D", "Company": "C"}])
    r = await sf.patch(
        "composite/sobjects",
        json={
            "records": [
                {"attributes": {"type": "Lead"}, "id": lead, "Last_Call_Outcome__c": "weird"},
                {"attributes": {"type": "Lead"}, "id": lead, "Last_Call_Outcome__c": "busy"},
            ]
        },
    )
    items = r.json()
    assert items[0]["errors"][0]["statusCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert items[0]["errors"][0]["fields"] == []
    assert items[1]["success"] is True


async def test_rules_fail_bulk_rows(sim: SimOrg, sf: httpx.AsyncClient) -> None:
    """Bulk rows breaking a rule land in failedResults with the rule's message."""
    await _set_rules(sim, RULES[:1])
    job = (await sf.post("jobs/ingest", json={"object": "Task", "operation": "insert"})).json()
    csv = b"Subject,CallDisposition\na,\nb,Busy\n"
    await sf.put(
        f"jobs/ingest/{job['id']}/batches", content=csv, headers={"Content-Type": "text/csv"}
    )
    await sf.patch(f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    for _ in range(400):
        info = (await sf.get(f"jobs/ingest/{job['id']}")).json()
        if info["state"] == "JobComplete":
            break
        await asyncio.sleep(0.02)
    assert info["numberRecordsFailed"] == 1 and info["numberRecordsProcessed"] == 2
    failed = (await sf.get(f"jobs/ingest/{job['id']}/failedResults/")).text
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION:Call Result is required for calls" in failed


async def test_bad_rules_are_refused_and_reset_clears(
    sim: SimOrg, sf: httpx.AsyncClient, control: SimControl
) -> None:
    """Rules naming unknown objects/fields or conditions are 400; reset drops all rules."""
    for bad in (
        [{"object": "Nope", "field": "x", "condition": "blank", "message": "m"}],
        [{"object": "Task", "field": "Nope", "condition": "blank", "message": "m"}],
        [{"object": "Task", "field": "Subject", "condition": "odd", "message": "m"}],
        {"not": "a list"},
    ):
        r = await _set_rules(sim, bad)
        assert r.status_code == 400 and r.json()["error"]
    await _set_rules(sim, RULES)
    await control.reset()
    assert (await sf.post("sobjects/Task/", json={"Subject": "x"})).status_code == 201
