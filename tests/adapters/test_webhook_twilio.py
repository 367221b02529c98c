"""Twilio status callbacks over real HTTP: X-Twilio-Signature checked as Twilio specifies."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from adapters._twilio import compute_signature, validate_signature
from spool import Direction, Disposition, Spool
from tests.adapters.hooks import hook_table, serving

TOKEN = "twilio-auth-token-0123"

# dialers.md section 3 example (a completed outbound call)
COMPLETED = {
    "AccountSid": "AC5ef8732a3c49700934481addd5ce1659",
    "ApiVersion": "2010-04-01",
    "CallSid": "CAe2c8d2c5b0f64b1b8f0c6a0b9a2f1e11",
    "CallStatus": "completed",
    "CallDuration": "37",
    "Duration": "1",
    "Direction": "outbound-api",
    "From": "+15125550100",
    "Caller": "+15125550100",
    "To": "+15125550199",
    "Called": "+15125550199",
    "CallbackSource": "call-progress-events",
    "SequenceNumber": "3",
    "Timestamp": "Fri, 14 Mar 2025 10:02:48 +0000",
}


def test_signature_matches_twilio_documentation_vectors() -> None:
    """The signature equals Twilio's published examples (auth token 12345)."""
    params = {
        "CallSid": ["CA1234567890ABCDE"],
        "Caller": ["+14158675309"],
        "Digits": ["1234"],
        "From": ["+14158675309"],
        "To": ["+18005551212"],
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert compute_signature(url, params, "12345") == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    params["Caller"] = params["From"] = ["+12349013030"]
    assert compute_signature(url, params, "12345") == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_signature_accepts_either_port_form_and_rejects_tampering() -> None:
    """Signed without the port, validated with :443 (and vice versa); a changed value fails."""
    params = {"CallSid": ["CA1"], "CallStatus": ["busy"]}
    sig = compute_signature("https://hooks.example.com/twilio", params, TOKEN)
    assert validate_signature("https://hooks.example.com:443/twilio", params, sig, TOKEN)
    sig443 = compute_signature("https://hooks.example.com:443/twilio", params, TOKEN)
    assert validate_signature("https://hooks.example.com/twilio", params, sig443, TOKEN)
    assert not validate_signature(
        "https://hooks.example.com/twilio", {**params, "CallStatus": ["completed"]}, sig, TOKEN
    )
    assert not validate_signature("https://hooks.example.com/twilio", params, None, TOKEN)


def test_json_body_hash_is_checked() -> None:
    """bodySHA256 in the URL must match the body; the URL alone is signed."""
    import hashlib

    body = b'{"CallSid":"CA1"}'
    url = f"https://h.example.com/t?bodySHA256={hashlib.sha256(body).hexdigest()}"
    sig = compute_signature(url, {}, TOKEN)
    assert validate_signature(url, {}, sig, TOKEN, body=body)
    assert not validate_signature(url, {}, sig, TOKEN, body=b'{"CallSid":"CA2"}')


async def post_signed(client, url_path: str, form: dict[str, str], base: str, **kw):  # type: ignore[no-untyped-def]
    signature = compute_signature(base + url_path, {k: [v] for k, v in form.items()}, TOKEN)
    return await client.post(
        url_path,
        content=urlencode(form),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
            **kw.get("headers", {}),
        },
    )


async def test_signed_completed_callback_is_stored(spool: Spool) -> None:
    """A correctly signed completed callback becomes a connected outcome with duration."""
    async with serving(spool, hook_table("twilio", secret=TOKEN)) as (hook, client):
        base = f"http://127.0.0.1:{hook.bound_port}"
        r = await post_signed(client, "/twilio/status?lead=48213", COMPLETED, base)
        assert r.status_code == 200, r.text
    claims = await spool.claim("t", 10)
    o = claims[0].outcome
    assert (o.source, o.call_id, o.source_seq) == ("twilio", COMPLETED["CallSid"], 3)
    assert o.disposition is Disposition.CONNECTED and o.duration_s == 37
    assert o.ended_at == datetime(2025, 3, 14, 10, 2, 48, tzinfo=UTC)
    assert o.phone == "+15125550199" and o.direction is Direction.OUTBOUND
    assert not o.live


async def test_bad_signature_is_403_and_not_stored(spool: Spool) -> None:
    """A wrong or missing X-Twilio-Signature is refused and nothing is kept."""
    async with serving(spool, hook_table("twilio", secret=TOKEN)) as (_, client):
        r1 = await client.post("/twilio", data=COMPLETED, headers={"X-Twilio-Signature": "AAAA"})
        r2 = await client.post("/twilio", data=COMPLETED)
        assert (r1.status_code, r2.status_code) == (403, 403)
    assert (await spool.stats()).pending == 0 and await spool.list_quarantine() == []


async def test_public_url_behind_a_proxy(spool: Spool) -> None:
    """With public_url set, the signature is checked against the URL Twilio called."""
    table = hook_table("twilio", secret=TOKEN, public_url="https://hooks.example.com/tw")
    async with serving(spool, table) as (_, client):
        r = await post_signed(
            client,
            "/twilio/cb?x=1",
            COMPLETED,
            "https://hooks.example.com/tw/cb?x=1"[: -len("/cb?x=1")],
        )
        assert r.status_code == 403  # signed for the local URL shape, not the public one
        form = {k: [v] for k, v in COMPLETED.items()}
        sig = compute_signature("https://hooks.example.com/tw/cb?x=1", form, TOKEN)
        ok = await client.post(
            "/twilio/cb?x=1",
            content=urlencode(COMPLETED),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": sig,
            },
        )
        assert ok.status_code == 200, ok.text


async def test_forwarded_headers_when_trusted(spool: Spool) -> None:
    """proxy_headers=true rebuilds the URL from X-Forwarded-Proto/Host."""
    table = hook_table("twilio", secret=TOKEN, proxy_headers=True)
    async with serving(spool, table) as (_, client):
        form = {k: [v] for k, v in COMPLETED.items()}
        sig = compute_signature("https://hooks.example.com/twilio", form, TOKEN)
        r = await client.post(
            "/twilio",
            content=urlencode(COMPLETED),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": sig,
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "hooks.example.com",
            },
        )
        assert r.status_code == 200, r.text


async def test_get_callback_signs_the_url_only(spool: Spool) -> None:
    """StatusCallbackMethod=GET: parameters in the query, signature over the URL alone."""
    async with serving(spool, hook_table("twilio", secret=TOKEN)) as (hook, client):
        q = urlencode({**COMPLETED, "CallStatus": "busy"})
        url = f"http://127.0.0.1:{hook.bound_port}/twilio?{q}"
        r = await client.get(
            f"/twilio?{q}", headers={"X-Twilio-Signature": compute_signature(url, {}, TOKEN)}
        )
        assert r.status_code == 200, r.text
    assert (await spool.claim("t", 1))[0].outcome.disposition is Disposition.BUSY


@pytest.mark.parametrize(
    ("extra", "expected", "detail"),
    [
        ({"AnsweredBy": "machine_end_beep"}, Disposition.VOICEMAIL, "machine_end_beep"),
        ({"AnsweredBy": "fax"}, Disposition.FAX, None),
        ({"CallStatus": "failed", "SipResponseCode": "404"}, Disposition.INVALID_NUMBER, "sip_404"),
        ({"CallStatus": "no-answer"}, Disposition.NO_ANSWER, None),
    ],
)
async def test_answered_by_and_sip_codes(
    spool: Spool, extra: dict[str, str], expected: Disposition, detail: str | None
) -> None:
    """AMD results and SIP failure codes refine the CallStatus mapping."""
    async with serving(spool, hook_table("twilio", secret=TOKEN)) as (hook, client):
        base = f"http://127.0.0.1:{hook.bound_port}"
        r = await post_signed(client, "/twilio", {**COMPLETED, **extra}, base)
        assert r.status_code == 200
    o = (await spool.claim("t", 1))[0].outcome
    assert (o.disposition, o.detail) == (expected, detail)


async def test_sequence_number_orders_redeliveries(spool: Spool) -> None:
    """A late callback with a lower SequenceNumber never overwrites the newer one."""
    async with serving(spool, hook_table("twilio", secret=TOKEN)) as (hook, client):
        base = f"http://127.0.0.1:{hook.bound_port}"
        r1 = await post_signed(client, "/twilio", {**COMPLETED, "SequenceNumber": "5"}, base)
        r2 = await post_signed(
            client, "/twilio", {**COMPLETED, "SequenceNumber": "2", "CallStatus": "busy"}, base
        )
        assert (r1.json()["status"], r2.json()["status"]) == ("inserted", "stale")
    assert (await spool.claim("t", 5))[0].outcome.disposition is Disposition.CONNECTED


async def test_progress_events_are_not_stored(spool: Spool) -> None:
    """ringing / in-progress callbacks are acknowledged and ignored."""
    async with serving(spool, hook_table("twilio", secret=TOKEN)) as (hook, client):
        base = f"http://127.0.0.1:{hook.bound_port}"
        r = await post_signed(client, "/twilio", {**COMPLETED, "CallStatus": "ringing"}, base)
        assert r.json()["status"] == "ignored"
    assert (await spool.stats()).pending == 0


async def test_signed_but_malformed_is_400_and_quarantined(spool: Spool) -> None:
    """A signed callback without CallSid is refused naming the field, and kept."""
    form = {k: v for k, v in COMPLETED.items() if k != "CallSid"}
    async with serving(spool, hook_table("twilio", secret=TOKEN)) as (hook, client):
        base = f"http://127.0.0.1:{hook.bound_port}"
        r = await post_signed(client, "/twilio", form, base)
        assert r.status_code == 400 and r.json()["error"] == "CallSid: missing"
    assert len(await spool.list_quarantine()) == 1


async def test_async_amd_result_is_joined_to_the_final_callback(spool: Spool) -> None:
    """AsyncAmdStatusCallback (no CallStatus) is remembered and applied on completion."""
    amd = {
        "AccountSid": COMPLETED["AccountSid"],
        "CallSid": COMPLETED["CallSid"],
        "AnsweredBy": "machine_end_beep",
        "MachineDetectionDuration": "2710",
    }
    async with serving(spool, hook_table("twilio", secret=TOKEN)) as (hook, client):
        base = f"http://127.0.0.1:{hook.bound_port}"
        r1 = await post_signed(client, "/twilio/amd", amd, base)
        assert r1.status_code == 200 and r1.json()["status"] == "recorded"
        assert (await spool.stats()).pending == 0
        r2 = await post_signed(client, "/twilio/status", COMPLETED, base)
        assert r2.status_code == 200
    o = (await spool.claim("t", 1))[0].outcome
    assert (o.disposition, o.detail) == (Disposition.VOICEMAIL, "machine_end_beep")
    assert o.raw_disposition == "completed/machine_end_beep"


async def test_timestamp_out_of_range_is_400_and_quarantined(spool: Spool) -> None:
    """A Timestamp whose year does not fit a C integer is refused naming the field (it raised
    OverflowError past the decoder: a 500, and no quarantine row)."""
    form = {**COMPLETED, "Timestamp": "Fri, 14 Mar 99999999999999999999 10:02:48 +0000"}
    async with serving(spool, hook_table("twilio", secret=TOKEN)) as (hook, client):
        base = f"http://127.0.0.1:{hook.bound_port}"
        r = await post_signed(client, "/twilio", form, base)
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("Timestamp: not an RFC 2822 date")
    assert len(await spool.list_quarantine()) == 1
