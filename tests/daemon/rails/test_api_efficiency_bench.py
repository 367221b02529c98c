"""The API efficiency bench still runs end to end, with and without a Task key field (a
short CI-sized run of bench/api_efficiency.py)."""

from __future__ import annotations

import pytest

from bench.api_efficiency import run


@pytest.mark.parametrize("task_key", [True, False])
async def test_api_efficiency_bench_leaves_every_task_and_lead_right(task_key: bool) -> None:
    """3,000 outcomes over 600 Leads, 5% live: every Task present once, every Lead showing
    its newest outcome, nothing dead. With the key, within the target; without it, no Bulk
    job and about one collections call per 200 non-live outcomes."""
    result = await run(3_000, 600, 0.05, 7, task_key=task_key)
    assert result["all_tasks_present"] and result["leads_correct"]
    assert result["dead_letters"] == 0
    if task_key:
        assert result["meets_target"] is True
    else:
        assert result["bulk_jobs"] == 0 and result["meets_target"] is None
        others = result["outcomes"] - result["live"]
        assert result["api_calls_by_rail"]["collections"] <= others // 200 + 10
