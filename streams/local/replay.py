"""Putting files onto topics (catalog, event replay) and reading recommendations back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tqdm import tqdm

from streams.contract import EventRecord, ItemRecord, event_to_obj, item_to_obj
from streams.settings import Settings
from streams.worker.kafka_auth import client_options

__all__ = ["ReplayReport", "follow_recommendations", "publish_items", "replay_events"]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


async def publish_items(settings: Settings, items: Sequence[ItemRecord]) -> None:
    """Load a catalog into the compacted items topic (key = item_id)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, linger_ms=5, **client_options(settings)
    )
    await producer.start()
    try:
        for item in items:
            await producer.send(
                settings.topics.items, _dumps(item_to_obj(item)), key=item.item_id.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


async def replay_events(
    settings: Settings,
    events: Iterable[EventRecord],
    *,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
) -> ReplayReport:
    """Send events to their type's topic keyed by user_id, at ``rate`` events/s (None: flat out)."""
    topics = {
        "click": settings.topics.click,
        "browse": settings.topics.browse,
        "comment": settings.topics.comment,
        "dislike": settings.topics.dislike,
    }
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, linger_ms=2, **client_options(settings)
    )
    await producer.start()
    bar = tqdm(total=total, unit="ev", disable=not progress, desc="replay")
    start = time.perf_counter()
    sent = 0
    step = 16 if rate else 256
    try:
        for event in events:
            obj = event_to_obj(event)
            obj.pop("type")
            await producer.send(topics[event.event_type], _dumps(obj), key=event.user_id.encode())
            sent += 1
            if sent % step == 0:
                bar.update(step)
                if rate:
                    ahead = sent / rate - (time.perf_counter() - start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        await producer.flush()
        bar.update(sent % step)
    finally:
        bar.close()
        await producer.stop()
    return ReplayReport(sent, time.perf_counter() - start)


async def follow_recommendations(
    settings: Settings, *, from_beginning: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """Yield recommendation messages as they arrive."""
    consumer = AIOKafkaConsumer(
        settings.topics.recommendations,
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        **client_options(settings),
    )
    await consumer.start()
    try:
        async for record in consumer:
            if record.value is not None:
                yield json.loads(record.value)
    finally:
        await consumer.stop()
