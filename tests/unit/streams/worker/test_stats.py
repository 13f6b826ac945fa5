"""Counters, latency windows and the dashboard: what /metrics.json and /dashboard show."""

from __future__ import annotations

import time

import pytest


@pytest.mark.parametrize(
    ("reason", "group"),
    [
        ("unknown item_id 'x9'", "unknown item_id"),
        ("not JSON: Expecting value: line 1 column 1 (char 0)", "not JSON"),
        (
            "field 'user_id' is 129 chars, at most 128 allowed",
            "field 'user_id' is N chars, at most N allowed",
        ),
        (
            "field 'ts' must be epoch seconds or ISO-8601, got list",
            "field 'ts' must be epoch seconds or ISO-8601",
        ),
    ],
)
def test_dead_letter_reasons_are_counted_by_kind_not_by_value(reason: str, group: str) -> None:
    from streams.worker.stats import reason_group

    assert reason_group(reason) == group


def test_the_dashboard_shows_the_numbers_and_escapes_what_it_shows() -> None:
    from streams.worker.dashboard import render_dashboard

    page = render_dashboard(
        {
            "catalog_ready": True,
            "model_version": "m<1>",
            "provider": "CPUExecutionProvider",
            "events_in": 12345,
            "latency_ms": {"p50": 7.5},
            "dead_letters_by_reason": {"unknown item_id": 3, "<img src=x onerror=alert(1)>": 1},
        }
    )
    assert "serving" in page and "12345" in page and "7.5" in page
    assert "until its recommendation was sent (oldest event of each message), p50 (ms)" in page
    assert "no events yet" in render_dashboard({"catalog_ready": False})
    assert "m&lt;1&gt;" in page and "<img" not in page
    assert page.index("unknown item_id") < page.index("&lt;img src=x")  # most frequent first


def test_metrics_split_the_latency_into_the_wait_for_a_batch_and_the_batch_itself() -> None:
    from streams.worker.dashboard import render_dashboard
    from streams.worker.stats import Stats

    stats = Stats()
    assert stats.snapshot()["wait_ms"] == {} and stats.snapshot()["batch_ms"] == {}
    stats.waits_ms.extend([10.0, 20.0, 30.0])
    stats.batch_ms.append(4.0)
    snap = stats.snapshot()
    assert snap["wait_ms"]["p50"] == 20.0 and snap["batch_ms"] == {"p50": 4.0, "p90": 4.0,
                                                                     "p99": 4.0}
    page = render_dashboard(snap)
    assert "waiting for its batch, p50 (ms)" in page and "one batch&#x27;s work, p99 (ms)" in page


def test_acked_latency_reads_back_the_window_since_a_time_and_metrics_say_it() -> None:
    from streams.worker.dashboard import render_dashboard
    from streams.worker.stats import Stats

    stats = Stats()
    now = time.time()
    for stamp, ms in [(now - 60.0, 900.0), (now - 1.0, 10.0), (now, 20.0), (now, 30.0)]:
        stats.acked.record([stamp], now=stamp + ms / 1000.0)  # acked ``ms`` after its stamp
    assert stats.snapshot()["acked_ms"]["n"] == 4 and stats.snapshot()["acked_ms"]["max"] == 900.0
    window = stats.snapshot(since=now - 30.0)["acked_ms"]
    assert window["n"] == 3 and window["p50"] == 20.0 and window["max"] == 30.0
    assert stats.snapshot(since=now + 1.0)["acked_ms"] == {}
    stats.acked.record([time.time() - 0.25])
    assert 250.0 <= stats.acked.summary(since=now - 1.0)["max"] < 900.0
    page = render_dashboard(stats.snapshot())
    assert "until the broker acked its recommendation, p50 (ms)" in page
    assert "recommendation, n" not in page


def test_acked_keeps_the_last_capacity_events_in_its_ring() -> None:
    from streams.worker.stats import Acked

    acked = Acked(capacity=3)
    assert acked.summary() == {}
    acked.record([1.0, 2.0], now=3.0)  # 2000 and 1000 ms
    assert acked.summary() == {"p50": 1500.0, "p90": 1900.0, "p99": 1990.0, "max": 2000.0,
                               "n": 2}
    acked.record([2.5, 2.75], now=3.0)  # the ring drops the oldest (1.0)
    assert acked.summary()["n"] == 3 and acked.summary()["max"] == 1000.0
    assert acked.summary(since=2.6) == {"p50": 250.0, "p90": 250.0, "p99": 250.0, "max": 250.0,
                                        "n": 1}
    with pytest.raises(ValueError, match="capacity"):
        Acked(capacity=0)


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf", str(int(time.time() * 1000))])
def test_metrics_since_must_be_epoch_seconds(raw: str) -> None:
    from streams.worker.stats import since_param

    assert since_param({}) == 0.0 and since_param({"since": "12.5"}) == 12.5
    with pytest.raises(ValueError, match="since must be epoch seconds"):
        since_param({"since": raw})


def test_windows_keep_the_last_values_and_a_histogram_of_every_value() -> None:
    from streams.worker.stats import Acked, Buckets, Window

    window = Window(3, bounds=(1.0, 10.0))
    window.extend([0.5, 1.0, 5.0])
    window.append(50.0)
    assert list(window) == [1.0, 5.0, 50.0]  # the percentiles see the last three
    assert window.buckets.cumulative() == [(1.0, 2), (10.0, 3), (float("inf"), 4)]
    assert window.buckets.count == 4 and window.buckets.total == 56.5
    assert window.since(2) == [5.0, 50.0] and window.since(4) == [] and window.since(0) == list(
        window)  # older values than the window holds are gone  # fmt: skip
    acked = Acked(capacity=2)
    acked.record([1.0, 2.0, 2.9], now=3.0)
    assert acked.buckets.count == 3 and acked.summary()["n"] == 2  # the ring forgets, not these
    with pytest.raises(ValueError, match="increasing"):
        Buckets((5.0, 1.0))


def test_history_samples_rates_and_the_latency_of_each_interval() -> None:
    from streams.worker.history import History
    from streams.worker.stats import Stats

    stats, history = Stats(), History(keep=2)
    assert history.add(stats, lag=None, now=100.0) is None  # the first only marks
    stats.events_in, stats.events_applied, stats.recommendations_out = 40, 30, 10
    stats.dead_letter("not JSON: x")
    stats.latencies_ms.extend([10.0, 20.0, 30.0])
    stats.batch_sizes.extend([20, 20])
    sample = history.add(stats, lag=7, now=102.0)
    assert sample is not None
    assert (sample["events_per_s"], sample["applied_per_s"], sample["recommendations_per_s"]) == (
        20.0, 15.0, 5.0)  # fmt: skip
    assert sample["dead_letters_per_s"] == {"not JSON": 0.5} and sample["lag"] == 7
    assert sample["latency_p50_ms"] == 20.0 and sample["batch_size"] == 20.0
    quiet = history.add(stats, lag=0, now=104.0)
    assert quiet is not None and quiet["events_per_s"] == 0 and quiet["latency_p50_ms"] is None
    assert quiet["dead_letters_per_s"] == {}
    history.add(stats, lag=0, now=106.0)
    assert [s["t"] for s in history.samples] == [104.0, 106.0]  # keeps the last ``keep``
    assert [s["t"] for s in history.since(104.0)] == [106.0]


def test_consumer_lag_is_the_end_minus_the_committed_offset() -> None:
    from aiokafka import TopicPartition

    from streams.worker.lag import partition_lag

    a, b, c = (TopicPartition("events.click", p) for p in range(3))
    lag = partition_lag({a: 120, b: 50, c: 9}, {a: 100, b: 55, c: None}, {c: 4})
    assert lag == {a: 20, b: 0, c: 5}  # b: an end read before the last commit
