"""The real-worker half of ``bench --sections store``: RSS of ``streams.cli worker --store
rocksdb`` holding N users, next to the same worker with an empty table.

The users' states (:func:`streams.bench.store_data.encoded_states`) go onto the table's changelog
topic, keyed like the events that follow, so the worker's own changelog recovery writes them
into its RocksDB partitions; then ml-100k events re-assigned to random users of those N are
replayed and the worker reads, updates and writes back every user it sees. A user's state must
then count the 70 events it was recovered with plus those just sent, or the run fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer

from streams.bench.common import Row, load_dataset
from streams.bench.processes import ServiceProcess, mib, processed, stage_settings
from streams.bench.store_data import CHUNK, HISTORY, encoded_states, user_key
from streams.errors import BenchError
from streams.local.broker import broker_for
from streams.local.replay import publish_items, replay_events
from streams.settings import Settings
from streams.worker.app import changelog_topic_name, topic_specs
from streams.worker.topics import ensure_topics

__all__ = ["WorkerRun", "load_changelog", "run_worker", "worker_rows"]


@dataclass(frozen=True, slots=True)
class WorkerRun:
    """RSS of a real worker that recovered ``users`` states from its changelog, then served
    ``events`` events of those users."""

    users: int
    events: int
    rss_ready_kib: int
    rss_end_kib: int
    peak_rss_kib: int
    ready_s: float
    """From the worker's start until it is healthy, its changelog recovery included."""


async def load_changelog(settings: Settings, users: int, seed: int = 5) -> None:
    """``users`` encoded states on the table's changelog, keyed (and so partitioned) like the
    events the worker then receives for the same users."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        linger_ms=20,
        max_batch_size=1 << 20,
        max_request_size=4 << 20,
    )
    await producer.start()
    rng, topic = np.random.default_rng(seed), changelog_topic_name(settings)
    try:
        for start in range(0, users, CHUNK):
            values = encoded_states(rng, min(CHUNK, users - start), 1.7e9)
            for offset, value in enumerate(values):
                await producer.send(topic, value, key=user_key(start + offset))
        await producer.flush()
    finally:
        await producer.stop()


def _worker_settings(base: Settings, bootstrap: str, home: Path, kind: str) -> Settings:
    settings = dataclasses.replace(
        stage_settings(base, bootstrap, kind, home / kind), store="rocksdb"
    )
    settings.home.mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(bootstrap, topic_specs(settings)))
    return settings


def run_worker(
    base: Settings,
    bootstrap: str,
    home: Path,
    users: int,
    events: Sequence[Any],
    items: Sequence[Any],
) -> WorkerRun:
    """Start ``streams.cli worker --store rocksdb`` on a changelog of ``users`` states, wait for
    its recovery, replay ``events`` (user ids among those users) and read its RSS."""
    kind = f"store-{users}"
    settings = _worker_settings(base, bootstrap, home, kind)
    asyncio.run(publish_items(settings, items))
    asyncio.run(load_changelog(settings, users))
    argv = ["-m", "streams.cli", "worker", "--store", "rocksdb"]
    proc = ServiceProcess.start(kind, argv, settings, home / f"{kind}.log")
    try:
        began = time.perf_counter()
        proc.wait_healthy(120 + users / 1_000)
        ready_s, ready = time.perf_counter() - began, proc.memory()
        asyncio.run(replay_events(settings, events, progress=False))
        deadline = time.monotonic() + 120 + len(events) / 50
        while processed(proc.get_json("/metrics.json") or {}) < len(events):
            proc.check()
            if time.monotonic() > deadline:
                raise BenchError(f"{kind}: events not processed in time:\n{proc.tail()}")
            time.sleep(0.5)
        _check_recovered(proc, events, users)
        end = proc.memory()
    finally:
        proc.stop()
    return WorkerRun(
        users,
        len(events),
        ready.get("rss_kib", 0),
        end.get("rss_kib", 0),
        end.get("peak_rss_kib", 0),
        ready_s,
    )


def _check_recovered(proc: Any, events: Sequence[Any], users: int) -> None:
    """A user's state counts the events it was recovered with (70) plus those just sent."""
    sent = Counter(e.user_id for e in events)
    for user_id, count in list(sent.items())[:3]:
        body = proc.get_json(f"/users/{user_id}") or {}
        expected = count + (HISTORY + 20 if users else 0)
        if body.get("events") != expected:
            raise BenchError(
                f"{user_id}: {body.get('events')} events in its state, expected "
                f"{expected}; the table was not recovered:\n{proc.tail()}"
            )


def worker_rows(settings: Settings, users: int, events: int, home: Path) -> list[Row]:
    """A real worker holding ``users`` users vs the same worker with an empty table."""
    items, records = load_dataset(settings, events)
    picks = np.random.default_rng(3).integers(0, users, events).tolist()
    records = [
        dataclasses.replace(e, user_id=user_key(u).decode())
        for e, u in zip(records, picks, strict=True)
    ]
    with broker_for(settings.bootstrap, home / "broker.log") as bootstrap:
        empty = run_worker(settings, bootstrap, home, 0, records, items)
        full = run_worker(settings, bootstrap, home, users, records, items)
    label = f"{users:,} users recovered + {events:,} events"
    note = (
        f"healthy {full.ready_s:.0f}s after start (recovery included) at "
        f"{mib(full.rss_ready_kib)} MiB, empty table {mib(empty.rss_ready_kib)}"
    )
    return [
        Row(
            "store",
            f"worker RSS at end, {label}",
            mib(full.rss_end_kib),
            "MiB",
            "same worker, empty table",
            mib(empty.rss_end_kib),
            note,
        ),
        Row(
            "store",
            f"worker peak RSS, {label}",
            mib(full.peak_rss_kib),
            "MiB",
            "same worker, empty table",
            mib(empty.peak_rss_kib),
            f"{settings.partitions} partitions, rocksdb store, worker's options",
        ),
    ]
