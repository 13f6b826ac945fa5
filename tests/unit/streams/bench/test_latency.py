"""Event -> output latency: the first output per event counts; the rows beside a baseline."""

from __future__ import annotations

import pytest

from streams.bench.latency import Latency, latency_rows


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
