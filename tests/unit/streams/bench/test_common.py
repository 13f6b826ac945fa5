"""What every bench section shares: statistics, rows and their table, timing, config, events.

No timing is asserted anywhere: the figures depend on the machine.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streams.bench.common import (
    BenchConfig,
    Row,
    format_number,
    format_table,
    paired_rates,
    percentile,
    ratio,
    throughput_from_samples,
    timed_rate,
)


def test_percentile_interpolates_like_numpy() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 99) == pytest.approx(float(np.percentile(values, 99)))
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_ratio_refuses_missing_zero_and_nan_baselines() -> None:
    assert ratio(6.0, 3.0) == 2.0
    assert ratio(6.0, None) is None
    assert ratio(6.0, 0.0) is None
    assert ratio(float("nan"), 3.0) is None
    assert ratio(1.0, float("inf")) is None


def test_row_json_has_ratio_and_no_nan() -> None:
    row = Row("stream", "events/s", 10.0, "ev/s", "base", 4.0)
    assert row.ratio == 2.5
    assert row.to_json()["ratio"] == 2.5
    empty = Row("latency", "p99", float("nan"), "ms").to_json()
    assert empty["value"] is None and empty["ratio"] is None


def test_format_number_scales_precision() -> None:
    assert format_number(12345.6) == "12,346"
    assert format_number(12.34) == "12.3"
    assert format_number(1.234) == "1.23"
    assert format_number(None) == "n/a"
    assert format_number(float("nan")) == "n/a"


def test_format_table_aligns_columns() -> None:
    rows = [
        Row("stream", "events/s, worker", 8463.2, "ev/s", "table+send", 3456.0),
        Row("latency", "p50", 17.5, "ms"),
        Row("state", "bytes/user", 2095, "B", "pickle", 3301, note="x"),
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["section", "metric", "value", "unit", "baseline", "ratio", "note"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + len(rows)
    assert "table+send 3,456" in lines[2] and lines[2].endswith("2.45x")
    assert lines[4].endswith("0.63x  x")  # the note is the last column
    assert lines[3].rstrip().endswith("ms")  # no baseline: no ratio column text
    # value column is right-aligned: every value ends at the same position
    value_end = lines[0].index("value") + len("value")
    assert lines[2][:value_end].endswith("8,463") and lines[3][:value_end].endswith("17.5")


def test_throughput_window_starts_at_first_progress() -> None:
    samples = [(0.0, 0), (1.0, 0), (2.0, 100), (3.0, 600), (4.0, 1100)]
    assert throughput_from_samples(samples) == (1000, 2.0)


def test_throughput_when_all_progress_shows_in_the_last_sample() -> None:
    assert throughput_from_samples([(0.0, 0), (0.5, 0), (1.0, 50)]) == (50, 0.5)
    assert throughput_from_samples([(1.0, 50)]) == (50, 0.0)
    assert throughput_from_samples([(1.0, 0)]) == (0, 0.0)
    with pytest.raises(ValueError):
        throughput_from_samples([])


def test_timed_rate_warms_up_then_counts_units() -> None:
    calls: list[int] = []

    def step() -> int:
        calls.append(1)
        return 4

    assert timed_rate(step, 0.0) > 0
    assert len(calls) == 2  # one warm-up, one measured


def test_paired_rates_alternate_and_take_medians() -> None:
    order: list[str] = []
    a_values = iter([1.0, 3.0, 2.0])
    b_values = iter([10.0, 30.0, 20.0])

    def first() -> float:
        order.append("a")
        return next(a_values)

    def second() -> float:
        order.append("b")
        return next(b_values)

    assert paired_rates(first, second, 3) == (2.0, 20.0)
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert paired_rates(lambda: 5.0, None, 2) == (5.0, None)


def test_config_quick_is_smaller_and_overridable() -> None:
    quick, full = BenchConfig.for_mode(True), BenchConfig.for_mode(False)
    assert quick.events < full.events
    assert quick.latency_rates == (200.0,)
    assert 1_000_000 in full.rank_sizes and 1_000_000 not in quick.rank_sizes
    assert quick.batch_sizes == full.batch_sizes == (1, 32, 128)
    custom = BenchConfig.for_mode(True, events=123, sections=["rank"])
    assert custom.events == 123 and custom.sections == ("rank",)
    assert quick.latency_events() == int(200 * quick.latency_seconds)


def test_a_comment_share_turns_every_nth_event_into_a_comment_with_its_item_text() -> None:
    from streams.bench.common import with_comments
    from streams.contract import EventRecord

    events = [EventRecord(f"e{n}", f"u{n % 3}", f"i{n % 4}", "click", float(n)) for n in range(20)]
    texts = {f"i{n}": f"text of i{n}" for n in range(4)}
    mixed = with_comments(events, texts, 0.1)
    comments = [n for n, e in enumerate(mixed) if e.event_type == "comment"]
    assert comments == [9, 19]
    assert all(mixed[n].text == texts[events[n].item_id] for n in comments)
    assert [e.event_id for e in mixed] == [e.event_id for e in events]  # same events, in order
    assert with_comments(events, texts, 0.0) == events
