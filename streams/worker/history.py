"""The last minutes of one worker, for the dashboard's charts, and the gauges read now and then.

:class:`History` keeps a ring of samples taken every couple of seconds from the
:class:`~streams.worker.stats.Stats` counters: rates (events, recommendations, dead letters by
reason), the latency percentiles and mean batch size of what happened between two samples, the
consumer lag, and the online HR@10 of each model version over the last 1 and 10 minutes. So a
dashboard opened now shows the last minutes at once, and two browsers see the same figures.

:class:`Sampler` is the app task that takes the samples: it refreshes the consumer lag
(:class:`~streams.worker.lag.ConsumerLag`) and, less often and in a thread, counts the users in
the table (a RocksDB table is counted key by key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sized
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from streams.worker.lag import ConsumerLag
from streams.worker.stats import Stats

__all__ = ["History", "Sampler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Mark:
    """The counters at one sample, to take the next one's differences from."""

    t: float
    events_in: int
    applied: int
    recommendations: int
    dead_letters: dict[str, int]
    latencies: int
    batches: int


def _mark(stats: Stats, now: float) -> _Mark:
    return _Mark(
        now,
        stats.events_in,
        stats.events_applied,
        stats.recommendations_out,
        dict(stats.dead_letters),
        stats.latencies_ms.buckets.count,
        stats.batch_sizes.buckets.count,
    )


@dataclass(slots=True)
class History:
    """The last ``keep`` samples (JSON-ready dicts, oldest first)."""

    keep: int = 150  # 5 minutes at one sample each 2 s
    samples: deque[dict[str, Any]] = field(init=False)
    _last: _Mark | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.samples = deque(maxlen=self.keep)

    def add(self, stats: Stats, lag: int | None, now: float | None = None) -> dict[str, Any] | None:
        """Take a sample at ``now`` (epoch s); the first call only marks the counters."""
        now = time.time() if now is None else now
        mark, last = _mark(stats, now), self._last
        self._last = mark
        if last is None or now <= last.t:
            return None
        span = now - last.t

        def rate(new: int, old: int) -> float:
            return round((new - old) / span, 2)

        latencies = stats.latencies_ms.since(last.latencies)
        sizes = stats.batch_sizes.since(last.batches)
        p50, p99 = np.percentile(latencies, (50, 99)) if latencies else (None, None)
        sample = {
            "t": round(now, 3),
            "events_per_s": rate(mark.events_in, last.events_in),
            "applied_per_s": rate(mark.applied, last.applied),
            "recommendations_per_s": rate(mark.recommendations, last.recommendations),
            "dead_letters_per_s": {
                reason: rate(n, last.dead_letters.get(reason, 0))
                for reason, n in mark.dead_letters.items()
                if n != last.dead_letters.get(reason, 0)
            },
            "latency_p50_ms": None if p50 is None else round(float(p50), 2),
            "latency_p99_ms": None if p99 is None else round(float(p99), 2),
            "batch_size": round(float(np.mean(sizes)), 1) if sizes else None,
            "lag": lag,
            # HR@10 of each model version over the last 1 and 10 minutes (not per interval)
            "online_hr10": stats.online.chart_point(now),
        }
        self.samples.append(sample)
        return sample

    def since(self, t: float = 0.0) -> list[dict[str, Any]]:
        """The samples taken after ``t`` (epoch s)."""
        return [s for s in self.samples if s["t"] > t]


class Sampler:
    """An app task: every ``interval_s`` the consumer lag and a :class:`History` sample; every
    ``count_every_s`` the users in ``table`` (``None`` until counted, or when it cannot be)."""

    def __init__(
        self,
        stats: Stats,
        lag: ConsumerLag,
        table: object,
        *,
        interval_s: float = 2.0,
        count_every_s: float = 15.0,
    ) -> None:
        self.stats = stats
        self.lag = lag
        self.table = table
        self.history = History()
        self.interval_s = interval_s
        self.count_every_s = count_every_s
        self.table_users: int | None = None
        #: As of the last sample: the partitions owned, and the records behind in each.
        self.owned: list[TopicPartition] = []
        self.lag_by_partition: dict[TopicPartition, int] = {}
        self._counted_at = -float("inf")
        self._counting: asyncio.Future[int] | None = None

    async def run(self) -> None:
        app = self.lag.app
        try:
            while not app.should_stop:
                try:
                    await self.sample()
                except Exception as exc:  # the figures wait; the worker goes on
                    log.warning("operator figures not sampled this time: %r", exc)
                await asyncio.sleep(self.interval_s)
        finally:
            await self.lag.close()

    async def sample(self) -> None:
        await self.lag.refresh()
        self.owned = self.lag.owned()
        self.lag_by_partition = self.lag.lag()
        lag = sum(self.lag_by_partition.values()) if self.lag_by_partition else None
        self.history.add(self.stats, lag)
        self._count_users()

    def gauges(self) -> dict[str, Any]:
        """The ``/metrics.json`` fields of the last sample."""
        return {
            "consumer_lag": {
                f"{tp.topic}/{tp.partition}": n for tp, n in sorted(self.lag_by_partition.items())
            },
            "partitions_owned": len({tp.partition for tp in self.owned}),
            "table_users": self.table_users,
        }

    def _count_users(self) -> None:
        if self._counting is not None and self._counting.done():
            try:
                self.table_users = self._counting.result()
            except Exception as exc:  # a rebalance changed the partitions under the count
                log.debug("table not counted this time: %r", exc)
            self._counting = None
        now = time.monotonic()
        if self._counting is None and now - self._counted_at >= self.count_every_s:
            table = self.table
            if isinstance(table, Sized):
                self._counted_at = now
                self._counting = asyncio.get_running_loop().run_in_executor(None, len, table)
