"""ARI channel lifecycle -> one finished call per call (pure; no sockets, no clock).

Which channel is "the call"
---------------------------
A dialer's call is the attempt to reach one party. ARI shows it as one or more
channels; we group them and emit exactly one outcome per group, keyed by the
group's *root* channel id (``call_id``):

* A channel that is not yet known starts its own group (it is a root). For an
  ARI originate that is the channel the app created (``POST /channels`` with your
  own ``channelId``: that id becomes the ``call_id``); for an inbound call it is
  the caller's channel that entered ``Stasis()``.
* A ``Dial`` event with a ``caller`` makes the ``peer`` (the dialed leg) a *leg*
  of the caller's group: the bridged legs of one call are one outcome, never two.
  The leg's dial status, answer state and hangup cause describe the far end, so
  they win over the root's for the disposition.
* The ``;2`` half of a Local channel pair whose ``;1`` half is a root (the
  common "originate ``Local/<number>@dialer`` into Stasis" pattern) is that call's
  companion: it runs the dialplan (Dial, AMD) and contributes variables, but its
  own answer state and cause say nothing about the far end, so they are ignored.
* The group ends when its root's ``ChannelDestroyed`` arrives; legs still alive
  then are closed with it (their late events are ignored, not taken for new calls).
* Channels whose name matches ``ignore_channels`` (by default the helper channels
  ARI creates: Snoop, Announcer, Recorder, UnicastRTP, AudioSocket, media
  WebSocket) never start a group. With ``require_var`` set, a group that never saw
  that variable (e.g. ``LEAD_ID``) ends silently: it was not a dialer call (an
  agent's login channel, say).

Memory is bounded: at most ``max_calls`` open groups (the least recently active
one is dropped, with a log line, when a new one would exceed it) and a group idle
for ``ttl_s`` is expired the same way. Finished channel ids are remembered in a
bounded LRU so a late or repeated event cannot resurrect them.

Ordering: ARI ``timestamp`` (``%FT%T.%q%z``) of the root's ``ChannelDestroyed``,
in microseconds, is the outcome's ``source_seq``.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from adapters._ari_map import DIALSTATUS_PROGRESS, CallFacts

__all__ = [
    "DEFAULT_IGNORE_CHANNELS",
    "AriEventError",
    "AriTracker",
    "DroppedCall",
    "FinishedCall",
    "TrackerConfig",
    "parse_ari_time",
]

DEFAULT_IGNORE_CHANNELS: Final = r"^(Snoop|Announcer|Recorder|UnicastRTP|AudioSocket|WebSocket)/"
_MAX_LEGS: Final = 32
_LOCAL: Final = re.compile(r"^(Local/.+);([12])$")
_AMD_STATUSES: Final = frozenset({"MACHINE", "HUMAN", "NOTSURE", "HANGUP"})
# Events that only carry a channel snapshot worth reading.
_SNAPSHOT_EVENTS: Final = frozenset(
    {
        "ChannelCreated",
        "ChannelStateChange",
        "ChannelConnectedLine",
        "ChannelCallerId",
        "ChannelDialplan",
        "ChannelEnteredBridge",
        "ChannelLeftBridge",
        "StasisEnd",
        "ChannelHold",
        "ChannelUnhold",
        "ChannelTalkingStarted",
        "ChannelTalkingFinished",
        "ChannelDtmfReceived",
    }
)


class AriEventError(ValueError):
    """An ARI event we cannot use; ``reason`` names what was wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_ari_time(value: Any) -> datetime:
    """ARI's ``%FT%T.%q%z`` (``2025-03-14T10:02:11.512+0000``) -> aware datetime."""
    if not isinstance(value, str):
        raise AriEventError(f"timestamp is not a string: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise AriEventError(f"timestamp is not ISO 8601: {value!r}") from None
    if parsed.tzinfo is None:
        raise AriEventError(f"timestamp has no UTC offset: {value!r}")
    return parsed


def _micros(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Which channel variables mean what (names as the dialplan sets them)."""

    disposition_var: str = "DISPOSITION"
    lead_var: str = "LEAD_ID"
    agent_var: str = "AGENT_ID"
    campaign_var: str = "CAMPAIGN"
    callback_var: str = "CALLBACK_AT"
    phone_var: str = "PHONE"
    notes_var: str = "NOTES"
    # Names of the StasisStart args, in order (Stasis(app,${AMDSTATUS},${AMDCAUSE})).
    stasis_args: tuple[str, ...] = ("AMDSTATUS", "AMDCAUSE")
    extra_vars: tuple[str, ...] = ()
    ignore_channels: str = DEFAULT_IGNORE_CHANNELS
    require_var: str | None = None
    max_calls: int = 10_000
    ttl_s: float = 4 * 3600.0

    def wanted_vars(self) -> frozenset[str]:
        names = {
            self.disposition_var,
            self.lead_var,
            self.agent_var,
            self.campaign_var,
            self.callback_var,
            self.phone_var,
            self.notes_var,
            "AMDSTATUS",
            "AMDCAUSE",
            *self.extra_vars,
            *self.stasis_args,
        }
        if self.require_var:
            names.add(self.require_var)
        return frozenset(n.upper() for n in names if n)


@dataclass(slots=True)
class _Call:
    call_id: str
    root_name: str = ""
    created_at: datetime | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    last_touch: float = 0.0
    vars: dict[str, str] = field(default_factory=dict)
    legs: set[str] = field(default_factory=set)
    # The ";2" half of a Local channel pair whose ";1" is the root: it runs the
    # dialplan (Dial, AMD) for the call, and contributes variables only.
    companions: set[str] = field(default_factory=set)
    local_prefix: str | None = None
    root_up_at: datetime | None = None
    leg_up_at: datetime | None = None
    dialstatus: str | None = None
    dialstring: str | None = None
    dial_answered: bool = False
    leg_cause: int | None = None
    leg_tech_cause: int | None = None
    leg_cause_txt: str | None = None
    soft_hangup_before_up: bool = False
    caller_number: str | None = None
    connected_number: str | None = None


@dataclass(frozen=True, slots=True)
class FinishedCall:
    """A call whose root channel was destroyed: everything needed for an outcome."""

    call_id: str
    channel_name: str
    facts: CallFacts
    vars: Mapping[str, str]
    created_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime
    source_seq: int
    caller_number: str | None
    connected_number: str | None
    dialed: str | None
    raw_event: Mapping[str, Any]
    # Ended while we were disconnected: no ChannelDestroyed was seen, the end time
    # is the last event we saw, and the outcome is flagged ambiguous.
    partial: bool = False


@dataclass(frozen=True, slots=True)
class DroppedCall:
    """A group that ended without an outcome (expired, evicted, or not a dialer call)."""

    call_id: str
    reason: str  # "ttl" | "capacity" | "not_a_call" | "lost" (ended while disconnected)
    channel_name: str


class AriTracker:
    """Feed ARI events in; get :class:`FinishedCall` and :class:`DroppedCall` out."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._wanted = self.config.wanted_vars()
        pattern = self.config.ignore_channels
        self._ignore = re.compile(pattern) if pattern else None
        self._calls: OrderedDict[str, _Call] = OrderedDict()  # LRU by activity
        self._owner: dict[str, str] = {}  # channel id -> root call id
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._closed_max = max(1024, 2 * self.config.max_calls)
        self._local_roots: dict[str, str] = {}  # "Local/x@ctx-0001" -> root call id
        self.dropped: list[DroppedCall] = []

    # ------------------------------------------------------------------ state

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    def _close_ids(self, ids: Iterable[str]) -> None:
        for cid in ids:
            self._owner.pop(cid, None)
            self._closed[cid] = None
            self._closed.move_to_end(cid)
        while len(self._closed) > self._closed_max:
            self._closed.popitem(last=False)

    def _drop(self, call: _Call, reason: str) -> DroppedCall:
        self._close_call(call)
        return DroppedCall(call.call_id, reason, call.root_name)

    def _close_call(self, call: _Call) -> None:
        self._calls.pop(call.call_id, None)
        self._close_ids([call.call_id, *call.legs, *call.companions])
        if call.local_prefix is not None:
            self._local_roots.pop(call.local_prefix, None)

    def _touch(self, call: _Call, now: float) -> None:
        call.last_touch = now
        self._calls.move_to_end(call.call_id)

    def _call_for(self, channel: Mapping[str, Any], now: float, *, create: bool) -> _Call | None:
        cid = channel.get("id")
        if not isinstance(cid, str) or not cid:
            raise AriEventError("channel.id is missing or not a string")
        if cid in self._closed:
            return None
        root = self._owner.get(cid)
        if root is not None:
            call = self._calls.get(root)
            if call is not None:
                self._touch(call, now)
            return call
        if not create:
            return None
        name = channel.get("name")
        name = name if isinstance(name, str) else ""
        if self._ignore is not None and self._ignore.search(name):
            return None
        local = _LOCAL.match(name)
        if local is not None and local.group(2) == "2":
            owner = self._calls.get(self._local_roots.get(local.group(1), ""))
            if owner is not None:
                owner.companions.add(cid)
                self._owner[cid] = owner.call_id
                self._touch(owner, now)
                return owner
        call = _Call(call_id=cid, root_name=name, last_touch=now)
        self._calls[cid] = call
        self._owner[cid] = cid
        if local is not None and local.group(2) == "1":
            call.local_prefix = local.group(1)
            self._local_roots[call.local_prefix] = cid
        if len(self._calls) > self.config.max_calls:
            oldest = next(iter(self._calls.values()))
            self.dropped.append(self._drop(oldest, "capacity"))
        return call

    # ------------------------------------------------------------------ events

    def feed(self, event: Mapping[str, Any], now: float) -> FinishedCall | DroppedCall | None:
        """Apply one event. ``now`` is a monotonic clock reading (for the TTL).

        Returns the finished call when this event ended one, a ``DroppedCall`` when
        the group ended without being a dialer call, else None.
        Raises :class:`AriEventError` naming what was wrong with a malformed event.
        """
        etype = event.get("type")
        if not isinstance(etype, str):
            raise AriEventError("type is missing or not a string")
        if etype == "ChannelVarset":
            self._varset(event, now)
            return None
        if etype == "Dial":
            self._dial(event, now)
            return None
        if etype == "ChannelDestroyed":
            return self._destroyed(event, now)
        if etype == "ChannelHangupRequest":
            self._hangup_request(event, now)
            return None
        if etype == "StasisStart":
            channel = self._channel(event)
            call = self._call_for(channel, now, create=True)
            if call is not None:
                self._snapshot(call, channel, event)
                self._stasis_args(call, event.get("args"))
            return None
        if etype in _SNAPSHOT_EVENTS:
            snap = event.get("channel")
            if isinstance(snap, Mapping):
                found = self._call_for(snap, now, create=etype != "StasisEnd")
                if found is not None:
                    self._snapshot(found, snap, event)
        return None

    def _stasis_args(self, call: _Call, args: Any) -> None:
        """``Stasis(app, ${AMDSTATUS}, ${AMDCAUSE})``: positional args named by config.

        A variable already set by ``ChannelVarset`` wins; an AMDSTATUS arg that is not
        an AMD result (the app passes other args) is ignored, and so is its AMDCAUSE.
        """
        if not isinstance(args, list):
            return
        amd_ok = True
        for name, value in zip(self.config.stasis_args, args, strict=False):
            key = name.lstrip("_").upper()
            if not key or not isinstance(value, str) or not value.strip():
                continue
            if key == "AMDSTATUS":
                value = value.strip().upper()
                amd_ok = value in _AMD_STATUSES
                if not amd_ok:
                    continue
            if key == "AMDCAUSE" and not amd_ok:
                continue
            if key in self._wanted and key not in call.vars:
                call.vars[key] = value[:32000]

    @staticmethod
    def _channel(event: Mapping[str, Any], key: str = "channel") -> Mapping[str, Any]:
        channel = event.get(key)
        if not isinstance(channel, Mapping):
            raise AriEventError(f"{event.get('type')}: {key} is missing or not an object")
        return channel

    @staticmethod
    def _event_time(event: Mapping[str, Any]) -> datetime | None:
        ts = event.get("timestamp")
        return None if ts is None else parse_ari_time(ts)

    def _snapshot(self, call: _Call, channel: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        cid = channel.get("id")
        is_root = cid == call.call_id
        ts = self._event_time(event)
        if cid in call.companions:
            chanvars = channel.get("channelvars")
            if isinstance(chanvars, Mapping):
                for name, value in chanvars.items():
                    self._set_var(call, str(name), value)
            return
        if call.first_seen is None:
            call.first_seen = ts
        if ts is not None and (call.last_seen is None or ts > call.last_seen):
            call.last_seen = ts
        if channel.get("state") == "Up" and ts is not None:
            if is_root and call.root_up_at is None:
                call.root_up_at = ts
            elif not is_root and call.leg_up_at is None:
                call.leg_up_at = ts
        if is_root:
            created = channel.get("creationtime")
            if call.created_at is None and isinstance(created, str):
                # A display-only field: when unparsable the event time is enough.
                with contextlib.suppress(AriEventError):
                    call.created_at = parse_ari_time(created)
            name = channel.get("name")
            if isinstance(name, str) and name:
                call.root_name = name
            caller = channel.get("caller")
            if isinstance(caller, Mapping) and caller.get("number"):
                call.caller_number = str(caller["number"])
            connected = channel.get("connected")
            if isinstance(connected, Mapping) and connected.get("number"):
                call.connected_number = str(connected["number"])
        chanvars = channel.get("channelvars")
        if isinstance(chanvars, Mapping):
            for name, value in chanvars.items():
                self._set_var(call, str(name), value)

    def _set_var(self, call: _Call, name: str, value: Any) -> None:
        key = name.lstrip("_").upper()  # "__LEAD_ID" is inherited LEAD_ID
        if key not in self._wanted:
            return
        text = "" if value is None else str(value)
        if text:
            call.vars[key] = text[:32000]
        else:
            call.vars.pop(key, None)

    def _varset(self, event: Mapping[str, Any], now: float) -> None:
        channel = event.get("channel")
        if not isinstance(channel, Mapping):
            return None  # a global variable: not about a call
        variable = event.get("variable")
        if not isinstance(variable, str) or not variable:
            raise AriEventError("ChannelVarset: variable is missing or not a string")
        call = self._call_for(channel, now, create=True)
        if call is not None:
            self._snapshot(call, channel, event)
            self._set_var(call, variable, event.get("value"))
        return None

    def _dial(self, event: Mapping[str, Any], now: float) -> None:
        peer = self._channel(event, "peer")
        peer_id = peer.get("id")
        if not isinstance(peer_id, str) or not peer_id:
            raise AriEventError("Dial: peer.id is missing or not a string")
        caller = event.get("caller")
        call: _Call | None
        if isinstance(caller, Mapping):
            call = self._call_for(caller, now, create=True)
            if call is None:
                return None
            if self._owner.get(peer_id) == peer_id and peer_id != call.call_id:
                # With subscribeAll the dialed channel's own events (ChannelCreated)
                # come before the Dial that names its caller: it is a leg after all.
                self._merge_leg(call, self._calls.pop(peer_id))
            elif (
                peer_id not in self._owner
                and peer_id not in self._closed
                and len(call.legs) < _MAX_LEGS
            ):
                call.legs.add(peer_id)
                self._owner[peer_id] = call.call_id
            self._snapshot(call, caller, event)
        else:
            # Originate / ARI dial: the peer is the channel we created.
            call = self._call_for(peer, now, create=True)
            if call is None:
                return None
        if self._owner.get(peer_id) == call.call_id:
            self._snapshot(call, peer, event)
        status = event.get("dialstatus")
        if isinstance(status, str) and status.upper() not in DIALSTATUS_PROGRESS:
            status = status.upper()
            if status == "ANSWER":
                call.dial_answered = True
            # Several legs (a forked Dial): an answer anywhere is the result.
            if not (call.dial_answered and status != "ANSWER"):
                call.dialstatus = status
        dialstring = event.get("dialstring")
        if isinstance(dialstring, str) and dialstring:
            call.dialstring = dialstring
        return None

    def _merge_leg(self, call: _Call, leg: _Call) -> None:
        """Fold a channel first taken for a call of its own into ``call`` as a leg."""
        for cid in (leg.call_id, *leg.legs, *leg.companions):
            call.legs.add(cid)
            self._owner[cid] = call.call_id
        for key, value in leg.vars.items():
            call.vars.setdefault(key, value)
        if call.leg_up_at is None:
            call.leg_up_at = leg.root_up_at or leg.leg_up_at
        if leg.local_prefix is not None:
            self._local_roots.pop(leg.local_prefix, None)

    def _hangup_request(self, event: Mapping[str, Any], now: float) -> None:
        channel = self._channel(event)
        call = self._call_for(channel, now, create=False)
        if call is None:
            return
        self._snapshot(call, channel, event)
        if channel.get("id") in call.companions:
            return
        is_root = channel.get("id") == call.call_id
        answered = call.root_up_at if is_root else call.leg_up_at
        # soft=true comes from ast_softhangup(): a local hangup (our app, the
        # dialplan, a timeout). Its `cause` is an AST_SOFTHANGUP_* bit flag, not
        # Q.850 (reference section 1.1), so only the fact is kept.
        if event.get("soft") is True and answered is None and channel.get("state") != "Up":
            call.soft_hangup_before_up = True

    def _destroyed(self, event: Mapping[str, Any], now: float) -> FinishedCall | DroppedCall | None:
        channel = self._channel(event)
        cause = event.get("cause")
        if isinstance(cause, bool) or not isinstance(cause, int):
            raise AriEventError(f"ChannelDestroyed: cause is missing or not an integer: {cause!r}")
        ts = self._event_time(event)
        if ts is None:
            raise AriEventError("ChannelDestroyed: timestamp is missing")
        call = self._call_for(channel, now, create=True)
        if call is None:
            cid = channel.get("id")
            if isinstance(cid, str):
                self._close_ids([cid])
            return None
        self._snapshot(call, channel, event)
        tech = event.get("tech_cause")
        tech_cause = tech if isinstance(tech, int) and not isinstance(tech, bool) else None
        cause_txt = event.get("cause_txt") if isinstance(event.get("cause_txt"), str) else None
        cid = channel["id"]
        if cid in call.companions:
            call.companions.discard(cid)
            self._close_ids([cid])
            return None
        if cid != call.call_id:
            # A leg ended: remember its cause (the far end's answer), keep the call open.
            call.leg_cause, call.leg_tech_cause, call.leg_cause_txt = cause, tech_cause, cause_txt
            call.legs.discard(cid)
            self._close_ids([cid])
            return None

        self._close_call(call)
        req = self.config.require_var
        if req and req.lstrip("_").upper() not in call.vars:
            return DroppedCall(call.call_id, "not_a_call", call.root_name)
        return self._finish(call, ts, event)

    def _finish(
        self, call: _Call, ts: datetime, event: Mapping[str, Any], *, partial: bool = False
    ) -> FinishedCall:
        has_leg = call.leg_cause is not None or call.leg_up_at is not None or call.dial_answered
        cause: int | None = None
        tech_cause: int | None = None
        cause_txt: str | None = None
        if not partial:
            cause = event.get("cause")
            tech = event.get("tech_cause")
            tech_cause = tech if isinstance(tech, int) and not isinstance(tech, bool) else None
            txt = event.get("cause_txt")
            cause_txt = txt if isinstance(txt, str) else None
        final_cause, final_tech, final_txt = cause, tech_cause, cause_txt
        if call.leg_cause is not None:
            final_cause, final_tech = call.leg_cause, call.leg_tech_cause
            final_txt = call.leg_cause_txt
        answered_at = call.leg_up_at if has_leg else call.root_up_at
        if has_leg and answered_at is None and call.dial_answered:
            answered_at = call.root_up_at
        facts = CallFacts(
            disposition_var=call.vars.get(self.config.disposition_var.upper()),
            amd_status=call.vars.get("AMDSTATUS"),
            amd_cause=call.vars.get("AMDCAUSE"),
            dialstatus=call.dialstatus,
            cause=final_cause,
            cause_txt=final_txt,
            tech_cause=final_tech,
            ever_up=answered_at is not None or call.dial_answered,
            cancelled_by_us=call.soft_hangup_before_up,
        )
        return FinishedCall(
            call_id=call.call_id,
            channel_name=call.root_name,
            facts=facts,
            vars=dict(call.vars),
            created_at=call.created_at or call.first_seen,
            answered_at=answered_at,
            ended_at=ts,
            source_seq=_micros(ts),
            caller_number=call.caller_number,
            connected_number=call.connected_number,
            dialed=_dialed_number(call.dialstring),
            raw_event=event,
            partial=partial,
        )

    def reconcile(self, alive: set[str]) -> list[FinishedCall | DroppedCall]:
        """After a reconnect: close the calls whose root channel no longer exists.

        ARI does not replay what happened while we were away (reference section 1.1),
        so a call that ended then never gets its ChannelDestroyed. When it already
        carries a decisive fact (the agent's disposition or the AMD result) it is
        emitted, flagged partial; otherwise it is dropped (the caller logs it).
        """
        out: list[FinishedCall | DroppedCall] = []
        for call in [c for c in self._calls.values() if c.call_id not in alive]:
            decisive = self.config.disposition_var.upper() in call.vars or "AMDSTATUS" in call.vars
            req = self.config.require_var
            if req and req.lstrip("_").upper() not in call.vars:
                decisive = False
            if decisive and call.last_seen is not None:
                self._close_call(call)
                out.append(self._finish(call, call.last_seen, {}, partial=True))
            else:
                out.append(self._drop(call, "lost"))
        return out

    def expire(self, now: float) -> list[DroppedCall]:
        """Drop groups idle for longer than ``ttl_s`` (channels that never ended)."""
        out = self.dropped
        self.dropped = []
        limit = now - self.config.ttl_s
        while self._calls:
            oldest = next(iter(self._calls.values()))
            if oldest.last_touch > limit:
                break
            out.append(self._drop(oldest, "ttl"))
        return out


def _dialed_number(dialstring: str | None) -> str | None:
    """``PJSIP/+15125550199@carrier`` or ``carrier/+15125550199`` -> ``+15125550199``."""
    if not dialstring:
        return None
    target = dialstring.split("&", 1)[0].split(",", 1)[0]
    target = target.rsplit("/", 1)[-1]
    target = target.split("@", 1)[0]
    return target or None
