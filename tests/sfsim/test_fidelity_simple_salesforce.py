"""Fidelity: simple-salesforce 1.12.10, unchanged, drives the sim over HTTPS as it would a real org.

simple-salesforce was written against real orgs, so where it and the reference disagree the
client wins, e.g. it asks for ``unprocessedRecords`` (capital R) where the docs spell
``unprocessedrecords``; the sim serves both.

The client is synchronous (requests), so each scenario runs in a worker thread while the sim
serves on the test's event loop. Its login helpers only know ``https://<domain>.salesforce.com``;
a transport adapter plays the part of DNS and sends those requests to the sim's own host, where
TLS is verified against the sim's CA.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sfsim.server import SimOrg
from sfsim.testing import fetch_token

# requests/urllib3 leave pooled sockets to the garbage collector when a Session is dropped; the
# sessions here are closed explicitly, this only guards against urllib3's own internals.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


class _SimDNS(HTTPAdapter):
    """Sends requests for ``*.salesforce.com`` to the sim's host and port (like a hosts file)."""

    def __init__(self, netloc: str) -> None:
        super().__init__()
        self._netloc = netloc

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        assert request.url is not None
        parts = urlsplit(request.url)
        request.url = urlunsplit(parts._replace(netloc=self._netloc))
        return super().send(request, *args, **kwargs)


@pytest.fixture
async def sim() -> AsyncIterator[SimOrg]:
    async with SimOrg(tls=True) as org:
        yield org


def _session(info: Mapping[str, Any]) -> requests.Session:
    session = requests.Session()
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override session.verify; ignore the
    # environment so the sim's CA is the one trusted.
    session.trust_env = False
    session.verify = info["ca_file"]
    session.mount("https://login.salesforce.com", _SimDNS(urlsplit(info["instance_url"]).netloc))
    return session


def _login(info: Mapping[str, Any], session: requests.Session) -> Any:
    # Any: simple-salesforce resolves sObjects (``sf.Lead``, ``sf.bulk2.Task``) through
    # __getattr__, which its annotations type as a union no call site can use.
    # The username-password flow with the connected app's consumer key and secret.
    return Salesforce(
        username=info["username"],
        password=info["password"],
        consumer_key=info["client_id"],
        consumer_secret=info["client_secret"],
        session=session,
    )


def _rest_scenario(info: Mapping[str, Any]) -> None:
    with _session(info) as session:
        sf = _login(info, session)
        assert sf.sf_instance == urlsplit(info["instance_url"]).netloc

        # create / get / update
        created = sf.Lead.create({"LastName": "Doe", "Company": "Acme", "Phone": "555-0100"})
        assert created["success"] is True and created["id"].startswith("00Q")
        lead = sf.Lead.get(created["id"])
        assert lead["LastName"] == "Doe" and lead["Company"] == "Acme"
        assert sf.Lead.update(created["id"], {"Phone": "555-0199"}) == 204
        assert sf.Lead.get(created["id"])["Phone"] == "555-0199"
        with pytest.raises(SalesforceMalformedRequest) as bad:
            sf.Lead.create({"Company": "No Name"})
        content: Any = bad.value.content  # the parsed JSON error body
        assert content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"

        # upsert by external id: created, then updated
        assert sf.Lead.upsert("Dialer_Lead_Id__c/D-1", {"LastName": "Roe", "Company": "B"}) == 201
        assert sf.Lead.upsert("Dialer_Lead_Id__c/D-1", {"Phone": "1"}) in (200, 204)
        by_key = sf.Lead.get_by_custom_id("Dialer_Lead_Id__c", "D-1")
        assert by_key["LastName"] == "Roe" and by_key["Phone"] == "1"

        # describe and limits
        described = sf.Task.describe()
        names = {f["name"] for f in described["fields"]}
        assert {"Subject", "CallType", "Call_Id__c", "WhoId"} <= names
        assert "Task" in {o["name"] for o in sf.describe()["sobjects"]}
        limits = sf.limits()
        assert limits["DailyApiRequests"]["Max"] >= limits["DailyApiRequests"]["Remaining"]
        assert "DailyBulkApiBatches" in limits
        assert sf.api_usage["api-usage"].used > 0  # parsed from Sforce-Limit-Info

        # composite (no helper in 1.12.10: sf.restful)
        composite = sf.restful(
            "composite",
            method="POST",
            json={
                "allOrNone": True,
                "compositeRequest": [
                    {
                        "method": "POST",
                        "url": f"/services/data/v{sf.sf_version}/sobjects/Lead",
                        "referenceId": "newLead",
                        "body": {"LastName": "C", "Company": "D"},
                    },
                    {
                        "method": "POST",
                        "url": f"/services/data/v{sf.sf_version}/sobjects/Task",
                        "referenceId": "newTask",
                        "body": {"Subject": "Call", "WhoId": "@{newLead.id}"},
                    },
                ],
            },
        )
        assert [r["httpStatusCode"] for r in composite["compositeResponse"]] == [201, 201]

        # sObject Collections
        results = sf.restful(
            "composite/sobjects",
            method="POST",
            json={
                "allOrNone": False,
                "records": [
                    {"attributes": {"type": "Task"}, "Subject": "ok"},
                    {"attributes": {"type": "Task"}, "Subject": "bad", "CallType": "Sideways"},
                ],
            },
        )
        assert results[0]["success"] is True
        assert results[1]["success"] is False
        assert results[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


def _bulk_scenario(info: Mapping[str, Any], token: str, rows: int) -> None:
    with _session(info) as session:
        # instance_url + session_id from a token fetched outside the client.
        # Any for the same reason as in _login.
        sf: Any = Salesforce(instance_url=info["instance_url"], session_id=token, session=session)
        leads = [
            {"LastName": f"L{i}", "Company": "Bulk", "Dialer_Lead_Id__c": f"L-{i}"}
            for i in range(50)
        ]
        lead_results = sf.bulk2.Lead.insert(records=leads, wait=0.05)
        assert lead_results[0]["numberRecordsProcessed"] == 50
        assert lead_results[0]["numberRecordsFailed"] == 0

        records = []
        for i in range(rows):
            records.append(
                {
                    "Call_Id__c": f"fid:{i}",
                    "Subject": "Call",
                    "Status": "Completed",
                    "CallType": "Sideways" if i % 1000 == 7 else "Outbound",  # 1 bad row in 1000
                    "CallDurationInSeconds": str(i % 600),
                    "Lead:Who.Dialer_Lead_Id__c": f"L-{i % 50}",
                }
            )
        (result,) = sf.bulk2.Task.upsert(records=records, external_id_field="Call_Id__c", wait=0.05)
        bad = rows // 1000
        assert result["numberRecordsTotal"] == rows
        assert result["numberRecordsProcessed"] == rows
        assert result["numberRecordsFailed"] == bad
        job_id = result["job_id"]

        failed = list(csv.DictReader(io.StringIO(sf.bulk2.Task.get_failed_records(job_id))))
        assert len(failed) == bad
        assert all(
            r["sf__Error"].startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:") for r in failed
        )
        assert {r["Call_Id__c"] for r in failed} == {f"fid:{i}" for i in range(7, rows, 1000)}
        ok = list(csv.DictReader(io.StringIO(sf.bulk2.Task.get_successful_records(job_id))))
        assert len(ok) == rows - bad
        assert all(r["sf__Created"] == "true" and r["sf__Id"].startswith("00T") for r in ok)
        unprocessed = sf.bulk2.Task.get_unprocessed_records(job_id)
        assert list(csv.DictReader(io.StringIO(unprocessed))) == []

        # Run again: every good row now updates.
        (again,) = sf.bulk2.Task.upsert(
            records=records[:100], external_id_field="Call_Id__c", wait=0.05
        )
        ok2 = csv.DictReader(io.StringIO(sf.bulk2.Task.get_successful_records(again["job_id"])))
        assert {r["sf__Created"] for r in ok2} == {"false"}

        every = sf.bulk2.Task.get_all_ingest_records(job_id)
        assert len(every["successfulRecords"]) == rows - bad
        assert len(every["failedRecords"]) == bad


async def test_rest_through_simple_salesforce(sim: SimOrg) -> None:
    """Login helper, create/get/update, upsert, describe, limits, composite and collections work."""
    await asyncio.to_thread(_rest_scenario, sim.info)


async def test_bulk2_upsert_through_simple_salesforce(sim: SimOrg) -> None:
    """A 20,000-row Bulk 2.0 upsert with bad rows, and every result file, through bulk2."""
    token = await fetch_token(sim)
    await asyncio.wait_for(asyncio.to_thread(_bulk_scenario, sim.info, token, 20_000), 120)
    stats = sim.org.stats()
    assert stats["records"]["Task"] == 20_000 - 20
    assert stats["bulk_jobs"].get("JobComplete") == 3
