"""Backoff generator and API quota view."""

from __future__ import annotations

from itertools import islice

import pytest

from daemon.salesforce.backoff import Backoff, backoff
from daemon.salesforce.limits import (
    ApiUsage,
    QuotaState,
    QuotaView,
    parse_limit_info,
    usage_from_limits,
)


def test_backoff_grows_geometrically_to_the_cap() -> None:
    """Without jitter the delays double up to the cap and stay there."""
    assert list(islice(backoff(1, 2, 10, jitter=0), 6)) == [1, 2, 4, 8, 10, 10]


def test_backoff_jitter_stays_within_bounds_and_never_exceeds_cap() -> None:
    """Jittered delays stay within ±jitter of nominal and below the cap."""
    lows = list(islice(backoff(1, 2, 10, jitter=0.5, rng=lambda: 0.0), 5))
    highs = list(islice(backoff(1, 2, 10, jitter=0.5, rng=lambda: 1.0), 5))
    assert lows == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert highs == [1.5, 3.0, 6.0, 10, 10]


def test_backoff_refuses_nonsense() -> None:
    """A cap below the first delay is a programming error, said clearly."""
    with pytest.raises(ValueError, match="initial"):
        next(backoff(5, 2, 1))


def test_backoff_delay_for_attempt_is_capped() -> None:
    """Backoff.delay(attempt) grows with the attempt count and respects the cap."""
    policy = Backoff(initial=1, factor=2, cap=30, jitter=0)
    assert [policy.delay(a) for a in (1, 2, 3, 10, 1000)] == [1, 2, 4, 30, 30]


def test_limit_info_header_variants_parse() -> None:
    """Sforce-Limit-Info with bursts and per-app usage parses; garbage gives None."""
    assert parse_limit_info("api-usage=18/5000") == ApiUsage(18, 5000)
    usage = parse_limit_info("api-usage=10018/100000; per-app-api-usage=17/250(appName=sample)")
    assert usage is not None and usage.remaining == 89982
    assert usage.per_app == (("sample", 17, 250),)
    assert parse_limit_info("per-app-api-usage=17/250(appName=x)") is None
    assert parse_limit_info(None) is None


def test_limits_body_gives_usage() -> None:
    """/limits DailyApiRequests Max/Remaining becomes used/max."""
    assert usage_from_limits({"DailyApiRequests": {"Max": 5000, "Remaining": 4937}}) == ApiUsage(
        63, 5000
    )
    assert usage_from_limits({}) is None


def test_quota_state_moves_ok_low_exhausted_and_recovers() -> None:
    """Headroom under the reserve is LOW, none is EXHAUSTED, a fresh reading recovers."""
    now = [0.0]
    q = QuotaView(reserve=0.1, max_share=1.0, clock=lambda: now[0])
    assert q.state() is QuotaState.OK
    q.observe_header("api-usage=100/1000", sent_at=q.now())
    assert q.state() is QuotaState.OK
    now[0] += 1
    q.observe_header("api-usage=950/1000", sent_at=q.now())
    assert q.state() is QuotaState.LOW
    now[0] += 1
    q.limit_exceeded()
    assert q.state() is QuotaState.EXHAUSTED
    now[0] += 1
    q.observe(ApiUsage(10, 1000), sent_at=q.now())
    assert q.state() is QuotaState.OK


def test_a_reading_sent_before_the_limit_hit_does_not_clear_it() -> None:
    """An answer to a request sent before REQUEST_LIMIT_EXCEEDED, arriving after it with
    room left, neither clears the hit nor replaces the reading; a request sent after the
    hit (the periodic /limits read) clears it."""
    now = [100.0]
    q = QuotaView(reserve=0.1, max_share=1.0, clock=lambda: now[0])
    q.observe_header("api-usage=100/1000", sent_at=q.now())
    early = q.now()  # a request goes out
    now[0] += 1
    q.limit_exceeded()  # another request's answer
    now[0] += 1
    q.observe_header("api-usage=200/1000", sent_at=early)  # the early one's, late
    assert q.state() is QuotaState.EXHAUSTED
    assert q.usage == ApiUsage(1000, 1000)
    # Sent at the same instant as the hit: not known to be after it.
    hit = q.limit_hit_at
    assert hit is not None
    q.observe(ApiUsage(10, 1000), sent_at=hit)
    assert q.state() is QuotaState.EXHAUSTED
    later = q.now()  # /limits, sent after the hit
    now[0] += 1
    q.observe(ApiUsage(300, 1000), sent_at=later)
    assert q.state() is QuotaState.OK
    assert q.usage == ApiUsage(300, 1000)


def test_an_older_reading_does_not_replace_a_newer_one() -> None:
    """Answers arriving out of order: the reading from the request sent last stands; the
    same request's header and /limits body (one send time) both apply, the last one wins."""
    now = [0.0]
    q = QuotaView(reserve=0.1, max_share=1.0, clock=lambda: now[0])
    first = q.now()
    now[0] += 1
    second = q.now()
    now[0] += 1
    q.observe_header("api-usage=950/1000", sent_at=second)
    q.observe_header("api-usage=100/1000", sent_at=first)
    assert q.usage == ApiUsage(950, 1000)
    assert q.state() is QuotaState.LOW
    q.observe(ApiUsage(960, 1000), sent_at=second)
    assert q.usage == ApiUsage(960, 1000)


def test_quota_share_counts_our_own_calls() -> None:
    """Our own calls in 24 h never exceed max_share of the daily allocation."""
    now = [0.0]
    q = QuotaView(reserve=0.0, max_share=0.01, clock=lambda: now[0])
    q.observe(ApiUsage(0, 1000), sent_at=q.now())
    for _ in range(9):
        q.count_call("bulk")
    assert q.state() is QuotaState.OK
    q.count_call("live")
    assert q.state() is QuotaState.EXHAUSTED
    assert q.calls_by_rail == {"bulk": 9, "live": 1}
    now[0] += 24 * 3600 + 60
    assert q.state() is QuotaState.OK
