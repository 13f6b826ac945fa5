"""The interest-updater agent: decode, validate, microbatch, update state, recommend.

Each batch from :func:`streams.worker.batching.take_batches` is decoded (bad records go to the
dead-letter topic: every failure to decode one record, expected or not, is that record's alone,
and a dead letter that cannot be sent is logged, never raised; a batch's dead letters are sent
together and logged in one line, not one a record: those of records that did not decode once
its good events are answered, and none when a rebalance overtook the batch, whose records the
partition's owner reads again; those of rejected events before their users' states are written),
handed to :meth:`Pipeline.process` in an executor thread, and then written back: one table
write and one recommendation message per user touched (coalescing), in the partition that
received that user's events, whatever hash the producer used to put them there. The table and
the output topics are reached through :mod:`streams.worker.ports` (the Faust table and topics in
the stream, their in-memory homes in unit tests).

A crash of the agent stops the worker (exit code != 0) instead of leaving a worker that is up
but consumes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faust
import faust.streams
from faust.types import EventT

from interest_state import CodecError, Event, InterestState, decode_state, encode_state
from streams.errors import EventRejected
from streams.worker.batching import take_batches
from streams.worker.catalog import CatalogFeed
from streams.worker.commits import generation_live
from streams.worker.dlq import dead_letters
from streams.worker.outcomes import BatchResult
from streams.worker.pipeline import Pipeline
from streams.worker.schemas import decode_event, encode_recommendations
from streams.worker.wiring import Wiring, stop_worker

__all__ = ["register", "in_partition_of", "undecodable"]

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 200
"""How much of an unexpected error's message a dead-letter reason quotes."""


@contextlib.contextmanager
def in_partition_of(event: EventT[bytes]) -> Iterator[None]:
    """Make table reads and writes use ``event``'s partition.

    Faust places a table write in the partition of the *current event*, which a batch from
    :func:`~streams.worker.batching.take_batches` does not set. We set it to the user's own event,
    so the state lives in the partition that receives the user's events (``use_partitioner``
    would hash the key with murmur2 instead, which disagrees with librdkafka producers).
    """
    token = faust.streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


def register(wiring: Wiring, pipeline: Pipeline, feed: CatalogFeed) -> None:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    settings = wiring.settings

    @wiring.app.agent(wiring.events, name="interest-updater")
    async def interest_updater(stream: faust.StreamT[bytes]) -> None:
        try:
            await feed.ready.wait()
            batches = take_batches(stream, settings.batch_size, settings.batch_wait_s)
            async with contextlib.aclosing(batches):  # its reader task ends with the agent
                async for batch in batches:
                    await handle_batch(wiring, pipeline, executor, batch)
            if not wiring.app.should_stop:  # not a shutdown: nothing would consume any more
                raise RuntimeError("the event stream ended while the worker is running")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stop_worker(wiring.app, exc)


def _decode(
    wiring: Wiring, batch: Sequence[EventT[bytes]]
) -> tuple[list[Event], list[EventT[bytes]], list[tuple[EventT[bytes], str]]]:
    settings = wiring.settings
    good: list[Event] = []
    sources: list[EventT[bytes]] = []
    bad: list[tuple[EventT[bytes], str]] = []
    unexpected: list[tuple[EventT[bytes], Exception]] = []
    for ev in batch:
        msg = ev.message
        try:
            event_type = settings.topics.event_type_of(msg.topic)
            good.append(decode_event(msg.value, event_type, msg.key, settings.max_user_id_len,
                                     source=f"{msg.topic}/{msg.partition}", offset=msg.offset))
            sources.append(ev)
        except EventRejected as exc:
            bad.append((ev, exc.reason))
        except Exception as exc:  # a bug of ours, not the record's: still only this record's
            bad.append((ev, undecodable(exc)))
            unexpected.append((ev, exc))
    if unexpected:  # one line a batch, however many: a flood must not flood the log
        first, error = unexpected[0][0].message, unexpected[0][1]
        log.warning("%d records of the batch could not be decoded; dead-lettered. The first: "
                    "%s[%d]@%d", len(unexpected), first.topic, first.partition, first.offset,
                    exc_info=error)  # fmt: skip
    return good, sources, bad


def undecodable(exc: Exception) -> str:
    """The dead-letter reason of a record whose decoding failed unexpectedly."""
    try:
        message = str(exc)
    except Exception:  # an error whose message itself fails
        message = "<message not printable>"
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + "..."
    return f"could not be decoded: {type(exc).__name__}: {message}"


def _load_states(
    wiring: Wiring, events: Sequence[Event], sources: Sequence[EventT[bytes]]
) -> dict[str, InterestState | None]:
    states: dict[str, InterestState | None] = {}
    for event, source in zip(events, sources, strict=True):
        if event.user_id in states:
            continue
        with in_partition_of(source):
            raw = wiring.table.get(event.user_id.encode())
        try:
            states[event.user_id] = decode_state(raw) if raw is not None else None
        except CodecError as exc:
            log.error(
                "state of user %r does not decode (%s); starting it afresh", event.user_id, exc
            )
            states[event.user_id] = None
    return states


async def handle_batch(
    wiring: Wiring, pipeline: Pipeline, executor: ThreadPoolExecutor, batch: Sequence[EventT[bytes]]
) -> None:
    stats = wiring.stats
    started = time.time()
    stats.batches += 1
    stats.events_in += len(batch)
    stats.batch_sizes.append(len(batch))
    stats.waits_ms.extend((started - ev.message.timestamp) * 1000.0 for ev in batch)
    try:
        generation = wiring.app.consumer_generation_id
        events, sources, bad = _decode(wiring, batch)
        await _process(wiring, pipeline, executor, events, sources, generation)
        # Records that did not decode are sent once the good events are answered, and before
        # this returns: the batch is acked (so its offsets can be committed) only then; and only
        # if no rebalance came: else the batch is not acked, and the partition's owner reads them
        # again and dead-letters them (sent here too, each would be in the topic twice).
        if bad and generation_live(wiring.app, generation):
            await dead_letters(wiring, [(ev.message, reason) for ev, reason in bad])
    finally:
        stats.batch_ms.append((time.time() - started) * 1000.0)


async def _process(
    wiring: Wiring,
    pipeline: Pipeline,
    executor: ThreadPoolExecutor,
    events: Sequence[Event],
    sources: Sequence[EventT[bytes]],
    generation: int | None,
) -> None:
    """Update the states of ``events``' users, store them and send their recommendations.

    The dead letters of the events the pipeline rejected are handed to the producer first: the
    states written back record those events as handled, so a worker that died after writing
    them and before sending the letters would leave them unsent for good (a read again skips
    them). In this order a death in between costs a second dead letter, not a lost one."""
    if not events:
        return
    read_at = time.monotonic()
    states = _load_states(wiring, events, sources)
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(executor, pipeline.process, events, states)
    if result.rejected and generation_live(wiring.app, generation):
        await dead_letters(wiring, [(sources[position].message, reason)
                                    for position, reason in result.rejected])  # fmt: skip
    if not generation_live(wiring.app, generation):
        # a rebalance came meanwhile: the partitions may be another worker's, or recovering
        # here; nothing is written or sent, and the batch is not acked (take_batches): the
        # owner reads its events again from the committed offsets
        log.info("a rebalance came while %d events were processed: results dropped",
                 len(events))  # fmt: skip
        return
    outgoing = _write_back(wiring, events, sources, result, read_at)
    await _publish(wiring, outgoing)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One recommendation message, and the record timestamps of the events it answers."""

    key: bytes
    payload: bytes
    stamps: tuple[float, ...]


def _write_back(
    wiring: Wiring,
    events: Sequence[Event],
    sources: Sequence[EventT[bytes]],
    result: BatchResult,
    read_at: float,
) -> list[Outgoing]:
    """One state write per user touched; returns one recommendation message per user. A user
    forgotten since their state was read (at ``read_at``) gets neither. The applied events are
    first scored against their users' lists from before the batch (online HR@10, MRR@10), and
    those of the users written back are counted per item (``wiring.trending``), in their own
    partitions: not the redelivered, the duplicates nor the dead-lettered."""
    stats = wiring.stats
    stats.online.record_batch(events, result, lambda user: wiring.forgotten.since(user, read_at))
    outgoing: list[Outgoing] = []
    last_source: dict[str, EventT[bytes]] = {}
    first_arrival: dict[str, float] = {}
    stamps: dict[str, list[float]] = {}
    rejected = {position for position, _ in result.rejected}
    usable: dict[tuple[str, str], tuple[EventT[bytes], str]] = {}  # (user, event id) -> first
    for position, (event, source) in enumerate(zip(events, sources, strict=True)):
        last_source[event.user_id] = source
        arrival = source.message.timestamp
        first_arrival[event.user_id] = min(first_arrival.get(event.user_id, arrival), arrival)
        if position not in rejected:
            stamps.setdefault(event.user_id, []).append(arrival)
            usable.setdefault((event.user_id, event.event_id), (source, event.item_id))
    now = time.time()
    applied: list[tuple[EventT[bytes], str]] = []  # what changed a state written back
    for user_id, outcome in result.users.items():
        if wiring.forgotten.since(user_id, read_at):
            log.info("user %r was forgotten while their batch ran: not written back", user_id)
            continue
        applied.extend(found for event_id in outcome.applied
                       if (found := usable.get((user_id, event_id))) is not None)  # fmt: skip
        key = user_id.encode()
        # written even when nothing was applied: after a restart the stored state can be ahead
        # of the changelog (a local store written before the kill), and the redelivered
        # events' offsets are committed after this batch: the changelog must have them first
        with in_partition_of(last_source[user_id]):
            wiring.table[key] = encode_state(outcome.state)
        latency_ms = (now - first_arrival[user_id]) * 1000.0
        event_ids = outcome.applied + outcome.duplicates + outcome.redelivered
        version = outcome.model_version or result.model_version
        payload = encode_recommendations(
            user_id, event_ids, outcome.recommendations, version, latency_ms, now, outcome.variant
        )
        outgoing.append(Outgoing(key, payload, tuple(stamps.get(user_id, ()))))
        stats.events_applied += len(outcome.applied)
        stats.duplicates += len(outcome.duplicates)
        stats.redelivered += len(outcome.redelivered)
        stats.recommendations_out += 1
        stats.latencies_ms.append(latency_ms)
        stats.online.sent(outcome.variant, latency_ms)
    if wiring.trending is not None and applied:
        wiring.trending.count(applied)
    return outgoing


async def _publish(wiring: Wiring, outgoing: Sequence[Outgoing]) -> None:
    """Hand the batch's recommendations to the Kafka producer before the next batch starts.

    ``send_soon`` would queue them for faust's producer-buffer task, which runs only when the
    agent next yields (after the next batch's decoding and state reads, behind the other ready
    tasks): about 2 ms more from the batch to the output topic at 1,000 events/s here. Awaiting
    the send puts each message in aiokafka's batch for its partition at once (it waits only
    when the producer's buffer is full, which also holds the agent back). ``force=True``: never
    attached to a source event (faust would send an attached message only when that event is
    acked). Faust flushes the producer before it commits offsets, so a committed event's
    recommendation has been handed to the broker, as with ``send_soon``. When the broker acks
    a message, its events' time from their record timestamps goes to ``stats.acked``
    (``acked_ms`` in ``/metrics``).
    """
    topic = wiring.recommendations
    acked = wiring.stats.acked
    for out in outgoing:
        await topic.send(key=out.key, value=out.payload, force=True,
                         callback=acked.callback(out.stamps))
