"""CallOutcome: identity, ordering, timezone rules, closed vocabulary, clear errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spool import (
    CallOutcome,
    Direction,
    Disposition,
    LeadRef,
    StoredOutcome,
    format_validation_error,
)
from tests.outcome_strategies import outcomes

ENDED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def make(**kw: Any) -> CallOutcome:
    data: dict[str, Any] = {
        "source": "vici",
        "call_id": "C1",
        "disposition": "connected",
        "ended_at": ENDED,
    }
    data.update(kw)
    return CallOutcome.model_validate(data)


def error_text(**kw: Any) -> str:
    with pytest.raises(ValidationError) as info:
        make(**kw)
    return format_validation_error(info.value)


def test_identity_and_external_key() -> None:
    """Identity is (source, call_id); the Task external key is 'source:call_id'."""
    o = make(call_id="abc-1")
    assert o.identity == ("vici", "abc-1")
    assert o.external_key == "vici:abc-1"


def test_naive_timestamp_is_refused_naming_the_field() -> None:
    """A naive ended_at is refused (never read as local time) and the error names it."""
    text = error_text(ended_at=datetime(2026, 11, 24, 12, 0))
    assert text.startswith("ended_at:") and "timezone" in text


def test_aware_timestamps_in_any_zone_compare_by_instant() -> None:
    """The same instant in two zones is the same order key; a later instant is newer."""
    paris = timezone(timedelta(hours=1))
    a = make(ended_at=ENDED)
    b = make(ended_at=ENDED.astimezone(paris))
    c = make(ended_at=ENDED + timedelta(seconds=1))
    assert a.order_key == b.order_key
    assert c.is_newer_than(a) and not a.is_newer_than(b)


def test_version_bump_beats_later_timestamp() -> None:
    """An explicit version bump wins over a later ended_at, then source_seq decides."""
    bumped = make(version=1, ended_at=ENDED)
    later = make(ended_at=ENDED + timedelta(hours=1))
    assert bumped.is_newer_than(later)
    assert make(source_seq=2).is_newer_than(make(source_seq=1, ended_at=ENDED + timedelta(1)))


def test_disposition_is_a_closed_vocabulary() -> None:
    """An unknown disposition is refused with the bad value; the raw code is kept apart."""
    text = error_text(disposition="SALE")
    assert text.startswith("disposition:") and "'SALE'" in text
    o = make(disposition="callback_requested", raw_disposition="CALLBK")
    assert o.disposition is Disposition.CALLBACK_REQUESTED
    assert o.raw_disposition == "CALLBK"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("source", "Vici Dial", "source"),
        ("call_id", "a\nb", "control characters"),
        ("phone", "call me", "not a phone number"),
        ("recording_url", "ftp://x/y.wav", "http(s)"),
        ("duration_s", -1, "duration_s"),
        ("ended_at", datetime(1999, 1, 1, tzinfo=UTC), "outside"),
    ],
)
def test_bad_values_are_named(field: str, value: Any, fragment: str) -> None:
    """Each bad field value is reported with the field's name and what was wrong."""
    text = error_text(**{field: value})
    assert text.startswith(f"{field}:")
    assert fragment in text


def test_started_after_ended_is_refused() -> None:
    """A call cannot start after it ended."""
    assert "after ended_at" in error_text(started_at=ENDED + timedelta(seconds=5))


def test_missing_fields_are_listed() -> None:
    """Missing required fields are each listed as 'field required'."""
    with pytest.raises(ValidationError) as info:
        CallOutcome.model_validate({"source": "vici"})
    text = format_validation_error(info.value)
    for name in ("call_id", "disposition", "ended_at"):
        assert f"{name}: field required" in text


def test_lead_key_is_stable_across_id_forms() -> None:
    """15- and 18-character forms of one Salesforce id name the same Lead."""
    assert LeadRef(id="00Q5e00000AbCdE").key == LeadRef(id="00Q5e00000AbCdEFGH").key
    assert LeadRef(phone="+1 (555) 010-9999").key == "phone:+15550109999"
    with pytest.raises(ValidationError, match="one of id, external_key or phone"):
        LeadRef()


def test_record_is_frozen_and_rejects_unknown_fields() -> None:
    """Outcomes are immutable and unknown keys are refused (typos do not vanish)."""
    o = make()
    with pytest.raises(ValidationError):
        o.disposition = Disposition.BUSY
    assert "agent:" in error_text(agent="x")


@given(
    call_id=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40),
    disposition=st.sampled_from(list(Disposition)),
    seconds=st.integers(0, 10**8),
    seq=st.none() | st.integers(0, 2**40),
    notes=st.none() | st.text(max_size=200),
)
def test_json_roundtrip(
    call_id: str, disposition: Disposition, seconds: int, seq: int | None, notes: str | None
) -> None:
    """What the spool stores (JSON) reads back as an equal outcome with the same order."""
    o = make(
        call_id=call_id,
        disposition=disposition,
        ended_at=ENDED - timedelta(seconds=seconds),
        source_seq=seq,
        notes=notes.strip() or None if notes else None,
    )
    back = CallOutcome.model_validate_json(o.model_dump_json())
    assert back == o
    assert back.order_key == o.order_key
    stored = CallOutcome.from_stored_json(o.model_dump_json())
    assert stored == o and stored.model_dump_json() == o.model_dump_json()


def test_from_stored_json_still_checks_the_schema_but_not_the_validators() -> None:
    """A stored payload that does not fit the schema (another version wrote it) is refused;
    the Python-level checks, which passed at put time, are not run again. Without that
    context every check still runs."""
    good = make(phone="+1 (512) 555-0199", lead=LeadRef(phone="512.555.0100"))
    data = good.model_dump(mode="json")
    assert CallOutcome.from_stored_json(good.model_dump_json()) == good
    for broken in (
        {k: v for k, v in data.items() if k != "ended_at"},
        {**data, "disposition": "teleported"},
        {**data, "surprise": 1},
        {**data, "lead": {"nickname": "x"}},
    ):
        with pytest.raises(ValidationError):
            CallOutcome.from_stored_json(json.dumps(broken))
    control = json.dumps({**data, "call_id": "a\u0001b"})
    assert CallOutcome.from_stored_json(control).call_id == "a\x01b"
    with pytest.raises(ValidationError, match="control characters"):
        CallOutcome.model_validate_json(control)
    with pytest.raises(ValidationError, match="one of id, external_key or phone"):
        CallOutcome.model_validate_json(json.dumps({**data, "lead": {}}))


def test_stored_json_leaves_out_defaults_and_reads_back_equal() -> None:
    """The spool stores an outcome without the fields equal to their defaults (half the
    bytes); it reads back equal, and payloads written in full (before) still read."""
    sparse = make()
    full = make(
        phone="+1 (512) 555-0199",
        lead=LeadRef(external_key="K-1"),
        notes="n",
        recording_url="https://rec.example/1",
        live=True,
        extra={"queue": "q1", "score": 2},
    )
    for o in (sparse, full):
        stored = o.to_stored_json()
        assert CallOutcome.from_stored_json(stored) == o
        assert CallOutcome.from_stored_json(o.model_dump_json()) == o
    assert len(sparse.to_stored_json()) < len(sparse.model_dump_json()) * 0.7
    assert '"notes"' not in sparse.to_stored_json() and '"notes"' in full.to_stored_json()


def test_the_defaults_of_stored_fields_are_pinned() -> None:
    """Stored payloads leave out default values, so a default is part of the spool's
    format: changing one silently changes every stored record that relied on it. Change
    it only with a spool migration that writes the old value into existing payloads."""
    defaults = {
        name: (f.get_default(call_default_factory=True) if not f.is_required() else "required")
        for name, f in CallOutcome.model_fields.items()
    }
    assert defaults == {
        "source": "required",
        "call_id": "required",
        "version": 0,
        "source_seq": None,
        "disposition": "required",
        "raw_disposition": None,
        "detail": None,
        "ambiguous": False,
        "lead": None,
        "agent_id": None,
        "campaign": None,
        "phone": None,
        "direction": Direction.OUTBOUND,
        "started_at": None,
        "ended_at": "required",
        "duration_s": None,
        "talk_s": None,
        "callback_at": None,
        "recording_url": None,
        "notes": None,
        "live": False,
        "extra": {},
    }
    assert {n: f.default for n, f in LeadRef.model_fields.items()} == {
        "id": None,
        "external_key": None,
        "phone": None,
    }


@settings(deadline=None)  # a loaded CI machine must not make it flaky
@given(outcomes())
def test_stored_outcome_reads_what_the_outcome_holds(o: CallOutcome) -> None:
    """The Bulk rail reads stored payloads through StoredOutcome instead of decoding a
    CallOutcome: every field reads back equal (timestamps in their own zone), from the
    sparse payload put writes and from a full one written before."""
    for payload in (o.to_stored_json(), o.model_dump_json()):
        view = StoredOutcome.parse(payload)
        assert view is not None
        for name in CallOutcome.model_fields:
            assert getattr(view, name) == getattr(o, name), name
        for name in ("started_at", "ended_at", "callback_at"):
            value = getattr(view, name)
            assert value is None or value.utcoffset() == getattr(o, name).utcoffset()
        assert view.external_key == o.external_key
        lead = o.lead
        assert view.lead_fields() == (
            (None, None, None) if lead is None else (lead.id, lead.external_key, lead.phone)
        )
        assert view.lead is None or view.lead.key == lead.key  # type: ignore[union-attr]


def test_stored_outcome_refuses_payloads_this_version_did_not_write() -> None:
    """What StoredOutcome cannot vouch for (unknown or missing keys, an unknown
    disposition or direction, a JSON type put does not write, a lead that is not an
    object of known keys, not JSON) is refused, so
    the spool validates it in full instead (and dead-letters it if that fails)."""
    data = make(lead=LeadRef(id="00Q000000000001")).model_dump(mode="json")
    assert StoredOutcome.parse(json.dumps(data)) is not None
    for broken in (
        {k: v for k, v in data.items() if k != "ended_at"},
        {**data, "disposition": "teleported"},
        {**data, "direction": "sideways"},
        {**data, "surprise": 1},
        {**data, "lead": "00Q000000000001"},
        {**data, "lead": {"nickname": "x"}},
        {**data, "lead": {"id": 5}},
        {**data, "disposition": ["connected"]},
        {**data, "duration_s": "35"},
        {**data, "notes": 5},
        {**data, "live": 1},
        [data],
    ):
        assert StoredOutcome.parse(json.dumps(broken)) is None, broken
    assert StoredOutcome.parse("{not json") is None
