"""take_batches: when a microbatch closes, what is acked when, and errors from the stream.

The stream here is a stand-in with the three methods take_batches uses (``noack``,
``events``, ``ack``); the real Faust stream is exercised by the integration tests (the worker
end to end, and the kill -9 replay in test_crash).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from streams.worker.batching import take_batches

STOP = object()


class Ev(int):
    """An event that compares equal to its number, read in consumer generation ``generation``."""

    message: SimpleNamespace

    @classmethod
    def of(cls, n: int, generation: int) -> Ev:
        event = cls(n)
        event.message = SimpleNamespace(generation_id=generation)
        return event


class QueueStream:
    """Numbers put on a queue come out of ``events()`` as events of the app's current consumer
    generation (or of the one given with a ``(number, generation)`` pair); ``ack`` records
    what was acked."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.acked: list[Any] = []
        self.taken = 0
        self.app = SimpleNamespace(consumer_generation_id=1)

    def noack(self) -> QueueStream:
        return self

    async def events(self) -> AsyncIterator[Any]:
        while True:
            item = await self.queue.get()
            if item is STOP:
                return
            if isinstance(item, BaseException):
                raise item
            self.taken += 1
            n, generation = item if isinstance(item, tuple) else (item, None)
            yield Ev.of(n, self.app.consumer_generation_id if generation is None else generation)

    async def ack(self, event: Any) -> bool:
        self.acked.append(event)
        return True


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_full_batch_goes_at_once_and_a_short_one_after_the_window() -> None:
    async def go() -> list[tuple[list[int], float]]:
        stream = QueueStream()
        for n in range(5):
            stream.queue.put_nowait(n)
        start = time.monotonic()
        got = []
        async for batch in take_batches(stream, 3, 0.5):  # type: ignore[arg-type]
            got.append((batch, time.monotonic() - start))
            if len(got) == 2:
                break
        return got

    (first, t_first), (second, t_second) = run(go())
    assert first == [0, 1, 2]
    assert t_first < 0.4  # full: did not wait for the window
    assert second == [3, 4]
    assert t_second >= 0.5  # not full: waited the window from its first event


def test_events_that_queued_while_the_caller_worked_go_when_their_window_is_up() -> None:
    """take_events would start a new window after the caller's work; we do not."""

    async def go() -> tuple[list[list[int]], float]:
        stream = QueueStream()
        stream.queue.put_nowait(0)
        batches: list[list[int]] = []
        resumed = 0.0
        waited = 0.0
        async for batch in take_batches(stream, 100, 1.0):  # type: ignore[arg-type]
            if batches:
                waited = time.monotonic() - resumed
                batches.append(batch)
                break
            batches.append(batch)
            stream.queue.put_nowait(1)  # arrives while we work on batch [0]
            await asyncio.sleep(1.5)
            resumed = time.monotonic()
        return batches, waited

    batches, waited = run(go())
    assert batches == [[0], [1]]
    assert waited < 0.5  # event 1 had already waited 1.5 s > the 1.0 s window


def test_events_are_acked_only_after_the_caller_is_done_with_their_batch() -> None:
    async def go() -> tuple[list[int], list[int], list[int]]:
        stream = QueueStream()
        for n in range(4):
            stream.queue.put_nowait(n)
        seen: list[list[int]] = []
        acked_during: list[int] = []
        async for batch in take_batches(stream, 2, 0.05):  # type: ignore[arg-type]
            seen.append(batch)
            acked_during = list(stream.acked)
            if len(seen) == 2:
                break
        return acked_during, list(stream.acked), [n for b in seen for n in b]

    acked_during_second, acked_at_end, seen = run(go())
    assert seen == [0, 1, 2, 3]
    assert acked_during_second == [0, 1]  # the first batch, after the caller came back
    assert acked_at_end == [0, 1]  # the second batch was left mid-way: not acked, replayed


def test_the_buffer_never_holds_more_than_max_size_while_the_caller_works() -> None:
    async def go() -> tuple[int, list[int]]:
        stream = QueueStream()
        for n in range(10):
            stream.queue.put_nowait(n)
        taken_while_busy = 0
        sizes = []
        async for batch in take_batches(stream, 3, 0.05):  # type: ignore[arg-type]
            sizes.append(len(batch))
            await asyncio.sleep(0.2)
            taken_while_busy = max(taken_while_busy, stream.taken - sum(sizes))
            if sum(sizes) >= 9:
                break
        return taken_while_busy, sizes

    taken_while_busy, sizes = run(go())
    assert sizes == [3, 3, 3]
    assert taken_while_busy <= 3


def test_the_last_events_come_out_when_the_stream_ends() -> None:
    async def go() -> list[list[int]]:
        stream = QueueStream()
        for item in (0, 1, STOP):
            stream.queue.put_nowait(item)
        return [b async for b in take_batches(stream, 10, 0.05)]  # type: ignore[arg-type]

    assert run(go()) == [[0, 1]]


def test_an_error_in_the_stream_reaches_the_caller() -> None:
    async def go() -> None:
        stream = QueueStream()
        stream.queue.put_nowait(RuntimeError("consumer died"))
        async for _ in take_batches(stream, 10, 0.05):  # type: ignore[arg-type]
            pass

    with pytest.raises(RuntimeError, match="consumer died"):
        run(go())


def test_bad_arguments_are_refused() -> None:
    async def go(size: int, within: float) -> None:
        async for _ in take_batches(QueueStream(), size, within):  # type: ignore[arg-type]
            pass

    with pytest.raises(ValueError, match="max_size"):
        run(go(0, 0.1))
    with pytest.raises(ValueError, match="within"):
        run(go(1, 0))


def test_closing_the_batches_stops_reading_the_stream() -> None:
    async def go() -> tuple[int, int]:
        stream = QueueStream()
        stream.queue.put_nowait(0)
        batches = take_batches(stream, 10, 0.05)  # type: ignore[arg-type]
        assert await anext(batches) == [0]
        await batches.aclose()
        taken = stream.taken
        stream.queue.put_nowait(1)
        await asyncio.sleep(0.1)
        return taken, stream.taken

    before, after = run(go())
    assert before == after == 1


def test_events_read_before_a_rebalance_are_dropped_unacked() -> None:
    async def go() -> tuple[list[list[int]], list[int]]:
        stream = QueueStream()
        for item in ((0, 0), 1, (2, 0), 3, STOP):  # 0 and 2 were read in generation 0
            stream.queue.put_nowait(item)
        batches = [b async for b in take_batches(stream, 10, 0.05)]  # type: ignore[arg-type]
        return batches, stream.acked

    batches, acked = run(go())
    assert batches == [[1, 3]]
    assert acked == [1, 3]


def test_events_of_a_revoked_generation_are_dropped_unacked() -> None:
    """Between a rebalance's revoke and its assignment the generation id is still the old one;
    its events are not processed (the partitions may be another worker's by now)."""

    async def go() -> tuple[list[list[int]], list[int]]:
        stream = QueueStream()
        stream.app.revoked = True  # type: ignore[attr-defined]
        for item in (0, 1, STOP):
            stream.queue.put_nowait(item)
        batches = [b async for b in take_batches(stream, 10, 0.05)]  # type: ignore[arg-type]
        return batches, stream.acked

    assert run(go()) == ([], [])


def test_a_batch_whose_generation_is_revoked_while_it_is_processed_is_not_acked() -> None:
    async def go() -> list[int]:
        stream = QueueStream()
        for item in (0, 1, STOP):
            stream.queue.put_nowait(item)
        async for _ in take_batches(stream, 10, 0.05):  # type: ignore[arg-type]
            stream.app.revoked = True  # type: ignore[attr-defined]
        return stream.acked

    assert run(go()) == []
