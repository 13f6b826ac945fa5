"""Faust's aiokafka transport with two corrections, registered as the ``interest-kafka://`` scheme.

1. ``fetch_max_wait_ms``: faust hard-codes 1500 ms; a fetch that waits that long for data
   dominates event->recommendation latency. We use ``Settings.fetch_max_wait_ms`` (10 ms).
2. High-water marks are read with :func:`streams.topics.true_end_offsets`, so changelog
   recovery replays every record on Tansu too (Tansu under-reports the end offset after a
   multi-record batch and faust's recovery would stop one batch short). On Apache Kafka the
   result equals the broker's end offsets.

The scheme is declared under the ``faust.transports`` entry point in ``pyproject.toml``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

import aiokafka
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.topics import true_end_offsets

__all__ = ["FETCH_MAX_WAIT_MS", "Transport"]

#: Set by :func:`streams.app.create_app` from the settings before the worker starts.
FETCH_MAX_WAIT_MS: dict[str, int] = {"value": 10}


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    _probe: aiokafka.AIOKafkaConsumer | None = None
    _probe_lock: asyncio.Lock | None = None

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when it builds its fetcher in start().
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS["value"]
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        if self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            probe = await self._probe_consumer()
            tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
            ends = await true_end_offsets(probe, tps)
        return {TP(tp.topic, tp.partition): end for tp, end in ends.items()}

    async def _probe_consumer(self) -> aiokafka.AIOKafkaConsumer:
        if self._probe is None:
            transport: Any = self.transport
            servers = faust_aiokafka.server_list(transport.url, transport.default_port)
            self._probe = aiokafka.AIOKafkaConsumer(
                bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=50
            )
            await self._probe.start()
        return self._probe

    async def on_thread_stop(self) -> None:
        await super().on_thread_stop()
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.stop()


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """aiokafka transport with a short fetch wait and exact high-water marks."""

    Consumer: ClassVar[Any] = _Consumer
