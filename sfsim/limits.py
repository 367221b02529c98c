"""API-call accounting: the daily counter behind ``Sforce-Limit-Info`` and ``/limits``.

Reference §5: every counted request costs one call (a composite or a collections request is one
call in total); ``GET /services/data/`` costs nothing. Past the allocation every call is refused
with 403 REQUEST_LIMIT_EXCEEDED. Sim orgs behave like Developer/sandbox orgs: no "api-bursts"
above the cap. Bulk 2.0: each HTTP request counts as one call ([U] inferred from Bulk 1.0; the
stricter reading), and each 10,000-record internal batch also consumes DailyBulkApiBatches.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Final

__all__ = ["DEFAULT_API_LIMIT", "ApiUsage", "RollingCount"]

#: Enterprise Edition base allocation (§5.3).
DEFAULT_API_LIMIT: Final = 100_000
#: Bulk batches per rolling 24 hours, shared by Bulk 1.0 and 2.0 (§5.3).
BULK_BATCH_LIMIT: Final = 15_000


#: The allocation is a rolling 24 hours (§5.3), kept in hourly buckets.
WINDOW_S: Final = 24 * 3600.0
BUCKET_S: Final = 3600.0


class RollingCount:
    """A count over the last ``window_s`` seconds, in ``bucket_s`` buckets (O(1) per add)."""

    def __init__(
        self, clock: Callable[[], float], window_s: float = WINDOW_S, bucket_s: float = BUCKET_S
    ) -> None:
        self._clock = clock
        self._window = window_s
        self._bucket = bucket_s
        self._buckets: deque[list[float]] = deque()  # [bucket start, count]
        self._total = 0

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] + self._bucket <= now - self._window:
            self._total -= int(buckets.popleft()[1])

    def add(self, n: int = 1) -> None:
        now = self._clock()
        self._evict(now)
        start = now - now % self._bucket
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([start, n])
        self._total += n

    def value(self) -> int:
        self._evict(self._clock())
        return self._total

    def set(self, n: int) -> None:
        """Replace the count with ``n`` charged now (loading state, tests, fault injection)."""
        self._buckets.clear()
        self._total = 0
        if n:
            self.add(n)


class ApiUsage:
    """The org's API counter over a rolling 24 hours, per-kind counts and bulk batch usage.

    ``used`` and ``bulk_batches`` read the rolling totals; assigning them replaces the window's
    contents with that many calls charged now.
    """

    def __init__(
        self, limit: int = DEFAULT_API_LIMIT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError(f"api limit must be at least 1, got {limit}")
        self.limit = limit
        self._calls = RollingCount(clock)
        self._batches = RollingCount(clock)
        self.refused = 0
        self.by_kind: Counter[str] = Counter()
        self.bulk_batch_limit = BULK_BATCH_LIMIT

    @property
    def used(self) -> int:
        return self._calls.value()

    @used.setter
    def used(self, value: int) -> None:
        self._calls.set(value)

    @property
    def bulk_batches(self) -> int:
        return self._batches.value()

    @bulk_batches.setter
    def bulk_batches(self, value: int) -> None:
        self._batches.set(value)

    def try_count(self, kind: str) -> bool:
        """Charge one call of ``kind``; False (and nothing charged) when the limit is reached."""
        if self._calls.value() >= self.limit:
            self.refused += 1
            return False
        self._calls.add()
        self.by_kind[kind] += 1
        return True

    def exhaust(self) -> None:
        """Use up the whole allocation (fault injection); it frees up as the window rolls."""
        self._calls.add(max(self.limit - self._calls.value(), 0))

    def add_bulk_batches(self, n: int) -> None:
        """Record ``n`` Bulk internal batches (DailyBulkApiBatches)."""
        self._batches.add(n)

    @property
    def header(self) -> str:
        """The ``Sforce-Limit-Info`` header value (§5.1)."""
        return f"api-usage={self._calls.value()}/{self.limit}"

    def limits_body(self) -> dict[str, Any]:
        """The ``/limits`` resource (§5.2): ``{"Name": {"Max": n, "Remaining": n}}``."""
        remaining = max(self.limit - self.used, 0)
        bulk_remaining = max(self.bulk_batch_limit - self.bulk_batches, 0)

        def lim(mx: int, remaining: int | None = None) -> dict[str, int]:
            return {"Max": mx, "Remaining": mx if remaining is None else remaining}

        return {
            "ActiveScratchOrgs": lim(3),
            "AnalyticsExternalDataSizeMB": lim(40960),
            "ConcurrentAsyncGetReportInstances": lim(200),
            "ConcurrentEinsteinDataInsightsStoryCreation": lim(5),
            "ConcurrentSyncReportRuns": lim(20),
            "DailyAnalyticsDataflowJobExecutions": lim(60),
            "DailyApiRequests": lim(self.limit, remaining),
            "DailyAsyncApexExecutions": lim(250000),
            "DailyAsyncApexTests": lim(500),
            "DailyBulkApiBatches": lim(self.bulk_batch_limit, bulk_remaining),
            "DailyBulkV2QueryFileStorageMB": lim(976562),
            "DailyBulkV2QueryJobs": lim(10000),
            "DailyDeliveredPlatformEvents": lim(10000),
            "DailyDurableGenericStreamingApiEvents": lim(10000),
            "DailyDurableStreamingApiEvents": lim(10000),
            "DailyEinsteinDataInsightsStoryCreation": lim(1000),
            "DailyEinsteinDiscoveryPredictAPICalls": lim(50000),
            "DailyEinsteinDiscoveryPredictionsByCDC": lim(5000000),
            "DailyEinsteinDiscoveryStoryCreation": lim(100),
            "DailyFunctionsApiCallLimit": lim(235000),
            "DailyGenericStreamingApiEvents": lim(10000),
            "DailyScratchOrgs": lim(6),
            "DailyStandardVolumePlatformEvents": lim(10000),
            "DailyStreamingApiEvents": lim(10000),
            "DailyWorkflowEmails": lim(2000),
            "DataStorageMB": lim(5),
            "DurableStreamingApiConcurrentClients": lim(20),
            "FileStorageMB": lim(20),
            "HourlyAsyncReportRuns": lim(1200),
            "HourlyDashboardRefreshes": lim(200),
            "HourlyDashboardResults": lim(5000),
            "HourlyDashboardStatuses": lim(999999999),
            "HourlyLongTermIdMapping": lim(100000),
            "HourlyManagedContentPublicRequests": lim(50000),
            "HourlyODataCallout": lim(10000),
            "HourlyPublishedPlatformEvents": lim(50000),
            "HourlyPublishedStandardVolumePlatformEvents": lim(100000),
            "HourlyShortTermIdMapping": lim(100000),
            "HourlySyncReportRuns": lim(500),
            "HourlyTimeBasedWorkflow": lim(50),
            "MassEmail": lim(10),
            "MonthlyPlatformEventsUsageEntitlement": lim(0),
            "Package2VersionCreates": lim(6),
            "Package2VersionCreatesWithoutValidation": lim(500),
            "PermissionSets": lim(1500),
            "PrivateConnectOutboundCalloutHourlyLimitMB": lim(0),
            "SingleEmail": lim(15),
            "StreamingApiConcurrentClients": lim(20),
        }
