"""Per-worker counters and latency reservoirs, shown by ``/metrics`` (Prometheus text),
``/metrics.json`` and ``/healthz``.

Each reservoir is a :class:`Window`: the last values (for percentiles) and a cumulative
histogram of every value ever added (:class:`Buckets`, for Prometheus, whose histograms must only
grow), filled by the same ``append``/``extend`` calls the agent makes.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from streams.worker.online_quality import OnlineQuality

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "MS_BUCKETS",
    "Acked",
    "Buckets",
    "Stats",
    "Window",
    "reason_group",
    "since_param",
]

#: Upper bounds (ms) of the latency histograms' buckets: 1 ms to 30 s.
MS_BUCKETS: tuple[float, ...] = (
    1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
)  # fmt: skip
#: Upper bounds of the batch-size histogram's buckets (events per batch).
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


_VALUES = re.compile(r": .*|, got .*| \(.*\)$| '[^']*'$")


def reason_group(reason: str) -> str:
    """A dead-letter reason without the offending value, so the counter stays small.

    >>> reason_group("unknown item_id 'x9'")
    'unknown item_id'
    >>> reason_group("field 'ts' must be epoch seconds or ISO-8601, got list")
    "field 'ts' must be epoch seconds or ISO-8601"
    """
    return re.sub(r"(?<![\w-])\d+(?![\w-])", "N", _VALUES.sub("", reason)).strip()


def since_param(query: Mapping[str, str], name: str = "since") -> float:
    """``/metrics.json?since=<epoch seconds>`` (or another ``name``): 0 when absent;
    ``ValueError`` saying why if bad.

    >>> since_param({"since": "1764100000.5"})
    1764100000.5
    """
    raw = query.get(name)
    if raw is None:
        return 0.0
    try:
        since = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be epoch seconds, got {raw!r}") from None
    if not math.isfinite(since) or since < 0:
        raise ValueError(f"{name} must be epoch seconds, got {raw!r}")
    if since > time.time() + 86_400:
        raise ValueError(f"{name} must be epoch seconds (not ms), got {raw!r}: a day ahead or more")
    return since


@dataclass(slots=True)
class Buckets:
    """A cumulative histogram: how many values fell at or under each bound, their count and sum.

    ``counts[i]`` holds the values in ``(bounds[i-1], bounds[i]]``; the last slot those above
    every bound (Prometheus' ``+Inf``).
    """

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"bucket bounds must be increasing, got {self.bounds}")
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, values at or under it)`` for each bound, then ``(inf, count)``."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class Window(deque[float]):
    """The last ``maxlen`` values (percentiles over them), and :class:`Buckets` of all of them.

    ``buckets.count`` counts every value ever added, so the values added since an earlier count
    ``c`` are the last ``min(buckets.count - c, len(window))`` ones (:meth:`since`).
    """

    def __init__(self, maxlen: int, bounds: tuple[float, ...] = MS_BUCKETS) -> None:
        super().__init__(maxlen=maxlen)
        self.buckets = Buckets(bounds)

    def append(self, value: float) -> None:
        super().append(value)
        self.buckets.observe(value)

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.append(value)

    def since(self, count: int) -> list[float]:
        """The values added after ``buckets.count`` was ``count`` (those still in the window)."""
        new = min(self.buckets.count - count, len(self))
        return list(itertools.islice(self, len(self) - new, None)) if new > 0 else []


@dataclass(slots=True)
class Acked:
    """Event -> output at the broker: each event's record timestamp -> the broker's ack of the
    output message naming it (ms), kept with that timestamp so one window of events (those
    stamped since a time) can be read back.

    The record timestamp is the producer's (``CreateTime``: set at its send call, in whole ms,
    so never after the event reached the broker), and the ack comes after the output is on its
    topic: each figure is an upper bound of the event's time from broker to output topic,
    without the hop to whoever reads the output. The last ``capacity`` events are kept in two
    numpy rings, so ``/metrics`` (polled 10x/s by the bench) reads them without a Python loop.
    """

    capacity: int = 10_000  # like the other reservoirs; a bench run at 1,000/s is 8,000
    _stamps: np.ndarray = field(init=False, repr=False)
    _ms: np.ndarray = field(init=False, repr=False)
    _next: int = field(default=0, init=False)
    _count: int = field(default=0, init=False)
    #: Every ack's time (ms), for Prometheus.
    buckets: Buckets = field(default_factory=lambda: Buckets(MS_BUCKETS))

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        self._stamps = np.zeros(self.capacity)
        self._ms = np.zeros(self.capacity)

    def record(self, stamps: Iterable[float], now: float | None = None) -> None:
        """The broker acked an output naming events with these record timestamps (s), at
        ``now`` (epoch s; the current time when not given)."""
        now = time.time() if now is None else now
        for stamp in stamps:
            i = self._next
            self._stamps[i] = stamp
            self._ms[i] = ms = (now - stamp) * 1000.0
            self.buckets.observe(ms)
            self._next = (i + 1) % self.capacity
            self._count = min(self._count + 1, self.capacity)

    def callback(self, stamps: tuple[float, ...]) -> Callable[[object], None]:
        """A callback for faust's ``send``: records ``stamps`` when the broker acks the message."""
        return partial(self._on_ack, stamps)

    def _on_ack(self, stamps: tuple[float, ...], _sent: object) -> None:
        self.record(stamps)

    def summary(self, since: float = 0.0) -> dict[str, float]:
        """p50/p90/p99/max and count for the events stamped at or after ``since`` (epoch s)."""
        values = self._ms[: self._count][self._stamps[: self._count] >= since]
        if values.size == 0:
            return {}
        return {**_percentiles(values), "max": round(float(values.max()), 2), "n": int(values.size)}


@dataclass(slots=True)
class Stats:
    """Counters of one worker process (each worker reports its own)."""

    started: float = field(default_factory=time.time)
    events_in: int = 0
    events_applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    recommendations_out: int = 0
    batches: int = 0
    items_indexed: int = 0
    #: Forget requests carried out (:mod:`streams.worker.control`), and the user states they
    #: deleted from this worker's partitions (a forget of a user held elsewhere deletes none).
    forgets: int = 0
    states_forgotten: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    latencies_ms: Window = field(default_factory=lambda: Window(10_000))
    #: Where the latency goes: each event's record timestamp -> its batch reaching the agent
    #: (broker, fetch, Faust, the microbatch window), and each batch's own work (decode, states,
    #: model, ranking, writes and sends queued).
    waits_ms: Window = field(default_factory=lambda: Window(10_000))
    batch_ms: Window = field(default_factory=lambda: Window(1_000))
    batch_sizes: Window = field(default_factory=lambda: Window(1_000, BATCH_SIZE_BUCKETS))
    acked: Acked = field(default_factory=Acked)
    #: Each applied event scored against its user's last recommendation list (HR@10, MRR@10).
    online: OnlineQuality = field(default_factory=OnlineQuality)

    def dead_letter(self, reason: str) -> None:
        self.dead_letters[reason_group(reason)] += 1

    def snapshot(self, since: float = 0.0) -> dict[str, Any]:
        """``since`` (epoch s) limits ``acked_ms`` to the events stamped from then on."""
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "events_in": self.events_in,
            "events_applied": self.events_applied,
            "duplicates": self.duplicates,
            "redelivered": self.redelivered,
            "dead_letters": sum(self.dead_letters.values()),
            "dead_letters_by_reason": dict(self.dead_letters),
            "recommendations_out": self.recommendations_out,
            "batches": self.batches,
            "mean_batch_size": round(float(np.mean(self.batch_sizes)), 1)
            if self.batch_sizes
            else 0,
            "items_indexed": self.items_indexed,
            "forgets": self.forgets,
            "states_forgotten": self.states_forgotten,
            "latency_ms": _percentiles(self.latencies_ms),
            "wait_ms": _percentiles(self.waits_ms),
            "batch_ms": _percentiles(self.batch_ms),
            "acked_ms": self.acked.summary(since),
            "online": self.online.snapshot(),
        }


def _percentiles(values: deque[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p99 of a reservoir, {} while it is empty."""
    if len(values) == 0:
        return {}
    array = (values if isinstance(values, np.ndarray)
             else np.fromiter(values, dtype=np.float64, count=len(values)))
    found = np.percentile(array, (50, 90, 99))  # one partial sort for the three
    return {f"p{q}": round(float(v), 2) for q, v in zip((50, 90, 99), found, strict=True)}
