"""Several outcomes of one Lead share one Lead update (its newest outcome's state plus every
outcome's sticky fields, DoNotCall). When Salesforce refuses that update for good because
of the newest outcome's values, only that outcome is a dead letter: the others (a
do-not-call among them) are sent again, and DoNotCall reaches the Lead."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from typing import Any

import pytest
from railkit import lead, outcome, rails_for, seed_leads, task_by_key

from daemon.mapping import Mapping, parse_mapping
from daemon.salesforce import SalesforceClient
from spool import open_spool


def notes_on_lead_email() -> Mapping:
    """The built-in mapping, writing a connected call's notes into Lead.Email (80
    characters at most: longer notes are refused, STRING_TOO_LONG; an email field is not
    cut to fit as free text is, a cut address being a wrong one)."""
    text = resources.files("daemon.mapping").joinpath("default.toml").read_text()
    doc = copy.deepcopy(tomllib.loads(text))
    doc["lead"]["dispositions"]["connected"]["Email"] = "{notes}"
    return parse_mapping(doc)


# route: (Rails keywords, the rail the outcomes go by)
ROUTES = {
    "bulk": ({"bulk_min_records": 1}, "bulk"),
    "collections": ({}, "collections"),
}


@pytest.mark.parametrize("route", list(ROUTES))
async def test_do_not_call_reaches_the_lead_when_a_newer_outcomes_values_are_refused(
    route: str, sim: Any, client: SalesforceClient, tmp_path: Any
) -> None:
    kw, rail = ROUTES[route]
    [lead_id, other] = seed_leads(sim, 2)
    dnc = outcome({"id": lead_id}, disposition="do_not_call")
    bad = outcome({"id": lead_id}, disposition="connected", notes="x" * 300)  # newer
    async with open_spool(tmp_path / "d.db", synchronous="NORMAL", urgent_dispositions=()) as sp:
        await sp.put_many([dnc, bad, outcome({"id": other})])
        rails = rails_for(sp, client, mapping=notes_on_lead_email(), **kw)
        await rails.drain(timeout_s=30)
        dead = {d.call_id: d.error_code for d in await sp.dead_letters()}
        assert (await sp.stats()).done == 2
    assert set(client.quota.calls_by_rail) <= {rail, "collections", "admin"}
    assert rail in client.quota.calls_by_rail
    assert dead == {bad.call_id: "STRING_TOO_LONG"}
    assert task_by_key(sim, dnc.external_key) is not None
    assert task_by_key(sim, bad.external_key) is not None  # its Task was fine
    row = lead(sim, lead_id)
    assert row["DoNotCall"] is True
    assert row["Last_Call_Outcome__c"] == "do_not_call"  # the newest state Salesforce took


async def test_bulk_looks_a_phone_up_again_when_its_cached_lead_was_merged_away(
    sim: Any, client: SalesforceClient, tmp_path: Any
) -> None:
    """The Bulk rail's side of a merge: two Leads share a phone, the first outcome by that
    phone resolved (and cached) Lead A, then A was merged into B (A deleted). A do-not-call
    by that phone, going by Bulk, is refused for A; the phone is looked up again and the
    Task and DoNotCall go to B, instead of the phone being taken for no Lead."""
    st = sim.org.store
    a = st.insert("Lead", {"LastName": "A", "Company": "Acme", "Phone": "+15551112222"})
    b = st.insert("Lead", {"LastName": "B", "Company": "Acme", "Phone": "+15551112222"})
    async with open_spool(tmp_path / "m.db", synchronous="NORMAL", urgent_dispositions=()) as sp:
        rails = rails_for(sp, client, bulk_min_records=1)
        first = outcome({"phone": "+15551112222"}, disposition="no_answer")
        await sp.put(first)
        await rails.drain(timeout_s=30)
        first_task = task_by_key(sim, first.external_key)
        assert first_task is not None and first_task["WhoId"] == a
        st.delete("Lead", a)
        dnc = outcome({"phone": "+15551112222"}, disposition="do_not_call")
        await sp.put(dnc)
        await rails.drain(timeout_s=30)
        assert await sp.dead_letters() == []
    task = task_by_key(sim, dnc.external_key)
    assert task is not None and task["WhoId"] == b
    assert lead(sim, b)["DoNotCall"] is True
    assert "bulk" in client.quota.calls_by_rail
