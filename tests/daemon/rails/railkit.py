"""Helpers shared by the rails tests (a uniquely named module: several test
directories have a conftest.py, so ``from conftest import`` would pick the wrong one)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.mapping import load_mapping
from daemon.rails import Rails
from daemon.salesforce import Backoff, QuotaView, SalesforceClient
from spool import CallOutcome, Spool

# Millisecond-scale timing for tests (STYLE habit 14): no patched sleeps.
FAST_RETRY = Backoff(initial=0.001, factor=2.0, cap=0.02, jitter=0.0)
FAST_POLL = Backoff(initial=0.005, factor=1.5, cap=0.05, jitter=0.0)
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
_seq = itertools.count(1)


def login_url(sim: Any) -> str:
    token_url: str = sim.info["token_url"]
    return token_url.removesuffix("/services/oauth2/token")


def make_client(sim: Any, **kw: Any) -> SalesforceClient:
    info = sim.info
    kw.setdefault("quota", QuotaView(reserve=0.0, max_share=1.0))
    return SalesforceClient(
        login_url=login_url(sim),
        auth="client_credentials",
        client_id=info["client_id"],
        client_secret=info["client_secret"],
        allow_http=True,
        **kw,
    )


def store(sim: Any) -> Any:
    return sim.org.store


def seed_leads(sim: Any, n: int, *, prefix: str = "L") -> list[str]:
    """Create n Leads in the sim (Dialer_Lead_Id__c = prefix + index); their Ids."""
    st = store(sim)
    return [
        st.insert(
            "Lead",
            {
                "LastName": f"Lead {i}",
                "Company": "Acme",
                "Dialer_Lead_Id__c": f"{prefix}{i}",
                "Phone": f"+1555{i:07d}",
            },
        )
        for i in range(n)
    ]


def outcome(lead: dict[str, str] | None = None, **kw: Any) -> CallOutcome:
    n = next(_seq)
    base: dict[str, Any] = {
        "source": "vici",
        "call_id": f"call-{n}",
        "disposition": "no_answer",
        "ended_at": T0 + timedelta(seconds=n),
        "duration_s": 30,
    }
    if lead is not None:
        base["lead"] = lead
    base.update(kw)
    return CallOutcome.model_validate(base)


def task_by_key(sim: Any, key: str) -> dict[str, Any] | None:
    st = store(sim)
    ids = st.find("Task", "Call_Id__c", key)
    row: dict[str, Any] | None = st.get("Task", ids[0]) if ids else None
    return row


def task_of(sim: Any, key: str) -> dict[str, Any]:
    """The Task with this external key (it must exist)."""
    row = task_by_key(sim, key)
    assert row is not None, f"no Task {key}"
    return row


def lead(sim: Any, lead_id: str) -> dict[str, Any]:
    row: dict[str, Any] | None = store(sim).get("Lead", lead_id)
    assert row is not None
    return row


def rails_for(spool: Spool, client: SalesforceClient, **kw: Any) -> Rails:
    """Rails with millisecond-scale timing over this spool and client."""
    kw.setdefault("mapping", load_mapping(None))
    kw.setdefault("retry_backoff", FAST_RETRY)
    kw.setdefault("bulk_poll", FAST_POLL)
    kw.setdefault("idle_poll_s", 0.005)
    return Rails(spool=spool, client=client, **kw)


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0) -> None:
    """Poll ``check`` until it is true (a deadline, not a fixed sleep)."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - the condition lives in another process
            await asyncio.sleep(0.005)
