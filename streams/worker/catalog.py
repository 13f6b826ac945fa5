"""The catalog feed: every worker reads the whole compacted ``items`` topic into its item index.

Items are not partitioned by user, so each worker needs all of them: the feed uses its own
group-less consumer over every partition (not a Faust agent, which would split partitions
between workers). New items are encoded in batches off the event loop and are recommendable
as soon as they are in the index. ``ready`` is set once the topic has been read up to the end
that it had at start-up; the interest agent waits for it, so events of known items are not
sent to the dead-letter topic while the catalog is still loading.

No record stops the feed (every worker reads every record, so one that did would stop them all,
at every start): a record that does not decode, for any reason, goes to the dead-letter topic
with it, and so does an item whose text cannot be encoded (the other items of its batch are
indexed). A tombstone (a record with a key and no value: Kafka's delete on a compacted topic)
deletes the item of that key (:meth:`Pipeline.delete_items`); one for an unknown item changes
nothing, one without a key is dead-lettered. Within a batch the last record of an item wins.
An item's ``vector`` must have the length of the first one the feed accepted (one length per
catalog); an item whose vector has another is dead-lettered with the two lengths.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from streams.contract import ItemRecord, catalog_vector_length
from streams.errors import EventRejected
from streams.worker.dlq import dead_letter
from streams.worker.items import failure_reason
from streams.worker.kafka_auth import feed_consumer
from streams.worker.pipeline import Pipeline
from streams.worker.schemas import decode_item
from streams.worker.topics import true_end_offsets
from streams.worker.wiring import Wiring, stop_worker

__all__ = ["CatalogFeed", "tombstone_item_id"]

log = logging.getLogger(__name__)

Change = tuple[ConsumerRecord, ItemRecord | None]
"""A record and the item it upserts, or ``None`` for a tombstone (a delete)."""


class CatalogFeed:
    def __init__(self, wiring: Wiring, pipeline: Pipeline) -> None:
        self.wiring = wiring
        self.pipeline = pipeline
        self.ready = asyncio.Event()
        #: The length of the catalog's item vectors: the first accepted ``vector``'s.
        self.vector_length: int | None = None
        wiring.app.task(self.run)

    async def run(self) -> None:
        settings = self.wiring.settings
        consumer = feed_consumer(settings, max_poll_records=1024)
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
        await self._maybe_ready(consumer, ends)
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1024)
            records = [r for rs in batches.values() for r in rs]
            if records:
                await self.apply(records)
            if not self.ready.is_set():
                await self._maybe_ready(consumer, ends)

    async def apply(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Index, delete or dead-letter one fetch of ``items`` records."""
        changes = await self._decode(records)
        if not changes:
            return
        failed = await asyncio.get_running_loop().run_in_executor(None, self._write, changes)
        for item, reason in failed:
            await dead_letter(self.wiring, changes[item.item_id][0], reason)
        self.wiring.stats.items_indexed = len(self.pipeline.index)

    def _write(self, changes: dict[str, Change]) -> list[tuple[ItemRecord, str]]:
        """Deletes, then upserts (disjoint: one change per item); the items that failed."""
        gone = [item_id for item_id, (_, item) in changes.items() if item is None]
        if gone and (deleted := self.pipeline.delete_items(gone)):
            log.info("catalog: %d items deleted", deleted)
        return self.pipeline.add_items([item for _, item in changes.values() if item is not None])

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

    async def _decode(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> dict[str, Change]:
        """The last change of each item in ``records``. A record that is no change goes to the
        dead-letter topic with the reason (whatever the exception: this one record's fault)."""
        changes: dict[str, Change] = {}
        for record in records:
            try:
                if record.value is None:
                    changes[tombstone_item_id(record.key)] = (record, None)
                else:
                    item = decode_item(record.value)
                    self.vector_length = catalog_vector_length(item, self.vector_length)
                    changes[item.item_id] = (record, item)
                continue
            except EventRejected as exc:
                reason = exc.reason
            except Exception as exc:  # e.g. RecursionError: a reason, never a stopped worker
                reason = failure_reason("could not be decoded", exc)
            await dead_letter(self.wiring, record, reason)
        return changes


def tombstone_item_id(key: bytes | None) -> str:
    """The item a tombstone deletes: its key, UTF-8; ``EventRejected`` without a usable one."""
    if not key:
        raise EventRejected("tombstone without a key: no item to delete")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventRejected(f"tombstone key is not UTF-8: {exc}") from exc
