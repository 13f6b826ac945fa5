"""Training data from the log: the event topics, read whole, written as the training files.

A consumer outside any group (:func:`streams.worker.kafka_auth.feed_consumer`: the workers'
TLS/SASL settings, no commits, the workers' group untouched) reads every partition of the three
event topics, from the log's start or from ``since``, up to the end offsets taken when it
starts; those ends are exact on Tansu too (:func:`streams.worker.topics.true_end_offsets`: Tansu
0.6.0 reports the last batch's base offset + 1), and a partition is done when the consumer's
position reaches its end, so a transaction marker at the end cannot stall it. ``since`` is a
record timestamp: reading starts at ``offsets_for_times`` and every record older than ``since``
is skipped, so the window is the same on Kafka and on Tansu (whose answer is always offset 0).

Each record is decoded as the worker decodes it (:func:`streams.worker.schemas.decode_event`,
the one contract of :mod:`streams.contract`). One that does not decode is counted by reason and
skipped: the worker sent it to the dead-letter topic. An event id seen before is counted and
skipped, as the worker drops a resent event. The catalog is the ``items`` topic read whole (the
last record of a key wins, a tombstone deletes) unless an items file is given.

The events are written in time order as the events file ``interest-stream train --events``
reads, beside the catalog as an items file: training, its time split and the evaluation are then
exactly those of the file path (:func:`streams.offline.evaluate.load_dataset`).

    StreamError
     ├── BrokerError    no broker answers, or reading stalls
     └── DatasetError   nothing to train on (no event topic, no catalog)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import click
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from streams.contract import EventRecord, ItemRecord, parse_ts
from streams.data.formats import read_items, write_events, write_items
from streams.errors import BrokerError, DatasetError, EventRejected
from streams.settings import Settings
from streams.worker.kafka_auth import feed_consumer
from streams.worker.schemas import decode_event, decode_item
from streams.worker.topics import true_end_offsets

__all__ = [
    "SINCE",
    "LogSnapshot",
    "Since",
    "log_ends",
    "parse_since",
    "read_log",
    "read_partitions",
]

log = logging.getLogger(__name__)

STALL_S = 60.0
"""Reading fails when no partition moves for this long (a broker that stopped answering)."""
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")

Record: TypeAlias = ConsumerRecord[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Since:
    """Where the window starts: a fixed time, or a duration before each read (``30d``)."""

    ts: float | None = None
    ago_s: float | None = None

    def at(self, now: float) -> float:
        return now - self.ago_s if self.ago_s is not None else float(self.ts or 0.0)

    def __str__(self) -> str:
        return f"{self.ago_s:g} s before the read" if self.ago_s is not None else f"ts {self.ts}"


def parse_since(text: str) -> Since:
    """``30d`` / ``12h`` / ``90m`` / ``45s`` / ``2w`` before each read, or a time: epoch seconds
    or ISO-8601 (naive: UTC). ``ValueError`` names what is accepted."""
    match = _AGO.match(text)
    if match:
        return Since(ago_s=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        value: Any = float(text)
    except ValueError:
        value = text
    try:
        return Since(ts=parse_ts(value))
    except EventRejected as exc:
        raise ValueError(
            f"{text!r} is neither a duration (30d, 12h, 90m) nor a time (epoch seconds, "
            f"ISO-8601): {exc.reason}"
        ) from None


class _SinceType(click.ParamType):
    name = "TIME|DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Since):
            return value
        try:
            return parse_since(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SINCE = _SinceType()
"""The click type of ``--since``."""


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """The two training files made from the log, and what reading it found."""

    items_path: Path
    events_path: Path
    events: int
    items: int
    records: int
    """Records read from the event topics in the window (each decoded or counted below)."""
    rejected: Mapping[str, int] = field(default_factory=dict)
    """Records that do not decode, by reason (the worker dead-lettered them)."""
    duplicates: int = 0
    before_since: int = 0
    ends: Mapping[str, int] = field(default_factory=dict)
    """``topic/partition`` -> the end offset read up to (the next round counts from there)."""
    since: float | None = None
    seconds: float = 0.0

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def summary(self) -> str:
        text = (f"{self.records:,} records read in {self.seconds:.1f} s: {self.events:,} events, "
                f"{self.n_rejected:,} that do not decode (dead-lettered by the worker), "
                f"{self.duplicates:,} repeated event ids; {self.items:,} items")  # fmt: skip
        if self.before_since:
            text += f"; {self.before_since:,} records before --since skipped"
        top = sorted(self.rejected.items(), key=lambda kv: -kv[1])[:3]
        return text + "".join(f"\n  {n:,} x {reason}" for reason, n in top)

    def as_dict(self) -> dict[str, Any]:
        """What a model card and a decision record keep of it."""
        return {"source": "kafka", "records": self.records, "events": self.events,
                "rejected": self.n_rejected, "duplicates": self.duplicates,
                "before_since": self.before_since, "since": self.since, "items": self.items,
                "end_offsets": dict(self.ends)}  # fmt: skip


def read_log(
    settings: Settings,
    out_dir: Path,
    *,
    since: Since | None = None,
    items_path: Path | None = None,
    now: float | None = None,
) -> LogSnapshot:
    """Read the event topics (and the catalog) into ``out_dir``/``events.jsonl`` and
    ``items.jsonl``; ``items_path``: take the catalog from this file instead of the topic."""
    if not settings.bootstrap:
        raise BrokerError("reading the event topics needs a broker: set KAFKA_BOOTSTRAP")
    start = time.perf_counter()
    ts = since.at(time.time() if now is None else now) if since is not None else None
    try:
        return asyncio.run(_read(settings, Path(out_dir), ts, items_path, start))
    except KafkaError as exc:
        raise BrokerError(f"cannot read the topics at {settings.bootstrap}: {exc}") from exc


def log_ends(settings: Settings) -> dict[str, int]:
    """``topic/partition`` -> exact end offset of every event topic partition (for counting the
    events produced since a training)."""

    async def ends() -> dict[str, int]:
        async with _consumer(settings) as consumer:
            tps = await _partitions(consumer, settings.topics.events)
            found = await true_end_offsets(consumer, tps) if tps else {}
            return {f"{tp.topic}/{tp.partition}": end for tp, end in found.items()}

    try:
        return asyncio.run(ends())
    except KafkaError as exc:
        raise BrokerError(f"cannot read the end offsets at {settings.bootstrap}: {exc}") from exc


# --------------------------------------------------------------------------- reading


@contextlib.asynccontextmanager
async def _consumer(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A started group-less consumer, stopped on exit. ``earliest``: should retention delete
    records while they are read, reading goes on from the new start of the log."""
    consumer = feed_consumer(settings, max_poll_records=10_000, auto_offset_reset="earliest")
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of the ``topics`` that exist (asking for all topics creates none). Ask
    before assigning: the metadata of an assigned consumer covers the assigned topics only."""
    existing = await consumer.topics()
    tps: list[TopicPartition] = []
    for topic in topics:
        if topic not in existing:
            log.warning("topic %s does not exist: nothing read from it", topic)
            continue
        tps.extend(TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)))
    return tps


async def _read(
    settings: Settings, out_dir: Path, since: float | None, items_path: Path | None, start: float
) -> LogSnapshot:
    topics = settings.topics
    events: dict[str, tuple[tuple[float, int, str, int, int], EventRecord]] = {}
    rejected: Counter[str] = Counter()
    counts = Counter[str]()

    def on_event(record: Record) -> None:
        counts["records"] += 1
        if since is not None and record.timestamp < since * 1000.0:
            counts["before_since"] += 1
            return
        source = f"{record.topic}/{record.partition}"
        try:
            event = decode_event(record.value, topics.event_type_of(record.topic), record.key,
                                 settings.max_user_id_len, source=source,
                                 offset=record.offset)  # fmt: skip
        except EventRejected as exc:
            rejected[exc.reason[:120]] += 1
            return
        if event.event_id in events:
            counts["duplicates"] += 1
            return
        order = (event.ts, record.timestamp, record.topic, record.partition, record.offset)
        events[event.event_id] = (order, EventRecord.from_event(event))

    async with _consumer(settings) as consumer:
        found = await _partitions(consumer, [*topics.events, topics.items])
        tps = [tp for tp in found if tp.topic != topics.items]
        if not tps:
            raise DatasetError(f"none of the event topics {', '.join(topics.events)} exists")
        ends = await true_end_offsets(consumer, tps)
        starts = await _starts(consumer, tps, since)
        await read_partitions(consumer, starts, ends, on_event)
        item_tps = [tp for tp in found if tp.topic == topics.items]
        catalog = read_items(items_path) if items_path else await _catalog(consumer, item_tps)
    if not catalog:
        raise DatasetError(f"the catalog is empty (topic {topics.items}); give an items file")
    ordered = [record for _, record in sorted(events.values(), key=lambda pair: pair[0])]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_items(out_dir / "items.jsonl", catalog)
    write_events(out_dir / "events.jsonl", ordered)
    return LogSnapshot(
        out_dir / "items.jsonl", out_dir / "events.jsonl", len(ordered), len(catalog),
        counts["records"], dict(rejected), counts["duplicates"], counts["before_since"],
        {f"{tp.topic}/{tp.partition}": end for tp, end in ends.items()}, since,
        round(time.perf_counter() - start, 3),
    )  # fmt: skip


async def _starts(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], since: float | None
) -> dict[TopicPartition, int]:
    """The first offset to read of each partition: the log's start, or ``since``'s offset."""
    beginning: dict[TopicPartition, int] = await consumer.beginning_offsets(list(tps))
    if since is None:
        return beginning
    found = await consumer.offsets_for_times({tp: int(since * 1000.0) for tp in tps})
    return {
        tp: max(beginning[tp], found[tp].offset) if found.get(tp) is not None else -1 for tp in tps
    }  # -1: no record at or after ``since`` (read nothing)


async def read_partitions(
    consumer: AIOKafkaConsumer,
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    on_record: Callable[[Record], None],
) -> None:
    """Hand every record of ``[start, end)`` of each partition to ``on_record``."""
    pending = {tp for tp in starts if 0 <= starts[tp] < ends[tp]}
    consumer.assign(sorted(pending, key=lambda tp: (tp.topic, tp.partition)))
    for tp in pending:
        consumer.seek(tp, starts[tp])
    moved = time.monotonic()
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=500)
        for tp, records in batches.items():
            for record in records:
                if record.offset < ends[tp]:
                    on_record(record)
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
                consumer.pause(tp)
        if batches:
            moved = time.monotonic()
        elif time.monotonic() - moved > STALL_S:
            at = {tp: await consumer.position(tp) for tp in pending}
            left = ", ".join(f"{tp.topic}/{tp.partition} at {at[tp]} of {ends[tp]}"
                             for tp in sorted(pending))  # fmt: skip
            raise BrokerError(f"reading stalled for {STALL_S:.0f} s: {left}")
    consumer.assign([])


async def _catalog(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> list[ItemRecord]:
    """The ``items`` topic (partitions ``tps``) read whole, as the workers' catalog feed reads
    it: the last record of each key wins, a tombstone deletes; one that does not decode is
    skipped."""
    if not tps:
        return []
    ends = await true_end_offsets(consumer, tps)
    starts: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
    items: dict[str, tuple[tuple[int, int], ItemRecord]] = {}
    bad = Counter[str]()

    def on_item(record: Record) -> None:
        try:
            if record.value is None:
                items.pop((record.key or b"").decode("utf-8", errors="replace"), None)
                return
            item = decode_item(record.value)
        except EventRejected as exc:
            bad[exc.reason[:120]] += 1
            return
        items[item.item_id] = ((record.partition, record.offset), item)

    await read_partitions(consumer, starts, ends, on_item)
    if bad:
        log.warning("catalog: %d item records do not decode: %s", sum(bad.values()), dict(bad))
    return [item for _, item in sorted(items.values(), key=lambda pair: pair[0])]
