"""/composite and sObject Collections over real sockets: references, allOrNone, per-item results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx

from sfsim.schema import default_schema
from sfsim.server import SimOrg
from sfsim.testing import SimControl, sim_client

V = "/services/data/v62.0"


def _sub(ref: str, method: str, url: str, body: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"method": method, "url": f"{V}/{url}", "referenceId": ref}
    if body is not None:
        out["body"] = body
    return out


async def _composite(
    sf: httpx.AsyncClient, subs: list[dict[str, Any]], all_or_none: bool
) -> list[dict[str, Any]]:
    r = await sf.post("composite", json={"allOrNone": all_or_none, "compositeRequest": subs})
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["compositeResponse"]
    return result


async def test_composite_references_and_one_api_call(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """A Lead create and a Task referencing @{lead.id} run in order and cost one API call."""
    res = await _composite(
        sf,
        [
            _sub("lead", "POST", "sobjects/Lead", {"LastName": "Doe", "Company": "Acme"}),
            _sub(
                "task",
                "PATCH",
                "sobjects/Task/Call_Id__c/c-1",
                {"Subject": "Call", "WhoId": "@{lead.id}"},
            ),
            _sub("get", "GET", "sobjects/Task/@{task.id}?fields=WhoId"),
        ],
        all_or_none=True,
    )
    assert [e["httpStatusCode"] for e in res] == [201, 201, 200]
    assert res[0]["httpHeaders"]["Location"] == f"{V}/sobjects/Lead/{res[0]['body']['id']}"
    assert res[2]["body"]["WhoId"] == res[0]["body"]["id"]
    stats = await control.stats()
    assert stats["api_calls"]["by_kind"] == {"composite": 1}


async def test_composite_all_or_none_rolls_back(sf: httpx.AsyncClient, control: SimControl) -> None:
    """With allOrNone a failure rolls everything back; the others report PROCESSING_HALTED."""
    res = await _composite(
        sf,
        [
            _sub("ok", "POST", "sobjects/Lead", {"LastName": "Doe", "Company": "Acme"}),
            _sub("bad", "POST", "sobjects/Task", {"CallType": "Sideways"}),
            _sub("later", "POST", "sobjects/Task", {"Subject": "x"}),
        ],
        all_or_none=True,
    )
    assert [e["httpStatusCode"] for e in res] == [400, 400, 400]
    assert res[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert res[1]["body"][0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert res[2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert await control.records("Lead") == []
    assert await control.records("Task") == []


async def test_composite_without_all_or_none_skips_dependents(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """Without allOrNone, independent subrequests run and dependents of a failure do not."""
    res = await _composite(
        sf,
        [
            _sub("bad", "POST", "sobjects/Lead", {"LastName": "NoCompany"}),
            _sub("dep", "POST", "sobjects/Task", {"WhoId": "@{bad.id}"}),
            _sub("indep", "POST", "sobjects/Task", {"Subject": "x"}),
        ],
        all_or_none=False,
    )
    assert [e["httpStatusCode"] for e in res] == [400, 400, 201]
    assert res[1]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert len(await control.records("Task")) == 1


async def test_composite_request_level_errors(sf: httpx.AsyncClient) -> None:
    """Over 25 subrequests, forbidden subrequest headers or a bad referenceId fail as a whole."""
    too_many = [_sub(f"r{i}", "GET", "limits") for i in range(26)]
    r = await sf.post("composite", json={"compositeRequest": too_many})
    assert r.status_code == 400
    hdr = {**_sub("a", "GET", "limits"), "httpHeaders": {"Authorization": "Bearer x"}}
    r = await sf.post("composite", json={"compositeRequest": [hdr]})
    assert r.status_code == 400
    r = await sf.post("composite", json={"compositeRequest": [_sub("bad-ref", "GET", "limits")]})
    assert r.status_code == 400
    lower = {**_sub("a", "GET", "limits"), "method": "get"}
    r = await sf.post("composite", json={"compositeRequest": [lower]})
    assert r.status_code == 400


async def test_collections_create_per_item_results_in_order(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """Create returns one result per record in order; a bad record fails alone."""
    r = await sf.post(
        "composite/sobjects",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Lead"}, "LastName": "A", "Company": "C"},
                {"attributes": {"type": "Task"}, "CallType": "Sideways"},
                {"attributes": {"type": "Task"}, "Subject": "ok"},
            ],
        },
    )
    assert r.status_code == 200
    items = r.json()
    assert items[0]["success"] and items[0]["id"].startswith("00Q")
    assert items[1] == {
        "success": False,
        "errors": [
            {
                "statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                "message": "Call Type: bad value for restricted picklist field: Sideways",
                "fields": ["CallType"],
            }
        ],
    }
    assert items[2]["success"] and items[2]["id"].startswith("00T")
    assert (await control.stats())["api_calls"]["by_kind"] == {"collections": 1}


async def test_collections_all_or_none_rolls_back(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """With allOrNone the good items report ALL_OR_NONE_OPERATION_ROLLED_BACK, nothing stays."""
    r = await sf.post(
        "composite/sobjects",
        json={
            "allOrNone": True,
            "records": [
                {"attributes": {"type": "Task"}, "Subject": "ok"},
                {"attributes": {"type": "Task"}, "Bogus__c": 1},
            ],
        },
    )
    items = r.json()
    assert r.status_code == 200
    assert items[0]["success"] is False and items[0]["id"]
    assert items[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert items[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert await control.records("Task") == []


async def test_collections_upsert_and_update(sf: httpx.AsyncClient) -> None:
    """Upsert by external id reports created per item; update by id changes the records."""
    recs = [
        {"attributes": {"type": "Task"}, "Call_Id__c": f"c-{i}", "Subject": "Call"}
        for i in range(3)
    ]
    r = await sf.patch("composite/sobjects/Task/Call_Id__c", json={"records": recs})
    first = r.json()
    assert [i["created"] for i in first] == [True, True, True]
    r = await sf.patch(
        "composite/sobjects/Task/Call_Id__c",
        json={
            "records": [
                {**recs[0], "CallDisposition": "Busy"},
                {"attributes": {"type": "Task"}, "Subject": "no key"},
            ]
        },
    )
    second = r.json()
    assert second[0] == {"id": first[0]["id"], "success": True, "errors": [], "created": False}
    assert second[1]["success"] is False
    assert second[1]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    r = await sf.patch(
        "composite/sobjects",
        json={
            "records": [
                {"attributes": {"type": "Task"}, "id": first[1]["id"], "Status": "Completed"},
                {"attributes": {"type": "Task"}, "Status": "Completed"},
            ]
        },
    )
    upd = r.json()
    assert upd[0] == {"id": first[1]["id"], "success": True, "errors": []}
    assert upd[1]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    got = await sf.get(
        "composite/sobjects/Task",
        params={"ids": f"{first[1]['id']},{first[2]['id'][:15]}x", "fields": "Id,IsClosed"},
    )
    assert got.json()[0]["IsClosed"] is True and got.json()[1] is None


async def test_collections_upsert_same_key_twice_fails_both_items(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """Two records with the same external id in one upsert call both fail.

    Salesforce's DML layer (which sObject Collections use, 200 records = one save call) refuses
    an upsert list that names the same external id twice, whether or not the key already exists:
    ``DUPLICATE_VALUE, Duplicate external id specified: <key>: [<field>]``, first error on row 0
    (salesforce.stackexchange.com/questions/104048 and /296121), as Bulk 2.0 chunks do
    (bulk_engine.py ``_check_duplicate``). Before, the first item created and the second
    silently updated it.
    """
    records = [
        {"attributes": {"type": "Task"}, "Call_Id__c": "dup:1", "Subject": "first"},
        {"attributes": {"type": "Task"}, "Call_Id__c": "dup:1", "Subject": "second"},
    ]
    r = await sf.patch(
        "composite/sobjects/Task/Call_Id__c", json={"allOrNone": False, "records": records}
    )
    assert r.status_code == 200, r.text
    results = r.json()
    assert len(results) == 2
    for item in results:
        assert item["success"] is False, results
        assert item["errors"][0]["statusCode"] == "DUPLICATE_VALUE", results
        assert "Duplicate external id specified" in item["errors"][0]["message"], results
    stored = [t for t in await control.records("Task") if t["Call_Id__c"] == "dup:1"]
    assert stored == []


async def test_collections_upsert_duplicate_keys_in_a_composite_ignore_case_and_spare_the_rest(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """A collections upsert nested in /composite refuses the same way. Call_Id__c is not
    case-sensitive in the default org (Salesforce's default for Unique text), so "k:1" and
    "K:1" are one key: both fail, also when a Task has it already (left unchanged), and the
    other items of the request are saved."""
    await sf.patch("sobjects/Task/Call_Id__c/k:1", json={"Subject": "before"})
    records = [
        {"attributes": {"type": "Task"}, "Call_Id__c": "k:1", "Subject": "one"},
        {"attributes": {"type": "Task"}, "Call_Id__c": "k:2", "Subject": "two"},
        {"attributes": {"type": "Task"}, "Call_Id__c": "K:1", "Subject": "three"},
    ]
    [entry] = await _composite(
        sf,
        [
            _sub(
                "tasks",
                "PATCH",
                "composite/sobjects/Task/Call_Id__c",
                {"allOrNone": False, "records": records},
            )
        ],
        all_or_none=False,
    )
    assert entry["httpStatusCode"] == 200
    items = entry["body"]
    assert [i["success"] for i in items] == [False, True, False]
    assert items[0]["errors"][0] == {
        "statusCode": "DUPLICATE_VALUE",
        "message": "Duplicate external id specified: k:1",
        "fields": ["Call_Id__c"],
    }
    assert items[2]["errors"][0]["message"] == "Duplicate external id specified: K:1"
    subjects = {t["Call_Id__c"]: t["Subject"] for t in await control.records("Task")}
    assert subjects == {"k:1": "before", "k:2": "two"}


async def test_collections_upsert_keys_differing_in_case_on_a_case_sensitive_field(
    tmp_path: Path,
) -> None:
    """On a case-sensitive key field "K:1" and "k:1" are two keys (as for its unique index):
    one upsert call naming both creates two Tasks."""
    describes = [o.describe("62.0") for o in default_schema().objects.values()]
    [task] = [d for d in describes if d["name"] == "Task"]
    [key] = [f for f in task["fields"] if f["name"] == "Call_Id__c"]
    key["caseSensitive"] = True
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(describes))
    records = [
        {"attributes": {"type": "Task"}, "Call_Id__c": k, "Subject": k} for k in ("K:1", "k:1")
    ]
    async with SimOrg(port=0, schema=path) as org, sim_client(org) as sf:
        r = await sf.patch(
            "composite/sobjects/Task/Call_Id__c", json={"allOrNone": False, "records": records}
        )
        assert [(i["success"], i["created"]) for i in r.json()] == [(True, True), (True, True)]
        assert sorted(t["Subject"] for t in org.org.store.records("Task")) == ["K:1", "k:1"]


async def test_collections_delete_and_limits(sf: httpx.AsyncClient) -> None:
    """Delete by ids reports per id; over 200 records is refused as a whole."""
    r = await sf.post(
        "composite/sobjects",
        json={"records": [{"attributes": {"type": "Task"}, "Subject": str(i)} for i in range(2)]},
    )
    ids = [i["id"] for i in r.json()]
    r = await sf.delete("composite/sobjects", params={"ids": ",".join(ids)})
    assert [i["success"] for i in r.json()] == [True, True]
    r = await sf.delete("composite/sobjects", params={"ids": ids[0]})
    assert r.json()[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    big = [{"attributes": {"type": "Task"}, "Subject": "x"}] * 201
    r = await sf.post("composite/sobjects", json={"records": big})
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


async def test_composite_with_collection_inside(sf: httpx.AsyncClient, control: SimControl) -> None:
    """Composite allOrNone overrides a nested collection's allOrNone=false."""
    res = await _composite(
        sf,
        [
            _sub("lead", "POST", "sobjects/Lead", {"LastName": "Doe", "Company": "Acme"}),
            _sub(
                "tasks",
                "POST",
                "composite/sobjects",
                {
                    "allOrNone": False,
                    "records": [
                        {"attributes": {"type": "Task"}, "Subject": "ok"},
                        {"attributes": {"type": "Task"}, "CallType": "bad"},
                    ],
                },
            ),
        ],
        all_or_none=True,
    )
    assert [e["httpStatusCode"] for e in res] == [400, 200]
    assert await control.records("Lead") == [] and await control.records("Task") == []


async def test_composite_reference_into_query_records(sf: httpx.AsyncClient) -> None:
    """@{ref.records[0].Id} picks a field out of an earlier query result."""
    await sf.post(
        "sobjects/Lead/", json={"LastName": "Q", "Company": "C", "Dialer_Lead_Id__c": "L-77"}
    )
    res = await _composite(
        sf,
        [
            _sub("find", "GET", "query?q=SELECT+Id+FROM+Lead+WHERE+Dialer_Lead_Id__c+%3D+'L-77'"),
            _sub(
                "log",
                "POST",
                "sobjects/Task",
                {"Subject": "Call", "WhoId": "@{find.records[0].Id}"},
            ),
            _sub("bad", "POST", "sobjects/Task", {"WhoId": "@{find.records[5].Id}"}),
        ],
        all_or_none=False,
    )
    assert [e["httpStatusCode"] for e in res] == [200, 201, 400]
    assert "Invalid reference specified" in res[2]["body"][0]["message"]
    task = (await sf.get(f"sobjects/Task/{res[1]['body']['id']}")).json()
    assert task["WhoId"] == res[0]["body"]["records"][0]["Id"]


async def test_composite_batch_charges_each_subrequest(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """/composite/batch runs independent subrequests and costs one API call per subrequest."""
    r = await sf.post(
        "composite/batch",
        json={
            "batchRequests": [
                {"method": "POST", "url": "v62.0/sobjects/Task", "richInput": {"Subject": "a"}},
                {"method": "POST", "url": "v62.0/sobjects/Task", "richInput": {"CallType": "bad"}},
                {"method": "GET", "url": "v62.0/limits"},
            ]
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["hasErrors"] is True
    assert [x["statusCode"] for x in body["results"]] == [201, 400, 200]
    stats = await control.stats()
    assert stats["api_calls"]["total"] == 3
    r = await sf.post(
        "composite/batch",
        json={
            "haltOnError": True,
            "batchRequests": [
                {"method": "POST", "url": "v62.0/sobjects/Task", "richInput": {"Bogus": 1}},
                {"method": "GET", "url": "v62.0/limits"},
            ],
        },
    )
    assert [x["statusCode"] for x in r.json()["results"]] == [400, 412]


def _soql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def test_tasks_inserted_then_found_by_call_object(
    sf: httpx.AsyncClient, control: SimControl
) -> None:
    """Orgs without a Task external ID field: Tasks inserted by /composite (POST
    sobjects/Task) and by a collections create come back from GET /query ... WHERE
    CallObject IN (...) with the ids the inserts returned, escapes and non-ASCII included;
    CallObject is filterable in describe. The composite, the collection and the query cost
    one API call each."""
    describe = (await sf.get("sobjects/Task/describe")).json()
    [call_object] = [f for f in describe["fields"] if f["name"] == "CallObject"]
    assert call_object["filterable"] is True and call_object["type"] == "string"

    res = await _composite(
        sf,
        [
            _sub("t1", "POST", "sobjects/Task", {"Subject": "a", "CallObject": "vici:O'Neil"}),
            _sub("t2", "POST", "sobjects/Task", {"Subject": "b", "CallObject": "vici:a\\b"}),
        ],
        all_or_none=False,
    )
    assert [e["httpStatusCode"] for e in res] == [201, 201]
    ids = {res[0]["body"]["id"]: "vici:O'Neil", res[1]["body"]["id"]: "vici:a\\b"}
    r = await sf.post(
        "composite/sobjects",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Task"}, "Subject": "c", "CallObject": key}
                for key in ("five9:José & co", "five9:50%_off+1")
            ],
        },
    )
    assert r.status_code == 200
    items = r.json()
    assert all(i["success"] and i["id"].startswith("00T") for i in items)
    ids.update(zip([i["id"] for i in items], ["five9:José & co", "five9:50%_off+1"], strict=True))
    await sf.post("sobjects/Task", json={"Subject": "other", "CallObject": "vici:1"})

    wanted = [*ids.values(), "vici:never-sent"]
    soql = (
        "SELECT Id, CallObject FROM Task WHERE CallObject IN ("
        + ", ".join(_soql_literal(k) for k in wanted)
        + ")"
    )
    r = await sf.get("query", params={"q": soql})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["done"] is True and body["totalSize"] == 4
    assert {rec["Id"]: rec["CallObject"] for rec in body["records"]} == ids
    stats = await control.stats()
    assert stats["api_calls"]["by_kind"] == {
        "describe": 1,
        "sobjects": 1,
        "composite": 1,
        "collections": 1,
        "query": 1,
    }


async def test_a_query_over_16384_bytes_of_uri_is_414(sf: httpx.AsyncClient) -> None:
    """A CallObject IN list whose encoded URI passes 16,384 bytes gets 414 with no body (§2.8):
    100 keys of 250 characters do; the same query inside /composite does not."""
    keys = [f"vici:{i:03d}" + "x" * 245 for i in range(100)]
    soql = f"SELECT Id, CallObject FROM Task WHERE CallObject IN ({', '.join(map(repr, keys))})"
    r = await sf.get("query", params={"q": soql})
    assert r.status_code == 414 and r.content == b""
    res = await _composite(sf, [_sub("q", "GET", "query?q=" + quote_plus(soql))], False)
    assert res[0]["httpStatusCode"] == 200 and res[0]["body"]["totalSize"] == 0
