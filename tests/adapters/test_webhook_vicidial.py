"""VICIdial Dispo Call URL / No Agent Call URL over real HTTP into a real spool."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from adapters._base import AdapterState
from spool import Disposition, Spool, open_spool
from tests.adapters.hooks import hook_table, serving

# The dialers.md 2.2 example template, with VICIdial's default variable names.
DISPO = {
    "token": "s3cr3t-token",
    "lead_id": "48213",
    "vendor_lead_code": "CRM-99812",
    "phone_number": "5125550199",
    "dispo": "CALLBK",
    "dispo_name": "Call Back",
    "user": "6666",
    "campaign": "SALES1",
    "uniqueid": "1710410531.842",
    "call_id": "V3141002110000048213",
    "talk_time": "214",
    "callback_datetime": "2025-03-18 14:30:00",
    "term_reason": "CALLER",
    "epoch": "1741946668",
}


async def newest(spool: Spool, call_id: str, source: str = "vicidial") -> object:
    claims = await spool.claim("test", 100)
    found = [c.outcome for c in claims if c.outcome.call_id == call_id]
    await spool.release(claims)
    assert len(found) == 1
    return found[0]


async def test_dispo_url_stores_a_live_outcome(spool: Spool) -> None:
    """An agent disposition is committed, live, with Lead, agent and callback in the site zone."""
    async with serving(spool, hook_table("vicidial", tz="America/Chicago")) as (hook, client):
        r = await client.get("/vicidial/dispo", params=DISPO)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "inserted", "call_id": "V3141002110000048213"}
        assert hook.health().state is AdapterState.LISTENING
    o = await newest(spool, "V3141002110000048213")
    assert o.disposition is Disposition.CALLBACK_REQUESTED and o.live
    assert o.raw_disposition == "CALLBK"
    assert o.lead is not None and o.lead.external_key == "48213"
    assert (o.agent_id, o.campaign, o.talk_s, o.phone) == ("6666", "SALES1", 214, "5125550199")
    # 14:30 in Chicago (CDT, UTC-5 on 2025-03-18) is 19:30 UTC
    assert o.callback_at == datetime(2025, 3, 18, 19, 30, tzinfo=UTC)
    assert o.ended_at == datetime.fromtimestamp(1741946668, UTC)
    assert o.extra["term_reason"] == "CALLER"


async def test_ended_at_is_expressed_in_the_site_zone(spool: Spool) -> None:
    """VICIdial's epoch names the instant only; the outcome carries the adapter's zone
    (VICIdial's wall clock, the site's) so that an evening call is dated where it
    happened: 20:30 CST on 1 March is 02:30 UTC on 2 March."""
    evening = datetime(2026, 3, 2, 2, 30, tzinfo=UTC)
    params = {**DISPO, "epoch": str(int(evening.timestamp()))}
    async with serving(spool, hook_table("vicidial", tz="America/Chicago")) as (_, client):
        r = await client.get("/vicidial/dispo", params=params)
        assert r.status_code == 200, r.text
    o = await newest(spool, "V3141002110000048213")
    assert o.ended_at == evening  # type: ignore[attr-defined]
    assert o.ended_at.utcoffset() == timedelta(hours=-6)  # type: ignore[attr-defined]
    assert o.ended_at.date() == date(2026, 3, 1)  # type: ignore[attr-defined]


async def test_no_agent_url_is_not_live(spool: Spool) -> None:
    """A No Agent Call URL DROP is an abandon (system), not live; status param is read."""
    q = {"token": "s3cr3t-token", "uniqueid": "1710410999.9", "status": "DROP", "lead_id": "7"}
    async with serving(spool, hook_table("vicidial")) as (_, client):
        r = await client.get("/vicidial/no-agent", params=q)
        assert r.status_code == 200
    o = await newest(spool, "1710410999.9")
    assert o.disposition is Disposition.ABANDONED and o.detail == "system" and not o.live


async def test_no_agent_post_form(spool: Spool) -> None:
    """The POST variant of the No Agent URL (form body) is accepted too."""
    async with serving(spool, hook_table("vicidial")) as (_, client):
        r = await client.post(
            "/vicidial/no-agent?token=s3cr3t-token",
            data={"uniqueid": "171.1", "status": "NA", "phone_number": "5125550100"},
        )
        assert r.status_code == 200, r.text
    o = await newest(spool, "171.1")
    assert o.disposition is Disposition.NO_ANSWER and o.ambiguous
    assert o.lead is not None and o.lead.phone == "5125550100"


async def test_wrong_or_missing_token_is_401_and_nothing_kept(spool: Spool) -> None:
    """Without the right token nothing is stored or quarantined."""
    async with serving(spool, hook_table("vicidial")) as (hook, client):
        bad = await client.get("/vicidial/dispo", params={**DISPO, "token": "nope"})
        missing = await client.get(
            "/vicidial/dispo", params={k: v for k, v in DISPO.items() if k != "token"}
        )
        assert (bad.status_code, missing.status_code) == (401, 401)
        assert hook.health().extra["unauthorized"] == 2
    assert (await spool.stats()).pending == 0
    assert await spool.list_quarantine() == []


async def test_bearer_header_authenticates_other_senders(spool: Spool) -> None:
    """A sender that can set headers may use Authorization: Bearer instead of token."""
    q = {k: v for k, v in DISPO.items() if k != "token"}
    async with serving(spool, hook_table("vicidial")) as (_, client):
        r = await client.get(
            "/vicidial/dispo", params=q, headers={"Authorization": "Bearer s3cr3t-token"}
        )
        assert r.status_code == 200


async def test_salesforce_lead_id_in_vendor_lead_code_is_used_directly(spool: Spool) -> None:
    """vendor_lead_code holding a Lead Id wins over lead_id."""
    q = {**DISPO, "vendor_lead_code": "00Q5e00000AbCdEFGH", "dispo": "SALE"}
    async with serving(spool, hook_table("vicidial")) as (_, client):
        assert (await client.get("/vicidial/dispo", params=q)).status_code == 200
    o = await newest(spool, DISPO["call_id"])
    assert o.lead is not None and o.lead.id == "00Q5e00000AbCdEFGH"
    assert o.disposition is Disposition.CONNECTED


async def test_remapped_parameter_names(spool: Spool) -> None:
    """Admins' own parameter names (the dialers.md template) are read through `params`."""
    table = hook_table(
        "vicidial",
        params={
            "vendor_lead_code": "vlc",
            "phone_number": "phone",
            "dispo": "status",
            "user": "agent",
            "talk_time": "talk",
            "callback_datetime": "cb_at",
        },
        dispositions={"WN": "wrong_number"},
    )
    q = {
        "token": "s3cr3t-token",
        "lead_id": "48213",
        "vlc": "CRM-99812",
        "phone": "5125550199",
        "status": "WN",
        "agent": "6666",
        "call_id": "V1",
        "talk": "12",
        "cb_at": "",
    }
    async with serving(spool, table) as (_, client):
        assert (await client.get("/vicidial/dispo", params=q)).status_code == 200
    o = await newest(spool, "V1")
    assert o.disposition is Disposition.WRONG_NUMBER and o.raw_disposition == "WN"
    assert (o.agent_id, o.talk_s, o.callback_at) == ("6666", 12, None)


async def test_missing_identity_is_400_and_quarantined_without_token(spool: Spool) -> None:
    """No call_id/uniqueid: 400 naming it; the quarantined input has no secret in it."""
    q = {k: v for k, v in DISPO.items() if k not in ("call_id", "uniqueid")}
    async with serving(spool, hook_table("vicidial")) as (hook, client):
        r = await client.get("/vicidial/dispo", params={**q, "pass": "agentpw"})
        assert r.status_code == 400
        assert "call_id: missing" in r.json()["error"]
        assert hook.health().rejected == 1
    [row] = await spool.list_quarantine()
    assert b"s3cr3t" not in row.raw and b"agentpw" not in row.raw and b"48213" in row.raw


async def test_malformed_number_is_400(spool: Spool) -> None:
    """A non-numeric talk_time is refused with a message naming the parameter."""
    async with serving(spool, hook_table("vicidial")) as (_, client):
        r = await client.get("/vicidial/dispo", params={**DISPO, "talk_time": "12s"})
        assert r.status_code == 400 and "talk_time: expected a whole number" in r.json()["error"]


async def test_callback_date_out_of_range_is_400_and_quarantined(spool: Spool) -> None:
    """A callback_datetime past the last datetime once read in the site zone is refused
    naming the parameter (OverflowError used to escape the decoder: a 500, nothing kept)."""
    params = {**DISPO, "callback_datetime": "9999-12-31 23:59:59"}
    async with serving(spool, hook_table("vicidial", tz="America/Chicago")) as (_, client):
        r = await client.get("/vicidial/dispo", params=params)
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("callback_datetime: out of range")
    assert len(await spool.list_quarantine()) == 1


async def test_unknown_status_is_stored_as_unknown(spool: Spool) -> None:
    """A site status nobody mapped is kept (unknown, raw value preserved), not dropped."""
    async with serving(spool, hook_table("vicidial")) as (_, client):
        r = await client.get("/vicidial/dispo", params={**DISPO, "dispo": "ZZCUST"})
        assert r.status_code == 200
    o = await newest(spool, DISPO["call_id"])
    assert o.disposition is Disposition.UNKNOWN and o.raw_disposition == "ZZCUST"


async def test_progress_status_is_acknowledged_but_not_stored(spool: Spool) -> None:
    """INCALL is not an outcome: 200 (VICIdial must not worry) and nothing stored."""
    async with serving(spool, hook_table("vicidial")) as (_, client):
        r = await client.get("/vicidial/no-agent", params={**DISPO, "dispo": "INCALL"})
        assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert (await spool.stats()).pending == 0


async def test_older_epoch_never_overwrites_newer(spool: Spool) -> None:
    """A late re-delivery with an older epoch is harmless (200, stale) and changes nothing."""
    async with serving(spool, hook_table("vicidial")) as (_, client):
        new = await client.get(
            "/vicidial/dispo", params={**DISPO, "dispo": "SALE", "epoch": "1741946700"}
        )
        old = await client.get(
            "/vicidial/dispo", params={**DISPO, "dispo": "NI", "epoch": "1741946600"}
        )
        again = await client.get(
            "/vicidial/dispo", params={**DISPO, "dispo": "SALE", "epoch": "1741946700"}
        )
        assert [r.json()["status"] for r in (new, old, again)] == ["inserted", "stale", "duplicate"]
    o = await newest(spool, DISPO["call_id"])
    assert o.raw_disposition == "SALE"


async def test_token_parameter_can_be_renamed(spool: Spool) -> None:
    """params.token renames the query parameter that carries the secret."""
    q = {k: v for k, v in DISPO.items() if k != "token"}
    table = hook_table("vicidial", params={"token": "key"})
    async with serving(spool, table) as (_, client):
        assert (
            await client.get("/vicidial/dispo", params={**q, "key": "s3cr3t-token"})
        ).status_code == 200
        assert (
            await client.get("/vicidial/dispo", params={**q, "token": "s3cr3t-token"})
        ).status_code == 401


async def test_renamed_token_is_not_quarantined(spool: Spool) -> None:
    """A bad request authenticated by a renamed token parameter is kept without the secret."""
    table = hook_table("vicidial", params={"token": "key"})
    async with serving(spool, table) as (_, client):
        r = await client.get("/vicidial/dispo", params={"key": "s3cr3t-token", "dispo": "SALE"})
        assert r.status_code == 400
    [row] = await spool.list_quarantine()
    assert b"s3cr3t" not in row.raw and b"SALE" in row.raw


async def test_refused_request_is_kept_for_replay(tmp_path: Path) -> None:
    """Spool full: VICIdial gets 503 (it never retries), and the request is kept for replay."""
    async with open_spool(tmp_path / "s.db", max_pending=1) as spool:
        async with serving(spool, hook_table("vicidial")) as (_, client):
            ok = await client.get("/vicidial/dispo", params=DISPO)
            refused = await client.get("/vicidial/dispo", params={**DISPO, "call_id": "V2"})
            assert (ok.status_code, refused.status_code) == (200, 503)
            assert "Retry-After" in refused.headers
        [row] = await spool.list_quarantine()
        assert row.reason.startswith("not stored: the spool refused it")
        assert b"call_id=V2" in row.raw and b"s3cr3t" not in row.raw
