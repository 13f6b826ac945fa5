"""The pure parts of ``interest-stream bench``: statistics, table, config, baseline apps.

No timing is asserted anywhere: the figures depend on the machine.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from streams.bench.baseline import (
    BaselineCounter,
    baseline_specs,
    create_baseline_app,
    output_topic,
)
from streams.bench.main import (
    BenchConfig,
    BenchError,
    Latency,
    Row,
    bench_command,
    cycling,
    format_number,
    format_table,
    full_ring_states,
    latency_rows,
    paired_rates,
    percentile,
    plain_topk,
    processed,
    random_unit_vectors,
    ratio,
    read_memory_kib,
    settings_env,
    stage_settings,
    state_section,
    throughput_from_samples,
    timed_rate,
    window_start,
)
from streams.settings import Settings


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


def test_processed_counts_applied_duplicates_and_dead_letters() -> None:
    assert processed({"events_applied": 5, "duplicates": 2, "dead_letters": 1}) == 8
    assert processed({"events_applied": 3}) == 3


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


def test_cycling_wraps_around_the_texts() -> None:
    seen: list[list[str]] = []
    step = cycling(seen.append, ["a", "b", "c"], 2)
    assert step() == 2 and step() == 2
    assert seen == [["a", "b"], ["c", "a"]]


def test_config_quick_is_smaller_and_overridable() -> None:
    quick, full = BenchConfig.for_mode(True), BenchConfig.for_mode(False)
    assert quick.events < full.events
    assert quick.latency_rates == (200.0,)
    assert 1_000_000 in full.rank_sizes and 1_000_000 not in quick.rank_sizes
    assert quick.batch_sizes == full.batch_sizes == (1, 32, 128)
    custom = BenchConfig.for_mode(True, events=123, sections=["rank"])
    assert custom.events == 123 and custom.sections == ("rank",)
    assert quick.latency_events() == int(200 * quick.latency_seconds)


def test_stage_settings_round_trip_through_the_environment(tmp_path: Path) -> None:
    base = Settings(model_dir=tmp_path / "model")
    one = stage_settings(base, "127.0.0.1:9092", "ours", tmp_path / "ours")
    two = stage_settings(base, "127.0.0.1:9092", "ours", tmp_path / "ours")
    assert one.app_id != two.app_id
    assert all(name.startswith(one.app_id + ".") for name in one.topics.events)
    back = Settings.from_env(settings_env(one))
    for attr in ("bootstrap", "app_id", "topics", "home", "model_dir", "web_port", "store"):
        assert getattr(back, attr) == getattr(one, attr), attr
    assert back.store == "memory"


def test_latency_counts_the_first_output_per_event() -> None:
    result = Latency(200.0, sent={"e1": 100.0, "e2": 100.5})
    result.record({"event_ids": ["e1", "other"], "latency_ms": 7.0}, 100.010)
    result.record({"event_ids": ["e1", "e2"], "latency_ms": 9.0}, 100.530)
    result.record({"event_id": "e2"}, 101.0)  # pass-through baseline message, already seen
    assert result.e2e_ms == pytest.approx({"e1": 10.0, "e2": 30.0})
    assert result.worker_ms == [7.0, 9.0]


def test_latency_rows_with_and_without_a_baseline() -> None:
    ours = Latency(200.0, sent={"a": 0.0, "b": 0.0}, seconds=0.01, e2e_ms={"a": 10.0},
                   acked_ms={"p50": 6.0, "p99": 9.0, "max": 9.5, "n": 1})
    base = Latency(200.0, sent={"a": 0.0}, seconds=0.005, e2e_ms={"a": 5.0},
                   acked_ms={"p50": 3.0, "p99": 4.5, "max": 5.0, "n": 1})
    rows = latency_rows("worker", ours, base)
    p50 = next(r for r in rows if r.metric.endswith("e2e p50"))
    assert p50.value == 10.0 and p50.ratio == 2.0
    acked = {r.metric.rsplit(" ", 1)[1]: r for r in rows if "to broker ack" in r.metric}
    assert {q: (r.value, r.baseline_value) for q, r in acked.items()} == {
        "p50": (6.0, 3.0), "p99": (9.0, 4.5), "max": (9.5, 5.0)}
    assert "(1 events)" in acked["p50"].note
    achieved = rows[-1]
    assert achieved.value == 200.0 and "1 without output" in achieved.note
    alone = latency_rows("worker", ours, None)
    assert all(r.baseline_value is None for r in alone[:-1])
    assert alone[-1].baseline == "target"  # the achieved rate is compared with the target


def test_baseline_apps_are_built_with_the_worker_transport() -> None:
    settings = Settings(bootstrap="127.0.0.1:9092", app_id="bench-test")
    table_send = create_baseline_app(settings, "table-send")
    assert list(table_send.agents) == ["baseline-table-send"]
    assert list(table_send.tables) == ["baseline_state"]
    assert str(table_send.conf.broker[0]).startswith("interest-kafka://")
    noop = create_baseline_app(settings, "noop", BaselineCounter())
    assert list(noop.agents) == ["baseline-noop"] and not list(noop.tables)
    with pytest.raises(ValueError):
        create_baseline_app(settings, "bogus")
    with pytest.raises(ValueError):
        create_baseline_app(Settings(), "noop")


def test_baseline_topics_and_counter() -> None:
    settings = Settings(bootstrap="x:1", app_id="b1", partitions=3)
    specs = {spec.name: spec for spec in baseline_specs(settings)}
    assert set(settings.topics.events) <= set(specs)
    assert output_topic(settings) in specs
    assert specs["b1-baseline_state-changelog"].compacted
    assert {spec.partitions for spec in specs.values()} == {3}
    counter = BaselineCounter(events=4)
    assert counter.snapshot() == {"events_in": 4, "events_applied": 4, "acked_ms": {}}


def test_plain_topk_matches_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    matrix = random_unit_vectors(50, 8, rng)
    queries = random_unit_vectors(3, 8, rng)
    expected = np.argsort(-(queries @ matrix.T), axis=1)[:, :5]
    assert np.array_equal(plain_topk(matrix, queries, 5), expected)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0)


def test_full_ring_states_fill_both_rings() -> None:
    rng = np.random.default_rng(1)
    state = full_ring_states(random_unit_vectors(100, 8, rng), 1, rng)[0]
    assert len(state.recent_items) == 50 and len(state.recent_event_ids) == 64


def test_state_section_reports_codec_and_pickle_sizes() -> None:
    rows = state_section()
    assert [r.section for r in rows] == ["state", "state"]
    assert all(r.value > 0 and r.baseline_value for r in rows)
    assert rows[1].value > rows[0].value  # the long-term vector costs bytes


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_read_memory_kib_of_this_process() -> None:
    memory = read_memory_kib(os.getpid())
    assert memory["rss_kib"] > 0 and memory["peak_rss_kib"] >= memory["rss_kib"]
    assert read_memory_kib(2**31 - 1) == {}


def test_command_rejects_unknown_sections() -> None:
    result = CliRunner().invoke(bench_command, ["--sections", "stream,bogus"])
    assert result.exit_code == 2
    assert "choose from" in result.output
    help_text = CliRunner().invoke(bench_command, ["--help"]).output
    assert "--quick" in help_text and "--out" in help_text


def test_a_comment_share_turns_every_nth_event_into_a_comment_with_its_item_text() -> None:
    from streams.bench.main import with_comments
    from streams.data.datasets import EventRecord

    events = [EventRecord(f"e{n}", f"u{n % 3}", f"i{n % 4}", "click", float(n)) for n in range(20)]
    texts = {f"i{n}": f"text of i{n}" for n in range(4)}
    mixed = with_comments(events, texts, 0.1)
    comments = [n for n, e in enumerate(mixed) if e.event_type == "comment"]
    assert comments == [9, 19]
    assert all(mixed[n].text == texts[events[n].item_id] for n in comments)
    assert [e.event_id for e in mixed] == [e.event_id for e in events]  # same events, in order
    assert with_comments(events, texts, 0.0) == events


def test_the_latency_window_starts_at_the_whole_ms_a_record_timestamp_can_have() -> None:
    assert window_start(1000.0129) == 1000.012
    assert window_start(1000.012) == 1000.012


class _Metrics:
    """A process whose ``/metrics`` answers are given in advance (None: no answer)."""

    name = "worker"

    def __init__(self, answers: list[dict[str, Any] | None]) -> None:
        self.answers = answers
        self.paths: list[str] = []

    def get_json(self, path: str) -> dict[str, Any] | None:
        self.paths.append(path)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def check(self) -> None:
        pass


def test_acked_since_waits_until_the_acks_cover_every_answered_event() -> None:
    from streams.bench.main import _acked_since

    proc = _Metrics([None, {"acked_ms": {"n": 5}}, {"acked_ms": {"n": 8, "p50": 1.0}}])
    assert _acked_since(proc, 12.5, answered=8) == {"n": 8, "p50": 1.0}  # type: ignore[arg-type]
    assert proc.paths == ["/metrics?since=12.500"] * 3
    short = _Metrics([{"acked_ms": {"n": 5}}])
    assert _acked_since(short, 1.0, answered=8, wait_s=0.2) == {"n": 5}  # type: ignore[arg-type]
    with pytest.raises(BenchError, match="/metrics did not answer"):
        _acked_since(_Metrics([None]), 1.0, answered=8, wait_s=0.2)  # type: ignore[arg-type]
