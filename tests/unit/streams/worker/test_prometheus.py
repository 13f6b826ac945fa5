"""``/metrics`` in the Prometheus text format, parsed back as Prometheus would read it."""

from __future__ import annotations

from typing import Any

import faust
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streams.worker.history import Sampler
from streams.worker.lag import ConsumerLag
from streams.worker.prometheus import WorkerCollector, render, worker_registry
from streams.worker.stats import Stats

RUNTIME = {"model_version": "enc-1", "provider": "CPUExecutionProvider", "items": 42,
           "catalog_ready": True, "model_reloads": 1, "model_rejects": 2,
           "candidate_failures": 0, "broker": "reachable", "broker_outages": 3}  # fmt: skip


def _sampler(stats: Stats, app_id: str) -> Sampler:
    app = faust.App(app_id, broker="kafka://127.0.0.1:1", web_enabled=False)
    return Sampler(stats, ConsumerLag(app, "127.0.0.1:1", ["events.click"]), table={})


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text parsed by prometheus-client's parser: sample name -> {labels: value}."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _scrape(collector: WorkerCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    return samples(render(worker_registry(collector)).decode())


def one(metrics: dict[str, Any], name: str) -> float:
    """The value of an unlabelled sample."""
    return float(metrics[name][()])


def test_the_figures_move_with_the_traffic() -> None:
    stats = Stats()
    sampler = _sampler(stats, "prom-a")
    collector = WorkerCollector(stats, sampler, lambda: RUNTIME)
    before = _scrape(collector)
    assert one(before, "interest_stream_events_in_total") == 0
    assert one(before, "interest_stream_recommendation_latency_seconds_count") == 0
    assert "interest_stream_dead_letters_total" not in before  # no reason, no sample yet
    assert "interest_stream_consumer_lag" not in before

    stats.events_in, stats.events_applied, stats.recommendations_out = 12, 10, 4
    stats.dead_letter("unknown item_id 'x9'")
    stats.dead_letter("unknown item_id 'x8'")
    stats.latencies_ms.extend([3.0, 40.0, 700.0])
    stats.batch_sizes.extend([5, 7])
    stats.acked.record([100.0], now=100.02)
    sampler.lag_by_partition = {TopicPartition("events.click", 1): 17}
    sampler.owned = [TopicPartition("events.click", 1), TopicPartition("events.click", 3)]
    sampler.table_users = 9
    after = _scrape(collector)
    assert one(after, "interest_stream_events_in_total") == 12
    assert one(after, "interest_stream_events_applied_total") == 10
    assert one(after, "interest_stream_recommendations_total") == 4
    assert after["interest_stream_dead_letters_total"] == {(("reason", "unknown item_id"),): 2}
    latency = after["interest_stream_recommendation_latency_seconds_bucket"]
    assert latency[(("le", "0.005"),)] == 1 and latency[(("le", "0.05"),)] == 2
    assert latency[(("le", "+Inf"),)] == 3
    assert abs(one(after, "interest_stream_recommendation_latency_seconds_sum") - 0.743) < 1e-9
    assert one(after, "interest_stream_batch_size_count") == 2
    assert one(after, "interest_stream_batch_size_sum") == 12
    assert after["interest_stream_broker_ack_latency_seconds_bucket"][(("le", "0.025"),)] == 1
    assert after["interest_stream_consumer_lag"] == {
        (("partition", "1"), ("topic", "events.click")): 17}  # fmt: skip
    assert one(after, "interest_stream_partitions_owned") == 2
    assert one(after, "interest_stream_table_users") == 9
    assert one(after, "interest_stream_items") == 42
    assert one(after, "interest_stream_model_rejects_total") == 2
    assert one(after, "interest_stream_broker_outages_total") == 3
    assert one(after, "interest_stream_broker_up") == 1
    (info,) = after["interest_stream_model_info"]
    assert dict(info) == {"model_version": "enc-1", "provider": "CPUExecutionProvider",
                          "ranking": "", "sequence_version": "none"}  # fmt: skip


def test_two_apps_in_one_process_keep_their_own_figures() -> None:
    first, second = Stats(), Stats()
    a = WorkerCollector(first, _sampler(first, "prom-b"), lambda: RUNTIME)
    b = WorkerCollector(second, _sampler(second, "prom-c"), lambda: {})
    first.events_in = 5
    assert one(_scrape(a), "interest_stream_events_in_total") == 5
    assert one(_scrape(b), "interest_stream_events_in_total") == 0
    assert "interest_stream_model_rejects_total" not in _scrape(b)  # no watcher: not invented
