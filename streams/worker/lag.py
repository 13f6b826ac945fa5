"""Consumer lag of one worker: for each partition it owns, records on the broker it has not
committed yet (the figure ``kafka-consumer-groups --describe`` shows as LAG).

End offsets come from a consumer of its own (no group), corrected for Tansu with
:func:`streams.worker.topics.true_end_offsets`: faust's own high-water marks come from fetch
responses (so they stand still while a partition is not fetched) and Tansu under-reports them
by the size of the last batch. Committed offsets are faust's record of what this worker
committed (seeded from the broker when a partition is assigned); a partition without a
committed offset counts from its first offset. Partitions are those faust assigned to this
worker as active (:meth:`faust.types.assignor.PartitionAssignorT.assigned_actives`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.worker.kafka_auth import app_client_options
from streams.worker.topics import true_end_offsets

__all__ = ["ConsumerLag", "partition_lag"]

log = logging.getLogger(__name__)


def partition_lag(
    ends: Mapping[TopicPartition, int],
    committed: Mapping[TopicPartition, int | None],
    starts: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """``end - committed`` for each partition with a known end (``start`` when nothing is
    committed yet; never below 0: an end read before the last commit is behind it).

    >>> tp = TopicPartition("events.click", 0)
    >>> partition_lag({tp: 120}, {tp: 100}, {})[tp]
    20
    >>> partition_lag({tp: 120}, {}, {tp: 7})[tp]
    113
    """
    out = {}
    for tp, end in ends.items():
        done = committed.get(tp)
        if done is None:
            done = starts.get(tp, 0)
        out[tp] = max(0, end - done)
    return out


class ConsumerLag:
    """Reads the end offsets of ``app``'s active partitions of ``topics`` (:meth:`refresh`) and
    says how far its committed offsets are behind them (:meth:`lag`)."""

    def __init__(self, app: faust.App, bootstrap: str, topics: Iterable[str]) -> None:
        self.app = app
        self.bootstrap = bootstrap
        self.topics = frozenset(topics)
        self.ends: dict[TopicPartition, int] = {}
        self.starts: dict[TopicPartition, int] = {}
        self._reported: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None

    def owned(self) -> list[TopicPartition]:
        """The active partitions of the watched topics this worker holds now."""
        try:
            actives = self.app.assignor.assigned_actives()
        except Exception:  # no assignment yet (the assignor's tables are built at the first)
            return []
        return sorted(
            TopicPartition(tp.topic, tp.partition) for tp in actives if tp.topic in self.topics
        )

    def committed(self) -> dict[TopicPartition, int | None]:
        """What this worker committed per partition (faust's consumer record, then its
        monitor's; ``None``: nothing)."""
        consumer: Any = self.app.consumer
        known: dict[Any, int | None] = dict(getattr(consumer, "_committed_offset", {}))
        known.update(self.app.monitor.tp_committed_offsets or {})
        return {TopicPartition(tp.topic, tp.partition): offset for tp, offset in known.items()}

    async def refresh(self, timeout_s: float = 5.0) -> None:
        """Read the end offsets of the owned partitions (exactly only where they moved); a broker
        that does not answer leaves the last ones (said at debug level)."""
        owned = self.owned()
        if not owned:
            self.ends = {}
            return
        try:
            consumer = await self._started(timeout_s)
            reported = await asyncio.wait_for(consumer.end_offsets(owned), timeout_s)
            moved = [
                tp for tp in owned
                if tp not in self.ends or reported[tp] != self._reported.get(tp)
            ]
            exact = await true_end_offsets(consumer, moved, timeout_s) if moved else {}
            fresh = [tp for tp in owned if tp not in self.starts]
            if fresh:
                self.starts.update(
                    await asyncio.wait_for(consumer.beginning_offsets(fresh), timeout_s)
                )
        except (KafkaError, TimeoutError, OSError) as exc:
            log.debug("end offsets not read this time: %r", exc)
            return
        self._reported.update({tp: reported[tp] for tp in owned})
        self.ends = {tp: exact.get(tp, self.ends.get(tp, reported[tp])) for tp in owned}

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind per owned partition, as of the last :meth:`refresh`."""
        return partition_lag(self.ends, self.committed(), self.starts)

    async def _started(self, timeout_s: float) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                        **app_client_options(self.app))
            await asyncio.wait_for(consumer.start(), timeout_s)
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
