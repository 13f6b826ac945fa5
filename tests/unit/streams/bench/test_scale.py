"""The scale section's arithmetic: the burst's busy window and CPU, the pause at a join, rows."""

from __future__ import annotations

import math
import os
import time

import pytest

from streams.bench.common import throughput_from_samples
from streams.bench.scale import (
    Burst,
    Pause,
    Sample,
    burst_figures,
    busy_window,
    cpu_seconds,
    longest_gap,
    pause_figures,
    scale_rows,
)


def test_the_busy_window_follows_the_stream_sections_rule() -> None:
    counts = [500, 500, 600, 1100, 1600]
    first, last = busy_window(counts)
    assert (first, last) == (2, 4)
    samples = [(float(t), n - counts[0]) for t, n in enumerate(counts)]
    assert throughput_from_samples(samples) == (counts[last] - counts[first], last - first)


def test_the_busy_window_when_progress_shows_only_at_the_end_or_never() -> None:
    assert busy_window([7, 7, 9]) == (1, 2)  # the sample before: an upper bound on the time
    assert busy_window([7, 7, 7]) == (2, 2)
    assert busy_window([7]) == (0, 0)
    with pytest.raises(ValueError):
        busy_window([])


def test_burst_figures_take_events_seconds_and_cpu_over_the_busy_window() -> None:
    samples = [
        Sample(10.0, 100, 20, {"worker-1": 5.0, "worker-2": 1.0, "broker": 3.0}),
        Sample(10.5, 100, 20, {"worker-1": 5.2, "worker-2": 1.1, "broker": 3.1}),
        Sample(11.5, 1100, 120, {"worker-1": 6.0, "worker-2": 1.7, "broker": 3.5}),  # opens
        Sample(12.5, 2100, 220, {"worker-1": 6.8, "worker-2": 2.3, "broker": 4.0}),
    ]
    burst = burst_figures(samples)
    assert (burst.events, burst.seconds, burst.batches) == (1000, 1.0, 100)
    assert burst.cpu == pytest.approx({"worker-1": 0.8, "worker-2": 0.6, "broker": 0.5})
    assert burst.rate == pytest.approx(1000.0)
    assert burst.worker_cpu == pytest.approx(1.4)  # the broker is not a worker
    assert burst.per_cpu_second == pytest.approx(1000 / 1.4)
    idle = Burst(0, 0.0, 0, {"worker-1": 0.0})
    assert math.isnan(idle.rate) and math.isnan(idle.per_cpu_second)


def test_longest_gap_counts_a_gap_that_straddles_the_window_edges() -> None:
    stamps = [0.0, 1.0, 1.2, 4.0, 4.1, 9.0]
    assert longest_gap(stamps, 1.1, 4.05) == pytest.approx((2.8, 1.2))
    # the gap 1.2 -> 4.0 begins before the window and ends in it
    assert longest_gap(stamps, 3.0, 3.5) == pytest.approx((2.8, 1.2))
    # the gap 4.1 -> 9.0 begins before the end, so it counts in full
    assert longest_gap(stamps, 4.05, 5.0) == pytest.approx((4.9, 4.1))
    assert longest_gap(stamps, 9.5, 10.0) == (None, None)
    assert longest_gap([], 0.0, 1.0) == (None, None)


def test_pause_figures_take_the_gap_the_waits_and_the_unanswered_in_the_window() -> None:
    sent = {"a": 99.0, "b": 100.1, "c": 100.2, "d": 103.0, "e": 104.0, "f": 104.5, "late": 106.0}
    answered = {"a": 99.05, "b": 100.15, "c": 102.7, "d": 103.05, "e": 104.6, "late": 106.1}
    pause = pause_figures(sent, answered, start=100.0, end=105.0)
    assert pause.window_s == 5.0
    assert pause.gap_s == pytest.approx(102.7 - 100.15)
    assert pause.gap_from_s == pytest.approx(0.15)
    assert pause.max_wait_s == pytest.approx(2.5)  # "c", sent in the window
    assert pause.unanswered == 1  # "f"; "a" and "late" were sent outside the window
    quiet = pause_figures({}, {}, 0.0, 1.0)
    assert (quiet.gap_s, quiet.max_wait_s, quiet.unanswered) == (None, None, 0)


def test_cpu_seconds_of_this_process_grow_with_its_work() -> None:
    before = cpu_seconds(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.02  # clock ticks of 10 ms
    with pytest.raises(OSError):
        cpu_seconds(2**31 - 1)


def test_rows_compare_two_workers_with_one_and_a_join_with_none() -> None:
    one = (Burst(3000, 1.0, 500, {"worker-1": 0.9, "broker": 0.4, "bench": 0.3}),
           Pause(6.0, 0.05, 1.0, 0.04, 0))  # fmt: skip
    two = (Burst(3000, 0.75, 400, {"worker-1": 0.6, "worker-2": 0.6, "broker": 0.4, "bench": 0.3}),
           Pause(14.0, 4.2, 8.5, 4.6, 2, healthy_s=8.0, owned_s=11.0))  # fmt: skip
    state = {"events": 20_000, "sizes": [1500, 2200, 2300], "model": "m", "long_dim": 64}
    rows = {r.metric: r for r in scale_rows(one, two, state, 2873, 2)}
    rate = rows["events/s, 2 workers (1 group)"]
    assert (rate.value, rate.baseline_value) == (4000.0, 3000.0)
    assert rate.ratio == pytest.approx(4 / 3) and "bounded by the cores" in rate.note
    assert "mean batch 7.5; cores busy: bench 0.40, broker 0.53, worker-1 0.80" in rate.note
    per_cpu = rows["events per worker CPU-second, 2 workers"]
    assert per_cpu.ratio == pytest.approx((3000 / 1.2) / (3000 / 0.9))
    assert per_cpu.note.startswith("1 worker: 3,000 events in 1.00s, mean batch 6.0;")
    gap = rows["join: longest gap between answers"]
    assert (gap.value, gap.baseline_value) == (4.2, 0.05) and "was healthy after 8.0 s" in gap.note
    assert rows["join: longest wait of an event"].note == "unanswered 2 / 0"
    size = rows["state bytes/user p50, 3 ml-100k users replayed"]
    assert (size.value, size.baseline_value) == (2200, 2873)
    assert rows["state bytes/user max, replayed"].value == 2300


def test_rows_without_a_gap_or_states_still_print() -> None:
    burst = Burst(100, 1.0, 0, {"worker-1": 1.0})
    rows = scale_rows((burst, Pause(1.0, None, None, None, 0)),
                      (burst, Pause(1.0, None, None, None, 0)), None, None, 2)  # fmt: skip
    assert len(rows) == 4 and "mean batch nan" in rows[0].note
    assert math.isnan(rows[2].value) and rows[2].ratio is None
