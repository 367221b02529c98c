"""The Bulk CPU floor bench still runs end to end (a CI-sized run of bench/bulk_floor.py)."""

from __future__ import annotations

from bench.bulk_floor import measure


def test_bulk_floor_bench_adds_up_the_cheapest_form_of_each_step() -> None:
    """Every step is measured (each state change touched every record, or the bench
    raises), and the floor is the sum of the cheapest forms; the ceiling follows from it."""
    result = measure(5_000)
    steps = [
        *result["state_by_range_no_count_trigger"].values(),
        min(result["csv_python_us"], result["csv_sql_us"]),
        result["result_parse_us"],
        result["http_us"],
    ]
    assert all(us > 0 for us in steps)
    assert result["floor_us"] == round(sum(steps), 2)
    assert result["ceiling_records_per_client_cpu_s"] == round(1e6 / result["floor_us"])
    columns = result["floor_us_columns"] - result["csv_sql_columns_us"]
    assert round(columns, 2) == round(sum(steps) - steps[2], 2)
