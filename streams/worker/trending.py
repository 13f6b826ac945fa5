"""Trending items for users the worker has not seen (cold start): a windowed count of the
events that changed state, kept in the stream.

*Writing.* :class:`TrendingTable` is a Faust windowed table, changelog-backed like the user
table: the agent counts each batch's applied events (not redeliveries, duplicates or dead
letters) per item, and the counts are written in the partition of the events that carry them
(:func:`~streams.worker.agents.in_partition_of`), so the worker that owns a partition is the
only one that writes its counts. The count of a hopping window of ``trending_window_s``
advancing every ``trending_hop_s`` is kept as its *panes*: tumbling windows of
``trending_hop_s``, the window being the sum of its last ``window / hop`` panes. Faust's
hopping table would write every count into each of the ``window / hop`` windows that hold it
(12 writes and changelog records instead of 1 with the defaults); the panes give the same
counts at the hop's resolution. Counts are written every tenth of a hop
(:func:`flush_interval`), not per batch (see :class:`TrendingTable` for why and what it
costs). The table key is
``(item_id, partition)``: faust's memory store keeps one dict for all partitions, where the
same item counted in two partitions would collide.

*Time.* A pane is chosen by the event's record timestamp (its arrival on the topic, as the
agent's latencies use it), not by its ``ts`` field: "trending now" is what the stream carries
now, and ``ts`` is the client's word: a replay of MovieLens carries 1998, a wrong clock the
future, and a late event would count in a window nobody reads any more.

*Reading.* Every worker reads the table's changelog whole (:class:`TrendingFeed`, a group-less
consumer like the catalog's) into :class:`TrendingCounts`: the latest count of each (partition,
item, pane), summed per item over the live panes. So every worker, whatever partitions it
holds, serves the trending list of all of them, the same list; its own counts come back to it
through the broker too (a round trip of a fetch wait). The top list is recomputed at most once a
second (or when a pane ends), never per batch. After a restart, with its folder or without, the
table comes back by faust's changelog recovery and the counts by the feed's reading.

The changelog is compacted *and* deleted after ``window + 2 hops`` (:func:`topic_spec`): a
pane's records are written at or after its start, so older ones count in no live window.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Container, Iterable, Sequence

import faust
from aiokafka import ConsumerRecord, TopicPartition
from faust.tables.table import Table
from faust.types import TP, EventT
from faust.types.tables import WindowWrapperT

from streams.errors import SettingsError
from streams.settings import Settings
from streams.worker.agents import in_partition_of
from streams.worker.kafka_auth import feed_consumer
from streams.worker.topics import TopicSpec
from streams.worker.wiring import stop_worker

__all__ = [
    "FLUSH_PER_HOP",
    "TABLE_NAME",
    "TOP_CACHED",
    "PaneTable",
    "TrendingCounts",
    "TrendingFeed",
    "TrendingTable",
    "changelog_topic_name",
    "decode_pane",
    "flush_interval",
    "pane_counts",
    "pane_start",
    "topic_spec",
]

log = logging.getLogger(__name__)
TABLE_NAME = "item_trending"
TOP_CACHED = 128
"""How many trending items the cached top list holds (a list of ``k`` asks for ``k`` plus the
user's seen items)."""
FLUSH_PER_HOP = 10
"""How many times a pane's counts are written during its hop (:func:`flush_interval`)."""


def changelog_topic_name(settings: Settings) -> str:
    return f"{settings.app_id}-{TABLE_NAME}-changelog"


def topic_spec(settings: Settings) -> TopicSpec:
    """The trending changelog: as many partitions as the events, compacted, and its records
    deleted once no live window can hold their pane (``window + 2 hops``: one hop of margin for
    clocks that disagree)."""
    retention = settings.trending_window_s + 2 * settings.trending_hop_s
    return TopicSpec(changelog_topic_name(settings), settings.partitions, compacted=True,
                     retention_s=retention)  # fmt: skip


def flush_interval(hop_s: float) -> float:
    """How often the pending counts are written: :data:`FLUSH_PER_HOP` times a hop, at most
    once a second (a pane's count in another worker's list lags by at most this)."""
    return max(1.0, hop_s / FLUSH_PER_HOP)


def pane_start(timestamp: float, hop_s: float) -> float:
    """The start of the pane (tumbling window of ``hop_s``) holding ``timestamp``, as faust's
    window ranges have it."""
    return float((timestamp // hop_s) * hop_s)


class TrendingCounts:
    """Applied events per item over the last window, from every partition: thread-safe (the
    feed writes on the event loop, ranking threads read).

    The window is the ``window_s / hop_s`` panes up to and including the current one (``clock``
    time). A pane's count from one partition is set whole (the latest changelog value wins, as
    compaction keeps it); a pane that leaves the window leaves the totals.
    """

    def __init__(
        self,
        window_s: float,
        hop_s: float,
        *,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if hop_s <= 0 or window_s < hop_s:
            raise SettingsError(f"a trending window of {window_s:g} s every {hop_s:g} s")
        self.window_s, self.hop_s, self.refresh_s, self.clock = window_s, hop_s, refresh_s, clock
        self._lock = threading.Lock()
        self._panes: dict[float, dict[tuple[int, str], int]] = {}
        self._totals: dict[str, int] = {}
        self._top: list[tuple[str, float]] = []
        self._top_at = -math.inf
        self._top_pane = -math.inf

    def oldest_live(self, now: float) -> float:
        """The start of the oldest pane in the window at ``now``."""
        return pane_start(now, self.hop_s) - self.window_s + self.hop_s

    def set(self, partition: int, item_id: str, pane: float, count: int) -> bool:
        """Set ``item_id``'s count in ``pane`` from ``partition``'s events (0: none); returns
        whether the pane is in the window (an older one is ignored)."""
        with self._lock:
            if pane < self._expire(self.clock()):
                return False
            counts = self._panes.setdefault(pane, {})
            before = counts.pop((partition, item_id), 0)
            if count > 0:
                counts[(partition, item_id)] = count
            self._add(item_id, count - before)
            return True

    def top(self, n: int) -> list[tuple[str, float]]:
        """Up to ``n`` items with the most events in the window, most first (ties by item id),
        with their counts: from a list recomputed at most every ``refresh_s`` and when a pane
        ends."""
        with self._lock:
            now = self.clock()
            current = pane_start(now, self.hop_s)
            stale = now - self._top_at >= self.refresh_s or current != self._top_pane
            short = n > len(self._top) and len(self._top) < len(self._totals)
            if stale or short:
                self._expire(now)
                wanted = max(n, TOP_CACHED)
                best = heapq.nsmallest(wanted, self._totals.items(), key=lambda kv: (-kv[1], kv[0]))
                self._top = [(item, float(count)) for item, count in best]
                self._top_at, self._top_pane = now, current
            return self._top[:n]

    def __len__(self) -> int:
        """How many items have events in the window (expired panes may still be counted until
        the next :meth:`set` or recomputed :meth:`top`)."""
        return len(self._totals)

    def _add(self, item_id: str, delta: int) -> None:
        total = self._totals.get(item_id, 0) + delta
        if total > 0:
            self._totals[item_id] = total
        else:
            self._totals.pop(item_id, None)

    def _expire(self, now: float) -> float:
        """Drop the panes that left the window (under the lock); the oldest live pane's start."""
        oldest = self.oldest_live(now)
        for pane in [p for p in self._panes if p < oldest]:
            for (_, item_id), count in self._panes.pop(pane).items():
                self._add(item_id, -count)
        return oldest


def pane_counts(
    applied: Iterable[tuple[EventT[bytes], str]], hop_s: float
) -> list[tuple[EventT[bytes], str, int]]:
    """``(source event, item_id)`` of applied events, counted per partition, pane and item:
    ``(one event of the group, item_id, how many)``: the event places the write (its partition,
    its timestamp's pane)."""
    groups: dict[tuple[int, float, str], tuple[EventT[bytes], int]] = {}
    for source, item_id in applied:
        message = source.message
        key = (message.partition, pane_start(message.timestamp, hop_s), item_id)
        first, n = groups.get(key, (source, 0))
        groups[key] = (first, n + 1)
    return [(source, item_id, n) for (_, _, item_id), (source, n) in groups.items()]


def decode_pane(key: bytes | None, value: bytes | None) -> tuple[str, float, int]:
    """``(item_id, pane start, count)`` of a trending changelog record (faust's JSON of the key
    ``[[item_id, partition], [start, end]]`` and of the count; a tombstone counts 0).
    ``ValueError`` for anything else."""
    try:
        (item_id, _), (start, _) = json.loads(key or b"")
        count = 0 if value is None else json.loads(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a trending count: {key!r}: {value!r}") from exc
    if not isinstance(item_id, str) or not isinstance(start, int | float):
        raise ValueError(f"not a trending key: {key!r}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"not a trending count: {value!r}")
    return item_id, float(start), count


class PaneTable(Table[tuple[str, int], int]):
    """Faust's table, writing what its owner has pending before its store closes when the
    worker stops cleanly (``before_stop`` runs before the store, a child service, is stopped).
    A worker that stops because it crashed writes nothing more: it may be stopping because the
    broker lost the records its state refers to (:mod:`streams.worker.health`)."""

    before_stop: Callable[[], object] | None = None

    async def on_stop(self) -> None:
        if self.before_stop is not None and not (self.crashed or self.app.crashed):
            self.before_stop()
        await super().on_stop()


class TrendingTable:
    """The windowed table the agent counts applied events in (see the module docstring).

    :meth:`count` adds a batch's counts to the pending ones; they are written to the table
    (:meth:`flush`) every :func:`flush_interval` (30 s with the default hop) and when the
    worker stops (unless it crashed).
    One faust write (key and value through faust's JSON codec, a changelog record) took
    99-113 us here against 37-55 us for a user-table write (same run, 1.9-3.0x), and a batch
    holds far more items than users: ml-100k in time order, 4 partitions, batches of 512 would
    make 91,672 trending writes for its 100k events against 2,705 user-state writes; written
    every 30 s at 8,000 events/s, 5,809. So an item's pane is written at most once per
    interval and partition, however many batches counted it. The price: a worker that is
    killed (or crashes) loses the counts of its last interval (30 s of an hour's window: under
    1 %), a rebalance those of the partitions that move, and a pane's count reaches the lists
    up to an interval late."""

    def __init__(self, app: faust.App, settings: Settings, options: dict[str, int] | None = None):
        hop = settings.trending_hop_s
        if hop < 1 or hop != int(hop):
            raise SettingsError(f"INTEREST_STREAM_TRENDING_HOP_S must be whole seconds (faust's "
                                f"windows step by whole seconds), got {hop:g}")  # fmt: skip
        self.app, self.hop_s = app, hop
        self.table = PaneTable(app, name=TABLE_NAME, default=int, partitions=settings.partitions,
                               options=options, beacon=app.tables.beacon,
                               help="applied events per item, pane")  # fmt: skip
        self.table.before_stop = self.flush
        app.tables.add(self.table)
        expires = settings.trending_window_s + hop  # faust drops local panes older than this
        self.panes: WindowWrapperT = self.table.tumbling(hop, expires=expires)
        #: (partition, pane, item) -> (one of its events, events not written yet)
        self.pending: dict[tuple[int, float, str], tuple[EventT[bytes], int]] = {}
        #: Table writes made, and counts dropped for partitions this worker no longer holds.
        self.writes = 0
        self.dropped = 0
        self._flush_on_timer(flush_interval(hop))

    def count(self, applied: Sequence[tuple[EventT[bytes], str]]) -> None:
        """Add the applied events ``(source event, item_id)`` of one batch to the pending
        counts of their items' panes in their own partitions."""
        for source, item_id, n in pane_counts(applied, self.hop_s):
            message = source.message
            key = (message.partition, pane_start(message.timestamp, self.hop_s), item_id)
            first, before = self.pending.get(key, (source, 0))
            self.pending[key] = (first, before + n)

    def flush(self, owned: Container[TP] | None = None) -> int:
        """Write the pending counts to the table, each in the partition (and pane) of its
        events; those of source partitions not in ``owned`` (``None``: all owned) are dropped.
        Returns how many writes were made."""
        pending, self.pending = self.pending, {}
        writes = 0
        for (partition, _, item_id), (source, n) in pending.items():
            if owned is not None and TP(source.message.topic, partition) not in owned:
                self.dropped += n
                continue
            with in_partition_of(source):
                self.panes[(item_id, partition)] += n
            writes += 1
        self.writes += writes
        return writes

    def _flush_on_timer(self, interval_s: float) -> None:
        """Flush every ``interval_s`` on the app's timer; not while a rebalance is on (the
        partitions held are being decided), and then only for the partitions still held: the
        counts of one that moved are dropped (its new owner recovered the table as the
        changelog had it; a write now would race with that, or land on a broker that came back
        empty before the worker notices and stops)."""

        async def flush_trending() -> None:
            if self.pending and not self.app.rebalancing:
                dropped = self.dropped
                self.flush(self.app.consumer.assignment())
                if self.dropped > dropped:
                    log.info("trending: %d counts of partitions now elsewhere dropped",
                             self.dropped - dropped)  # fmt: skip

        self.app.timer(interval=interval_s, name="trending-flush")(flush_trending)


class TrendingFeed:
    """Reads the whole trending changelog (every partition, from the start) into ``counts``,
    and keeps following it. A record that is no count is skipped with a warning (a feed that
    stopped would stop every worker); a failure of the consumer stops the worker."""

    def __init__(self, app: faust.App, settings: Settings, counts: TrendingCounts) -> None:
        self.app, self.settings, self.counts = app, settings, counts
        self.records = 0
        self.skipped = 0
        app.task(self.run)

    async def run(self) -> None:
        consumer = feed_consumer(self.settings, max_poll_records=4096)
        await consumer.start()
        try:
            topic = changelog_topic_name(self.settings)
            tps = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=4096)
                for records in batches.values():
                    self.apply(records)
        except Exception as exc:
            stop_worker(self.app, exc)
        finally:
            await consumer.stop()

    def apply(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Set the counts of one fetch of changelog records, in order."""
        for record in records:
            self.records += 1
            try:
                item_id, pane, count = decode_pane(record.key, record.value)
            except ValueError as exc:
                self.skipped += 1
                if self.skipped == 1 or self.skipped % 1000 == 0:
                    log.warning("trending changelog %s[%d]@%d skipped (%d so far): %s",
                                record.topic, record.partition, record.offset, self.skipped,
                                exc)  # fmt: skip
                continue
            self.counts.set(record.partition, item_id, pane, count)
