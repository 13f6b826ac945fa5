"""A Kafka client not written here (confluent-kafka, librdkafka) to drive and watch the system."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def produce(
    bootstrap: str, records: Sequence[tuple[str, bytes | None, bytes | None]]
) -> list[Delivered]:
    """Send with librdkafka's default partitioner (CRC32 of the key); return where they went."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": False, "acks": "all"}
    )
    delivered: list[Delivered] = []
    errors: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))
            return
        delivered.append(
            Delivered(
                msg.topic(),
                msg.partition(),
                msg.offset(),  # type: ignore[attr-defined]
                msg.key(),
                msg.value(),
            )
        )  # type: ignore[attr-defined]

    for topic, key, value in records:
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0 and not errors, (remaining, errors)
    return delivered


def catalog_records(
    topic: str, catalog: Sequence[Any], *, text: bool = True
) -> list[tuple[str, bytes, bytes]]:
    """``items`` records of ``catalog`` (``ItemRecord``s), keyed by item id: id and title, and
    with ``text`` their text and tags too."""

    def body(item: Any) -> dict[str, Any]:
        extra = {"text": item.text, "tags": list(item.tags)} if text else {}
        return {"item_id": item.item_id, "title": item.title, **extra}

    return [(topic, i.item_id.encode(), json.dumps(body(i)).encode()) for i in catalog]


def consume(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Record]], bool],
    timeout_s: float = 60.0,
    partitions: int = 4,
) -> list[Record]:
    """Read ``topic`` from the beginning until ``done(records)`` or the timeout."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not done(records):
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error():
                    continue
                headers = {k: v for k, v in (msg.headers() or [])}
                records.append(
                    Record(
                        msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers
                    )
                )
    finally:
        consumer.close()
    return records
