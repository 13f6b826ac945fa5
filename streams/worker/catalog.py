"""The catalog feed: every worker reads the whole compacted ``items`` topic into its item index.

Items are not partitioned by user, so each worker needs all of them: the feed uses its own
group-less consumer over every partition (not a Faust agent, which would split partitions
between workers). New items are encoded in batches off the event loop and are recommendable
as soon as they are in the index. ``ready`` is set once the topic has been read up to the end
that it had at start-up; the interest agent waits for it, so events of known items are not
sent to the dead-letter topic while the catalog is still loading.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from streams.contract import ItemRecord
from streams.errors import EventRejected
from streams.worker.dlq import dlq_headers
from streams.worker.pipeline import Pipeline
from streams.worker.schemas import decode_item
from streams.worker.topics import true_end_offsets
from streams.worker.wiring import Wiring, stop_worker

__all__ = ["CatalogFeed"]

log = logging.getLogger(__name__)


class CatalogFeed:
    def __init__(self, wiring: Wiring, pipeline: Pipeline) -> None:
        self.wiring = wiring
        self.pipeline = pipeline
        self.ready = asyncio.Event()
        wiring.app.task(self.run)

    async def run(self) -> None:
        settings = self.wiring.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=max(settings.fetch_max_wait_ms, 50),
            max_poll_records=1024,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(settings.topics.items, p) for p in range(settings.partitions)]
            ends = await true_end_offsets(consumer, tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            await self._follow(consumer, ends)
        except Exception as exc:
            stop_worker(self.wiring.app, exc)
        finally:
            await consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> None:
        loop = asyncio.get_running_loop()
        await self._maybe_ready(consumer, ends)
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1024)
            records = [r for rs in batches.values() for r in rs]
            items = await self._decode(records)
            if items:
                await loop.run_in_executor(None, self.pipeline.add_items, items)
                self.wiring.stats.items_indexed = len(self.pipeline.index)
            if not self.ready.is_set():
                await self._maybe_ready(consumer, ends)

    async def _maybe_ready(
        self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]
    ) -> None:
        positions = [await consumer.position(tp) for tp in ends]
        if all(pos >= end for pos, end in zip(positions, ends.values(), strict=True)):
            log.info(
                "catalog loaded: %d items (model %s, provider %s)",
                len(self.pipeline.index),
                self.pipeline.model_version,
                self.pipeline.encoder.provider,
            )
            self.ready.set()

    async def _decode(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[ItemRecord]:
        items = []
        for record in records:
            try:
                items.append(decode_item(record.value))
            except EventRejected as exc:
                await self._dead_letter(record, exc.reason)
        return items

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        headers = dlq_headers(reason, record.topic, record.partition, record.offset)
        await self.wiring.dlq.send(key=record.key, value=record.value or b"", headers=headers)
        self.wiring.stats.dead_letter(reason)
