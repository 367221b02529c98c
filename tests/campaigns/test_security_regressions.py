"""Regressions found by the security and fuzz campaigns (issue 7), each over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spool import Spool, open_spool
from tests.adapters.hooks import hook_table, serving


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    async with open_spool(tmp_path / "spool.db") as s:
        yield s


async def test_twilio_non_ascii_body_sha256_is_403_not_500(spool: Spool) -> None:
    """A ``bodySHA256`` query value with non-ASCII characters is a bad signature, not a crash.

    hmac.compare_digest raises TypeError on a str holding non-ASCII characters; the
    adapter answered 500 to anyone who sent ``?bodySHA256=%C3%A9``.
    """
    async with serving(spool, hook_table("twilio", path="/twilio")) as (_, client):
        r = await client.post(
            "/twilio?bodySHA256=%C3%A9",
            content=b'{"CallSid": "CA1"}',
            headers={"X-Twilio-Signature": "x", "Content-Type": "application/json"},
        )
        assert r.status_code == 403, r.text
    assert await spool.list_quarantine() == []
