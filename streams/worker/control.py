"""The control topic: operator commands that every worker carries out (today one: forget a user).

``interest-stream forget USER_ID`` publishes ``{"op": "forget", "user_id", "token",
"requested_at"}`` keyed by the user id to the one-partition, compacted control topic. Every
worker reads that whole topic itself, with a group-less consumer (as the catalog feed reads
``items``), so each one sees every command, in order. A command is carried out only when its
token matches the worker's ``admin_token`` (:func:`hmac.compare_digest`); a worker without a
token, a wrong or missing token, or a malformed record sends the record to the dead-letter topic
with the reason, and deletes nothing. No record stops the worker.

Forget: for every partition of ``user_interest`` this worker holds, the user's state there is
deleted (the store, and a tombstone on that partition of the changelog, so a worker recovering
from the changelog does not bring it back), and a tombstone (key = user id, no value) goes to
the recommendations topic, so a compacted view of it drops the user's last list. The worker
keeps no other per-user data in memory (states are read from the table for each batch); a
batch that read the user's state before the forget does not write it back when it ends
(:class:`streams.worker.wiring.Forgotten`). Each forget is logged with the partitions it touched
and counted in ``/metrics`` (``forgets``, ``states_forgotten``).

Commands read at start-up (published before the worker started) and every valid forget again
after each rebalance, once the table is recovered, are *swept* over the partitions held then:
a forget published while no worker held a partition still reaches it. A sweep deletes a state
only when its newest event time is not after the request (a user who came back since keeps
their new state), and dead-letters nothing (a worker that was running did so when it arrived).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import faust
import faust.streams
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from faust.events import Event
from faust.stores.memory import Store as MemoryTableStore
from faust.types import AppT, TableT
from faust.types.tuples import Message

from interest_state import CodecError, decode_state
from streams.contract import load_json
from streams.errors import EventRejected, SettingsError
from streams.settings import Settings
from streams.worker.dlq import dead_letter
from streams.worker.kafka_auth import client_options, feed_consumer
from streams.worker.topics import true_end_offsets
from streams.worker.wiring import Wiring, stop_worker

__all__ = [
    "MAX_CONTROL_BYTES",
    "ControlFeed",
    "Forget",
    "delete_state",
    "forget_record",
    "parse_control",
    "publish_forget",
]

log = logging.getLogger(__name__)
MAX_CONTROL_BYTES = 16_384
"""The largest control record a worker reads; a command is a few hundred bytes."""
SWEEP_YIELD_EVERY = 256
"""A sweep gives the event loop a turn after this many users."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Delete ``user_id``'s state (and last recommendations), as asked at ``requested_at``."""

    user_id: str
    requested_at: float


def forget_record(user_id: str, token: str, requested_at: float) -> tuple[bytes, bytes]:
    """The key and value of a forget command, as :func:`parse_control` reads them."""
    body = {"op": "forget", "user_id": user_id, "token": token, "requested_at": requested_at}
    return user_id.encode(), json.dumps(body).encode()


def parse_control(
    key: bytes | None, value: bytes | None, token: str, max_user_id_len: int
) -> Forget:
    """The command of one control record; ``EventRejected`` with the reason for any other."""
    if not token:
        raise EventRejected("control message refused: this worker has no admin token "
                            "(INTEREST_STREAM_ADMIN_TOKEN)")  # fmt: skip
    if value is None:
        raise EventRejected("control message without a value")
    if len(value) > MAX_CONTROL_BYTES:
        raise EventRejected(f"control message is {len(value)} bytes, at most "
                            f"{MAX_CONTROL_BYTES} allowed")  # fmt: skip
    body = load_json(value)
    if not isinstance(body, dict):
        raise EventRejected(f"control message must be a JSON object, got {type(body).__name__}")
    given = body.get("token")
    if not isinstance(given, str) or not hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    ):
        raise EventRejected("control message refused: wrong or missing token")
    if body.get("op") != "forget":
        raise EventRejected(f"unknown control op {str(body.get('op'))[:40]!r} (known: forget)")
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= max_user_id_len:
        raise EventRejected(f"control field 'user_id' must be a string of 1 to "
                            f"{max_user_id_len} characters")  # fmt: skip
    try:
        user_key = user_id.encode("utf-8")
    except UnicodeEncodeError:
        raise EventRejected("control field 'user_id' is not valid Unicode") from None
    if key != user_key:
        raise EventRejected("control message key must be the user id")
    requested_at = body.get("requested_at")
    if (isinstance(requested_at, bool) or not isinstance(requested_at, int | float)
            or not math.isfinite(requested_at)):  # fmt: skip
        raise EventRejected("control field 'requested_at' must be epoch seconds")
    return Forget(user_id, float(requested_at))


async def publish_forget(settings: Settings, user_id: str) -> int:
    """Publish a forget of ``user_id``; the offset it got. Refused without an admin token."""
    if not settings.admin_token:
        raise SettingsError("no admin token: set INTEREST_STREAM_ADMIN_TOKEN to the workers' token")
    if not 1 <= len(user_id) <= settings.max_user_id_len:
        raise SettingsError(f"a user id has 1 to {settings.max_user_id_len} characters")
    key, value = forget_record(user_id, settings.admin_token, time.time())
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", **client_options(settings)
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(settings.topics.control, value, key=key, partition=0)
    finally:
        await producer.stop()
    return int(sent.offset)


class ControlFeed:
    """Reads the control topic and carries out its commands on this worker's partitions."""

    def __init__(self, wiring: Wiring, table: TableT[bytes, bytes]) -> None:
        self.wiring = wiring
        self.table = table
        self.known: dict[str, float] = {}  # every valid forget read: user -> latest request
        self.pending: dict[str, float] = {}  # read live while the table was not ready
        self.caught_up = False
        self.swept_generation: int | None = None
        self.skipped = 0  # rejected records read at start-up (not dead-lettered again)
        wiring.app.task(self.run)

    async def run(self) -> None:
        settings = self.wiring.settings
        consumer = feed_consumer(settings)
        await consumer.start()
        try:
            tp = TopicPartition(settings.topics.control, 0)
            start_end = (await true_end_offsets(consumer, [tp]))[tp]
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=256)
                for record in batches.get(tp, []):
                    await self.apply(record, live=record.offset >= start_end)
                if not self.caught_up and await consumer.position(tp) >= start_end:
                    self.caught_up = True
                    log.info("control topic read: %d forgets known, %d records refused before "
                             "this start", len(self.known), self.skipped)  # fmt: skip
                await self.tend()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the consumer or the broker, not a record: those never raise
            stop_worker(self.wiring.app, exc)
        finally:
            await consumer.stop()

    async def apply(self, record: ConsumerRecord[bytes, bytes], live: bool) -> None:
        """Carry out one control record (``live``: published after this worker started)."""
        settings = self.wiring.settings
        try:
            forget = parse_control(
                record.key, record.value, settings.admin_token, settings.max_user_id_len
            )
        except EventRejected as exc:
            await self._refuse(record, exc.reason, live)
            return
        except Exception as exc:  # a bug of ours: still only this record's
            await self._refuse(record, f"control message could not be read: {exc!r:.200}", live)
            return
        user_id = forget.user_id
        self.known[user_id] = max(forget.requested_at, self.known.get(user_id, 0.0))
        if not live:
            return  # swept once the table is ready
        self.wiring.stats.forgets += 1
        if self.ready():
            touched = await self.forget(user_id, self.held_partitions())
            log.info("forget user %r: state deleted in partitions %s (held: %s)", user_id,
                     touched, self.held_partitions())  # fmt: skip
        else:
            self.pending[user_id] = forget.requested_at
            log.info("forget user %r: the table is not ready, done once it is", user_id)

    async def _refuse(self, record: ConsumerRecord[bytes, bytes], reason: str, live: bool) -> None:
        if live:
            log.warning("control record at offset %d refused: %s", record.offset, reason)
            await dead_letter(self.wiring, record, reason)
        else:
            self.skipped += 1

    def ready(self) -> bool:
        """Whether the table's partitions are assigned and recovered."""
        app = self.wiring.app
        return bool(app.tables.actives_ready) and not app.rebalancing

    def held_partitions(self) -> list[int]:
        """The ``user_interest`` partitions this worker holds as active now."""
        topic = self.table.changelog_topic.get_topic_name()
        return sorted(tp.partition for tp in self.wiring.app.assignor.assigned_actives()
                      if tp.topic == topic)  # fmt: skip

    async def forget(
        self, user_id: str, partitions: Sequence[int], not_after: float | None = None
    ) -> list[int]:
        """Delete ``user_id``'s state in ``partitions`` (with ``not_after``, only a state whose
        newest event time is not later); where it was deleted. A deletion also publishes the
        user's recommendations tombstone."""
        key = user_id.encode()
        source = self.wiring.settings.topics.click
        self.wiring.forgotten.mark(user_id)  # a batch under way must not write it back
        self.wiring.stats.online.forget(user_id)  # nor is their last list remembered
        touched = delete_state(self.table, key, partitions, source, not_after)
        if touched:
            self.wiring.stats.states_forgotten += 1
            await self.wiring.recommendations.send(key=key, value=None, force=True)
        return touched

    async def tend(self) -> None:
        """Forgets that waited for the table; a sweep after each (re)assignment."""
        if not self.caught_up or not self.ready():
            return
        partitions = self.held_partitions()
        pending, self.pending = self.pending, {}
        for user_id in pending:
            touched = await self.forget(user_id, partitions)
            log.info("forget user %r: state deleted in partitions %s (held: %s)", user_id,
                     touched, partitions)  # fmt: skip
        generation = self.wiring.app.consumer_generation_id
        if generation != self.swept_generation:
            self.swept_generation = generation
            await self._sweep(partitions)

    async def _sweep(self, partitions: Sequence[int]) -> None:
        started, deleted = time.monotonic(), 0
        for n, (user_id, requested_at) in enumerate(list(self.known.items()), 1):
            if await self.forget(user_id, partitions, requested_at):
                deleted += 1
            if n % SWEEP_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        log.info("control sweep of partitions %s: %d forgets known, %d states deleted, %.0f ms",
                 partitions, len(self.known), deleted,
                 (time.monotonic() - started) * 1000)  # fmt: skip


@contextmanager
def _in_partition(app: AppT, topic: str, partition: int) -> Iterator[None]:
    """Faust's current event set to a stand-in from ``partition`` of the source ``topic``: table
    reads then look in that partition's store, and a delete's tombstone goes to that partition
    of the changelog (as :func:`streams.worker.agents.in_partition_of` does for real events)."""
    message = Message(topic, partition, -1, time.time(), 0, [], None, None, None)
    event = Event(app, None, None, [], message)
    token = faust.streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


def delete_state(
    table: TableT[bytes, bytes],
    key: bytes,
    partitions: Sequence[int],
    source_topic: str,
    not_after: float | None = None,
) -> list[int]:
    """Delete ``key`` from each of ``partitions`` of ``table`` that holds it, with a changelog
    tombstone there; the partitions it was deleted from.

    RocksDB keeps one store per partition, so each is looked at alone. Faust's memory store is
    one dict that does not know a live key's partition: there a key found is tombstoned in every
    partition of ``partitions``. With ``not_after``, a state whose newest event time is later is
    kept (a state that does not decode is deleted).
    """
    touched: list[int] = []
    app = table.app
    for partition in partitions:
        with _in_partition(app, source_topic, partition):
            raw = table.get(key)
            if raw is None or not _older(raw, not_after):
                continue
            del table[key]
        touched.append(partition)
    if touched and isinstance(table.data, MemoryTableStore):
        for partition in partitions:
            if partition not in touched:
                table.send_changelog(partition, key, None, value_serializer="raw")
        touched = list(partitions)
    return touched


def _older(raw: bytes, not_after: float | None) -> bool:
    if not_after is None:
        return True
    try:
        return decode_state(raw).updated_ts <= not_after
    except CodecError:
        return True
