"""Event -> output latency at a fixed input rate, for the ``stream`` and ``gpu`` sections.

:func:`measure_latency` sends events at a fixed rate (record timestamp = the send call) and
reads the output topic from its end, so each event's ``e2e`` latency is the time from its send
call to the bench's reader receiving the first output naming it: both client hops included.
The app's own view comes beside it: ``latency_ms`` in the worker's recommendations, and
``acked_ms`` from its ``/metrics.json?since=`` (record timestamp -> the broker's ack of the output;
an upper bound of the event's time from the broker to the output topic, which Tansu cannot
stamp). :func:`latency_rows` turns one run, and its baseline's, into rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.bench.common import Row, percentile
from streams.settings import Settings

__all__ = ["Latency", "latency_rows", "measure_latency"]


@dataclass
class Latency:
    """Per-event end-to-end latencies (ms) of one fixed-rate run, and the worker's own view."""

    target_rate: float
    sent: dict[str, float] = field(default_factory=dict)  # event_id -> record timestamp (s)
    seconds: float = 0.0
    e2e_ms: dict[str, float] = field(default_factory=dict)
    worker_ms: list[float] = field(default_factory=list)
    #: the app's own ``acked_ms`` for this run's events (stamped since its start): record
    #: timestamp -> the broker's ack of the output (an upper bound of broker -> output topic,
    #: without the reader's hop)
    acked_ms: dict[str, float] = field(default_factory=dict)

    @property
    def achieved_rate(self) -> float:
        return len(self.sent) / self.seconds if self.seconds > 0 else float("nan")

    def record(self, body: dict[str, Any], arrival: float) -> None:
        """Take one output message: first arrival per event id counts."""
        ids = body.get("event_ids") or [body.get("event_id")]
        fresh = [i for i in ids if i in self.sent and i not in self.e2e_ms]
        for event_id in fresh:
            self.e2e_ms[event_id] = (arrival - self.sent[event_id]) * 1000.0
        if fresh and isinstance(body.get("latency_ms"), int | float):
            self.worker_ms.append(float(body["latency_ms"]))


def _event_bytes(event: Any) -> bytes:
    from streams.contract import event_to_obj

    obj = event_to_obj(event)
    obj.pop("type")
    return json.dumps(obj, separators=(",", ":")).encode()


async def _produce_at_rate(settings: Settings, events: Sequence[Any], result: Latency) -> None:
    from aiokafka import AIOKafkaProducer

    topics = dict(zip(("click", "browse", "comment", "dislike"), settings.topics.events,
                      strict=True))  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=0)
    await producer.start()
    start = time.perf_counter()
    try:
        for n, event in enumerate(events):
            ahead = n / result.target_rate - (time.perf_counter() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
            stamp_ms = int(time.time() * 1000)
            result.sent[event.event_id] = stamp_ms / 1000.0
            await producer.send(topics[event.event_type], _event_bytes(event),
                                key=event.user_id.encode(), timestamp_ms=stamp_ms)
        await producer.flush()
        result.seconds = time.perf_counter() - start
    finally:
        await producer.stop()


async def _tail_consumer(settings: Settings, topic: str) -> Any:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=10)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # resolve the positions now, before anything new is produced
        await consumer.position(tp)
    return consumer


async def measure_latency(settings: Settings, topic: str, events: Sequence[Any], rate: float,
                          drain_s: float = 10.0) -> Latency:
    """Send ``events`` at ``rate``/s, read ``topic`` until every event has an output (or drain)."""
    result = Latency(rate)
    consumer = await _tail_consumer(settings, topic)
    producing = asyncio.create_task(_produce_at_rate(settings, events, result))
    deadline: float | None = None
    try:
        while deadline is None or time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=50)
            arrival = time.time()
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(ValueError, TypeError):
                        result.record(json.loads(record.value), arrival)
            if producing.done():
                producing.result()  # raise what the producer raised
                deadline = deadline or time.monotonic() + drain_s
                if len(result.e2e_ms) >= len(result.sent):
                    break
    finally:
        producing.cancel()
        await consumer.stop()
    return result


def latency_rows(stage: str, ours: Latency, base: Latency | None) -> list[Row]:
    label = f"@{ours.target_rate:,.0f}/s"
    e2e = list(ours.e2e_ms.values())
    base_e2e = list(base.e2e_ms.values()) if base else []
    rows = [Row("latency", f"{stage} {label} e2e p{q}", percentile(e2e, q), "ms",
                "table+send" if base else "",
                percentile(base_e2e, q) if base else None)
            for q in (50, 99)]
    rows.append(Row("latency", f"{stage} {label} e2e max", max(e2e, default=float("nan")), "ms",
                    "table+send" if base else "",
                    max(base_e2e, default=float("nan")) if base else None))
    acked, base_acked = ours.acked_ms, base.acked_ms if base else {}
    for stat in ("p50", "p99", "max"):
        note = (f"the app's acked_ms over this run ({acked.get('n', 0):,.0f} events): record "
                "timestamp -> broker ack of the output" if stat == "p50" else "")
        rows.append(Row("latency", f"{stage} {label} to broker ack {stat}",
                        acked.get(stat, float("nan")), "ms", "table+send" if base else "",
                        base_acked.get(stat, float("nan")) if base else None, note))
    lost = len(ours.sent) - len(ours.e2e_ms)
    for q in (50, 99):
        rows.append(Row("latency", f"{stage} {label} worker latency_ms p{q}",
                        percentile(ours.worker_ms, q), "ms"))
    rows.append(Row("latency", f"{stage} {label} input rate achieved", ours.achieved_rate,
                    "ev/s", "target", ours.target_rate,
                    note=f"{len(ours.e2e_ms)}/{len(ours.sent)} events answered"
                         + (f"; {lost} without output" if lost else "")))
    return rows
