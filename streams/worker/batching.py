"""Microbatches from a Faust stream, timed from each batch's first event.

Faust's ``Stream.take_events(max_, within)`` restarts its ``within`` window after each batch
and stops reading while the agent works on one: an event that arrives while a batch is being
processed waits for that batch, then for a whole window more. At 1,000 events/s with a 20 ms
window that made the median event wait ~25 ms before the agent saw it.

:func:`take_batches` keeps reading while the caller works (the model runs in an executor
thread, so the event loop is free), and closes a batch when it holds ``max_size`` events or
its *first* event has waited ``within`` seconds, whichever comes first. Events that queued up
during the previous batch therefore go at once when their time is up, and under load the
batch size follows the arrival rate by itself. Acks are manual: an event is acked only after
the caller has finished with its batch (the generator resumed), so a crash mid-batch replays
it. Events still buffered when a rebalance revokes their consumer generation are dropped
unacked, as Faust drops such events when it reads them: the partition's owner after the
rebalance reads them again from the last committed offset. So is a batch during which a
rebalance came (its acks would land in the new generation's bookkeeping, where faust would
commit them over offsets nobody processed): :func:`streams.worker.commits.generation_live`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any, cast

import faust
from faust.types import EventT

from streams.worker.commits import generation_live

__all__ = ["take_batches"]

log = logging.getLogger(__name__)


async def take_batches(
    stream: faust.StreamT[Any], max_size: int, within: float
) -> AsyncGenerator[list[EventT[Any]], None]:
    """Yield batches of at most ``max_size`` events; none waits more than ``within`` seconds
    in the buffer unless the caller is still busy with the batch before it."""
    if max_size < 1 or within <= 0:
        raise ValueError(
            f"take_batches needs max_size >= 1 and within > 0, got {max_size}, {within}"
        )
    manual = cast(faust.Stream[Any], stream).noack()
    app = manual.app
    loop = asyncio.get_running_loop()
    buffer: list[EventT[Any]] = []
    first_at = 0.0
    arrived = asyncio.Event()
    full = asyncio.Event()
    room = asyncio.Event()
    room.set()

    async def fill() -> None:
        nonlocal first_at
        async with contextlib.aclosing(manual.events()) as events:
            async for event in events:
                if not buffer:
                    first_at = loop.time()
                    arrived.set()
                buffer.append(event)
                if len(buffer) >= max_size:
                    full.set()
                    room.clear()
                    await room.wait()

    filler = asyncio.ensure_future(fill())
    try:
        while True:
            if not arrived.is_set():
                await _first_of(arrived, filler, None)
            if not filler.done() and not full.is_set():
                delay = first_at + within - loop.time()
                if delay > 0:
                    await _first_of(full, filler, delay)
            if not buffer:  # the stream ended with nothing left (or the filler failed)
                filler.result()
                return
            generation = app.consumer_generation_id
            live = generation_live(app, generation)
            batch = [e for e in buffer if live and e.message.generation_id == generation]
            if len(batch) < len(buffer):
                log.info("%d events read before a rebalance dropped unacked (read again by "
                         "their partition's owner)", len(buffer) - len(batch))
            buffer.clear()
            arrived.clear()
            full.clear()
            room.set()
            if not batch:
                continue
            yield batch
            if not generation_live(app, generation):
                log.info("a rebalance came while a batch of %d events was processed: left "
                         "unacked (read again by their partitions' owners)", len(batch))
                continue
            for event in batch:
                await manual.ack(event)
    finally:
        filler.cancel()
        await asyncio.gather(filler, return_exceptions=True)


async def _first_of(
    flag: asyncio.Event, filler: asyncio.Future[None], timeout: float | None
) -> None:
    """Wait until ``flag`` is set, the filler ends (raising what it raised) or ``timeout``."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(flag.wait())
    pending: list[asyncio.Future[Any]] = [waiter, filler]
    try:
        await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if filler.done() and not filler.cancelled() and filler.exception() is not None:
        filler.result()
