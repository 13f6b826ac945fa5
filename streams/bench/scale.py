"""The ``scale`` section of ``interest-stream bench``: one worker, then two of one group.

Two runs on one broker, each on its own app id and topics of :data:`PARTITIONS` partitions, with
workers run as the ``stream`` section runs them. Worker 1 starts and takes every partition; a
steady stream (:data:`STEADY_RATE` events/s) flows while, in the two-worker run, worker 2
starts and joins the group (in the one-worker run nothing joins: the baseline); then the burst,
the first N ml-100k events sent flat out, while the workers' ``/metrics.json`` and every
process's CPU seconds (``/proc/<pid>/stat``) are polled until the workers are done. Events/s
and CPU are taken over the burst's busy window (:func:`busy_window`); the pause is the longest
gap between first answers of steady events around the join (:func:`pause_figures`, as
``tests/integration/scale_run.py`` measures gaps). The broker, the bench and the workers share
the machine's cores: on 2 cores the two-worker ratio is bounded by them, not by the group.
Last, :func:`replayed_state_sizes`: the encoded states the worker's batch step makes of ml-100k.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import functools
import itertools
import os
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streams.bench.common import BenchConfig, Row, load_dataset, percentile
from streams.bench.latency import measure_latency
from streams.bench.processes import ServiceProcess, free_port, processed, stage_settings
from streams.errors import BenchError
from streams.settings import Settings

__all__ = ["Burst", "Pause", "Sample", "busy_window", "burst_figures", "longest_gap",
           "pause_figures", "replayed_state_sizes", "scale_rows", "scale_section"]  # fmt: skip

PARTITIONS = 8
STEADY_RATE = 200.0
LEAD_S, SETTLE_S, DRAIN_S = 2.0, 3.0, 15.0
"""Steady stream before worker 2 starts, after both report partitions; wait for answers."""
WORKER = ["-m", "streams.cli", "worker", "--store", "memory"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_window(done: Sequence[int]) -> tuple[int, int]:
    """(first, last) sample of the busy window of a count that starts at ``done[0]``: it opens
    at the first sample that shows progress, or at the one before when only the last does."""
    if not done:
        raise ValueError("no samples")
    last = len(done) - 1
    moving = [i for i, n in enumerate(done) if n > done[0]]
    if not moving:
        return last, last
    return (moving[0] - 1 if moving[0] == last else moving[0]), last


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    done: int
    batches: int
    cpu: dict[str, float]


@dataclass(frozen=True, slots=True)
class Burst:
    """The burst's busy window: events, seconds, microbatches, each process's CPU seconds."""

    events: int
    seconds: float
    batches: int
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def worker_cpu(self) -> float:
        return sum(v for k, v in self.cpu.items() if k.startswith("worker"))

    @property
    def per_cpu_second(self) -> float:
        return self.events / self.worker_cpu if self.worker_cpu > 0 else float("nan")


def burst_figures(samples: Sequence[Sample]) -> Burst:
    first, last = busy_window([s.done for s in samples])
    a, b = samples[first], samples[last]
    cpu = {k: v - a.cpu.get(k, 0.0) for k, v in b.cpu.items()}
    return Burst(b.done - a.done, b.t - a.t, b.batches - a.batches, cpu)


@dataclass(frozen=True, slots=True)
class Pause:
    """The steady stream from the join (alone: the same moment) to its end, in seconds."""

    window_s: float
    gap_s: float | None
    """Longest gap between consecutive first answers ending after the join, beginning before
    the end; ``gap_from_s``: where it began, from the join (negative: before it)."""
    gap_from_s: float | None
    max_wait_s: float | None
    """Longest wait of an event sent in the window for its first answer."""
    unanswered: int
    healthy_s: float | None = None
    owned_s: float | None = None
    """Worker 2 (alone: worker 1) from its start until healthy / until it reported partitions
    (it joins the group before its catalog is loaded, and its partitions wait for that)."""


def longest_gap(
    stamps: Sequence[float], start: float, end: float
) -> tuple[float | None, float | None]:
    """The longest gap between consecutive ``stamps`` (sorted) that ends after ``start`` and
    begins before ``end``: (its length, where it began); ``(None, None)`` for none."""
    i = max(bisect.bisect_right(stamps, start) - 1, 0)
    best: tuple[float | None, float | None] = (None, None)
    while i + 1 < len(stamps) and stamps[i] < end:
        gap = stamps[i + 1] - stamps[i]
        if best[0] is None or gap > best[0]:
            best = (gap, stamps[i])
        i += 1
    return best


def pause_figures(sent: dict[str, float], answered: dict[str, float], start: float, end: float
                  ) -> Pause:  # fmt: skip
    """:class:`Pause` of a steady stream; ``sent`` and ``answered`` map event ids to the send
    time and to the first recommendation naming them (epoch s)."""
    gap, began = longest_gap(sorted(answered.values()), start, end)
    window = [e for e, t in sent.items() if start <= t < end]
    waits = [answered[e] - sent[e] for e in window if e in answered]
    began_s = None if began is None else began - start
    unanswered = sum(e not in answered for e in window)
    return Pause(end - start, gap, began_s, max(waits, default=None), unanswered)


# --------------------------------------------------------------------------- the processes


class Steady:
    """The steady stream on a thread of its own: :func:`streams.bench.latency.measure_latency`
    at :data:`STEADY_RATE` over events that end when ``stop`` is set (the join's length is not
    known ahead); ``answered``: event id -> the bench reader's first answer naming it."""

    def __init__(self, settings: Settings, events: Sequence[Any]) -> None:
        self.stop = threading.Event()
        self.result: list[Any] = []
        until: Any = itertools.takewhile(lambda _: not self.stop.is_set(), events)
        topic = settings.topics.recommendations
        run = functools.partial(measure_latency, settings, topic, until, STEADY_RATE, DRAIN_S)
        self.thread = threading.Thread(
            target=lambda: self.result.append(asyncio.run(run())), daemon=True
        )

    def finish(self) -> tuple[dict[str, float], dict[str, float]]:
        """Stop sending; (sent, answered) once the last events are answered (or drained)."""
        self.stop.set()
        self.thread.join(DRAIN_S + 60)
        if not self.result:
            raise BenchError("scale: the steady stream failed (see the traceback above)")
        latency = self.result[0]
        answered = {e: latency.sent[e] + ms / 1000 for e, ms in latency.e2e_ms.items()}
        return latency.sent, answered


def _metrics(procs: Sequence[ServiceProcess]) -> list[dict[str, Any]] | None:
    """Each worker's ``/metrics.json`` (``None`` when one does not answer this time)."""
    found = []
    for proc in procs:
        proc.check()
        if (metrics := proc.get_json("/metrics.json")) is None:
            return None
        found.append(metrics)
    return found


def _owned(procs: Sequence[ServiceProcess]) -> list[int]:
    return [int(m.get("partitions_owned") or 0) for m in _metrics(procs) or [{}] * len(procs)]


def _until(limit_s: float, **wanted: Callable[[], bool]) -> dict[str, float]:
    """Poll the conditions until each has held once; -> the seconds until each first held."""
    start, held = time.monotonic(), dict[str, float]()
    while len(held) < len(wanted):
        for name, check in wanted.items():
            if name not in held and check():
                held[name] = time.monotonic() - start
        if time.monotonic() - start > limit_s:
            raise BenchError(f"scale: after {limit_s:.0f} s only {sorted(held)} of {[*wanted]}")
        time.sleep(0.2)
    return held


def _sample(procs: Sequence[ServiceProcess], pids: dict[str, int]) -> Sample | None:
    found = _metrics(procs)
    if found is None:
        return None
    done, batches = sum(processed(m) for m in found), sum(m.get("batches", 0) for m in found)
    return Sample(time.perf_counter(), done, batches, {k: cpu_seconds(v) for k, v in pids.items()})


def _burst(settings: Settings, events: Sequence[Any], procs: Sequence[ServiceProcess],
           pids: dict[str, int]) -> Burst:  # fmt: skip
    """Send ``events`` flat out (a thread of its own) and sample until the workers are done."""
    from streams.local.replay import replay_events

    first = _sample(procs, pids)
    if first is None:
        raise BenchError("scale: a worker's /metrics.json did not answer before the burst")
    samples = [first]
    send = functools.partial(replay_events, settings, events, progress=False)
    producing = threading.Thread(target=lambda: asyncio.run(send()), daemon=True)
    producing.start()
    limit_s = 180 + len(events) / 100
    deadline = time.monotonic() + limit_s
    while samples[-1].done < first.done + len(events):
        if time.monotonic() > deadline:
            done = samples[-1].done - first.done
            raise BenchError(f"scale: {done}/{len(events)} events processed after {limit_s:.0f} s")
        time.sleep(0.1)
        if (sample := _sample(procs, pids)) is not None:
            samples.append(sample)
    producing.join(30)
    return burst_figures(samples)


@dataclass(frozen=True)
class ScaleRun:
    base: Settings
    bootstrap: str
    tmp: Path
    items: list[Any]
    burst: list[Any]
    steady: list[Any]
    broker_pid: int | None
    steady_s: float


def _add(procs: list[ServiceProcess], settings: Settings) -> dict[str, float]:
    """Start one more worker (its log in its home folder); -> the seconds until it was healthy
    (``/healthz``) and until every worker reported partitions (``owned``)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    name = f"worker-{len(procs) + 1}"
    procs.append(proc := ServiceProcess.start(name, WORKER, settings, settings.home / "log"))
    return _until(180, healthy=lambda: proc.get_json("/healthz") is not None,
                  owned=lambda: min(_owned(procs)) > 0)  # fmt: skip


def run_workers(run: ScaleRun, count: int) -> tuple[Burst, Pause]:
    """One run of ``count`` (1 or 2) workers on fresh topics: join, steady stream, burst."""
    from streams.local.replay import publish_items
    from streams.worker.app import topic_specs
    from streams.worker.topics import ensure_topics

    base = dataclasses.replace(run.base, partitions=PARTITIONS)
    first = stage_settings(base, run.bootstrap, f"scale{count}", run.tmp / f"scale{count}-1")
    second = dataclasses.replace(first, web_port=free_port(), home=run.tmp / f"scale{count}-2")
    asyncio.run(ensure_topics(run.bootstrap, topic_specs(first)))
    asyncio.run(publish_items(first, run.items))
    procs: list[ServiceProcess] = []
    steady = Steady(first, run.steady)
    try:
        alone = _add(procs, first)
        _until(90, every=lambda: _owned(procs)[0] >= PARTITIONS)
        steady.thread.start()
        time.sleep(LEAD_S)
        joined, join = time.time(), _add(procs, second) if count == 2 else alone
        time.sleep(max(SETTLE_S, run.steady_s - (time.time() - joined)))
        end = time.time()
        pause = pause_figures(*steady.finish(), joined, end)
        pause = dataclasses.replace(pause, healthy_s=join.get("healthy"), owned_s=join.get("owned"))
        pids = {p.name: p.popen.pid for p in procs} | {"bench": os.getpid()}
        if run.broker_pid is not None:
            pids["broker"] = run.broker_pid
        burst = _burst(first, run.burst, procs, pids)
    finally:
        steady.stop.set()
        for proc in reversed(procs):
            proc.stop()
    return burst, pause


# --------------------------------------------------------------------------- state bytes


def replayed_state_sizes(settings: Settings, count: int) -> dict[str, Any]:
    """Encoded bytes of every user's state after the first ``count`` ml-100k events went
    through the worker's batch step (``Pipeline.process``: ``interest_state.update`` with the
    worker's ``UpdateParams``, the sequence model's long-term vector when one is trained) in
    batches of ``settings.batch_size``, each event with the ``"<topic>/<partition>"`` and offset
    a worker records (partition: CRC32 of the user over :data:`PARTITIONS`)."""
    from interest_state import encode_state
    from streams.worker.runtime import build_pipeline, build_watcher

    pipeline = build_pipeline(settings)
    items, records = load_dataset(settings, count)
    pipeline.add_items(items)
    build_watcher(settings, pipeline)
    offsets: dict[str, int] = {}
    events = []
    for r in records:
        topic = getattr(settings.topics, r.event_type)  # the event type's topic, as in replay
        source = f"{topic}/{zlib.crc32(r.user_id.encode()) % PARTITIONS}"
        offsets[source] = offsets.get(source, -1) + 1
        events.append(dataclasses.replace(r.to_event(), source=source, offset=offsets[source]))
    states: dict[str, Any] = {}
    for start in range(0, len(events), settings.batch_size):
        result = pipeline.process(events[start : start + settings.batch_size], states)
        states.update({user: outcome.state for user, outcome in result.users.items()})
    sizes = [len(encode_state(s)) for s in states.values()]
    long_dim = max(s.long_dim for s in states.values())
    return {"events": count, "sizes": sizes, "model": pipeline.model_version, "long_dim": long_dim}


# --------------------------------------------------------------------------- rows


def _cores(b: Burst) -> str:
    busy = ", ".join(f"{k} {v / b.seconds:.2f}" for k, v in sorted(b.cpu.items()))
    batch = b.events / b.batches if b.batches else float("nan")
    return f"{b.events:,} events in {b.seconds:.2f}s, mean batch {batch:.1f}; cores busy: {busy}"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _f(x: float | None) -> float:
    return float("nan") if x is None else x


def scale_rows(one: tuple[Burst, Pause], two: tuple[Burst, Pause], state: dict[str, Any] | None,
               full_ring: int | None, cpus: int | None) -> list[Row]:  # fmt: skip
    """Two workers against one: events/s, per CPU-second, cores; the join's pause against
    the same stream with no join; the replayed states against the store section's state."""
    row = functools.partial(Row, "scale")
    (a, p), (b, q) = one, two
    bound = (f"; {cpus} CPUs shared by the broker, the bench's producer and the workers: the "
             "ratio is bounded by the cores, not by the group")  # fmt: skip
    joined = (f"{STEADY_RATE:.0f} events/s; the gap began {_s(q.gap_from_s)} s after worker 2 "
              f"started; worker 2 held partitions after {_s(q.owned_s)} s, was healthy after "
              f"{_s(q.healthy_s)} s (worker 1 alone: {_s(p.healthy_s)} s); windows "
              f"{q.window_s:.1f} / {p.window_s:.1f} s")  # fmt: skip
    rows = [
        row("events/s, 2 workers (1 group)", b.rate, "ev/s", "1 worker", a.rate, _cores(b) + bound),
        row("events per worker CPU-second, 2 workers", b.per_cpu_second, "ev/cpu-s", "1 worker",
            a.per_cpu_second, f"1 worker: {_cores(a)}"),
        row("join: longest gap between answers", _f(q.gap_s), "s", "no join", p.gap_s, joined),
        row("join: longest wait of an event", _f(q.max_wait_s), "s", "no join", p.max_wait_s,
            f"unanswered {q.unanswered} / {p.unanswered}"),
    ]  # fmt: skip
    if state:
        sizes = state["sizes"]
        spread = " / ".join(f"{percentile(sizes, q):,.0f}" for q in (10, 50, 90))
        note = (f"p10 / p50 / p90 {spread}, max {max(sizes):,}, mean {np.mean(sizes):,.0f}; "
                f"{state['events']:,} events through Pipeline.process; {state['model']}, "
                f"long-term dim {state['long_dim']}")  # fmt: skip
        users = f"{len(sizes)} ml-100k users replayed"
        rows += [
            row(f"state bytes/user p50, {users}", percentile(sizes, 50), "B",
                "store section's 4-centroid state", full_ring, note),
            row("state bytes/user max, replayed", max(sizes), "B",
                "store section's 4-centroid state", full_ring),
        ]  # fmt: skip
    return rows


def scale_section(settings: Settings, cfg: BenchConfig, tmp: Path) -> list[Row]:
    """One worker, then two, on one broker; the states a worker writes (see the module)."""
    from streams.bench.store_data import encoded_states
    from streams.local.broker import EmbeddedBroker

    burst_n = 2 * cfg.events if cfg.quick else cfg.events
    items, events = load_dataset(settings, burst_n + int(STEADY_RATE * 200))
    with contextlib.ExitStack() as stack:
        bootstrap, broker_pid = settings.bootstrap, None
        if not bootstrap:
            broker = stack.enter_context(EmbeddedBroker(log_file=tmp / "scale-broker.log"))
            bootstrap, broker_pid = broker.bootstrap, broker.pid
        run = ScaleRun(settings, bootstrap, tmp, items, events[:burst_n], events[burst_n:],
                       broker_pid, 6.0 if cfg.quick else 15.0)  # fmt: skip
        one, two = run_workers(run, 1), run_workers(run, 2)
    state = replayed_state_sizes(settings, 20_000 if cfg.quick else 100_000)
    full_ring = len(encoded_states(np.random.default_rng(5), 1, 1.7e9)[0])
    return scale_rows(one, two, state, full_ring, os.cpu_count())
