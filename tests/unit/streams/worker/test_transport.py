"""The worker's fetch loop (:meth:`streams.worker.transport._Consumer._drain_messages`) on a
stand-in consumer: what it delivers, which offsets it records as read, gaps, rebalances, and
deliveries that have to wait (finished, or given up when the flow is suspended, as faust does);
and the fetch wait each app's consumer is built with."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from mode import Service

from streams.settings import Settings
from streams.worker.flush import FlushBuffer, FlushProducer
from streams.worker.transport import Transport, _Consumer, faust_app, fetch_max_wait_ms

T0, T1 = TP("events.click", 0), TP("events.click", 1)


@dataclass
class Msg:
    tp: TP
    offset: int

    @property
    def topic(self) -> str:
        return self.tp.topic


@dataclass
class StandIn:
    """The attributes of a faust consumer that the fetch loop touches, with one fetch of
    ``records`` (the loop stops after it)."""

    records: list[Msg]
    on_deliver: Any = None
    blockers: dict[int, asyncio.Event] = field(default_factory=dict)  # offset -> wait for it
    given_up: list[int] = field(default_factory=list)
    slow_deliveries: int = 0
    delivered: list[tuple[TP, int]] = field(default_factory=list)
    gaps: list[tuple[TP, int, int]] = field(default_factory=list)
    _read_offset: defaultdict[TP, int | None] = field(
        default_factory=lambda: defaultdict(lambda: None))
    _sought: dict[TP, int | None] = field(default_factory=dict)
    positions: dict[TP, int] = field(default_factory=dict)  # the consumer's fetch positions
    asked: list[TP] = field(default_factory=list)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    _crashed: asyncio.Event = field(default_factory=asyncio.Event)
    suspend_flow: asyncio.Event = field(default_factory=asyncio.Event)
    _commit_every: int | None = None
    _n_acked: int = 0
    should_stop: bool = False
    consumer_stopped_errors: tuple[type[BaseException], ...] = ()

    paused: set[TP] = field(default_factory=set)
    seeks: list[tuple[TP, int]] = field(default_factory=list)
    _committed_offset: dict[TP, int | None] = field(default_factory=dict)
    _buffered_partitions: set[TP] = field(default_factory=set)
    flow_active: bool = True
    _seeked_generation: int | None = 1  # the generation's seek to its committed offsets is done
    _seek_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    _deliver = _Consumer._deliver  # the code under test, as a method of the stand-in
    _stale = _Consumer._stale
    _deliverable = _Consumer._deliverable
    _put_back = _Consumer._put_back

    def _get_active_partitions(self) -> set[TP]:
        return {m.tp for m in self.records} - self.paused

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset
        self._read_offset[tp] = offset
        self._sought[tp] = offset

    async def position(self, tp: TP) -> int | None:
        self.asked.append(tp)
        return self.positions.get(tp)

    def __post_init__(self) -> None:
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())
        self.app = SimpleNamespace(consumer_generation_id=1,
                                   topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
                                   monitor=SimpleNamespace(track_tp_end_offset=lambda *a: None))
        self.scheduler = SimpleNamespace(iterate=lambda records: ((m.tp, m) for m in records))
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=False))
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def callback(self, message: Msg) -> None:
        blocker = self.blockers.get(message.offset)
        if blocker is not None:
            try:
                await blocker.wait()
            except asyncio.CancelledError:
                self.given_up.append(message.offset)
                raise
        self.delivered.append((message.tp, message.offset))
        if self.on_deliver:
            self.on_deliver(self, message)

    async def wait_first(self, *coros: Any) -> Any:  # mode's own, as faust's consumer has it
        self.slow_deliveries += 1
        return await Service.wait_first(self, *coros)  # type: ignore[arg-type]

    async def _wait_next_records(self, timeout: float) -> tuple[list[Msg], None]:
        self.fetcher._stopped.set()  # one fetch, then the loop ends
        return self.records, None

    def _to_message(self, tp: TP, record: Msg) -> Msg:
        return record

    def highwater(self, tp: TP) -> int:
        return 0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _add_gap(self, tp: TP, start: int, stop: int) -> None:
        self.gaps.append((tp, start, stop))

    async def commit(self) -> None:
        raise AssertionError("not expected")


def _drain(standin: StandIn, after_20ms: Any = None) -> None:
    """Run the fetch loop over the stand-in's one fetch; ``after_20ms`` is called 20 ms in."""

    async def run() -> None:
        if after_20ms is not None:
            asyncio.get_running_loop().call_later(0.02, after_20ms)
        await _Consumer._drain_messages(standin, standin.fetcher)  # type: ignore[arg-type]

    asyncio.run(run())


def test_every_message_is_delivered_in_order_and_its_offset_recorded() -> None:
    standin = StandIn([Msg(T0, 0), Msg(T1, 5), Msg(T0, 1), Msg(T0, 2)])
    _drain(standin)
    assert standin.delivered == [(T0, 0), (T1, 5), (T0, 1), (T0, 2)]
    assert dict(standin._read_offset) == {T0: 2, T1: 5}
    assert standin.gaps == []


def test_records_of_a_paused_partition_are_put_back_not_delivered() -> None:
    """A record fetched for a partition that a rebalance paused (its table recovering) goes
    nowhere, and the consumer, already past it, is sought back to it: read again once the
    partition is resumed. The rest of that partition's fetch is skipped with it."""
    standin = StandIn([Msg(T0, 7), Msg(T1, 3), Msg(T0, 8)], paused={T0},
                      positions={T0: 9, T1: 4})  # fmt: skip
    _drain(standin)
    assert standin.delivered == [(T1, 3)]
    assert standin.seeks == [(T0, 7)] and standin._sought[T0] == 7
    again = StandIn([Msg(T0, 7)], paused={T0}, positions={T0: 5})  # a seek moved it back
    _drain(again)
    assert again.delivered == [] and again.seeks == []  # read again anyway: no seek
    done = StandIn([Msg(T0, 7)], paused={T0}, positions={T0: 9}, _committed_offset={T0: 8})
    _drain(done)
    assert done.seeks == []  # committed already: processed before


def test_records_fetched_before_a_rebalance_are_put_back() -> None:
    def rebalance(standin: StandIn, message: Msg) -> None:
        standin.app.consumer_generation_id += 1

    standin = StandIn([Msg(T0, 1), Msg(T1, 2), Msg(T0, 2)], on_deliver=rebalance,
                      positions={T0: 3, T1: 3})  # fmt: skip
    _drain(standin)
    assert standin.delivered == [(T0, 1)]
    assert standin.seeks == [(T1, 2), (T0, 2)]


def test_nothing_is_delivered_before_the_generations_seek_to_the_committed_offsets() -> None:
    """Faust resumes the flow after a rebalance and then seeks to the committed offsets; a
    record delivered in between let the seek's ``_sought`` entry outlive its first record, and
    the next real record took every offset up to it as a gap (the scale test's lost events). The
    records are put back until the seek is done."""
    standin = StandIn([Msg(T0, 146), Msg(T0, 147)])
    standin._seeked_generation = 0  # the last generation's seek; this one's is under way
    standin.positions[T0] = 148
    _drain(standin)
    assert standin.delivered == [] and standin.seeks == [(T0, 146)]


def test_messages_before_the_read_offset_are_skipped_and_gaps_are_reported() -> None:
    standin = StandIn([Msg(T0, 3), Msg(T0, 4), Msg(T0, 9)])
    standin._read_offset[T0] = 4  # e.g. read before a seek back
    standin.positions[T0] = 10  # the consumer read past 9: a real gap, not a stale fetch
    _drain(standin)
    assert standin.delivered == [(T0, 4), (T0, 9)]
    assert standin.gaps == [(T0, 5, 8)]  # both ends included: 9 itself is acked when done
    assert standin._read_offset[T0] == 9


def test_records_fetched_before_a_seek_back_are_dropped_and_read_again_in_order() -> None:
    """After a rebalance faust resumes the partitions, then seeks them to the committed offset
    (here 100); a fetch in between returns records from the old position (250...). Faust took
    101..249 as a gap (acked: lost) and then dropped the re-read ones (never acked: a stalled
    commit). They are dropped, and the re-read records come in order."""
    standin = StandIn([Msg(T0, 250), Msg(T0, 251), Msg(T0, 100), Msg(T0, 101), Msg(T0, 102)])
    standin._read_offset[T0] = 100  # what faust's perform_seek sets
    standin._sought[T0] = 100
    standin.positions[T0] = 100  # the seek put the consumer back there (before it re-reads)
    _drain(standin)
    assert standin.delivered == [(T0, 100), (T0, 101), (T0, 102)] and standin.gaps == []
    assert standin._sought == {} and standin._read_offset[T0] == 102


def test_after_a_seek_without_a_commit_a_stale_record_waits_for_the_log_start() -> None:
    standin = StandIn([Msg(T0, 51), Msg(T0, 0), Msg(T0, 1)])
    standin._sought[T0] = None  # no committed offset: the consumer starts at the log's start
    standin.positions[T0] = 2  # it has returned 0 and 1 since the seek, never 51
    _drain(standin)
    assert standin.delivered == [(T0, 0), (T0, 1)] and standin.gaps == []


def test_a_real_gap_is_taken_and_the_sought_record_needs_no_question() -> None:
    """Offsets can skip for real (compaction, retention, transaction markers): the consumer's
    position is then past the record, which is delivered with the gap acked, as faust does."""
    standin = StandIn([Msg(T0, 7), Msg(T0, 8), Msg(T0, 15), Msg(T1, 40)])
    standin._sought.update({T0: 7, T1: 30})
    standin.positions.update({T0: 16, T1: 41})
    _drain(standin)
    assert standin.delivered == [(T0, 7), (T0, 8), (T0, 15), (T1, 40)]
    assert standin.gaps == [(T0, 9, 14), (T1, 30, 39)]
    assert standin.asked == [T0, T1]  # only after gaps, never for the sought record itself


def test_a_delivery_that_spans_a_rebalance_leaves_the_new_position_alone() -> None:
    def rebalance(standin: StandIn, message: Msg) -> None:
        if message.offset == 1:  # the partition is sought back to 0 by the new generation
            standin.app.consumer_generation_id += 1
            standin._read_offset[T0] = None

    standin = StandIn([Msg(T0, 0), Msg(T0, 1)], on_deliver=rebalance)
    _drain(standin)
    assert standin.delivered == [(T0, 0), (T0, 1)]
    assert standin._read_offset[T0] is None  # not 1: offset 1 is read again after the seek


def test_deliveries_that_finish_at_once_take_no_detour() -> None:
    standin = StandIn([Msg(T0, 0), Msg(T0, 1)])
    _drain(standin)
    assert standin.delivered == [(T0, 0), (T0, 1)] and standin.slow_deliveries == 0


def test_a_delivery_that_waits_is_finished() -> None:
    standin = StandIn([Msg(T0, 0), Msg(T0, 1)])
    standin.blockers[0] = gate = asyncio.Event()
    _drain(standin, after_20ms=gate.set)
    assert standin.delivered == [(T0, 0), (T0, 1)] and standin.slow_deliveries == 1
    assert standin.given_up == [] and standin._read_offset[T0] == 1


def test_a_waiting_delivery_is_given_up_when_the_flow_is_suspended() -> None:
    standin = StandIn([Msg(T0, 0), Msg(T0, 1)])
    standin.blockers[0] = asyncio.Event()  # never set: e.g. a full buffer during a rebalance
    _drain(standin, after_20ms=standin.suspend_flow.set)
    assert standin.given_up == [0]  # the delivery saw the cancellation, as under faust
    assert standin.delivered == [(T0, 1)]


def _fetch_waits(*apps: faust.App) -> list[int]:
    """The fetch wait of the Kafka consumer that each app's transport builds (never started)."""

    async def build() -> list[int]:
        waits = []
        for app in apps:
            consumer, transport = app.consumer, app.transport
            assert isinstance(consumer, _Consumer) and isinstance(transport, Transport)
            kafka = consumer._new_consumer_thread()._create_worker_consumer(transport)
            waits.append(kafka._fetch_max_wait_ms)
            await kafka.stop()
        return waits

    return asyncio.run(build())


def test_two_apps_in_one_process_each_fetch_with_the_wait_of_their_own_settings() -> None:
    fast, slow = (
        faust_app(Settings(bootstrap="127.0.0.1:9092", app_id=name, fetch_max_wait_ms=wait))
        for name, wait in (("fast", 5), ("slow", 500))
    )  # both made before either consumer: nothing is shared between them
    assert _fetch_waits(fast, slow) == [5, 500]
    assert _fetch_waits(faust_app(Settings(bootstrap="127.0.0.1:9092"))) == [10]  # the default


def test_an_app_that_carries_no_fetch_wait_is_refused_by_the_worker_transport() -> None:
    plain = faust.App("plain", broker="interest-kafka://127.0.0.1:9092")
    with pytest.raises(TypeError, match="KafkaApp"):
        fetch_max_wait_ms(plain)


@dataclass
class SlowChannel:
    """What a buffered message's channel does when the buffer's drain task sends it: here,
    take ``delay`` seconds (a busy event loop, a full aiokafka batch) and record it."""

    delay: float
    sent: list[object] = field(default_factory=list)

    async def publish_message(self, fut: object, wait: bool = False) -> None:
        await asyncio.sleep(self.delay)
        self.sent.append(fut)


def _flushed(kind: type[ProducerBuffer], delay: float, n: int) -> int:
    """How many of ``n`` buffered messages were sent when ``kind``'s flush returned."""

    async def go() -> int:
        buffer = kind()
        buffer.app = faust.App("flush-test")
        await buffer.start()
        channel = SlowChannel(delay)
        for _ in range(n):
            buffer.put(SimpleNamespace(message=SimpleNamespace(channel=channel)))  # type: ignore[arg-type]
        await buffer.flush()
        done = len(channel.sent)
        with contextlib.suppress(RuntimeError):  # faust's refuses to stop with messages left
            await buffer.stop()
        return done

    return asyncio.run(go())


def test_a_flush_before_a_commit_waits_for_every_buffered_message() -> None:
    """The table's changelog records wait in faust's producer buffer; offsets are committed
    after a flush. Faust's flush returns once no message went out for 0.1 s, and does not wait
    for the one being handed over: a commit could then cover events whose state was never
    sent, and a kill lost them. Ours returns when every message is in aiokafka's hands."""
    assert _flushed(FlushBuffer, 0.25, 3) == 3
    assert _flushed(FlushBuffer, 0.0, 200) == 200
    assert _flushed(ProducerBuffer, 0.25, 3) < 3  # faust's own: why ours exists


def test_the_worker_producer_uses_the_waiting_buffer() -> None:
    app = faust_app(Settings(bootstrap="127.0.0.1:9092"))
    assert Transport.Producer is FlushProducer
    assert isinstance(app.producer.buffer, FlushBuffer) and app.producer.buffer.app is app


def test_a_flush_under_load_returns_once_what_came_before_it_is_sent() -> None:
    """Table writes keep arriving while a commit flushes: the flush waits for the messages put
    before it, not for an empty buffer (which under load never comes: no commit would follow)."""

    async def go() -> tuple[int, int]:
        buffer = FlushBuffer()
        buffer.app = faust.App("flush-load-test")
        await buffer.start()
        channel = SlowChannel(0.002)
        message = SimpleNamespace(message=SimpleNamespace(channel=channel))
        for _ in range(20):
            buffer.put(message)  # type: ignore[arg-type]

        async def keep_writing() -> None:
            while True:
                buffer.put(message)  # type: ignore[arg-type]
                await asyncio.sleep(0.001)

        writer = asyncio.ensure_future(keep_writing())
        await asyncio.wait_for(buffer.flush(), timeout=10)
        done = len(channel.sent)
        writer.cancel()
        with contextlib.suppress(RuntimeError, asyncio.CancelledError):
            await buffer.stop()
        return done, buffer.put_total

    done, put = asyncio.run(go())
    assert 20 <= done < put


def test_a_put_back_asked_during_the_generations_seek_does_not_land_after_it() -> None:
    """Faust resumes the partitions, then seeks them to the committed offsets. A record fetched
    in between (offset 150, the old position) is put back by a seek to it; asked while the
    generation's seek to 100 runs, that seek landed after it and left 100..149 unread (one
    two-worker run lost 31 events so). It waits for the generation's seek and then finds the
    record read again in order: no seek of its own."""
    standin = StandIn([])
    standin.positions[T0] = 151

    async def run() -> None:
        async with standin._seek_lock:  # the generation's seek to the committed offsets
            putting_back = asyncio.ensure_future(_Consumer._put_back(standin, T0, 150))  # type: ignore[arg-type]
            await asyncio.sleep(0.01)
            assert not putting_back.done()
            standin.positions[T0] = 100
        await asyncio.wait_for(putting_back, 5)

    asyncio.run(run())
    assert standin.seeks == []
