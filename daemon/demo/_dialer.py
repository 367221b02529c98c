"""The demo's synthetic dialer: a pure plan of calls, and the thin I/O that reports them.

:func:`plan_calls` decides everything (which Lead, which outcome, which channel,
re-sent duplicates and newer versions of the same call) from a seeded RNG, so the
plan is reproducible and unit-testable. :class:`Feed` paces the plan in real
time and reports each call over the channel the plan chose:

- ``ws``: a loopback websocket server the demo runs; the daemon's ``websocket``
  adapter connects to it as a client and acknowledges each event after its commit;
- ``webhook``: VICIdial-style GETs (Dispo Call URL for agent calls, No Agent
  Call URL for the rest) to the daemon's ``webhook`` adapter, with its token.

What the daemon acknowledged is recorded per delivery; the verifier expects
exactly those calls in the org.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import httpx

__all__ = [
    "MIX",
    "WEBHOOK_SOURCE",
    "WS_SOURCE",
    "DialerCall",
    "Feed",
    "lead_key",
    "plan_calls",
]

WS_SOURCE: Final = "demo-ws"
WEBHOOK_SOURCE: Final = "demo-vicidial"

Channel = Literal["ws", "webhook"]
Kind = Literal["new", "duplicate", "update"]


@dataclass(frozen=True)
class _Outcome:
    disposition: str
    weight: int
    statuses: tuple[str, ...]  # VICIdial statuses reporting it
    agent: bool  # an agent spoke to someone: Dispo Call URL, live


#: What an outbound campaign reports, roughly (no-answer, voicemail and busy dominate).
MIX: Final[tuple[_Outcome, ...]] = (
    _Outcome("no_answer", 28, ("N",), False),
    _Outcome("voicemail", 22, ("A", "AM"), False),
    _Outcome("busy", 12, ("B",), False),
    _Outcome("connected", 20, ("SALE", "NI", "XFER"), True),
    _Outcome("callback_requested", 7, ("CALLBK",), True),
    _Outcome("do_not_call", 5, ("DNC",), True),
    _Outcome("invalid_number", 3, ("DC",), False),
    _Outcome("abandoned", 3, ("DROP",), False),
)
_BY_NAME: Final = {o.disposition: o for o in MIX}
#: A newer version of a call re-dispositions it: the agent changed their mind.
_UPDATE_TO: Final = ("connected", "callback_requested")


def lead_key(index: int) -> str:
    """The seeded Lead's ``Dialer_Lead_Id__c``."""
    return f"DL{index:05d}"


@dataclass(frozen=True)
class DialerCall:
    """One report the dialer sends (``seq`` is its slot in the schedule)."""

    seq: int
    kind: Kind
    channel: Channel
    call_id: str
    lead: str
    disposition: str
    status: str
    ended_at: datetime
    agent_id: str | None = None
    callback_at: datetime | None = None

    @property
    def source(self) -> str:
        return WS_SOURCE if self.channel == "ws" else WEBHOOK_SOURCE

    @property
    def external_key(self) -> str:
        """The Task's ``Call_Id__c``."""
        return f"{self.source}:{self.call_id}"

    @property
    def live(self) -> bool:
        return self.agent_id is not None

    @property
    def delivery_id(self) -> str:
        """Unique per report (a duplicate carries its own id, as dialers' retries do)."""
        return f"evt-{self.seq}"

    def ws_event(self) -> dict[str, Any]:
        """The flat JSON event the websocket feed sends."""
        event: dict[str, Any] = {
            "id": self.delivery_id,
            "type": "call.ended",
            "call_id": self.call_id,
            "disposition": self.disposition,
            "started_at": (self.ended_at - timedelta(seconds=45)).isoformat(),
            "ended_at": self.ended_at.isoformat(),
            "duration_s": 45,
            "campaign": "demo",
            "lead_external_key": self.lead,
        }
        if self.agent_id is not None:
            event["agent_id"] = self.agent_id
        if self.callback_at is not None:
            event["callback_at"] = self.callback_at.isoformat()
        return event

    def vicidial_request(self, token: str) -> tuple[str, dict[str, str]]:
        """(``dispo`` | ``no-agent``, query) as VICIdial's URL templates send it."""
        query = {
            "token": token,
            "call_id": self.call_id,
            "lead_id": self.lead,
            "campaign": "DEMO",
            "epoch": str(int(self.ended_at.timestamp())),
            "talk_time": "45" if self.live else "0",
        }
        if self.agent_id is not None:
            query["dispo"] = self.status
            query["user"] = self.agent_id
        else:
            query["status"] = self.status
        if self.callback_at is not None:
            query["callback_datetime"] = self.callback_at.strftime("%Y-%m-%d %H:%M:%S")
        return ("dispo" if self.live else "no-agent"), query


def plan_calls(
    total: int,
    *,
    leads: int,
    rate: float,
    start: datetime,
    rng: random.Random,
    duplicate_every: int = 20,
    update_every: int = 15,
) -> list[DialerCall]:
    """``total`` reports at ``rate`` per second from ``start``, alternating channels.

    Slot ``n`` ends at ``start + n / rate``. Roughly one report in
    ``duplicate_every`` re-sends an earlier one unchanged and one in
    ``update_every`` is a newer version of an earlier call (same call id,
    later end, an agent's disposition). A Lead is never reused within two
    seconds of its previous report, so every Lead's outcomes have distinct
    whole-second end times (VICIdial's ``epoch`` resolution) and "newest"
    is never a tie.
    """
    if total < 0 or leads < 1 or rate <= 0:
        raise ValueError("total must be >= 0, leads >= 1 and rate > 0")
    gap = timedelta(seconds=2)
    last_use: dict[str, datetime] = {}
    names = [o.disposition for o in MIX]
    weights = [o.weight for o in MIX]
    calls: list[DialerCall] = []
    newest: dict[str, DialerCall] = {}  # external_key -> newest version so far
    for seq in range(total):
        ended = start + timedelta(seconds=seq / rate)
        roll = rng.random()
        if calls and roll < 1 / duplicate_every:
            original = rng.choice(calls)
            calls.append(_replace(original, seq=seq, kind="duplicate"))
            continue
        if calls and roll < 1 / duplicate_every + 1 / update_every:
            candidates = [
                c
                for c in newest.values()
                if c.disposition != "do_not_call" and ended - last_use[c.lead] >= gap
            ]
            if candidates:
                prior = rng.choice(candidates)
                disposition = rng.choice([d for d in _UPDATE_TO if d != prior.disposition])
                update = _call(
                    seq,
                    "update",
                    prior.channel,
                    prior.call_id,
                    prior.lead,
                    disposition,
                    ended,
                    rng,
                )
                calls.append(update)
                newest[update.external_key] = update
                last_use[update.lead] = ended
                continue
        lead = _free_lead(leads, ended, gap, last_use, rng)
        channel: Channel = "ws" if seq % 2 == 0 else "webhook"
        disposition = rng.choices(names, weights)[0]
        call = _call(seq, "new", channel, f"demo-{seq:06d}", lead, disposition, ended, rng)
        calls.append(call)
        newest[call.external_key] = call
        last_use[lead] = ended
    return calls


def _free_lead(
    leads: int, ended: datetime, gap: timedelta, last_use: dict[str, datetime], rng: random.Random
) -> str:
    for _ in range(50):
        key = lead_key(rng.randrange(leads))
        if key not in last_use or ended - last_use[key] >= gap:
            return key
    raise ValueError(f"{leads} Leads are too few for this rate: every one was used in the last 2 s")


def _call(
    seq: int,
    kind: Kind,
    channel: Channel,
    call_id: str,
    lead: str,
    disposition: str,
    ended: datetime,
    rng: random.Random,
) -> DialerCall:
    outcome = _BY_NAME[disposition]
    return DialerCall(
        seq=seq,
        kind=kind,
        channel=channel,
        call_id=call_id,
        lead=lead,
        disposition=disposition,
        status=rng.choice(outcome.statuses),
        ended_at=ended,
        agent_id=f"agent{rng.randrange(12):02d}" if outcome.agent else None,
        callback_at=(
            (ended + timedelta(days=1)).replace(microsecond=0)
            if disposition == "callback_requested"
            else None
        ),
    )


def _replace(call: DialerCall, *, seq: int, kind: Kind) -> DialerCall:
    return DialerCall(
        seq=seq,
        kind=kind,
        channel=call.channel,
        call_id=call.call_id,
        lead=call.lead,
        disposition=call.disposition,
        status=call.status,
        ended_at=call.ended_at,
        agent_id=call.agent_id,
        callback_at=call.callback_at,
    )


# --------------------------------------------------------------------------- I/O


@dataclass
class Feed:
    """Reports a plan in real time; records what the daemon acknowledged.

    ``ws_handler`` serves the daemon's websocket adapter (a reconnect gets every
    report not acknowledged yet, as a real dialer resends). Webhook reports are
    GETs to ``webhook_url`` (set once the daemon listens), retried with backoff
    on refusal (503 while the spool is full, connection errors).
    """

    plan: list[DialerCall]
    rate: float
    token: str
    webhook_url: str = ""
    sent: int = 0
    acked: set[str] = field(default_factory=set)  # delivery ids
    reported_at: dict[str, datetime] = field(default_factory=dict)  # delivery id -> wall clock
    failed: dict[str, str] = field(default_factory=dict)  # delivery id -> why
    ws_connected: asyncio.Event = field(default_factory=asyncio.Event)
    _ws_queue: asyncio.Queue[DialerCall | None] = field(default_factory=asyncio.Queue)
    _ws_sent: dict[str, DialerCall] = field(default_factory=dict)
    _ws_all_acked: asyncio.Event = field(default_factory=asyncio.Event)
    _ws_done_sending: bool = False
    clock: Callable[[], float] = time.monotonic

    @property
    def acked_count(self) -> int:
        return sum(1 for c in self.plan if c.delivery_id in self.acked)

    @property
    def acked_calls(self) -> list[DialerCall]:
        return [c for c in self.plan if c.delivery_id in self.acked]

    async def run(self) -> None:
        """Pace the plan; return once every report was acknowledged or given up on."""
        webhook_queue: asyncio.Queue[DialerCall | None] = asyncio.Queue()
        async with httpx.AsyncClient(timeout=10.0) as client, asyncio.TaskGroup() as tg:
            tg.create_task(self._webhook_sender(client, webhook_queue))
            start = self.clock()
            for call in self.plan:
                delay = start + call.seq / self.rate - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing to the schedule, not waiting for a state
                self.sent += 1
                self.reported_at[call.delivery_id] = datetime.now(UTC)
                if call.channel == "ws":
                    self._ws_queue.put_nowait(call)
                else:
                    webhook_queue.put_nowait(call)
            webhook_queue.put_nowait(None)
            self._ws_queue.put_nowait(None)
            await self._wait_ws_acks(within_s=30.0)

    async def _wait_ws_acks(self, within_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await self._ws_all_acked.wait()
        for call in self._ws_sent.values():
            if call.delivery_id not in self.acked:
                self.failed.setdefault(call.delivery_id, "websocket event never acknowledged")

    def _check_ws_acked(self) -> None:
        if self._ws_done_sending and all(i in self.acked for i in self._ws_sent):
            self._ws_all_acked.set()

    async def ws_handler(self, ws: Any) -> None:
        """One connection from the daemon's websocket adapter."""
        self.ws_connected.set()

        async def read_acks() -> None:
            async for message in ws:
                data = json.loads(message)
                if isinstance(data, dict) and data.get("type") == "ack":
                    self.acked.add(str(data.get("id")))
                    self._check_ws_acked()

        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(read_acks())
            # A reconnect: resend what was not acknowledged (at-least-once).
            for pending in list(self._ws_sent.values()):
                if pending.delivery_id not in self.acked:
                    await ws.send(json.dumps(pending.ws_event()))
            if not self._ws_sent:
                # One malformed event (no ended_at): the daemon quarantines it and goes on.
                bad = {"id": "evt-bad", "type": "call.ended", "call_id": "demo-bad"}
                await ws.send(json.dumps(bad))
            while not self._ws_done_sending:
                call = await self._ws_queue.get()
                if call is None:
                    self._ws_done_sending = True
                    self._check_ws_acked()
                    break
                self._ws_sent[call.delivery_id] = call
                await ws.send(json.dumps(call.ws_event()))
            await ws.wait_closed()
            reader.cancel()

    async def _webhook_sender(
        self, client: httpx.AsyncClient, queue: asyncio.Queue[DialerCall | None]
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            call = item
            kind, query = call.vicidial_request(self.token)
            why = await _get_with_retry(client, f"{self.webhook_url}/{kind}", query)
            if why is None:
                self.acked.add(call.delivery_id)
            else:
                self.failed[call.delivery_id] = why


async def _get_with_retry(
    client: httpx.AsyncClient, url: str, query: dict[str, str], *, attempts: int = 6
) -> str | None:
    """None when the webhook answered 2xx; otherwise why it was given up on."""
    why = "not sent"
    for attempt in range(attempts):
        try:
            response = await client.get(url, params=query)
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}"
        else:
            if response.is_success:
                return None
            if response.status_code < 500 and response.status_code != 429:
                return f"HTTP {response.status_code}: {response.text[:120]}"
            why = f"HTTP {response.status_code}"
        # Exponential backoff with full jitter, capped (the adapter says Retry-After).
        await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
    return why
