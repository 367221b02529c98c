"""Hypothesis strategies for CallOutcome, shared by the spool and mapping tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from spool import CallOutcome, Direction, Disposition, LeadRef

ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
)
TIMES = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=ZONES
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda s: s.strip() == s
)
LEADS = st.one_of(
    st.none(),
    st.builds(LeadRef, id=st.sampled_from(["00Q000000000001", "00Q000000000002AAA"])),
    st.builds(LeadRef, external_key=st.sampled_from(["K-1", "K,2", 'K"3'])),
    st.builds(LeadRef, phone=st.sampled_from(["+15125550100", "5125550101"])),
)
EXTRA = st.dictionaries(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8),
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), TEXT),
    max_size=3,
)


@st.composite
def outcomes(draw: st.DrawFn) -> CallOutcome:
    """An outcome with any of its optional fields set or left at their defaults."""
    ended: datetime = draw(TIMES)

    def maybe(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(st.none() | strategy)

    started = maybe(st.integers(0, 3600).map(lambda s: ended - timedelta(seconds=s)))
    return CallOutcome(
        source=draw(st.sampled_from(["vici", "five9", "ari.x"])),
        call_id=draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)),
        version=draw(st.integers(0, 3)),
        source_seq=maybe(st.integers(0, 2**40)),
        disposition=draw(st.sampled_from(list(Disposition))),
        raw_disposition=maybe(TEXT),
        detail=maybe(TEXT),
        ambiguous=draw(st.booleans()),
        lead=draw(LEADS),
        agent_id=maybe(st.sampled_from(["agent1", "agent2"])),
        campaign=maybe(TEXT),
        phone=maybe(st.just("+15125550199")),
        direction=draw(st.sampled_from(list(Direction))),
        started_at=started,
        ended_at=ended,
        duration_s=maybe(st.integers(0, 86400)),
        talk_s=maybe(st.integers(0, 86400)),
        callback_at=maybe(TIMES),
        recording_url=maybe(st.just("https://rec.example/a?b=1")),
        notes=maybe(TEXT),
        live=draw(st.booleans()),
        extra=draw(EXTRA),
    )
