"""Webhook decoders never crash on arbitrary input: they decode, or name what was wrong."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters._decode_util import DecodeError
from adapters._ingest import Intake
from adapters._json_hook import decode_json
from adapters._twilio import decode_twilio
from adapters._vicidial import decode_vicidial
from adapters.config import VICIDIAL_PARAMS
from adapters.dispositions import DispositionMap
from spool import CallOutcome

# The VICIdial variables the adapter reads (its own list), plus one it does not know.
VICI_KEYS = st.sampled_from([*VICIDIAL_PARAMS, "junk"])
TWILIO_KEYS = st.sampled_from(
    [
        "CallSid",
        "CallStatus",
        "AnsweredBy",
        "CallDuration",
        "SequenceNumber",
        "Timestamp",
        "To",
        "From",
        "Direction",
        "SipResponseCode",
        "RecordingUrl",
        "junk",
    ]
)
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "SALE",
            "DROP",
            "completed",
            "busy",
            "5125550199",
            "-3",
            "1741946668",
            "2025-03-18 14:30:00",
            "Fri, 14 Mar 2025 10:02:48 +0000",
            "00Q5e00000AbCdEFGH",
        ]
    ),
)
NOW = datetime(2025, 3, 14, 10, 0, tzinfo=UTC)


def _check(fields: dict[str, object] | None) -> None:
    if fields is not None:
        result = Intake.validate(fields)
        assert isinstance(result, CallOutcome | str)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(VICI_KEYS, VALUES, max_size=10), st.sampled_from(["dispo", "no-agent"]))
def test_vicidial_decoder_total(query: dict[str, str], kind: str) -> None:
    """Any VICIdial query yields fields, None, or a DecodeError; validation never raises."""
    try:
        fields = decode_vicidial(
            query,
            kind=kind,
            source="vicidial",
            dmap=DispositionMap("vicidial", "v"),
            tz=UTC,
            now=NOW,  # type: ignore[arg-type]
        )
    except DecodeError:
        return
    _check(fields)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(TWILIO_KEYS, VALUES, max_size=10), st.one_of(st.none(), st.text(max_size=20))
)
def test_twilio_decoder_total(form: dict[str, str], lead: str | None) -> None:
    """Any Twilio form yields fields, None, or a DecodeError; validation never raises."""
    try:
        fields = decode_twilio(
            form, source="twilio", dmap=DispositionMap("twilio", "t"), lead=lead, now=NOW
        )
    except DecodeError:
        return
    _check(fields)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=12), inner, max_size=6)
            ),
            max_leaves=20,
        ).map(lambda v: __import__("json").dumps(v).encode()),
    )
)
def test_json_decoder_total(body: bytes) -> None:
    """Any body decodes into outcomes and per-item errors, or one DecodeError."""
    try:
        batch = decode_json(body, source="json", dmap=DispositionMap("vocabulary", "j"))
    except DecodeError:
        return
    assert all(isinstance(o, CallOutcome) for o in batch.outcomes)
