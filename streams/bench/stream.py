"""The ``stream`` section of ``interest-stream bench``: the whole stream through a real broker.

End-to-end events/s of one real worker (``python -m streams.cli worker``) against two
pass-through Faust apps of :mod:`streams.bench.baseline` (``table-send``: one table write + one
send per event; ``noop``: iterate only). Each app gets its own topics, pre-loaded with the same
ml-100k events before it starts; its rate is read from its ``/metrics.json`` (events handled between
the first and the last sample). Then event->output latency at fixed input rates
(:mod:`streams.bench.latency`), and the processes' RSS.

:func:`run_stage` (one app on its pre-loaded topics, measured and stopped) and
:func:`stage_note` serve the ``gpu`` section too, which runs the worker once per provider.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.bench.common import BenchConfig, Row, load_dataset, with_comments
from streams.bench.latency import Latency, latency_rows, measure_latency
from streams.bench.processes import (
    POLL_S,
    ServiceProcess,
    check_broker,
    measure_throughput,
    processed,
    stage_settings,
)
from streams.errors import BenchError
from streams.settings import Settings

__all__ = [
    "STAGES",
    "StageResult",
    "StreamRun",
    "run_stage",
    "stage_note",
    "stream_rows",
    "stream_section",
    "window_start",
]

STAGES = ("noop", "table-send", "ours")


@dataclass
class StageResult:
    kind: str
    events: int
    seconds: float
    latencies: list[Latency]
    memory: dict[str, int]
    metrics: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class StreamRun:
    base: Settings
    bootstrap: str
    tmp: Path
    cfg: BenchConfig
    items: list[Any]
    events: list[Any]


def _stage_argv(kind: str) -> list[str]:
    if kind == "ours":
        return ["-m", "streams.cli", "worker", "--store", "memory"]
    return ["-m", "streams.bench.baseline", kind]


def _prepare_stage(run: StreamRun, kind: str) -> Settings:
    """Topics of the stage, the catalog (for the worker) and the pre-loaded events."""
    from streams.bench.baseline import baseline_specs
    from streams.local.replay import publish_items, replay_events
    from streams.worker.app import topic_specs
    from streams.worker.topics import ensure_topics

    settings = stage_settings(run.base, run.bootstrap, kind, run.tmp / kind)
    settings.home.mkdir(parents=True, exist_ok=True)
    specs = topic_specs(settings) if kind == "ours" else baseline_specs(settings)
    asyncio.run(ensure_topics(run.bootstrap, specs))
    if kind == "ours":
        asyncio.run(publish_items(settings, run.items))
    asyncio.run(replay_events(settings, run.events[: run.cfg.events], progress=False))
    return settings


def _latency_runs(run: StreamRun, settings: Settings, topic: str,
                  proc: ServiceProcess) -> list[Latency]:
    results = []
    offset = run.cfg.events
    for rate in run.cfg.latency_rates:
        count = int(rate * run.cfg.latency_seconds)
        chunk = run.events[offset : offset + count]
        offset += count
        limit = count / rate + 60
        since = window_start(time.time())
        try:
            result = asyncio.run(asyncio.wait_for(
                measure_latency(settings, topic, chunk, rate), limit))
        except TimeoutError as exc:
            check_broker(run.bootstrap)
            raise BenchError(f"latency run at {rate}/s did not finish in {limit:.0f}s") from exc
        result.acked_ms = _acked_since(proc, since, len(result.e2e_ms))
        results.append(result)
    return results


def window_start(now: float) -> float:
    """``now`` floored to whole ms: record timestamps are whole ms, so the first event sent
    after ``now`` is stamped at or after this (a plain ``now`` could leave it out)."""
    return math.floor(now * 1000) / 1000


def _acked_since(proc: ServiceProcess, since: float, answered: int,
                 wait_s: float = 3.0) -> dict[str, float]:
    """The app's ``acked_ms`` for the events stamped since ``since``. The reader may see an
    output before the app has the broker's ack of it, so wait (briefly) until the acks cover
    every answered event."""
    deadline = time.monotonic() + wait_s
    acked: dict[str, float] | None = None
    while True:
        metrics = proc.get_json(f"/metrics.json?since={since:.3f}")
        if metrics is None:
            proc.check()
        else:
            acked = metrics.get("acked_ms") or {}
            if acked.get("n", 0) >= answered:
                return acked
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if acked is None:
        raise BenchError(f"{proc.name}: /metrics.json did not answer after the latency run")
    return acked  # short of the answered events: its row's note gives the count


def run_stage(run: StreamRun, kind: str) -> StageResult:
    """Start one app on its pre-loaded topics, measure it, stop it (also on errors)."""
    from streams.bench.baseline import output_topic

    settings = _prepare_stage(run, kind)
    proc = ServiceProcess.start(kind, _stage_argv(kind), settings, run.tmp / f"{kind}.log")
    try:
        events, seconds = measure_throughput(proc, run.cfg.events,
                                             180 + run.cfg.events / 100, run.bootstrap)
        latencies: list[Latency] = []
        if kind != "noop":
            proc.wait_healthy(60)
            topic = settings.topics.recommendations if kind == "ours" else output_topic(settings)
            latencies = _latency_runs(run, settings, topic, proc)
        memory = proc.memory()
        metrics = proc.get_json("/metrics.json") or {}
    finally:
        proc.stop()
    return StageResult(kind, events, seconds, latencies, memory, metrics)


def stage_note(stage: StageResult) -> str:
    """How the worker got its rate: window, mean batch, events per output, dead letters."""
    m = stage.metrics
    parts = [f"{stage.events:,} events in {stage.seconds:.2f}s"]
    if m.get("mean_batch_size"):
        parts.append(f"mean batch {m['mean_batch_size']}")
    if m.get("recommendations_out"):
        parts.append(f"{processed(m) / m['recommendations_out']:.1f} events/output")
    if m.get("dead_letters"):
        parts.append(f"{m['dead_letters']} dead letters")
    wait, work = m.get("wait_ms") or {}, m.get("batch_ms") or {}
    if wait.get("p50") is not None and work.get("p50") is not None:
        parts.append(f"/metrics.json over its last 10k events (pre-loaded ones waited for the "
                     f"start): wait for a batch p50 {wait['p50']:.0f} ms, a batch's work p50 "
                     f"{work['p50']:.0f} ms")
    if stage.seconds < 20 * POLL_S:
        parts.append(f"SHORT window: +-{POLL_S}s polling, use more --events")
    return "; ".join(parts)


def stream_rows(results: dict[str, StageResult]) -> list[Row]:
    ours, table, noop = results["ours"], results["table-send"], results["noop"]
    note = stage_note(ours)
    rows = [
        Row("stream", "events/s, worker", ours.rate, "ev/s", "table+send", table.rate, note),
        Row("stream", "events/s, worker vs no-op ceiling", ours.rate, "ev/s", "no-op", noop.rate),
    ]
    for key, label in (("rss_kib", "RSS at end"), ("peak_rss_kib", "peak RSS")):
        if key in ours.memory:
            base = table.memory.get(key)
            rows.append(Row("stream", f"worker {label}", ours.memory[key] / 1024, "MiB",
                            "table+send", base / 1024 if base else None))
    for mine, theirs in zip(ours.latencies, table.latencies, strict=True):
        rows.extend(latency_rows("worker", mine, theirs))
    return rows


def stream_section(settings: Settings, cfg: BenchConfig, tmp: Path) -> list[Row]:
    from streams.local.broker import broker_for

    items, events = load_dataset(settings, cfg.events + cfg.latency_events())
    events = with_comments(events, {i.item_id: i.text for i in items}, cfg.comment_share)
    with broker_for(settings.bootstrap, tmp / "broker.log") as bootstrap:
        run = StreamRun(settings, bootstrap, tmp, cfg, items, events)
        results = {kind: run_stage(run, kind) for kind in STAGES}
    return stream_rows(results)
