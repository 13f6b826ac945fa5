"""``/metrics`` in the Prometheus text format: one registry per app, read at each scrape.

Each worker app gets a :class:`~prometheus_client.CollectorRegistry` of its own (never the
global one: the tests and the bench run two apps in one process) holding a
:class:`WorkerCollector`, which reads the figures the worker keeps anyway (its
:class:`~streams.worker.stats.Stats`, the runtime fields of ``/metrics.json``, the
:class:`~streams.worker.history.Sampler`'s lag and table count) when Prometheus asks, plus
``process_*`` figures of the process. Metric names are listed in ``docs/monitoring.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from streams.worker.history import Sampler
from streams.worker.online_quality import window_name
from streams.worker.stats import Buckets, Stats

__all__ = ["CONTENT_TYPE", "PREFIX", "WorkerCollector", "render", "worker_registry"]

PREFIX = "interest_stream"
#: The text format's content type (0.0.4: what every Prometheus version scrapes).
CONTENT_TYPE = "text/plain; version=0.0.4"

#: ``/metrics.json`` runtime field -> (counter name, help), when the worker has it.
_RUNTIME_COUNTERS = {
    "model_loads": ("model_loads", "Sequence models put into service (the first included)."),
    "model_reloads": ("model_reloads", "Sequence models that replaced a serving one."),
    "model_rejects": ("model_rejects", "Sequence models rejected (the old one kept serving)."),
    "candidate_failures": (
        "candidate_failures",
        "Batches ranked exactly because the candidate index failed, and catalog updates it "
        "could not take.",
    ),
    "sequence_failures": (
        "sequence_failures",
        "Batches ranked short-term only because the sequence model failed on them.",
    ),
    "sequence_nonfinite": (
        "sequence_nonfinite",
        "User vectors the sequence model returned non-finite (ranked short-term only).",
    ),
    "broker_outages": ("broker_outages", "Times the broker stopped answering the probes."),
}


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _histogram(name: str, doc: str, buckets: Buckets, scale: float = 1.0) -> HistogramMetricFamily:
    """``buckets`` as a Prometheus histogram, bounds and sum multiplied by ``scale``."""
    return HistogramMetricFamily(
        f"{PREFIX}_{name}",
        doc,
        buckets=[
            ("+Inf" if bound == float("inf") else f"{bound * scale:g}", n)
            for bound, n in buckets.cumulative()
        ],
        sum_value=buckets.total * scale,
    )


class WorkerCollector(Collector):
    """The worker's figures, read at each scrape: counters from ``stats``, gauges and model
    counters from ``runtime()`` (the runtime fields of ``/metrics.json``), consumer lag and
    table size from ``sampler``."""

    def __init__(
        self, stats: Stats, sampler: Sampler, runtime: Callable[[], Mapping[str, Any]]
    ) -> None:
        self.stats = stats
        self.sampler = sampler
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        yield from self._flow()
        yield from self._latency()
        yield from self._online()
        yield from self._variants()
        yield from self._state()
        yield from self._runtime(self.runtime())

    def _flow(self) -> Iterator[Metric]:
        s = self.stats
        yield _counter("events_in", "Events read from the event topics.", s.events_in)
        yield _counter(
            "events_applied", "Events that changed a user's interest state.", s.events_applied
        )
        yield _counter("duplicates", "Events dropped as duplicates (same event_id).", s.duplicates)
        yield _counter(
            "redelivered", "Events skipped as already applied (read again).", s.redelivered
        )
        dead = CounterMetricFamily(
            f"{PREFIX}_dead_letters",
            "Inputs sent to the dead-letter topic, by reason (without the offending value).",
            labels=["reason"],
        )
        for reason, n in sorted(s.dead_letters.items()):
            dead.add_metric([reason], n)
        yield dead
        yield _counter("recommendations", "Recommendation messages sent.", s.recommendations_out)
        yield _counter("batches", "Microbatches handled.", s.batches)
        yield _counter("forgets", "Forget requests carried out.", s.forgets)
        yield _counter(
            "states_forgotten", "User states deleted by forget requests.", s.states_forgotten
        )
        yield _histogram("batch_size", "Events per microbatch.", s.batch_sizes.buckets)

    def _latency(self) -> Iterator[Metric]:
        s = self.stats
        yield _histogram(
            "event_wait_seconds",
            "Each event's record timestamp -> its batch reaching the agent.",
            s.waits_ms.buckets, 1e-3,
        )  # fmt: skip
        yield _histogram(
            "batch_duration_seconds",
            "One microbatch's work (decode, states, model, ranking, sends queued).",
            s.batch_ms.buckets, 1e-3,
        )  # fmt: skip
        yield _histogram(
            "recommendation_latency_seconds",
            "Record timestamp of the oldest event of each recommendation message -> its send.",
            s.latencies_ms.buckets, 1e-3,
        )  # fmt: skip
        yield _histogram(
            "broker_ack_latency_seconds",
            "Each event's record timestamp -> the broker's ack of the recommendation naming it.",
            s.acked.buckets, 1e-3,
        )  # fmt: skip

    def _online(self) -> Iterator[Metric]:
        """Online quality (:mod:`streams.worker.online_quality`): counters per model version
        for ``rate()`` over any window, and gauges of the worker's own sliding windows."""
        online = self.stats.online
        k = str(online.k)
        families = {
            "scored": CounterMetricFamily(
                f"{PREFIX}_online_scored_events",
                "Applied events scored against their user's last recommendation list, by the "
                "model version that ranked the list.", labels=["model_version", "k"]),
            "hits": CounterMetricFamily(
                f"{PREFIX}_online_hits",
                "Scored events whose item was in the first k of the list.",
                labels=["model_version", "k"]),
            "rr": CounterMetricFamily(
                f"{PREFIX}_online_reciprocal_rank",
                "Sum of 1/rank over the hits (divided by the scored events: MRR@k).",
                labels=["model_version", "k"]),
        }  # fmt: skip
        for version, tally in sorted(online.totals.items()):
            families["scored"].add_metric([version, k], tally.scored)
            families["hits"].add_metric([version, k], tally.hits)
            families["rr"].add_metric([version, k], tally.reciprocal_ranks)
        yield from families.values()
        yield _counter(
            "online_unscored_events",
            "Applied events of users whose last list this worker does not know (since its start).",
            online.unscored,
        )
        hr = GaugeMetricFamily(
            f"{PREFIX}_online_hit_rate",
            "HR@k over the worker's sliding window (absent when the window scored no event).",
            labels=["model_version", "k", "window"],
        )
        mrr = GaugeMetricFamily(
            f"{PREFIX}_online_mrr", "MRR@k over the worker's sliding window.",
            labels=["model_version", "k", "window"],
        )  # fmt: skip
        for seconds in online.windows_s:
            for version, tally in sorted(online.window(seconds).items()):
                labels = [version, k, window_name(seconds)]
                hr.add_metric(labels, tally.hit_rate or 0.0)
                mrr.add_metric(labels, tally.mrr or 0.0)
        yield hr
        yield mrr
        yield _gauge(
            "online_users_remembered",
            "Users whose last recommendation list this worker keeps.",
            len(online),
        )

    def _variants(self) -> Iterator[Metric]:
        """Per A/B variant (:mod:`streams.worker.ab`; only ``A`` without A/B): the online
        tallies by the variant that served the list, its sliding-window HR@k, its messages and
        their latency (a summary: p50/p90/p99 of the last 10,000, sum and count of all)."""
        online = self.stats.online
        k = str(online.k)
        names = {
            "scored": (
                "ab_scored_events",
                "Scored events, by the A/B variant that served the list.",
            ),
            "hits": ("ab_hits", "Scored events whose item was in the first k, by variant."),
            "rr": ("ab_reciprocal_rank", "Sum of 1/rank over the hits, by variant."),
        }
        families = {key: CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["variant", "k"])
                    for key, (name, doc) in names.items()}  # fmt: skip
        for variant, tally in sorted(online.variant_totals.items()):
            families["scored"].add_metric([variant, k], tally.scored)
            families["hits"].add_metric([variant, k], tally.hits)
            families["rr"].add_metric([variant, k], tally.reciprocal_ranks)
        yield from families.values()
        hr = GaugeMetricFamily(
            f"{PREFIX}_ab_hit_rate", "HR@k by A/B variant over the worker's sliding window.",
            labels=["variant", "k", "window"],
        )  # fmt: skip
        for seconds in online.windows_s:
            for variant, tally in sorted(online.window(seconds, by_variant=True).items()):
                hr.add_metric([variant, k, window_name(seconds)], tally.hit_rate or 0.0)
        yield hr
        sent = CounterMetricFamily(f"{PREFIX}_ab_recommendations",
                                   "Recommendation messages sent, by A/B variant.",
                                   labels=["variant"])  # fmt: skip
        latency = SummaryMetricFamily(
            f"{PREFIX}_ab_latency_seconds",
            "Oldest event's arrival -> the recommendation message, by A/B variant.",
            labels=["variant"],
        )
        for variant, figures in sorted(online.flow.variants.items()):
            sent.add_metric([variant], figures.sent)
            for name, ms in figures.percentiles().items():
                quantile = str(int(name[1:]) / 100)
                latency.add_sample(latency.name, {"variant": variant, "quantile": quantile},
                                   ms / 1000.0)  # fmt: skip
            latency.add_metric([variant], figures.sent, figures.total_ms / 1000.0)
        yield sent
        yield latency

    def _state(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            f"{PREFIX}_consumer_lag",
            "Records on the broker not committed yet, per partition this worker owns.",
            labels=["topic", "partition"],
        )
        for tp, n in sorted(self.sampler.lag_by_partition.items()):
            lag.add_metric([tp.topic, str(tp.partition)], n)
        yield lag
        owned = {tp.partition for tp in self.sampler.owned}
        yield _gauge("partitions_owned", "Partitions of the event topics this worker owns.",
                     len(owned))  # fmt: skip
        if self.sampler.table_users is not None:
            yield _gauge(
                "table_users",
                "User states in this worker's partitions of the table (counted every 15 s).",
                self.sampler.table_users,
            )
        yield _gauge("start_time_seconds", "When the worker started (epoch s).", self.stats.started)

    def _runtime(self, runtime: Mapping[str, Any]) -> Iterator[Metric]:
        for key, (name, doc) in _RUNTIME_COUNTERS.items():
            if runtime.get(key) is not None:
                yield _counter(name, doc, runtime[key])
        yield _gauge("items", "Items in the index (rankable now).", runtime.get("items") or 0)
        ready = float(bool(runtime.get("catalog_ready")))
        yield _gauge("catalog_ready", "1 once the catalog is loaded.", ready)
        yield _gauge(
            "broker_up", "1 while the broker answers the probes.",
            float(runtime.get("broker", "reachable") == "reachable"),
        )  # fmt: skip
        info = InfoMetricFamily(f"{PREFIX}_model", "The models serving now and where they run.")
        info.add_metric(
            [],
            {
                "model_version": str(runtime.get("model_version") or ""),
                "sequence_version": str(runtime.get("sequence_model_version") or "none"),
                "provider": str(runtime.get("provider") or ""),
                "ranking": str(runtime.get("ranking") or ""),
            },
        )
        yield info


def worker_registry(collector: WorkerCollector) -> CollectorRegistry:
    """A registry of the app's own with ``collector`` and the ``process_*`` figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``."""
    return generate_latest(registry)
