"""Pure decoding of a generic JSON event stream (adapters._ws_decode)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters._ws_decode import (
    DecodeError,
    EventDecoder,
    fill_template,
    get_path,
    parse_path,
    parse_timestamp,
    path_getter,
)
from adapters.dispositions import Mapped
from spool.record import Direction, Disposition

TABLE = {
    "SALE": Mapped(Disposition.CONNECTED, "sale"),
    "BUSY": Mapped(Disposition.BUSY),
    "UNKAM": Mapped(Disposition.VOICEMAIL, None, True),
}


def mapper(raw: str) -> Mapped:
    return TABLE.get(raw, Mapped(Disposition.UNKNOWN))


FIELDS = {
    "call_id": "data.call.id",
    "disposition": "data.call.status",
    "ended_at": "data.call.ended",
    "started_at": "data.call.started",
    "agent_id": "data.agent.id",
    "phone": "data.call.to",
    "lead_external_key": "data.lead",
    "source_seq": "seq",
    "talk_s": "data.call.talk",
    "direction": "data.call.direction",
}


def decoder(**kw: object) -> EventDecoder:
    args: dict[str, object] = {
        "source": "feed1",
        "fields": FIELDS,
        "map_disposition": mapper,
        "event_types": ["call.ended"],
        "default_tz": "America/Chicago",
    }
    args.update(kw)
    return EventDecoder(**args)  # type: ignore[arg-type]


def event(**call: object) -> str:
    body = {
        "id": "evt-17",
        "seq": 17,
        "type": "call.ended",
        "data": {
            "call": {
                "id": "c-1",
                "status": "SALE",
                "started": "2025-03-14T10:01:52Z",
                "ended": "2025-03-14T10:02:20.512Z",
                "to": "+1 (512) 555-0199",
                "talk": "21",
                "direction": "outbound",
                **call,
            },
            "agent": {"id": "agent7"},
            "lead": "L-48213",
        },
    }
    return json.dumps(body)


def test_paths_index_objects_and_lists() -> None:
    """Dotted paths reach into nested objects and list items; absent steps give None."""
    body = {"legs": [{"number": "+1"}, {"number": "+2"}], "a": {"b": 0}}
    assert get_path(body, parse_path("legs.1.number")) == "+2"
    assert get_path(body, parse_path("a.b")) == 0
    assert get_path(body, parse_path("legs.5.number")) is None
    for dotted in ("a", "a.b", "a.b.c", "legs.0.number", "legs.x", "zz.b"):
        assert path_getter(parse_path(dotted))(body) == get_path(body, parse_path(dotted))
    assert path_getter(("a",))("not a dict") is None
    assert get_path(body, parse_path("a.b.c")) is None
    with pytest.raises(ValueError, match="dotted path"):
        parse_path("a..b")


def test_full_event_becomes_outcome() -> None:
    """A mapped event yields every configured field, the raw value and live=True for an agent."""
    d = decoder()
    ev = d.parse(event())
    assert ev.event_id == "evt-17" and ev.event_type == "call.ended" and d.wanted(ev)
    out = d.outcome(ev)
    assert out.source == "feed1" and out.call_id == "c-1"
    assert out.disposition is Disposition.CONNECTED and out.raw_disposition == "SALE"
    assert out.detail == "sale"  # the table's detail, when the event has none
    assert out.ended_at == datetime(2025, 3, 14, 10, 2, 20, 512000, tzinfo=UTC)
    assert out.phone == "+15125550199"
    assert out.lead is not None and out.lead.external_key == "L-48213"
    assert out.source_seq == 17 and out.talk_s == 21
    assert out.agent_id == "agent7" and out.live is True
    assert out.direction is Direction.OUTBOUND


def test_filter_skips_other_event_types() -> None:
    """Events whose type is not in the filter carry no outcome."""
    d = decoder()
    ev = d.parse(json.dumps({"id": 3, "type": "agent.login"}))
    assert not d.wanted(ev)
    assert ev.event_id == "3"  # numeric ids are kept as text for acks and resume


def test_unknown_raw_disposition_is_kept() -> None:
    """An unmapped raw value becomes unknown with the raw value kept, never dropped."""
    out = decoder().outcome(decoder().parse(event(status="WEIRD")))
    assert out.disposition is Disposition.UNKNOWN and out.raw_disposition == "WEIRD"


def test_ambiguous_from_table() -> None:
    """The disposition table's ambiguous flag reaches the outcome."""
    out = decoder().outcome(decoder().parse(event(status="UNKAM")))
    assert out.disposition is Disposition.VOICEMAIL and out.ambiguous


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON list, expected an object"),
    ],
)
def test_unparsable_frames_are_named(raw: str, reason: str) -> None:
    """Frames that are not one JSON object are refused with a reason."""
    with pytest.raises(DecodeError, match=reason):
        decoder().parse(raw)


def test_missing_required_field_names_path() -> None:
    """A missing call id is refused naming the field and where it was looked for."""
    body = json.loads(event())
    del body["data"]["call"]["id"]
    with pytest.raises(DecodeError, match=r"call_id \(at data\.call\.id\)"):
        decoder().outcome(decoder().parse(json.dumps(body)))


def test_bad_values_are_named() -> None:
    """A bad timestamp or phone is refused naming the field."""
    with pytest.raises(DecodeError, match="ended_at: not a timestamp"):
        decoder().outcome(decoder().parse(event(ended="yesterday")))
    with pytest.raises(DecodeError, match="phone"):
        decoder().outcome(decoder().parse(event(to="call me")))


@pytest.mark.parametrize(
    "value",
    [10**400, -(10**400), 1e308, float("inf"), "9" * 400],
    ids=["huge-int", "huge-negative-int", "huge-float", "inf", "huge-digit-text"],
)
def test_out_of_range_timestamps_are_named_not_raised(value: object) -> None:
    """A number no datetime can hold is refused naming the field, whatever its type: a
    huge JSON integer used to raise OverflowError, which stopped the adapter."""
    with pytest.raises(DecodeError, match=r"^ended_at: not a timestamp \(out of range\)"):
        decoder().outcome(decoder().parse(event(ended=value)))


def test_naive_timestamps_use_site_zone() -> None:
    """A timestamp without offset is read in the configured dialer time zone."""
    out = decoder().outcome(decoder().parse(event(ended="2025-03-14 10:02:20", started=None)))
    assert out.ended_at.utcoffset() == timedelta(hours=-5)  # CDT on 14 March 2025


def test_epoch_seconds_and_millis() -> None:
    """Epoch seconds and milliseconds both parse as UTC."""
    assert parse_timestamp(1710410540) == datetime(2024, 3, 14, 10, 2, 20, tzinfo=UTC)
    assert parse_timestamp(1710410540123).microsecond == 123000
    assert parse_timestamp("2025-03-14T10:02:11.512+0000").tzinfo == UTC


def test_epoch_timestamps_are_expressed_in_the_site_zone() -> None:
    """An epoch names the instant only: with a site zone it carries that zone's offset
    (the call's date is the site's), the instant unchanged."""
    chicago = ZoneInfo("America/Chicago")
    evening = parse_timestamp(1772418600, chicago)  # 2026-03-02 02:30 UTC
    assert evening == datetime(2026, 3, 2, 2, 30, tzinfo=UTC)
    assert evening.utcoffset() == timedelta(hours=-6) and evening.day == 1
    assert parse_timestamp(1772418600000, chicago) == evening


def test_default_fields_and_extra() -> None:
    """Without a mapping the normalized names are read at the top level; extra paths copy values."""
    d = EventDecoder(
        source="feed1",
        fields={"call_id": "call_id", "disposition": "disposition", "ended_at": "ended_at"},
        extra={"queue": "meta.queue", "tags": "meta.tags"},
        map_disposition=mapper,
        type_field=None,
    )
    raw = json.dumps(
        {
            "call_id": 991,
            "disposition": "BUSY",
            "ended_at": "2025-03-14T10:02:20Z",
            "meta": {"queue": "sales", "tags": ["a", "b"]},
        }
    )
    out = d.outcome(d.parse(raw))
    assert out.call_id == "991" and out.disposition is Disposition.BUSY and not out.live
    assert out.extra == {"queue": "sales", "tags": '["a","b"]'}


def test_unknown_mapping_field_refused() -> None:
    """A mapping naming a field CallOutcome does not have is a configuration error."""
    with pytest.raises(ValueError, match="colour"):
        EventDecoder(source="x", fields={**FIELDS, "colour": "c"}, map_disposition=mapper)


def test_fill_template() -> None:
    """Ack templates replace whole-string placeholders, keeping structure."""
    tpl = {"type": "ack", "id": "{id}", "all": "{ids}", "n": [1, "{id}"], "keep": "x{id}"}
    got = fill_template(tpl, {"id": "e1", "ids": ["e0", "e1"]})
    assert got == {"type": "ack", "id": "e1", "all": ["e0", "e1"], "n": [1, "e1"], "keep": "x{id}"}


@given(
    # Letters, digits, punctuation, symbols: no whitespace (stripped) or controls (refused).
    call_id=st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=40),
    disposition=st.sampled_from(sorted(d.value for d in Disposition)),
    ended=st.datetimes(
        min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
    ),
    seq=st.integers(min_value=0, max_value=2**62),
    agent=st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
)
def test_round_trip(
    call_id: str, disposition: str, ended: datetime, seq: int, agent: str | None
) -> None:
    """Whatever a dialer encodes under the mapped paths decodes back to the same values."""
    d = EventDecoder(
        source="feed1",
        fields={
            "call_id": "x.id",
            "disposition": "x.d",
            "ended_at": "x.t",
            "source_seq": "seq",
            "agent_id": "who.0",
        },
        map_disposition=lambda raw: Mapped(Disposition(raw)),
        type_field=None,
    )
    body = {"x": {"id": call_id, "d": disposition, "t": ended.isoformat()}, "seq": seq}
    if agent is not None:
        body["who"] = [agent]
    out = d.outcome(d.parse(json.dumps(body)))
    assert (out.call_id, out.disposition.value, out.ended_at, out.source_seq) == (
        call_id,
        disposition,
        ended,
        seq,
    )
    assert out.agent_id == agent and out.live is (agent is not None)
