"""Bad-input campaign (issue 7): hypothesis against every adapter of a running daemon.

One ``dispo-sync run`` (child process) with every adapter type, talking to
``dispo-sync sim``: the JSON, VICIdial and Twilio webhooks (requests over real HTTP,
correctly authenticated so the decoders are reached), a websocket feed and an
Asterisk ARI event stream (frames from servers in this process), and a CSV file the
``file`` adapter watches. Hypothesis generates malformed JSON, wrong types, huge
bodies, invalid UTF-8, missing ids, absurd timestamps and injection strings.

Checked per case: no 5xx; a 400/422 added a quarantine row, and for a single JSON
body the row holds the exact bytes sent; the websocket and ARI connections survive
(a sentinel event after every case is acknowledged / stored); the daemon stays up.
Checked per adapter: every quarantined input has a rejection log line with a reason.

Then the injection round trip: outcomes whose call id, notes and Lead keys carry CSV
specials (leading ``= + - @``, quotes, commas, CR/LF) and SOQL specials (quotes,
backslashes, ``%``/``_``, ``' OR ... '``) go through the real rails (live REST with
SOQL Lead lookups, and Bulk API CSV) into sfsim: each Task must hold exactly the
value sent, byte for byte, link exactly the Lead whose key equals the one sent (or
none), and no other Lead may change.

    .venv/bin/python -m bench.campaign_fuzz --cases 10000      # prints one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import hmac
import io
import itertools
import json
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from adapters._twilio import compute_signature
from adapters.config import VICIDIAL_PARAMS
from bench._campaign import (
    DaemonProcess,
    SimProcess,
    config_text,
    feed_adapter,
    load_average,
    read_spool,
    sim_process,
    start_daemon,
)
from spool import CallOutcome

__all__ = ["ADAPTERS", "FuzzStack", "main", "run_fuzz"]

T = TypeVar("T")

JSON_SECRET = "fuzz-json-secret"
VICI_TOKEN = "fuzz-vici-token"
TWILIO_TOKEN = "fuzz-twilio-token"
ARI_PASSWORD = "fuzz-ari-pass"
MAX_BODY = 65536
ADAPTERS = ("json", "vicidial", "twilio", "websocket", "ari", "file")
SOURCES = {
    "json": "hook",
    "vicidial": "vici",
    "twilio": "twil",
    "websocket": "feed",
    "ari": "pbx",
    "file": "cdr",
}
REJECT_EVENTS = {
    "json": "outcome_rejected",
    "vicidial": "outcome_rejected",
    "twilio": "outcome_rejected",
    "websocket": "ws_event_rejected",
    "ari": "ari_event_rejected",
    "file": "outcome_rejected",
}
CSV_COLUMNS = ("call_id", "disposition", "ended_at", "notes", "phone", "agent", "duration")
ENDED = "2026-11-24T12:00:00+00:00"

# --------------------------------------------------------------------------- strategies

INJECTION = st.sampled_from(
    [
        "=1+2",
        '=HYPERLINK("http://x","y")',
        "+1",
        "-1",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        "a,b",
        'a"b',
        '"',
        '""',
        "a\nb",
        "a\r\nb",
        "a\rb",
        "'",
        "\\",
        "\\'",
        "' OR Id != '",
        "x' OR Dialer_Lead_Id__c != '",
        "%",
        "_",
        "#N/A",
        "NULL",
        "null",
        "true",
        "é€😀",
        "\u202e",
        "\x00",
    ]
)
TEXT = st.one_of(
    st.text(max_size=60),
    INJECTION,
    st.builds(lambda a, b: a + b, INJECTION, st.text(max_size=20)),
    st.text(min_size=3000, max_size=4000),
)
ABSURD_TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00+00:00",
        "9999-12-31T23:59:59+00:00",
        "1970-01-01T00:00:00Z",
        "2026-13-45T25:61:61Z",
        "2026-11-24T12:00:00",
        "2026-11-24",
        "yesterday",
        "",
        "-1",
        "1e309",
        "NaN",
        "2026-11-24T12:00:00+99:00",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    ABSURD_TIMES,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
OUTCOME_KEYS = tuple(CallOutcome.model_fields)  # every field a JSON item may carry
FREE_TEXT = ("notes", "agent_id", "campaign", "detail", "raw_disposition")
LEADS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(TEXT, st.just("00Q000000000001AAA")),
            "external_key": TEXT,
            "phone": st.one_of(TEXT, st.just("+15125550100")),
        },
    ),
)
VALID = {
    "call_id": st.one_of(TEXT, st.just("c1")),
    "disposition": st.one_of(
        st.sampled_from(["voicemail", "busy", "connected", "SALE", "do_not_call"]), JSON_VALUES
    ),
    "ended_at": st.one_of(st.just(ENDED), ABSURD_TIMES, JSON_VALUES),
}


@st.composite
def outcome_like(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly-valid outcomes with a few fields wrong, missing or absurd."""
    out: dict[str, Any] = {}
    for key, strategy in VALID.items():
        if draw(st.integers(0, 9)) > 0:  # each required key missing one time in ten
            out[key] = draw(strategy)
    if draw(st.integers(0, 2)) == 0:  # a third stay valid but for injection-laden text
        for key in draw(st.lists(st.sampled_from(FREE_TEXT), max_size=4, unique=True)):
            out[key] = draw(TEXT.map(lambda t: t[:255]))
        return out
    for key in draw(st.lists(st.sampled_from(OUTCOME_KEYS), max_size=6, unique=True)):
        out[key] = draw(LEADS if key == "lead" else st.one_of(SCALARS, JSON_VALUES))
    return out


def _invalid_utf8(body: bytes, at: int) -> bytes:
    at = at % (len(body) + 1)
    return body[:at] + b"\xff\xfe\xc3" + body[at:]


JSON_BODIES = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    outcome_like().map(lambda v: json.dumps(v).encode()),
    st.lists(outcome_like(), min_size=1, max_size=14).map(lambda v: json.dumps(v).encode()),
    st.tuples(outcome_like(), st.integers(0, 10_000)).map(
        lambda t: _invalid_utf8(json.dumps(t[0]).encode(), t[1])
    ),
    outcome_like().map(lambda v: json.dumps(v).encode()[: max(1, len(json.dumps(v)) // 2)]),
    st.just(b"[" + b"{}," * 30000 + b"{}]"),  # past max_body_bytes: 413
)
# The VICIdial variables the adapter reads (its own list; the token is set by the
# campaign), plus one it does not know.
VICI_KEYS = st.sampled_from([*(k for k in VICIDIAL_PARAMS if k != "token"), "junk"])
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
QUERY_VALUES = st.one_of(
    TEXT.filter(lambda s: "\x00" not in s),
    ABSURD_TIMES,
    st.sampled_from(["SALE", "DROP", "NA", "completed", "busy", "no-answer", "5125550199"]),
    st.integers(-(2**40), 2**40).map(str),
)
# (not ApplicationReplaced: that one rightly makes the adapter reconnect)
ARI_TYPES = st.sampled_from(
    [
        "StasisStart",
        "StasisEnd",
        "ChannelCreated",
        "ChannelDestroyed",
        "ChannelStateChange",
        "ChannelVarset",
        "ChannelHangupRequest",
        "Dial",
        "Junk",
    ]
)


# A frame that is not an event at all: text, bytes, or JSON of any shape.
JUNK_FRAMES = st.one_of(st.text(max_size=200), st.binary(max_size=200), JSON_VALUES.map(json.dumps))


@st.composite
def ari_frame(draw: st.DrawFn) -> str | bytes:
    if draw(st.integers(0, 4)) < 3:
        return draw(JUNK_FRAMES)
    channel: Any = {
        "id": draw(st.one_of(TEXT, st.just("fz-1"))),
        "name": draw(st.one_of(TEXT, st.just("PJSIP/x-1"))),
        "state": draw(st.one_of(TEXT, st.sampled_from(["Up", "Down", "Ringing"]))),
        "caller": draw(st.one_of(JSON_VALUES, st.just({"number": "+15125550100"}))),
        "creationtime": draw(st.one_of(ABSURD_TIMES, st.just("2025-03-14T10:01:52.301+0000"))),
    }
    if draw(st.booleans()):
        channel = draw(JSON_VALUES)
    event: dict[str, Any] = {
        "type": draw(ARI_TYPES),
        "timestamp": draw(st.one_of(ABSURD_TIMES, st.just("2025-03-14T10:01:53.000+0000"))),
        "application": "dialer",
        "channel": channel,
    }
    for key in draw(st.lists(st.sampled_from(["variable", "value", "cause", "args", "peer"]))):
        event[key] = draw(JSON_VALUES)
    return json.dumps(event)


@st.composite
def ws_frame(draw: st.DrawFn, event_id: str) -> str | bytes:
    if draw(st.integers(0, 4)) < 3:
        return draw(JUNK_FRAMES)
    data = draw(outcome_like())
    if "disposition" in data:
        data["status"] = data.pop("disposition")
    event: dict[str, Any] = {"id": event_id, "type": "call.ended", "data": data}
    if draw(st.integers(0, 9)) == 0:
        event[draw(st.sampled_from(["id", "type", "data"]))] = draw(JSON_VALUES)
    return json.dumps(event)


CSV_ROW = st.lists(st.one_of(TEXT, ABSURD_TIMES, st.just("voicemail")), min_size=0, max_size=9)


# --------------------------------------------------------------------------- servers


class Pusher:
    """A websocket server end that sends what it is given and records what comes back."""

    def __init__(self) -> None:
        self.conn: ServerConnection | None = None
        self.connections = 0
        self.received: list[Any] = []
        self.changed = asyncio.Event()
        self.connected = asyncio.Event()

    def check(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/ari/channels"):
            return conn.respond(200, "[]")
        return None

    async def handler(self, conn: ServerConnection) -> None:
        self.connections += 1
        self.conn = conn
        self.connected.set()
        with contextlib.suppress(ConnectionClosed):
            async for message in conn:
                with contextlib.suppress(ValueError):
                    self.received.append(json.loads(message))
                self.changed.set()

    async def send(self, frame: str | bytes) -> None:
        await asyncio.wait_for(self.connected.wait(), 30)
        assert self.conn is not None
        await self.conn.send(frame)

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 20.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


class FuzzStack:
    """sfsim + the daemon + the two websocket servers, on an event loop in a thread.

    Hypothesis runs synchronously in the caller's thread and reaches the loop through
    :meth:`call`.
    """

    def __init__(self, tmp: Path, *, extra_adapters: list[dict[str, Any]] | None = None) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._exit = contextlib.AsyncExitStack()
        self.feed = Pusher()
        self.ari = Pusher()
        self.sim: SimProcess | None = None
        self.daemon: DaemonProcess | None = None
        self.spool = tmp / "spool.db"
        self.csv_path = tmp / "calls.csv"
        self.extra_adapters = extra_adapters or []

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> FuzzStack:
        self._thread.start()
        try:
            self.call(self._start(), timeout=120)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self._exit.aclose(), timeout=120)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
        self.loop.close()

    async def _serve(self, pusher: Pusher) -> int:
        server: Server = await self._exit.enter_async_context(
            # no keepalive pings: websockets draws their payload from the global `random`,
            # which hypothesis would see change under its strategies (a warning, an error in CI)
            serve(
                pusher.handler,
                "127.0.0.1",
                0,
                process_request=pusher.check,
                max_size=2**22,
                ping_interval=None,
            )
        )
        return int(server.sockets[0].getsockname()[1])

    async def _start(self) -> None:
        feed_port = await self._serve(self.feed)
        ari_port = await self._serve(self.ari)
        self.csv_path.write_text(",".join(CSV_COLUMNS) + "\n")
        self.sim = await self._exit.enter_async_context(sim_process())
        hook = {"type": "webhook", "listen": "127.0.0.1:0", "max_body_bytes": MAX_BODY}
        adapters: list[dict[str, Any]] = [
            {**hook, "preset": "json", "name": "hook", "path": "/hook", "secret": JSON_SECRET},
            {**hook, "preset": "vicidial", "name": "vici", "path": "/vici", "secret": VICI_TOKEN},
            {**hook, "preset": "twilio", "name": "twil", "path": "/twil", "secret": TWILIO_TOKEN},
            feed_adapter(
                feed_port,
                phone="data.phone",
                agent_id="data.agent_id",
                duration_s="data.duration_s",
            ),
            {
                "type": "ari",
                "name": "pbx",
                "url": f"http://127.0.0.1:{ari_port}",
                "app": "dialer",
                "username": "dispo",
                "secret": ARI_PASSWORD,
                "reconnect_max_s": 0.2,
            },
            {
                "type": "file",
                "name": "cdr",
                "path": str(self.csv_path),
                "format": "csv",
                "watch_interval_s": 0.1,
                "tz": "UTC",
                "mapping": {
                    "call_id": "call_id",
                    "disposition": "disposition",
                    "ended_at": "ended_at",
                    "notes": "notes",
                    "phone": "phone",
                    "agent_id": "agent",
                    "duration_s": "duration",
                },
            },
            *self.extra_adapters,
        ]
        cfg = config_text(
            self.sim.info,
            self.spool,
            adapters,
            spool={"synchronous": "NORMAL", "lease_s": 10},
            rails={"bulk_interval_s": 1, "bulk_min_records": 50},
        )
        self.daemon = await start_daemon(self.tmp, cfg)
        self._exit.push_async_callback(self.daemon.aclose)
        await asyncio.wait_for(self.feed.connected.wait(), 30)
        await asyncio.wait_for(self.ari.connected.wait(), 30)

    # ------------------------------------------------------------------ reads

    def quarantined(self, source: str) -> int:
        sql = "SELECT count(*) FROM quarantine WHERE source = ?"
        return int(read_spool(self.spool, sql, (source,))[0][0])

    def last_quarantined(self, source: str) -> tuple[bytes, str] | None:
        sql = "SELECT raw, reason FROM quarantine WHERE source = ? ORDER BY id DESC LIMIT 1"
        rows = read_spool(self.spool, sql, (source,))
        return (bytes(rows[0][0]), str(rows[0][1])) if rows else None

    def stored(self, source: str, call_id: str) -> bool:
        sql = "SELECT 1 FROM outcomes WHERE source = ? AND call_id = ?"
        return bool(read_spool(self.spool, sql, (source, call_id)))

    def wait_stored(self, source: str, call_id: str, within_s: float = 20.0) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.stored(source, call_id):
                return True
            time.sleep(0.01)
        return False

    @property
    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.running


# --------------------------------------------------------------------------- per adapter


def _hmac(body: bytes) -> str:
    return "sha256=" + hmac.new(JSON_SECRET.encode(), body, hashlib.sha256).hexdigest()


class Tally:
    def __init__(self) -> None:
        self.cases = 0
        self.statuses: Counter[str] = Counter()
        self.problems: list[str] = []

    def problem(self, what: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(what[:500])


def _hyp(cases: int) -> settings:
    return settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def _run_given(test: Callable[[], None], tally: Tally) -> None:
    """Run a @given test; a failing case (after shrinking) is reported, not raised."""
    try:
        test()
    except Exception as exc:
        tally.problem("".join(traceback.format_exception_only(exc)).strip())


def fuzz_json(stack: FuzzStack, cases: int, tally: Tally, client: httpx.Client) -> None:
    assert stack.daemon is not None
    url = f"http://127.0.0.1:{stack.daemon.ports['hook']}/hook"

    @_hyp(cases)
    @given(JSON_BODIES)
    def case(body: bytes) -> None:
        tally.cases += 1
        before = stack.quarantined("hook")
        r = client.post(url, content=body, headers={"X-Signature": _hmac(body)})
        tally.statuses[str(r.status_code)] += 1
        assert r.status_code < 500, f"{r.status_code} {r.text[:200]} for {body[:200]!r}"
        if r.status_code in (400, 422):
            assert stack.quarantined("hook") > before, f"{r.status_code} not quarantined"
            last = stack.last_quarantined("hook")
            is_batch = body.lstrip()[:1] == b"["
            if r.status_code == 400 and not is_batch:
                assert last is not None and last[0] == body, "quarantined raw differs from body"
        else:
            assert r.status_code in (200, 413), f"{r.status_code} {r.text[:200]}"

    _run_given(case, tally)


def fuzz_vicidial(stack: FuzzStack, cases: int, tally: Tally, client: httpx.Client) -> None:
    assert stack.daemon is not None
    base = f"http://127.0.0.1:{stack.daemon.ports['vici']}/vici"

    @_hyp(cases)
    @given(
        st.dictionaries(VICI_KEYS, QUERY_VALUES, max_size=10),
        st.sampled_from(["dispo", "no-agent"]),
        st.booleans(),
    )
    def case(query: dict[str, str], kind: str, post: bool) -> None:
        tally.cases += 1
        before = stack.quarantined("vici")
        params = {**query, "token": VICI_TOKEN}
        if post:
            r = client.post(f"{base}/{kind}?token={VICI_TOKEN}", data=query)
        else:
            r = client.get(f"{base}/{kind}", params=params)
        tally.statuses[str(r.status_code)] += 1
        assert r.status_code < 500, f"{r.status_code} {r.text[:200]} for {query!r}"
        if r.status_code in (400, 422):
            assert stack.quarantined("vici") > before, "rejection not quarantined"
            last = stack.last_quarantined("vici")
            assert last is not None and VICI_TOKEN.encode() not in last[0], "token quarantined"
        else:
            assert r.status_code == 200, f"{r.status_code} {r.text[:200]}"

    _run_given(case, tally)


def fuzz_twilio(stack: FuzzStack, cases: int, tally: Tally, client: httpx.Client) -> None:
    assert stack.daemon is not None
    url = f"http://127.0.0.1:{stack.daemon.ports['twil']}/twil"

    base = st.fixed_dictionaries(
        {
            "CallSid": st.one_of(st.just("CA0123"), QUERY_VALUES),
            "CallStatus": st.one_of(
                st.sampled_from(["completed", "busy", "no-answer", "failed", "canceled"]),
                QUERY_VALUES,
            ),
        }
    )

    @_hyp(cases)
    @given(base, st.dictionaries(TWILIO_KEYS, QUERY_VALUES, max_size=10))
    def case(start: dict[str, str], more: dict[str, str]) -> None:
        form = {**start, **more}
        tally.cases += 1
        before = stack.quarantined("twil")
        signature = compute_signature(url, {k: [v] for k, v in form.items()}, TWILIO_TOKEN)
        r = client.post(url, data=form, headers={"X-Twilio-Signature": signature})
        tally.statuses[str(r.status_code)] += 1
        assert r.status_code < 500, f"{r.status_code} {r.text[:200]} for {form!r}"
        if r.status_code in (400, 422):
            assert stack.quarantined("twil") > before, "rejection not quarantined"
        else:
            assert r.status_code == 200, f"{r.status_code} {r.text[:200]} for {form!r}"

    _run_given(case, tally)


def fuzz_websocket(stack: FuzzStack, cases: int, tally: Tally) -> None:
    feed = stack.feed
    counter = itertools.count(1)

    def acked(event_id: str) -> Callable[[], bool]:
        return lambda: any(
            isinstance(m, dict) and m.get("id") == event_id for m in feed.received[-50:]
        )

    @_hyp(cases)
    @given(st.data())
    def case(data: st.DataObject) -> None:
        tally.cases += 1
        n = next(counter)
        frame = data.draw(ws_frame(f"f{n}"))
        connections = feed.connections
        stack.call(feed.send(frame))
        sentinel = json.dumps(
            {
                "id": f"s{n}",
                "type": "call.ended",
                "data": {"call_id": f"sentinel-{n}", "status": "busy", "ended_at": ENDED},
            }
        )
        stack.call(feed.send(sentinel))
        stack.call(feed.wait_for(acked(f"s{n}")))
        tally.statuses["sentinel_acked"] += 1
        assert feed.connections == connections, f"the feed reconnected after {frame[:200]!r}"

    _run_given(case, tally)


def fuzz_ari(stack: FuzzStack, cases: int, tally: Tally) -> None:
    from tests.adapters.ari_frames import originate_call

    ari = stack.ari
    counter = itertools.count(1)

    @_hyp(cases)
    @given(st.lists(ari_frame(), min_size=1, max_size=3))
    def case(frames: list[str | bytes]) -> None:
        tally.cases += 1
        n = next(counter)
        connections = ari.connections
        for frame in frames:
            stack.call(ari.send(frame))
        if n % 20 == 0 or n == cases:
            cid = f"ari-sentinel-{n}"
            for event in originate_call(cid, disposition="SALE"):
                stack.call(ari.send(json.dumps(event)))
            assert stack.wait_stored("pbx", cid), "sentinel call not stored"
            tally.statuses["sentinel_stored"] += 1
        assert ari.connections == connections, f"ARI reconnected after {frames!r:.300}"

    _run_given(case, tally)


def fuzz_file(stack: FuzzStack, cases: int, tally: Tally) -> None:
    counter = itertools.count(1)

    @_hyp(cases)
    @given(st.one_of(CSV_ROW, st.binary(max_size=120)))
    def case(row: list[str] | bytes) -> None:
        tally.cases += 1
        n = next(counter)
        if isinstance(row, bytes):
            # one line of junk; no quote (an unclosed quote would rightly swallow the
            # rows after it into one field: CSV has no way to tell)
            data = row.replace(b"\n", b" ").replace(b"\r", b" ").replace(b'"', b"'") + b"\n"
        else:
            buf = io.StringIO()
            csv.writer(buf).writerow(row)
            data = buf.getvalue().encode("utf-8", "surrogatepass")
        with stack.csv_path.open("ab") as f:
            f.write(data)
        if n % 50 == 0 or n == cases:
            cid = f"file-sentinel-{n}"
            with stack.csv_path.open("a", newline="") as f:
                csv.writer(f).writerow([cid, "busy", ENDED, "", "", "", ""])
            assert stack.wait_stored("cdr", cid), "sentinel row not stored"
            tally.statuses["sentinel_stored"] += 1

    _run_given(case, tally)


# --------------------------------------------------------------------------- injection

SEEDED_KEYS = ["K1", "K'1", "K\\1", "x", "%", 'K"1', "=K1"]
KEY_CHARS = st.sampled_from([*list("'\\%_ =\"ORxk1,\n\r-@+;()"), " OR ", "' OR '1'='1"])
INJECTION_KEY = st.one_of(
    st.sampled_from(SEEDED_KEYS),
    st.lists(KEY_CHARS, min_size=1, max_size=8).map("".join),
)
NOTES = st.one_of(
    INJECTION,
    st.lists(st.one_of(INJECTION, st.text(max_size=8)), min_size=1, max_size=6).map("".join),
).filter(lambda s: "\x00" not in s and s.strip() != "")
CALL_ID = st.lists(
    st.sampled_from([*list("=+-@\"',;\\%_ab1"), "' OR '", "é", "😀"]), min_size=1, max_size=12
).map("".join)


async def _seed_leads(sim: SimProcess) -> dict[str, str]:
    """One Lead per seeded key (plus untouched bystanders); key -> Lead Id."""
    records = [
        {"LastName": f"Seeded {i}", "Company": "Fuzz", "Dialer_Lead_Id__c": key}
        for i, key in enumerate(SEEDED_KEYS)
    ]
    records.append({"LastName": "Bystander", "Company": "Fuzz", "Dialer_Lead_Id__c": "by"})
    ids = await sim.seed("Lead", records)
    return dict(zip([*SEEDED_KEYS, "by"], ids, strict=True))


def _accepted(body: dict[str, Any]) -> CallOutcome:
    """The outcome as the daemon accepted it (the same model: whitespace stripped)."""
    return CallOutcome.model_validate({**body, "source": "hook"})


def injection_round_trip(stack: FuzzStack, cases: int, client: httpx.Client) -> dict[str, Any]:
    """Outcomes with injection strings through the rails; the org must hold them exactly."""
    assert stack.sim is not None and stack.daemon is not None
    sim = stack.sim
    leads = stack.call(_seed_leads(sim))
    url = f"http://127.0.0.1:{stack.daemon.ports['hook']}/hook"
    sent: dict[str, dict[str, Any]] = {}
    refused: Counter[str] = Counter()
    t0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    counter = itertools.count(1)

    @_hyp(cases)
    @given(CALL_ID, NOTES, INJECTION_KEY, st.booleans())
    def case(call_id: str, notes: str, key: str, live: bool) -> None:
        n = next(counter)
        call_id = f"{call_id}#{n}"  # unique per case
        body = {
            "call_id": call_id,
            "disposition": "voicemail",
            "ended_at": (t0 + timedelta(seconds=n)).isoformat(),
            "notes": notes,
            "live": live,
            "lead": {"external_key": key},
        }
        raw = json.dumps(body).encode()
        r = client.post(url, content=raw, headers={"X-Signature": _hmac(raw)})
        if r.status_code == 200:
            sent[call_id] = body
        else:
            refused[f"{r.status_code}: {r.text[:80]}"] += 1

    case()
    deadline = time.monotonic() + 180

    def unsent() -> int:
        sql = "SELECT count(*) FROM outcomes WHERE source = 'hook' AND state IN (0, 1)"
        return int(read_spool(stack.spool, sql)[0][0])

    while unsent() and time.monotonic() < deadline:
        time.sleep(0.2)
    tasks = stack.call(sim.records("Task"))
    by_key: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        by_key.setdefault(str(t.get("Call_Id__c")), []).append(t)
    dead = read_spool(
        stack.spool,
        "SELECT call_id, error_code, error_message FROM outcomes"
        " WHERE source = 'hook' AND state = 3",
    )
    dead_ids = {str(r[0]) for r in dead}
    mismatches: list[dict[str, Any]] = []
    case_links: list[str] = []
    folded = {k.casefold(): v for k, v in leads.items()}
    wrong_who: list[dict[str, Any]] = []
    missing: list[str] = []
    for call_id, body in sent.items():
        found = by_key.get(f"hook:{call_id}", [])
        if len(found) != 1:
            if call_id not in dead_ids:
                missing.append(call_id)
            continue
        task = found[0]
        # CallOutcome strips surrounding whitespace at ingest (str_strip_whitespace): the
        # accepted value is the model's; the mapping appends the raw disposition.
        accepted = _accepted(body)
        want_desc = f"{accepted.notes}\nDialer disposition: voicemail"
        if task.get("CallObject") != accepted.call_id or task.get("Description") != want_desc:
            mismatches.append(
                {
                    "sent_call_id": call_id,
                    "stored_call_object": task.get("CallObject"),
                    "sent_notes": body["notes"],
                    "stored_description": task.get("Description"),
                }
            )
        assert accepted.lead is not None and accepted.lead.external_key is not None
        key = accepted.lead.external_key
        expect_who = leads.get(key)
        who = task.get("WhoId")
        if who is not None and expect_who is None and who == folded.get(key.casefold()):
            # External ids match case-insensitively (as on a real org), on every rail:
            # counted apart, not an injection
            case_links.append(key)
            continue
        if (who or None) != expect_who and not (
            who is not None and expect_who is not None and who[:15] == expect_who[:15]
        ):
            wrong_who.append(
                {"key": body["lead"]["external_key"], "who": who, "expect": expect_who}
            )
    lead_rows = stack.call(sim.records("Lead"))
    used = {
        _accepted(b).lead.external_key.casefold()  # type: ignore[union-attr]
        for b in sent.values()
    }
    touched_wrongly = [
        str(lead.get("Dialer_Lead_Id__c"))
        for lead in lead_rows
        if str(lead.get("Dialer_Lead_Id__c")).casefold() not in used
        and lead.get("Last_Call_Outcome__c")
    ]
    live_count = sum(1 for b in sent.values() if b["live"])
    return {
        "cases": cases,
        "sent": len(sent),
        "sent_live": live_count,
        "sent_bulk_or_collections": len(sent) - live_count,
        "refused": dict(refused.most_common(5)),
        "tasks": len(tasks),
        "value_mismatches": len(mismatches),
        "mismatch_sample": mismatches[:5],
        "wrong_lead_links": len(wrong_who),
        "case_insensitive_lead_links": len(case_links),
        "case_insensitive_sample": sorted(set(case_links))[:5],
        "wrong_lead_sample": wrong_who[:5],
        "leads_changed_without_reference": touched_wrongly,
        "missing": len(missing),
        "missing_sample": missing[:5],
        "dead_letters": Counter(str(r[1]) for r in dead),
        "dead_sample": [list(r) for r in dead[:3]],
        "unsent_at_end": unsent(),
    }


# --------------------------------------------------------------------------- run


def _rejection_logs(stack: FuzzStack) -> dict[str, dict[str, int]]:
    assert stack.daemon is not None
    out: dict[str, dict[str, int]] = {}
    lines = stack.daemon.lines()
    for adapter, source in SOURCES.items():
        event = REJECT_EVENTS[adapter]
        mine = [e for e in lines if e.get("event") == event and e.get("adapter") == source]
        out[adapter] = {
            "log_lines": len(mine),
            "without_reason": sum(1 for e in mine if not e.get("reason")),
        }
    return out


def run_fuzz(
    tmp: Path,
    cases: int = 200,
    *,
    only: list[str] | None = None,
    injection_cases: int | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    out: dict[str, Any] = {
        "campaign": "fuzz",
        "load_average": load_average(),
        "cases_per_adapter": cases,
    }
    chosen = [a for a in ADAPTERS if not only or a in only]
    with FuzzStack(tmp) as stack, httpx.Client(timeout=30) as client:
        for adapter in chosen:
            tally = Tally()
            t = time.monotonic()
            if not stack.alive:
                tally.problem("the daemon was not running any more")
            elif adapter == "json":
                fuzz_json(stack, cases, tally, client)
            elif adapter == "vicidial":
                fuzz_vicidial(stack, cases, tally, client)
            elif adapter == "twilio":
                fuzz_twilio(stack, cases, tally, client)
            elif adapter == "websocket":
                fuzz_websocket(stack, cases, tally)
            elif adapter == "ari":
                fuzz_ari(stack, cases, tally)
            else:
                fuzz_file(stack, cases, tally)
            out[adapter] = {
                "cases": tally.cases,
                "seconds": round(time.monotonic() - t, 1),
                "statuses": dict(sorted(tally.statuses.items())),
                "quarantined": stack.quarantined(SOURCES[adapter]),
                "problems": tally.problems,
                "daemon_alive": stack.alive,
            }
        logs = _rejection_logs(stack)
        for adapter in chosen:
            r = out[adapter]
            r.update(logs[adapter])
            r["ok"] = (
                not r["problems"]
                and r["daemon_alive"]
                and r["log_lines"] == r["quarantined"]
                and r["without_reason"] == 0
            )
        if (injection_cases is None or injection_cases > 0) and not stack.alive:
            out["injection"] = {"ok": False, "error": "the daemon was not running any more"}
        elif injection_cases is None or injection_cases > 0:
            inj = injection_round_trip(stack, injection_cases or cases, client)
            inj["ok"] = (
                inj["value_mismatches"] == 0
                and inj["wrong_lead_links"] == 0
                and not inj["leads_changed_without_reference"]
                and inj["missing"] == 0
                and inj["sent"] > 0
                and inj["unsent_at_end"] == 0
            )
            out["injection"] = inj
        assert stack.daemon is not None
        errors = Counter(
            str(e.get("event"))
            for e in stack.daemon.lines()
            if e.get("level") in ("error", "critical") or "exception" in e
        )
        out["error_log_events"] = dict(errors)
        out["daemon_alive_at_end"] = stack.alive
    results = [v for v in out.values() if isinstance(v, dict) and "ok" in v]
    out["failed"] = sorted(
        k for k, v in out.items() if isinstance(v, dict) and v.get("ok") is False
    )
    out["ok"] = all(v["ok"] for v in results) and out["daemon_alive_at_end"]
    out["seconds"] = round(time.monotonic() - started, 1)
    out["load_average_end"] = load_average()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10_000, help="hypothesis cases per adapter")
    p.add_argument("--injection-cases", type=int, default=None, help="default: --cases")
    p.add_argument("--only", nargs="*", choices=ADAPTERS)
    p.add_argument("--keep", metavar="DIR", help="work in DIR (kept: logs, spool)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="campaign-fuzz-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run_fuzz(work, args.cases, only=args.only, injection_cases=args.injection_cases)
    print(json.dumps(result, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
