"""``interest-stream bench``: speed of the whole stream and of its parts, each next to a baseline.

Every figure is printed with a baseline measured in the same run, and the ratio between them,
because the machines this runs on are small and shared (absolute numbers are noisy; ratios
much less so). Sections:

1. ``stream``: end-to-end events/s of one real worker (``python -m streams.cli worker``)
   through the broker, against two pass-through Faust apps of :mod:`streams.bench.baseline`
   (``table-send``: one table write + one send per event; ``noop``: iterate only). Each app gets
   its own topics, pre-loaded with the same ml-100k events before it starts; its rate is read
   from its ``/metrics`` (events handled between the first and the last sample). Then
   event->output latency at fixed input rates, two ways: ``e2e`` (record timestamp = the bench's
   send call -> the bench's reader receiving the first output naming the event: both client hops
   included) and ``to broker ack`` (the app's ``/metrics?since=`` ``acked_ms``: the same
   timestamp -> the broker's ack of that output; an upper bound of the event's time from the
   broker to the output topic, which Tansu cannot stamp); and the processes' RSS.
2. ``encoder``: sentences/s of :class:`encoders.TextEncoder` per batch size vs torch eager.
3. ``rank``: users/s of :func:`interest_state.rank` over an :class:`encoders.ItemIndex` of
   random unit vectors vs a plain numpy matmul + argpartition top-k.
4. ``state``: bytes of one full-ring user state (:func:`interest_state.encode_state`) vs pickle.
5. ``ann``: users/s of ranking over approximate candidates (:mod:`encoders.index.ann`) vs exact
   ranking, with recall@10 against exact, at 10k / 100k / 1M items (:mod:`streams.bench.ann`).
6. ``store``: RSS of a process holding N users (1M; ``--quick`` 100k) in the worker's RocksDB
   table store vs faust's default store options, and a real worker that recovered them
   (:mod:`streams.bench.store`).
7. ``gpu``: the encoder and the worker on CUDA vs their baselines (:mod:`streams.bench.gpu`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import pickle
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import click
import numpy as np

from streams.errors import StreamError
from streams.settings import Settings, TopicNames

__all__ = [
    "BenchConfig",
    "Row",
    "bench_command",
    "format_table",
    "percentile",
    "ratio",
    "settings_env",
    "throughput_from_samples",
]

SECTIONS = ("stream", "encoder", "rank", "ann", "sequence", "state", "store", "gpu")
STAGES = ("noop", "table-send", "ours")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: /metrics polling period: each poll costs the worker ~1 ms (a percentile over its reservoir).
POLL_S = 0.1


class BenchError(StreamError):
    """A benchmark step could not run (a process died, nothing arrived in time)."""


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a measured value and the baseline it is compared with."""

    section: str
    metric: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return ratio(self.value, self.baseline_value)

    def to_json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["ratio"] = self.ratio
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in body.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation, as numpy), NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def ratio(value: float, baseline: float | None) -> float | None:
    """``value / baseline``; None when either is missing, not finite, or the baseline is 0."""
    if baseline is None or not math.isfinite(value) or not math.isfinite(baseline):
        return None
    if baseline == 0:
        return None
    return value / baseline


def format_number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table: section, metric, value, unit, baseline (name and value), ratio, note."""
    header = ("section", "metric", "value", "unit", "baseline", "ratio", "note")
    lines = [header]
    for row in rows:
        base = row.baseline
        if row.baseline_value is not None:
            base = f"{base} {format_number(row.baseline_value)}".strip()
        lines.append((row.section, row.metric, format_number(row.value), row.unit, base,
                      format_ratio(row.ratio), row.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {2, 5}
    out = []
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def throughput_from_samples(samples: Sequence[tuple[float, int]]) -> tuple[int, float]:
    """(events, seconds) from ``(time, events done)`` samples of a run that ends at the last one.

    The window opens at the first sample that shows progress, so start-up time is not counted;
    if progress shows only in the last sample, it opens at the sample before (an upper bound on
    the time, so the rate is a lower bound).
    """
    if not samples:
        raise ValueError("no samples")
    end_t, end_n = samples[-1]
    moving = [i for i, (_, n) in enumerate(samples) if n > 0]
    if not moving:
        return 0, 0.0
    first = moving[0]
    if first == len(samples) - 1:
        if first == 0:
            return end_n, 0.0
        start_t, start_n = samples[first - 1]
    else:
        start_t, start_n = samples[first]
    return end_n - start_n, end_t - start_t


def timed_rate(step: Callable[[], int], min_seconds: float) -> float:
    """Units per second of ``step`` (which returns the units it did), after one warm-up call."""
    step()
    done = 0
    start = time.perf_counter()
    while True:
        done += step()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Sizes of one run; :meth:`for_mode` gives the quick (CI) and the full one."""

    quick: bool
    events: int
    latency_rates: tuple[float, ...]
    latency_seconds: float
    batch_sizes: tuple[int, ...]
    rank_sizes: tuple[int, ...]
    rank_users: int
    min_seconds: float
    rounds: int = 3
    sections: tuple[str, ...] = SECTIONS
    comment_share: float = 0.0
    """Share of the stream's events turned into comments (text encoded in the worker)."""

    @classmethod
    def for_mode(cls, quick: bool, events: int | None = None,
                 sections: Sequence[str] = SECTIONS) -> BenchConfig:
        if quick:
            cfg = cls(True, 4_000, (200.0,), 3.0, (1, 32, 128), (10_000, 100_000), 64, 0.3, 2)
        else:
            cfg = cls(False, 30_000, (200.0, 1000.0), 8.0, (1, 32, 128),
                      (10_000, 100_000, 1_000_000), 64, 1.0, 3)
        return dataclasses.replace(cfg, events=events or cfg.events, sections=tuple(sections))

    def latency_events(self) -> int:
        return int(sum(rate * self.latency_seconds for rate in self.latency_rates))


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make a worker process read ``settings``' stage fields."""
    t = settings.topics
    env = {
        "KAFKA_BOOTSTRAP": settings.bootstrap or "",
        "INTEREST_STREAM_APP_ID": settings.app_id,
        "INTEREST_STREAM_PARTITIONS": str(settings.partitions),
        "INTEREST_STREAM_HOME": str(settings.home),
        "INTEREST_STREAM_WEB_HOST": settings.web_host,
        "INTEREST_STREAM_WEB_PORT": str(settings.web_port),
        "INTEREST_STREAM_STORE": settings.store,
        "INTEREST_STREAM_PROVIDER": settings.provider,
        "INTEREST_STREAM_ENCODER_INT8": str(settings.encoder_int8).lower(),
        "INTEREST_STREAM_TOPIC_CLICK": t.click,
        "INTEREST_STREAM_TOPIC_BROWSE": t.browse,
        "INTEREST_STREAM_TOPIC_COMMENT": t.comment,
        "INTEREST_STREAM_TOPIC_ITEMS": t.items,
        "INTEREST_STREAM_TOPIC_RECOMMENDATIONS": t.recommendations,
        "INTEREST_STREAM_TOPIC_DLQ": t.dlq,
    }
    if settings.model_dir is not None:
        env["INTEREST_STREAM_MODEL_DIR"] = str(settings.model_dir)
    if settings.sequence_model_dir is not None:
        env["INTEREST_STREAM_SEQUENCE_MODEL_DIR"] = str(settings.sequence_model_dir)
    return env


def stage_settings(base: Settings, bootstrap: str, kind: str, home: Path) -> Settings:
    """Settings of one stage: its own app id, topics, home folder and web port."""
    app_id = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    names = ("click", "browse", "comment", "items", "recommendations", "dlq")
    topics = TopicNames(*(f"{app_id}.{name}" for name in names))
    return dataclasses.replace(
        base, bootstrap=bootstrap, app_id=app_id, topics=topics, home=home,
        model_dir=base.resolved_model_dir.resolve(), web_port=free_port(), store="memory",
        # the worker ranks with the Transformer when the home folder has one, as it serves
        sequence_model_dir=base.resolved_sequence_model_dir.resolve(),
    ).validated()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- processes


def processed(metrics: dict[str, Any]) -> int:
    """Events a worker is done with: applied, duplicates and dead letters."""
    return int(metrics.get("events_applied", 0)) + int(metrics.get("duplicates", 0)) + int(
        metrics.get("dead_letters", 0)
    )


def read_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc (empty where there is none)."""
    wanted = {"VmRSS": "rss_kib", "VmHWM": "peak_rss_kib"}
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in wanted:
                found[wanted[name]] = int(rest.split()[0])
    return found


@dataclass
class ServiceProcess:
    """A worker or baseline app run as a child process, with its log file and web port."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], settings: Settings, log: Path) -> ServiceProcess:
        env = {**os.environ, **settings_env(settings)}
        with open(log, "ab") as out:
            popen = subprocess.Popen(  # noqa: S603
                [sys.executable, *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )
        return cls(name, popen, settings.web_port, log)

    def get_json(self, path: str) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                body: dict[str, Any] = json.load(response)
                return body
        except (OSError, ValueError):  # refused, HTTP 503 while starting, half-written JSON
            return None

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check()
            if self.get_json("/healthz") is not None:
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} not healthy after {timeout_s}s:\n{self.tail()}")

    def memory(self) -> dict[str, int]:
        return read_memory_kib(self.popen.pid)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


def check_broker(bootstrap: str) -> None:
    """Raise ``BenchError`` when nothing answers at ``bootstrap`` any more."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return
    except OSError as exc:
        raise BenchError(f"the broker at {bootstrap} stopped answering ({exc}); was it "
                         "killed from outside?") from exc


def measure_throughput(proc: ServiceProcess, target: int, timeout_s: float,
                       bootstrap: str) -> tuple[int, float]:
    """Poll ``/metrics`` until ``target`` events are done; (events, seconds) of the busy window."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        proc.check()
        check_broker(bootstrap)
        metrics = proc.get_json("/metrics")
        now = time.perf_counter()
        if metrics is not None:
            samples.append((now, processed(metrics)))
            if samples[-1][1] >= target:
                return throughput_from_samples(samples)
        if time.monotonic() > deadline:
            done = samples[-1][1] if samples else 0
            raise BenchError(f"{proc.name}: {done}/{target} events after {timeout_s}s")
        time.sleep(POLL_S)


# --------------------------------------------------------------------------- latency


@dataclass
class Latency:
    """Per-event end-to-end latencies (ms) of one fixed-rate run, and the worker's own view."""

    target_rate: float
    sent: dict[str, float] = field(default_factory=dict)  # event_id -> record timestamp (s)
    seconds: float = 0.0
    e2e_ms: dict[str, float] = field(default_factory=dict)
    worker_ms: list[float] = field(default_factory=list)
    #: the app's own ``acked_ms`` for this run's events (stamped since its start): record
    #: timestamp -> the broker's ack of the output (an upper bound of broker -> output topic,
    #: without the reader's hop)
    acked_ms: dict[str, float] = field(default_factory=dict)

    @property
    def achieved_rate(self) -> float:
        return len(self.sent) / self.seconds if self.seconds > 0 else float("nan")

    def record(self, body: dict[str, Any], arrival: float) -> None:
        """Take one output message: first arrival per event id counts."""
        ids = body.get("event_ids") or [body.get("event_id")]
        fresh = [i for i in ids if i in self.sent and i not in self.e2e_ms]
        for event_id in fresh:
            self.e2e_ms[event_id] = (arrival - self.sent[event_id]) * 1000.0
        if fresh and isinstance(body.get("latency_ms"), int | float):
            self.worker_ms.append(float(body["latency_ms"]))


def _event_bytes(event: Any) -> bytes:
    from streams.data.datasets import event_to_obj

    obj = event_to_obj(event)
    obj.pop("type")
    return json.dumps(obj, separators=(",", ":")).encode()


async def _produce_at_rate(settings: Settings, events: Sequence[Any], result: Latency) -> None:
    from aiokafka import AIOKafkaProducer

    topics = dict(zip(("click", "browse", "comment"), settings.topics.events, strict=True))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=0)
    await producer.start()
    start = time.perf_counter()
    try:
        for n, event in enumerate(events):
            ahead = n / result.target_rate - (time.perf_counter() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
            stamp_ms = int(time.time() * 1000)
            result.sent[event.event_id] = stamp_ms / 1000.0
            await producer.send(topics[event.event_type], _event_bytes(event),
                                key=event.user_id.encode(), timestamp_ms=stamp_ms)
        await producer.flush()
        result.seconds = time.perf_counter() - start
    finally:
        await producer.stop()


async def _tail_consumer(settings: Settings, topic: str) -> Any:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=10)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # resolve the positions now, before anything new is produced
        await consumer.position(tp)
    return consumer


async def measure_latency(settings: Settings, topic: str, events: Sequence[Any], rate: float,
                          drain_s: float = 10.0) -> Latency:
    """Send ``events`` at ``rate``/s, read ``topic`` until every event has an output (or drain)."""
    result = Latency(rate)
    consumer = await _tail_consumer(settings, topic)
    producing = asyncio.create_task(_produce_at_rate(settings, events, result))
    deadline: float | None = None
    try:
        while deadline is None or time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=50)
            arrival = time.time()
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(ValueError, TypeError):
                        result.record(json.loads(record.value), arrival)
            if producing.done():
                producing.result()  # raise what the producer raised
                deadline = deadline or time.monotonic() + drain_s
                if len(result.e2e_ms) >= len(result.sent):
                    break
    finally:
        producing.cancel()
        await consumer.stop()
    return result


def latency_rows(stage: str, ours: Latency, base: Latency | None) -> list[Row]:
    label = f"@{ours.target_rate:,.0f}/s"
    e2e = list(ours.e2e_ms.values())
    base_e2e = list(base.e2e_ms.values()) if base else []
    rows = [Row("latency", f"{stage} {label} e2e p{q}", percentile(e2e, q), "ms",
                "table+send" if base else "",
                percentile(base_e2e, q) if base else None)
            for q in (50, 99)]
    rows.append(Row("latency", f"{stage} {label} e2e max", max(e2e, default=float("nan")), "ms",
                    "table+send" if base else "",
                    max(base_e2e, default=float("nan")) if base else None))
    acked, base_acked = ours.acked_ms, base.acked_ms if base else {}
    for stat in ("p50", "p99", "max"):
        note = (f"the app's acked_ms over this run ({acked.get('n', 0):,.0f} events): record "
                "timestamp -> broker ack of the output" if stat == "p50" else "")
        rows.append(Row("latency", f"{stage} {label} to broker ack {stat}",
                        acked.get(stat, float("nan")), "ms", "table+send" if base else "",
                        base_acked.get(stat, float("nan")) if base else None, note))
    lost = len(ours.sent) - len(ours.e2e_ms)
    for q in (50, 99):
        rows.append(Row("latency", f"{stage} {label} worker latency_ms p{q}",
                        percentile(ours.worker_ms, q), "ms"))
    rows.append(Row("latency", f"{stage} {label} input rate achieved", ours.achieved_rate,
                    "ev/s", "target", ours.target_rate,
                    note=f"{len(ours.e2e_ms)}/{len(ours.sent)} events answered"
                         + (f"; {lost} without output" if lost else "")))
    return rows


# --------------------------------------------------------------------------- stream section


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
        metrics = proc.get_json(f"/metrics?since={since:.3f}")
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
        raise BenchError(f"{proc.name}: /metrics did not answer after the latency run")
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
        metrics = proc.get_json("/metrics") or {}
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
        parts.append(f"/metrics over its last 10k events (pre-loaded ones waited for the "
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


def with_comments(events: Sequence[Any], texts: dict[str, str], share: float) -> list[Any]:
    """Every ``round(1 / share)``-th event as a comment whose text is its item's catalog text
    (ml-100k has no comments: a stand-in of the same length as a short review title)."""
    if share <= 0:
        return list(events)
    step = max(1, round(1 / share))
    return [dataclasses.replace(e, event_type="comment", text=texts[e.item_id])
            if n % step == step - 1 else e for n, e in enumerate(events)]  # fmt: skip


def load_dataset(settings: Settings, count: int) -> tuple[list[Any], list[Any]]:
    from streams.data.datasets import prepare_ml100k, read_events, read_items

    home = settings.home.resolve()
    items_path, events_path = prepare_ml100k(home / "data" / "ml-100k", home / "cache")
    events = list(islice(read_events(events_path), count))
    if len(events) < count:
        raise BenchError(f"{events_path} has {len(events)} events, the run needs {count}")
    return read_items(items_path), events


def stream_section(settings: Settings, cfg: BenchConfig, tmp: Path) -> list[Row]:
    from streams.local.broker import broker_for

    items, events = load_dataset(settings, cfg.events + cfg.latency_events())
    events = with_comments(events, {i.item_id: i.text for i in items}, cfg.comment_share)
    with broker_for(settings.bootstrap, tmp / "broker.log") as bootstrap:
        run = StreamRun(settings, bootstrap, tmp, cfg, items, events)
        results = {kind: run_stage(run, kind) for kind in STAGES}
    return stream_rows(results)


# --------------------------------------------------------------------------- encoder section


def cycling(encode: Callable[[list[str]], Any], texts: Sequence[str], size: int
            ) -> Callable[[], int]:
    """A step for :func:`timed_rate`: encode the next ``size`` texts (wrapping around)."""
    position = [0]

    def step() -> int:
        start = position[0]
        position[0] += size
        encode([texts[(start + i) % len(texts)] for i in range(size)])
        return size

    return step


def torch_encoder(source: Path) -> Callable[[list[str]], Any] | None:
    """Torch eager MiniLM (AutoModel + mean pooling + L2 norm); None without torch."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        return None
    tokenizer: Any = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    model: Any = AutoModel.from_pretrained(str(source), local_files_only=True).eval()

    def encode(texts: list[str]) -> Any:
        with torch.inference_mode():
            batch = tokenizer(texts, padding=True, truncation=True, max_length=256,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1).numpy()

    return encode


_LOADED: dict[str, Callable[[list[str], int], Any]] = {}


def _child_load(kind: str, model_dir: str, provider: str) -> str:
    """In a child process: load ``kind`` (``onnx``, ``int8`` or ``torch``), return its label
    or ''."""
    if kind in ("onnx", "int8"):
        from encoders import TextEncoder

        encoder = TextEncoder.load(Path(model_dir), provider=provider, quantized=kind == "int8")
        _LOADED[kind] = lambda texts, size: encoder.encode(texts, batch_size=size)
        return encoder.provider
    from encoders import default_model_source

    reference = torch_encoder(default_model_source())
    if reference is None:
        return ""
    _LOADED[kind] = lambda texts, _size: reference(texts)
    return "torch eager"


def _child_rate(kind: str, texts: list[str], size: int, min_seconds: float) -> float:
    encode = _LOADED[kind]
    return timed_rate(cycling(lambda batch: encode(batch, size), texts, size), min_seconds)


def _remote_rate(pool: ProcessPoolExecutor, kind: str, texts: list[str], size: int,
                 min_seconds: float) -> float:
    return float(pool.submit(_child_rate, kind, texts, size, min_seconds).result())


def _child_vectors(kind: str, texts: list[str]) -> Any:
    return np.asarray(_LOADED[kind](texts, 64))


def paired_rates(first: Callable[[], float], second: Callable[[], float] | None, rounds: int
                 ) -> tuple[float, float | None]:
    """Medians of ``rounds`` alternating measurements of two rates (so load drift hits both)."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        a.append(first())
        if second is not None:
            b.append(second())
    return float(np.median(a)), (float(np.median(b)) if b else None)


def encoder_section(settings: Settings, cfg: BenchConfig, texts: list[str]) -> list[Row]:
    """ONNX and torch each in a process of its own (thread pools of one never spin against the
    other's runs), measured in alternating rounds."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as onnx, \
            ProcessPoolExecutor(1, mp_context=spawn) as torch:
        model_dir = str(settings.resolved_model_dir.resolve())
        loads = [pool.submit(_child_load, kind, model_dir, settings.provider)
                 for pool, kind in ((onnx, "onnx"), (torch, "torch"))]
        provider, reference = (f.result() for f in loads)
        note = ""
        if reference:
            ours_v, ref_v = (pool.submit(_child_vectors, kind, texts[:64]).result()
                             for pool, kind in ((onnx, "onnx"), (torch, "torch")))
            note = f"max |onnx - torch| = {np.abs(ours_v - ref_v).max():.1e}"
        rows = []
        for size in cfg.batch_sizes:
            ours, theirs = paired_rates(
                partial(_remote_rate, onnx, "onnx", texts, size, cfg.min_seconds),
                partial(_remote_rate, torch, "torch", texts, size, cfg.min_seconds)
                if reference else None, cfg.rounds)
            rows.append(Row("encoder", f"sentences/s, batch {size} ({provider})", ours,
                            "sent/s", reference, theirs, note))
            note = ""
    return rows + int8_rows(settings, cfg, texts) + host_rows(settings, cfg, texts)


def host_rows(settings: Settings, cfg: BenchConfig, texts: list[str], size: int = 512
              ) -> list[Row]:  # fmt: skip
    """The encoder's host work (tokenise + pad, no model run: what bounds it on a GPU) with its
    fast WordPiece path against ``tokenizers`` alone, batches of ``size``, alternating rounds;
    on the bench's texts and on the gpu section's 24-word texts (cut at the export's length
    here, not at 16 tokens), with the word cache warm (every word seen before) and cold
    (emptied before each batch)."""
    from encoders import TextEncoder
    from encoders.runtime.providers import usable_cpu_count
    from streams.bench.gpu import sixteen_token_texts

    folder = settings.resolved_model_dir
    fast = TextEncoder.load(folder, provider="cpu", intra_op_threads=1)
    plain = TextEncoder.load(folder, provider="cpu", intra_op_threads=1, fast_tokenizer=False)
    if not fast.fast_tokenizer:
        return [Row("encoder", "host work: fast WordPiece path", float("nan"), "",
                    note="not used for this tokenizer")]

    def step(encoder: TextEncoder, batches: list[list[str]], cold: bool) -> Callable[[], int]:
        def run() -> int:
            for batch in batches:
                if cold:
                    encoder.clear_cache()
                encoder.prepare(encoder.tokenize(batch))
            return sum(map(len, batches))

        return run

    rows = []
    for label, pool in (("the bench's texts", texts),
                        ("24-word texts", sixteen_token_texts(size * 8))):
        batches = [pool[i : i + size] for i in range(0, min(len(pool), size * 8), size)]
        for cold in (False, True):
            ours, theirs = paired_rates(
                partial(timed_rate, step(fast, batches, cold), cfg.min_seconds),
                partial(timed_rate, step(plain, batches, False), cfg.min_seconds), cfg.rounds)
            rows.append(Row("encoder", f"host work texts/s, batch {size}, {label}, word cache "
                            f"{'cold' if cold else 'warm'}", ours, "texts/s",
                            "tokenizers encode_batch_fast alone", theirs,
                            "tokenise + pad, no model run; ours on one thread, tokenizers on "
                            f"its own pool ({usable_cpu_count()} threads)"))
    return rows


def int8_rows(settings: Settings, cfg: BenchConfig, texts: list[str]) -> list[Row]:
    """The int8-quantised encoder (``INTEREST_STREAM_ENCODER_INT8``) against fp32 ONNX."""
    from encoders import EncoderError, quantize_int8
    from encoders.runtime.metadata import INT8_FILE

    model_dir = settings.resolved_model_dir.resolve()
    try:
        if not (model_dir / INT8_FILE).is_file():
            quantize_int8(model_dir)
    except EncoderError as exc:
        return [Row("encoder", "int8 sentences/s", math.nan, "sent/s", note=f"skipped: {exc}")]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as fp32, \
            ProcessPoolExecutor(1, mp_context=spawn) as int8:
        for pool, kind in ((fp32, "onnx"), (int8, "int8")):
            pool.submit(_child_load, kind, str(model_dir), settings.provider).result()
        a, b = (pool.submit(_child_vectors, kind, texts[:256]).result()
                for pool, kind in ((fp32, "onnx"), (int8, "int8")))
        cosine = float(np.mean(np.sum(a * b, axis=1)))  # both L2-normalised in the graph
        rows = []
        for size in cfg.batch_sizes[1:]:
            ours, theirs = paired_rates(
                partial(_remote_rate, int8, "int8", texts, size, cfg.min_seconds),
                partial(_remote_rate, fp32, "onnx", texts, size, cfg.min_seconds), cfg.rounds)
            rows.append(Row("encoder", f"int8 sentences/s, batch {size}", ours, "sent/s",
                            "fp32 onnx", theirs, f"mean cosine(int8, fp32) {cosine:.4f}"))
    return rows


# --------------------------------------------------------------------------- rank and state


def random_unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def full_ring_states(vectors: np.ndarray, users: int, rng: np.random.Generator) -> list[Any]:
    """Users whose history and dedupe rings are full (random clicks over ``vectors``' rows)."""
    from interest_state import Event, EventType, InterestState, Observation, UpdateParams, update

    params = UpdateParams()
    events = max(params.history_len, params.dedupe_len) + 6
    states = []
    for user in range(users):
        rows = rng.integers(0, len(vectors), size=events)
        observations = [
            Observation(Event(f"u{user}-{n}", f"u{user}", str(row), EventType.CLICK, 1e9 + n),
                        vectors[row])
            for n, row in enumerate(rows)
        ]
        state, _ = update(InterestState.empty(vectors.shape[1]), observations, params)
        states.append(state)
    return states


def plain_topk(matrix: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Baseline: one matmul, argpartition, sort the top k; no seen-filter, no explanations."""
    scores = queries @ matrix.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def _rank_row(size: int, cfg: BenchConfig, rng: np.random.Generator, dim: int, k: int) -> Row:
    from encoders import ItemIndex
    from interest_state import rank

    vectors = random_unit_vectors(size, dim, rng)
    index = ItemIndex(dim, capacity=size)
    ids = [str(i) for i in range(size)]
    index.upsert(ids, ids, vectors)
    states = full_ring_states(vectors, cfg.rank_users, rng)
    queries = np.stack([s.interest_vector() for s in states])

    def ours() -> int:
        rank(states, index, k)
        return len(states)

    def plain() -> int:
        plain_topk(vectors, queries, k)
        return len(states)

    mine, theirs = paired_rates(lambda: timed_rate(ours, cfg.min_seconds),
                                lambda: timed_rate(plain, cfg.min_seconds), cfg.rounds)
    return Row("rank", f"users/s, {size:,} items (top {k}, {len(states)}/call)", mine,
               "users/s", "numpy matmul+top-k", theirs)


def rank_section(cfg: BenchConfig, dim: int = 384, k: int = 10) -> list[Row]:
    rng = np.random.default_rng(7)
    return [_rank_row(size, cfg, rng, dim, k) for size in cfg.rank_sizes]


def state_section() -> list[Row]:
    from interest_state import encode_state

    rng = np.random.default_rng(11)
    vectors = random_unit_vectors(2_000, 384, rng)
    state = full_ring_states(vectors, 1, rng)[0]
    with_long = state.with_long_term(vectors[0], "seq-v1")
    rows = []
    for label, value in (("full ring", state), ("full ring + long-term", with_long)):
        size = len(encode_state(value))
        rows.append(Row("state", f"bytes/user, {label}", size, "B", "pickle",
                        len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)),
                        f"{1e9 / size / 1e6:.2f}M users per GB"))
    return rows


# --------------------------------------------------------------------------- the command


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "seconds": self.seconds,
                "rows": [row.to_json() for row in self.rows]}


@contextlib.contextmanager
def timed(report: Report, name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        report.seconds[name] = round(time.perf_counter() - start, 2)


def run_meta(settings: Settings, cfg: BenchConfig) -> dict[str, Any]:
    import onnxruntime

    return {
        "quick": cfg.quick,
        "config": dataclasses.asdict(cfg),
        "broker": settings.bootstrap or "embedded tansu",
        "partitions": settings.partitions,
        "batch_size": settings.batch_size,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "worker_ranking": _ranking(settings),
        "comment_share": cfg.comment_share,
        "commit": _commit(),
    }


def _commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), or ``None`` outside git."""

    def git(*args: str) -> str:
        here = Path(__file__).resolve().parent
        done = subprocess.run(["git", *args], cwd=here, capture_output=True,  # noqa: S603,S607
                              text=True, timeout=5, check=True)
        return done.stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _ranking(settings: Settings) -> str:
    from encoders.runtime.sequence import CARD_FILE, is_sequence_model

    folder = settings.resolved_sequence_model_dir
    if not is_sequence_model(folder):
        return f"short-term vector only (no sequence model in {folder})"
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    return f"blend {settings.blend_weight:g} x sequence {card.get('version')} + short-term"


def run_bench(settings: Settings, cfg: BenchConfig, echo: Callable[[str], None]) -> Report:
    """Run the chosen sections in order; each progress line goes to ``echo``."""
    from streams.data.datasets import read_items
    from streams.worker.runtime import ensure_model

    report = Report(meta=run_meta(settings, cfg))
    ensure_model(settings)
    with tempfile.TemporaryDirectory(prefix="interest-bench-") as tmp, timed(report, "total"):
        if "stream" in cfg.sections:
            echo("stream: broker, no-op, table+send and worker stages ...")
            with timed(report, "stream"):
                report.rows += stream_section(settings, cfg, Path(tmp))
        if "encoder" in cfg.sections:
            echo("encoder ...")
            home = settings.home.resolve()
            items = read_items(home / "data" / "ml-100k" / "items.jsonl") if (
                home / "data" / "ml-100k" / "items.jsonl").is_file() else []
            texts = [i.text for i in items] or [f"sentence number {n}" for n in range(512)]
            with timed(report, "encoder"):
                report.rows += encoder_section(settings, cfg, texts)
        if "rank" in cfg.sections:
            echo("rank ...")
            with timed(report, "rank"):
                report.rows += rank_section(cfg)
        if "ann" in cfg.sections:
            from streams.bench.ann import ann_section

            echo("ann: exact vs approximate ranking at large catalogs ...")
            with timed(report, "ann"):
                report.rows += ann_section(cfg, settings)
        if "sequence" in cfg.sections:
            from streams.bench.sequence import sequence_section

            echo("sequence model ...")
            with timed(report, "sequence"):
                report.rows += sequence_section(settings, cfg, echo)
        if "state" in cfg.sections:
            with timed(report, "state"):
                report.rows += state_section()
        if "store" in cfg.sections:
            from streams.bench.store import state_scale_section

            echo("store: users in the worker's RocksDB table store ...")
            with timed(report, "store"):
                report.rows += state_scale_section(cfg, settings, Path(tmp))
        if "gpu" in cfg.sections:
            from streams.bench.gpu import gpu_section

            with timed(report, "gpu"):
                report.rows += gpu_section(
                    settings, cfg, Path(tmp), echo,
                    shares=(cfg.comment_share,) if cfg.comment_share else (0.5, 1.0))
    report.meta["loadavg_end"] = os.getloadavg()
    return report


def _sections(value: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = set(chosen) - set(SECTIONS)
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(SECTIONS)}; got {value!r}")
    return chosen


@click.command("bench")
@click.option("--quick", is_flag=True, help="CI-sized run: well under 2 minutes.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the results as JSON to this file.")
@click.option("--events", type=int, default=None,
              help="Events pre-loaded per stream stage (default 30,000; --quick 4,000).")
@click.option("--sections", default=",".join(SECTIONS), show_default=True,
              help="Comma-separated subset of the sections to run.")
@click.option("--comment-share", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Turn this share of the stream's events into comments (text encoded).")
@click.pass_context
def bench_command(
    ctx: click.Context, quick: bool, out: Path | None, events: int | None, sections: str,
    comment_share: float,
) -> None:
    """Events/s, latency, encoder, ranking and state size, each vs a same-run baseline."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    # SIGTERM unwinds like Ctrl-C, so every ``finally`` stops its broker and processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = dataclasses.replace(BenchConfig.for_mode(quick, events, _sections(sections)),
                              comment_share=comment_share)
    report = run_bench(settings, cfg, lambda line: click.echo(line, err=True))
    click.echo(format_table(report.rows))
    click.echo(f"\n{report.seconds.get('total', 0):.0f}s in all ("
               + ", ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items() if k != "total")
               + f"); {os.cpu_count()} CPUs, load {report.meta['loadavg_end'][0]:.1f}; "
               + f"worker ranking: {report.meta['worker_ranking']}; "
               + f"comments: {report.meta['comment_share']:.0%} of the stream's events")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_json(), indent=1) + "\n")
        click.echo(f"results: {out}")


if __name__ == "__main__":
    bench_command()
