#!/usr/bin/env python3
"""How a Tansu fetch's cost grows with the log: broker CPU and hop latency over time.

Tansu 0.6.0's memory engine stores every produced record batch as an object and, for each
partition that has data past a consumer's position, lists *all* of that partition's batch
objects to find where to read (``tansu-storage/src/dynostore.rs``, ``fetch``). A consumer
following a producer therefore costs the broker more with every batch already in the log,
consumed or not; Apache Kafka finds the position through an offset index instead.

This starts the embedded broker, then for each producer linger (0 ms: one record per batch, as
a latency-minded producer sends at 1,000/s; 20 ms: a few records per batch) produces RATE
records/s of ~200 bytes over 4 partitions for SECS seconds while one consumer (fetch wait 10 ms)
follows, and prints every 2 s the broker's CPU and the produce -> consume p50.

usage: .venv/bin/python scripts/tansu-fetch-cost.py [--rate 1000] [--secs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.local.broker import EmbeddedBroker
from streams.worker.topics import TopicSpec, ensure_topics

PARTITIONS = 4
WINDOW_S = 2.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def produce(bootstrap: str, topic: str, rate: float, secs: float, linger: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger)
    await producer.start()
    value = b"x" * 200
    sent, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < secs:
            ahead = sent / rate - (time.perf_counter() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
            await producer.send(topic, value, key=str(sent % 943).encode(),
                                timestamp_ms=int(time.time() * 1000))
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def follow(bootstrap: str, topic: str, hops: list[float], stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10,
                                enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000
            hops.extend(now_ms - r.timestamp for records in batches.values() for r in records)
    finally:
        await consumer.stop()


async def one_run(broker: EmbeddedBroker, linger: int, rate: float, secs: float) -> None:
    topic = f"fetch-cost-linger-{linger}"
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, PARTITIONS)])
    hops: list[float] = []
    stop = asyncio.Event()
    follower = asyncio.create_task(follow(broker.bootstrap, topic, hops, stop))
    await asyncio.sleep(1.0)
    producing = asyncio.create_task(produce(broker.bootstrap, topic, rate, secs, linger))
    print(f"producer linger {linger} ms, {rate:,.0f} records/s, one consumer following:")
    started = time.monotonic()
    while not producing.done():
        cpu0, seen0, t0 = cpu_seconds(broker.pid), len(hops), time.monotonic()
        await asyncio.wait([producing], timeout=WINDOW_S)
        window, elapsed = hops[seen0:], time.monotonic() - t0
        if elapsed < WINDOW_S / 2:  # the producer's last moments: too short to say much
            break
        cpu = 100 * (cpu_seconds(broker.pid) - cpu0) / elapsed
        p50 = f"{statistics.median(window):5.1f} ms" if window else "    -"
        print(f"  t={time.monotonic() - started:4.0f} s  {len(hops):7,} records read  "
              f"broker CPU {cpu:4.0f} %  produce -> consume p50 {p50}")
    sent = producing.result()
    await asyncio.sleep(1.0)
    stop.set()
    await follower
    print(f"  {sent:,} sent, {len(hops):,} read")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--secs", type=float, default=20.0)
    args = parser.parse_args()
    if args.rate <= 0 or args.secs <= 0:
        parser.error("--rate and --secs must be > 0")
    with EmbeddedBroker() as broker:
        for linger in (0, 20):
            await one_run(broker, linger, args.rate, args.secs)


if __name__ == "__main__":
    asyncio.run(main())
