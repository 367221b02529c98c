"""The rolling 24-hour API allocation (pure, with an injected clock)."""

from __future__ import annotations

from sfsim.limits import ApiUsage


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_calls_free_up_after_24_hours() -> None:
    """A capped org gets capacity back as its calls age out of the rolling 24 hours."""
    clock = _Clock()
    usage = ApiUsage(limit=3, clock=clock)
    assert all(usage.try_count("sobjects") for _ in range(2))
    clock.now += 5 * 3600
    assert usage.try_count("query")
    assert not usage.try_count("query") and usage.refused == 1
    assert usage.header == "api-usage=3/3"
    clock.now += 20 * 3600  # the first two calls are now over 24 hours old
    assert usage.used == 1
    assert usage.try_count("sobjects")
    assert usage.by_kind == {"sobjects": 3, "query": 1}


def test_exhaust_and_assignment() -> None:
    """exhaust() caps the org now; assigning used replaces the window's count."""
    clock = _Clock()
    usage = ApiUsage(limit=10, clock=clock)
    usage.try_count("x")
    usage.exhaust()
    assert usage.used == 10 and not usage.try_count("x")
    usage.used = 4
    assert usage.used == 4 and usage.limits_body()["DailyApiRequests"]["Remaining"] == 6
    usage.add_bulk_batches(3)
    assert usage.limits_body()["DailyBulkApiBatches"]["Remaining"] == 14997
    clock.now += 25 * 3600
    assert usage.used == 0 and usage.bulk_batches == 0
