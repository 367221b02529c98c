"""REST sObject resources over real sockets: versions, describe, CRUD, upsert, query, errors."""

from __future__ import annotations

import re
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from sfsim.ids import to18
from sfsim.server import SimOrg
from sfsim.testing import SimControl, sim_client

LEAD = {"LastName": "Doe", "Company": "Acme", "Phone": "+15550100"}


async def _lead(sf: httpx.AsyncClient, **extra: object) -> str:
    r = await sf.post("sobjects/Lead/", json={**LEAD, **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _error(r: httpx.Response) -> dict[str, object]:
    body = r.json()
    assert isinstance(body, list) and len(body) == 1, body
    return dict(body[0])


async def test_versions_list_needs_no_auth_and_is_not_counted(
    sim: SimOrg, control: SimControl
) -> None:
    """GET /services/data/ lists versions without a token, costs nothing, has no limit header."""
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{sim.instance_url}/services/data/")
    assert r.status_code == 200
    versions = r.json()
    assert {"label": "Winter '15", "url": "/services/data/v32.0", "version": "32.0"} in versions
    assert versions[-1]["version"] == "66.0"
    assert "sforce-limit-info" not in r.headers
    assert (await control.stats())["api_calls"]["total"] == 0


async def test_missing_or_unknown_token_is_401_invalid_session(sim: SimOrg) -> None:
    """A request without a valid bearer token gets 401 INVALID_SESSION_ID."""
    async with httpx.AsyncClient(base_url=f"{sim.instance_url}/services/data/v62.0/") as c:
        for headers in ({}, {"Authorization": "Bearer 00Dfake!token"}):
            r = await c.get("limits", headers=headers)
            assert r.status_code == 401
            assert _error(r)["errorCode"] == "INVALID_SESSION_ID"


async def test_retired_and_unknown_versions(sim: SimOrg) -> None:
    """A retired API version answers 410; a version from the future 404."""
    async with sim_client(sim, version="30.0") as old:
        assert (await old.get("limits")).status_code == 410
    async with sim_client(sim, version="99.0") as future:
        assert (await future.get("limits")).status_code == 404


async def test_every_response_carries_limit_info(sf: httpx.AsyncClient) -> None:
    """Each counted response carries Sforce-Limit-Info with the running count."""
    r1 = await sf.get("limits")
    r2 = await sf.get("sobjects/Nope__c/describe")
    assert r1.headers["sforce-limit-info"] == "api-usage=1/100000"
    assert r2.status_code == 404
    assert re.fullmatch(r"api-usage=2/100000", r2.headers["sforce-limit-info"])


async def test_describe_has_documented_keys(sf: httpx.AsyncClient) -> None:
    """describe returns the documented top-level and field keys, with the custom fields."""
    r = await sf.get("sobjects/Task/describe")
    assert r.status_code == 200
    d = r.json()
    for key in (
        "name",
        "label",
        "keyPrefix",
        "createable",
        "updateable",
        "deletable",
        "custom",
        "queryable",
        "urls",
        "childRelationships",
        "recordTypeInfos",
        "fields",
    ):
        assert key in d
    assert d["keyPrefix"] == "00T"
    fields = {f["name"]: f for f in d["fields"]}
    call_id = fields["Call_Id__c"]
    assert call_id["externalId"] and call_id["unique"] and call_id["length"] == 255
    assert call_id["byteLength"] == 765
    assert fields["CallType"]["restrictedPicklist"]
    assert [p["value"] for p in fields["CallType"]["picklistValues"]] == [
        "Inbound",
        "Internal",
        "Outbound",
    ]
    assert fields["WhoId"]["referenceTo"] == ["Contact", "Lead"]
    assert not fields["TaskSubtype"]["updateable"] and fields["TaskSubtype"]["createable"]
    assert not fields["IsClosed"]["createable"]
    assert set(fields["Subject"]) >= {
        "autoNumber",
        "byteLength",
        "calculated",
        "nillable",
        "picklistValues",
        "soapType",
        "type",
        "updateable",
    }
    lead = (await sf.get("sobjects/Lead/describe")).json()
    lead_fields = {f["name"]: f for f in lead["fields"]}
    assert lead_fields["Last_Call_At__c"]["type"] == "datetime"
    assert lead_fields["Dialer_Lead_Id__c"]["externalId"]


async def test_describe_if_modified_since_gives_304(sf: httpx.AsyncClient) -> None:
    """describe with a later If-Modified-Since answers 304 with no body."""
    r = await sf.get(
        "sobjects/Lead/describe",
        headers={"If-Modified-Since": formatdate(2_000_000_000, usegmt=True)},
    )
    assert r.status_code == 304 and r.content == b""
    r = await sf.get(
        "sobjects/Lead/describe", headers={"If-Modified-Since": formatdate(0, usegmt=True)}
    )
    assert r.status_code == 200


async def test_create_get_update_delete(sf: httpx.AsyncClient) -> None:
    """Create is 201 with id, get has attributes, update 204, delete 204 then 404 deleted."""
    r = await sf.post("sobjects/Lead/", json=LEAD)
    assert r.status_code == 201
    body = r.json()
    assert body["success"] is True and body["errors"] == []
    lead_id = body["id"]
    assert len(lead_id) == 18 and lead_id.startswith("00Q")
    r = await sf.get(f"sobjects/Lead/{lead_id}")
    assert r.status_code == 200
    rec = r.json()
    assert rec["attributes"] == {
        "type": "Lead",
        "url": f"/services/data/v62.0/sobjects/Lead/{lead_id}",
    }
    assert rec["Company"] == "Acme" and rec["Email"] is None
    r = await sf.get(f"sobjects/Lead/{lead_id[:15]}", params={"fields": "Phone,company"})
    assert r.json() == {"attributes": rec["attributes"], "Phone": "+15550100", "Company": "Acme"}
    r = await sf.patch(
        f"sobjects/Lead/{lead_id}", json={"Status": "Working - Contacted", "Phone": None}
    )
    assert r.status_code == 204 and r.content == b""
    rec = (await sf.get(f"sobjects/Lead/{lead_id}")).json()
    assert rec["Status"] == "Working - Contacted" and rec["Phone"] is None
    assert (await sf.delete(f"sobjects/Lead/{lead_id}")).status_code == 204
    r = await sf.get(f"sobjects/Lead/{lead_id}")
    assert r.status_code == 404 and _error(r)["errorCode"] == "ENTITY_IS_DELETED"
    r = await sf.delete(f"sobjects/Lead/{lead_id}")
    assert r.status_code == 404 and _error(r)["errorCode"] == "ENTITY_IS_DELETED"


async def test_patch_via_http_method_override(sf: httpx.AsyncClient) -> None:
    """POST ?_HttpMethod=PATCH updates, for stacks without PATCH."""
    lead_id = await _lead(sf)
    r = await sf.post(
        f"sobjects/Lead/{lead_id}", params={"_HttpMethod": "PATCH"}, json={"Title": "CTO"}
    )
    assert r.status_code == 204
    assert (await sf.get(f"sobjects/Lead/{lead_id}")).json()["Title"] == "CTO"


async def test_upsert_by_external_id(sf: httpx.AsyncClient) -> None:
    """Upsert creates with 201 created:true, then updates with 200 created:false."""
    r = await sf.patch("sobjects/Task/Call_Id__c/five9%3A42%2Fa", json={"Subject": "Call"})
    assert r.status_code == 201
    first = r.json()
    assert first["created"] is True and first["success"] is True
    r = await sf.patch("sobjects/Task/Call_Id__c/five9:42%2Fa", json={"CallDisposition": "Busy"})
    assert r.status_code == 200
    assert r.json() == {"id": first["id"], "success": True, "errors": [], "created": False}
    rec = (await sf.get("sobjects/Task/Call_Id__c/five9:42%2Fa")).json()
    assert rec["Id"] == first["id"] and rec["Call_Id__c"] == "five9:42/a"
    assert rec["CallDisposition"] == "Busy"


async def test_upsert_v45_answers_204_on_update(sim: SimOrg) -> None:
    """In v45.0 and earlier an upsert that updates answers 204 with no body."""
    async with sim_client(sim, version="45.0") as old:
        assert (await old.patch("sobjects/Task/Call_Id__c/x1", json={})).status_code == 201
        r = await old.patch("sobjects/Task/Call_Id__c/x1", json={"Subject": "Call"})
        assert r.status_code == 204 and r.content == b""


async def test_upsert_errors(sf: httpx.AsyncClient) -> None:
    """Unknown external id field is 404 NOT_FOUND; several matches is 300 with record URLs."""
    r = await sf.patch("sobjects/Task/Nope__c/1", json={})
    assert r.status_code == 404 and _error(r)["errorCode"] == "NOT_FOUND"
    # (an address at an IP: one ending in a domain name is a 404 in a URL, see below)
    a = await _lead(sf, Email="dup@192.0.2.1")
    b = await _lead(sf, Email="dup@192.0.2.1")
    r = await sf.patch("sobjects/Lead/Email/dup@192.0.2.1", json={"Title": "x"})
    assert r.status_code == 300
    assert sorted(r.json()) == sorted(f"/services/data/v62.0/sobjects/Lead/{i}" for i in (a, b))
    r = await sf.patch(
        "sobjects/Lead/Dialer_Lead_Id__c/L-9", params={"updateOnly": "true"}, json={"Title": "x"}
    )
    assert r.status_code == 404


async def test_external_id_value_with_file_extension_tld_is_404(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """An external-id value ending in a TLD that clashes with a format extension is a 404.

    S-REST resources_sobject_upsert_patch (v55+ and current): "using an email address, such as
    example@email.inc, as the External ID returns a '404 not found' error" (for GET and for the
    PATCH upsert). Before, sfsim treated the path segment as a plain value and upserted.
    """
    [lead_id] = await control.seed("Lead", [{**LEAD, "Email": "example@email.inc"}])
    r = await sf.patch("sobjects/Lead/Email/example@email.inc", json={"Phone": "+15550199"})
    assert r.status_code == 404, (r.status_code, r.text)
    lead = next(x for x in await control.records("Lead") if x["Id"] == lead_id)
    assert lead["Phone"] == LEAD["Phone"]  # unchanged


async def test_any_letters_only_suffix_after_a_dot_is_404_by_external_id(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """sfsim reads every value whose part after its last '.' is letters only as ending in a
    format extension (which TLDs clash is not documented): GET, PATCH (upsert, which creates
    nothing) and DELETE answer 404 NOT_FOUND "The requested resource does not exist", in
    /composite too. The same key in a collections body is a plain value, and a suffix with a
    digit in it is not an extension."""
    for key in ("vici:abc.inc", "vici:x.JSON"):
        url = "sobjects/Task/Call_Id__c/" + key
        for r in (
            await sf.patch(url, json={"Subject": "Call"}),
            await sf.get(url),
            await sf.delete(url),
        ):
            assert r.status_code == 404, (key, r.request.method, r.text)
            assert _error(r) == {
                "message": "The requested resource does not exist",
                "errorCode": "NOT_FOUND",
                "fields": [],
            }
    r = await sf.post(
        "composite",
        json={
            "compositeRequest": [
                {
                    "method": "PATCH",
                    "url": "/services/data/v62.0/sobjects/Task/Call_Id__c/vici:abc.inc",
                    "referenceId": "task",
                    "body": {"Subject": "Call"},
                }
            ]
        },
    )
    [entry] = r.json()["compositeResponse"]
    assert entry["httpStatusCode"] == 404 and entry["body"][0]["errorCode"] == "NOT_FOUND"
    assert await control.records("Task") == []

    r = await sf.patch(
        "composite/sobjects/Task/Call_Id__c",
        json={"records": [{"attributes": {"type": "Task"}, "Call_Id__c": "vici:abc.inc"}]},
    )
    assert r.json()[0]["success"] is True and r.json()[0]["created"] is True
    r = await sf.patch("sobjects/Task/Call_Id__c/vici:abc.mp3", json={"Subject": "Call"})
    assert r.status_code == 201
    r = await sf.get("sobjects/Task/Call_Id__c/vici:42.5")
    assert r.status_code == 404  # none yet: an ordinary miss, the same answer
    assert (await sf.patch("sobjects/Task/Call_Id__c/vici:42.5", json={})).status_code == 201
    assert (await sf.get("sobjects/Task/Call_Id__c/vici:42.5")).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("sobjects/Task/", {"Equipo": "x"}, "INVALID_FIELD"),
        ("sobjects/Task/", {"IsClosed": True}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ("sobjects/Task/", {"CallType": "Sideways"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ("sobjects/Task/", {"CallDisposition": "x" * 300}, "STRING_TOO_LONG"),
        ("sobjects/Lead/", {"LastName": "x"}, "REQUIRED_FIELD_MISSING"),
        ("sobjects/Task/", {"WhoId": to18("00Q8d0000000001")}, "INVALID_CROSS_REFERENCE_KEY"),
        ("sobjects/Task/", {"WhoId": "garbage"}, "MALFORMED_ID"),
        ("sobjects/Task/", {"CallDurationInSeconds": "ten"}, "JSON_PARSER_ERROR"),
    ],
)
async def test_write_errors_over_the_wire(
    sf: httpx.AsyncClient, path: str, body: dict[str, object], code: str
) -> None:
    """Invalid writes answer 400 with a one-element error array carrying the code."""
    r = await sf.post(path, json=body)
    assert r.status_code == 400
    err = _error(r)
    assert err["errorCode"] == code and isinstance(err["message"], str)


async def test_create_only_field_on_update_and_duplicate(sf: httpx.AsyncClient) -> None:
    """TaskSubtype on update and a duplicate unique value are rejected with their codes."""
    r = await sf.post("sobjects/Task/", json={"TaskSubtype": "Call", "Call_Id__c": "d-1"})
    task_id = r.json()["id"]
    r = await sf.patch(f"sobjects/Task/{task_id}", json={"TaskSubtype": "Call"})
    assert r.status_code == 400
    assert _error(r)["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    r = await sf.post("sobjects/Task/", json={"Call_Id__c": "D-1"})
    assert r.status_code == 400 and _error(r)["errorCode"] == "DUPLICATE_VALUE"


async def test_bad_ids_and_unknown_objects(sf: httpx.AsyncClient) -> None:
    """Malformed ids are 400 MALFORMED_ID; unknown records and objects 404 NOT_FOUND."""
    r = await sf.get("sobjects/Lead/001D000000IqhSLIAZ")
    assert r.status_code == 400 and _error(r)["errorCode"] == "MALFORMED_ID"
    r = await sf.get(f"sobjects/Lead/{to18('00Q8d0000000001')}")
    assert r.status_code == 404 and _error(r)["errorCode"] == "NOT_FOUND"
    r = await sf.get("sobjects/Lead/not-an-id")
    assert r.status_code == 404
    assert "Provided external ID field does not exist" in str(_error(r)["message"])
    r = await sf.post("sobjects/Widget__c/", json={})
    assert r.status_code == 404 and _error(r)["errorCode"] == "NOT_FOUND"


async def test_bad_json_and_media_type(sf: httpx.AsyncClient) -> None:
    """A body that is not JSON is JSON_PARSER_ERROR; a non-JSON media type is 415."""
    r = await sf.post(
        "sobjects/Lead/", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and _error(r)["errorCode"] == "JSON_PARSER_ERROR"
    r = await sf.post("sobjects/Lead/", content=b"<Lead/>", headers={"Content-Type": "text/xml"})
    assert r.status_code == 415


async def test_wrong_method_is_405(sf: httpx.AsyncClient) -> None:
    """A method a resource does not support answers 405."""
    assert (await sf.delete("limits")).status_code == 405


async def test_query_subset(sf: httpx.AsyncClient) -> None:
    """SOQL by id, phone, external key, IN, AND, LIMIT and COUNT() returns the right rows."""
    a = await _lead(sf, Dialer_Lead_Id__c="L-1", Phone="555-0001")
    b = await _lead(sf, Dialer_Lead_Id__c="L-2", Phone="555-0002")
    await _lead(sf, Dialer_Lead_Id__c="L-3", Phone="555-0001", Company="Other")

    async def q(soql: str) -> dict[str, Any]:
        r = await sf.get("query", params={"q": soql})
        assert r.status_code == 200, r.text
        return dict(r.json())

    res = await q(f"SELECT Id, Name FROM Lead WHERE Id = '{a[:15]}'")
    assert res["totalSize"] == 1 and res["done"] is True
    assert res["records"] == [
        {
            "attributes": {"type": "Lead", "url": f"/services/data/v62.0/sobjects/Lead/{a}"},
            "Id": a,
            "Name": "Doe",
        }
    ]
    res = await q("select id from lead where phone = '555-0001' and company = 'ACME'")
    assert [r["Id"] for r in res["records"]] == [a]
    res = await q("SELECT Id FROM Lead WHERE Dialer_Lead_Id__c IN ('L-1', 'L-2') LIMIT 1")
    assert res["totalSize"] == 1
    res = await q(
        "SELECT Dialer_Lead_Id__c FROM Lead WHERE Dialer_Lead_Id__c IN ('l-1','L-2') "
        "ORDER BY Dialer_Lead_Id__c DESC"
    )
    assert [r["Dialer_Lead_Id__c"] for r in res["records"]] == ["L-2", "L-1"]
    assert b
    res = await q("SELECT COUNT() FROM Lead WHERE Phone = '555-0001'")
    assert res["totalSize"] == 2 and res["records"] == []


async def test_query_errors(sf: httpx.AsyncClient) -> None:
    """Bad SOQL is MALFORMED_QUERY; unknown objects INVALID_TYPE; unknown fields INVALID_FIELD."""
    cases = {
        "SELECT FROM Lead": "MALFORMED_QUERY",
        "SELECT Id FROM Widget": "INVALID_TYPE",
        "SELECT Nope FROM Lead": "INVALID_FIELD",
        "SELECT Id FROM Lead WHERE Phone = 1 OR Phone = 2": "MALFORMED_QUERY",
    }
    for soql, code in cases.items():
        r = await sf.get("query", params={"q": soql})
        assert r.status_code == 400, soql
        assert _error(r)["errorCode"] == code, soql


async def test_query_pages_past_2000_records(
    sim: SimOrg, sf: httpx.AsyncClient, control: SimControl
) -> None:
    """Over 2,000 rows come in pages linked by nextRecordsUrl; batchSize sets the page size."""
    await control.seed("Lead", [{"LastName": f"L{i}", "Company": "C"} for i in range(2500)])
    r = await sf.get("query", params={"q": "SELECT Id FROM Lead"})
    page = r.json()
    assert page["totalSize"] == 2500 and not page["done"] and len(page["records"]) == 2000
    r = await sf.get(sim.instance_url + page["nextRecordsUrl"])
    page2 = r.json()
    assert page2["done"] and len(page2["records"]) == 500
    r = await sf.get(
        "query",
        params={"q": "SELECT Id FROM Lead"},
        headers={"Sforce-Query-Options": "batchSize=1000"},
    )
    assert len(r.json()["records"]) == 1000 and not r.json()["done"]


async def test_limits_resource(sf: httpx.AsyncClient) -> None:
    """/limits reports DailyApiRequests and DailyBulkApiBatches consistently with the header."""
    await sf.get("sobjects/")
    r = await sf.get("limits")
    body = r.json()
    assert body["DailyApiRequests"] == {"Max": 100000, "Remaining": 99998}
    assert r.headers["sforce-limit-info"] == "api-usage=2/100000"
    assert body["DailyBulkApiBatches"]["Max"] == 15000
    assert set(body["DailyBulkV2QueryJobs"]) == {"Max", "Remaining"}


async def test_trailing_slash_is_the_same_resource(sf: httpx.AsyncClient) -> None:
    """`query/?q=` (as simple-salesforce sends it) and `limits/` work like their bare forms."""
    await _lead(sf, Dialer_Lead_Id__c="L-5")
    r = await sf.get("query/", params={"q": "SELECT Id FROM Lead WHERE Dialer_Lead_Id__c = 'L-5'"})
    assert r.status_code == 200 and r.json()["totalSize"] == 1
    assert (await sf.get("limits/")).status_code == 200


async def test_lead_assignment_rules_need_auto_assign_false(
    sim: SimOrg, sf: httpx.AsyncClient
) -> None:
    """An active assignment rule re-owns written Leads unless Sforce-Auto-Assign: FALSE."""
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{sim.instance_url}/__sim/assignment_rules", json={"active": True})
    queue = r.json()["owner_id"]
    me = sim.org.user_id
    keep = {"Sforce-Auto-Assign": "FALSE"}
    kept = (await sf.post("sobjects/Lead/", json=LEAD, headers=keep)).json()["id"]
    moved = (await sf.post("sobjects/Lead/", json=LEAD)).json()["id"]

    async def owner(lead_id: str) -> str:
        return str((await sf.get(f"sobjects/Lead/{lead_id}")).json()["OwnerId"])

    assert await owner(kept) == me and await owner(moved) == queue
    await sf.patch(f"sobjects/Lead/{kept}", json={"Status": "Working - Contacted"}, headers=keep)
    assert await owner(kept) == me
    await sf.patch(f"sobjects/Lead/{kept}", json={"Status": "Working - Contacted"})
    assert await owner(kept) == queue
    other = (await sf.post("sobjects/Lead/", json=LEAD, headers=keep)).json()["id"]
    r = await sf.post(
        "composite",
        headers=keep,
        json={
            "compositeRequest": [
                {
                    "method": "PATCH",
                    "url": f"/services/data/v62.0/sobjects/Lead/{other}",
                    "referenceId": "u",
                    "body": {"Title": "x"},
                }
            ]
        },
    )
    assert r.json()["compositeResponse"][0]["httpStatusCode"] == 204
    assert await owner(other) == me
    r = await sf.patch(
        "composite/sobjects",
        json={"records": [{"attributes": {"type": "Lead"}, "id": other, "Title": "y"}]},
    )
    assert await owner(other) == queue


async def test_relationship_by_external_id_in_body(sf: httpx.AsyncClient) -> None:
    """A Task can name its Lead by external id: {"Who": {"attributes": {"type": "Lead"}, ...}}."""
    lead_id = await _lead(sf, Dialer_Lead_Id__c="L-42")
    who = {"attributes": {"type": "Lead"}, "Dialer_Lead_Id__c": "L-42"}
    r = await sf.patch("sobjects/Task/Call_Id__c/rel-1", json={"Subject": "Call", "Who": who})
    assert r.status_code == 201
    assert (await sf.get(f"sobjects/Task/{r.json()['id']}")).json()["WhoId"] == lead_id
    r = await sf.post("sobjects/Task/", json={"Who": {**who, "Dialer_Lead_Id__c": "L-404"}})
    assert r.status_code == 400 and _error(r)["errorCode"] == "INVALID_FIELD"
    r = await sf.post("sobjects/Task/", json={"Who": {"Dialer_Lead_Id__c": "L-42"}})
    assert r.status_code == 400  # polymorphic: the type must be named


async def test_head_and_pretty_print(sf: httpx.AsyncClient) -> None:
    """HEAD answers like GET without a body; X-PrettyPrint indents the JSON."""
    r = await sf.head("limits")
    assert r.status_code == 200 and r.content == b""
    r = await sf.get("limits", headers={"X-PrettyPrint": "1"})
    assert r.text.startswith('{\n    "')


async def test_uri_too_long_is_414_and_with_headers_431(sf: httpx.AsyncClient) -> None:
    """A query string past 16,384 bytes gets 414; URI plus headers past it 431."""
    ids = ",".join(["00Q8d0000000001AAA"] * 1000)
    r = await sf.get("composite/sobjects/Lead", params={"ids": ids, "fields": "Id"})
    assert r.status_code == 414
    r = await sf.get("limits", headers={"X-Filler": "x" * 16_400})
    assert r.status_code == 431


async def test_query_null_equality_and_indexed_lookups_agree(sf: httpx.AsyncClient) -> None:
    """`= null` finds unset fields, and indexed equality matches a full scan's answer."""
    with_phone = await _lead(sf, Phone="555-0100")
    without = await _lead(sf, Phone=None)

    async def ids(soql: str) -> list[str]:
        r = await sf.get("query", params={"q": soql})
        assert r.status_code == 200, r.text
        return [rec["Id"] for rec in r.json()["records"]]

    assert await ids("SELECT Id FROM Lead WHERE Phone = null") == [without]
    assert await ids("SELECT Id FROM Lead WHERE Phone = '555-0100'") == [with_phone]
    assert await ids("SELECT Id FROM Lead WHERE Phone != null") == [with_phone]
    await sf.patch(f"sobjects/Lead/{without}", json={"Phone": "555-0100"})
    assert await ids("SELECT Id FROM Lead WHERE Phone IN ('555-0100') AND Company = 'acme'") == [
        with_phone,
        without,
    ]


async def test_converted_leads_cannot_be_updated(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """A converted Lead refuses updates (REST, collections): CANNOT_UPDATE_CONVERTED_LEAD."""
    contact = (await control.seed("Contact", [{"LastName": "Doe"}]))[0]
    (lead,) = await control.seed(
        "Lead",
        [
            {
                "LastName": "Doe",
                "Company": "Acme",
                "IsConverted": True,
                "Dialer_Lead_Id__c": "L-c",
                "ConvertedContactId": contact,
                "Status": "Closed - Converted",
            }
        ],
    )
    r = await sf.patch(f"sobjects/Lead/{lead}", json={"Last_Call_Outcome__c": "busy"})
    assert r.status_code == 400
    assert _error(r) == {
        "message": "cannot reference converted lead",
        "errorCode": "CANNOT_UPDATE_CONVERTED_LEAD",
        "fields": [],
    }
    r = await sf.patch("sobjects/Lead/Dialer_Lead_Id__c/L-c", json={"Title": "x"})
    assert _error(r)["errorCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"
    r = await sf.patch(
        "composite/sobjects",
        json={"records": [{"attributes": {"type": "Lead"}, "id": lead, "Title": "x"}]},
    )
    assert r.json()[0]["errors"][0]["statusCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"
    got = (await sf.get(f"sobjects/Lead/{lead}", params={"fields": "ConvertedContactId"})).json()
    assert got["ConvertedContactId"] == contact
