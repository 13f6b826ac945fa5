"""Per-worker counters and a latency reservoir, shown by ``/metrics`` and ``/healthz``."""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Stats", "reason_group"]


_VALUES = re.compile(r": .*|, got .*| \(.*\)$| '[^']*'$")


def reason_group(reason: str) -> str:
    """A dead-letter reason without the offending value, so the counter stays small.

    >>> reason_group("unknown item_id 'x9'")
    'unknown item_id'
    >>> reason_group("field 'ts' must be epoch seconds or ISO-8601, got list")
    "field 'ts' must be epoch seconds or ISO-8601"
    """
    return re.sub(r"(?<![\w-])\d+(?![\w-])", "N", _VALUES.sub("", reason)).strip()


@dataclass(slots=True)
class Stats:
    """Counters of one worker process (each worker reports its own)."""

    started: float = field(default_factory=time.time)
    events_in: int = 0
    events_applied: int = 0
    duplicates: int = 0
    recommendations_out: int = 0
    batches: int = 0
    items_indexed: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    #: Where the latency goes: each event's record timestamp -> its batch reaching the agent
    #: (broker, fetch, Faust, the microbatch window), and each batch's own work (decode, states,
    #: model, ranking, writes and sends queued).
    waits_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    batch_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1_000))
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1_000))

    def dead_letter(self, reason: str) -> None:
        self.dead_letters[reason_group(reason)] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "events_in": self.events_in,
            "events_applied": self.events_applied,
            "duplicates": self.duplicates,
            "dead_letters": sum(self.dead_letters.values()),
            "dead_letters_by_reason": dict(self.dead_letters),
            "recommendations_out": self.recommendations_out,
            "batches": self.batches,
            "mean_batch_size": round(float(np.mean(self.batch_sizes)), 1)
            if self.batch_sizes
            else 0,
            "items_indexed": self.items_indexed,
            "latency_ms": _percentiles(self.latencies_ms),
            "wait_ms": _percentiles(self.waits_ms),
            "batch_ms": _percentiles(self.batch_ms),
        }


def _percentiles(values: deque[float]) -> dict[str, float]:
    """p50/p90/p99 of a reservoir, {} while it is empty."""
    if not values:
        return {}
    array = np.fromiter(values, dtype=np.float64, count=len(values))
    found = np.percentile(array, (50, 90, 99))  # one partial sort for the three
    return {f"p{q}": round(float(v), 2) for q, v in zip((50, 90, 99), found, strict=True)}
