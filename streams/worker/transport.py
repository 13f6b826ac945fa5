"""Faust's aiokafka transport with its corrections, as the ``interest-kafka://`` scheme.

1. ``fetch_max_wait_ms``: faust hard-codes 1500 ms; a fetch that waits that long for data
   dominates event->recommendation latency. We use ``Settings.fetch_max_wait_ms`` (10 ms),
   which each app carries itself (:class:`KafkaApp`): two apps in one process each get their
   own.
2. High-water marks are read with :func:`streams.worker.topics.true_end_offsets`, so changelog
   recovery replays every record on Tansu too (Tansu under-reports the end offset after a
   multi-record batch and faust's recovery would stop one batch short). On Apache Kafka the
   result equals the broker's end offsets.
3. The fetch loop puts a message in its stream's buffer without the four tasks and the
   ``asyncio.wait`` faust spends on each (:meth:`_Consumer._deliver`), with the same outcome;
   and records fetched before a seek are not delivered after it (:meth:`_Consumer._drain_messages`:
   faust's loop lost and stalled partitions after a rebalance).
4. The producer's flush before an offset commit waits for every message buffered before it
   (:mod:`streams.worker.flush`).
5. Acks and commits never pass over an event nobody processed across a rebalance
   (:mod:`streams.worker.commits`), and nothing is delivered in a generation before its seek
   to the committed offsets is done (:meth:`_Consumer._deliverable`).

The scheme is declared under the ``faust.transports`` entry point in ``pyproject.toml``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Mapping
from typing import Any, ClassVar

import aiokafka
import faust
from aiokafka import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT
from mode import ServiceT

from streams.settings import Settings
from streams.worker.commits import GenerationGuard, generation_live
from streams.worker.flush import FlushProducer
from streams.worker.kafka_auth import app_client_options, faust_credentials
from streams.worker.topics import true_end_offsets

__all__ = ["KafkaApp", "Transport", "faust_app", "fetch_max_wait_ms"]

log = logging.getLogger(__name__)


class KafkaApp(faust.App):
    """A Faust app with what its ``interest-kafka://`` consumer needs beyond faust's settings:
    ``fetch_max_wait_ms``, the longest a fetch waits for data (``Settings.fetch_max_wait_ms``)."""

    def __init__(self, id: str, *, fetch_max_wait_ms: int, **options: Any) -> None:
        super().__init__(id, **options)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        #: from a rebalance's revoke to its assignment (:mod:`streams.worker.commits`)
        self.revoked = False


def fetch_max_wait_ms(app: AppT) -> int:
    """The fetch wait of the app a consumer belongs to; an app that does not carry one is
    refused (its consumer would otherwise wait faust's 1500 ms without a word)."""
    if not isinstance(app, KafkaApp):
        raise TypeError(
            f"the interest-kafka:// transport needs a {__name__}.KafkaApp, got {type(app)!r}"
        )
    return app.fetch_max_wait_ms


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    _probe: aiokafka.AIOKafkaConsumer | None = None
    _probe_lock: asyncio.Lock | None = None

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when it builds its fetcher in start().
        consumer._fetch_max_wait_ms = fetch_max_wait_ms(transport.app)
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        if self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            probe = await self._probe_consumer()
            tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
            ends = await true_end_offsets(probe, tps)
        return {TP(tp.topic, tp.partition): end for tp, end in ends.items()}

    async def _probe_consumer(self) -> aiokafka.AIOKafkaConsumer:
        if self._probe is None:
            transport: Any = self.transport
            servers = faust_aiokafka.server_list(transport.url, transport.default_port)
            self._probe = aiokafka.AIOKafkaConsumer(
                bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=50,
                **app_client_options(transport.app),
            )
            await self._probe.start()
        return self._probe

    async def on_thread_stop(self) -> None:
        await super().on_thread_stop()
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.stop()


class _Consumer(GenerationGuard, faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: partition -> the offset a seek put it at (``None``: the log's start, no commit yet),
        #: until the first record read after that seek
        self._sought: dict[TP, int | None] = {}
        #: the generation whose seek to the committed offsets is done (nothing is delivered
        #: before it: faust resumes the flow first, and a record delivered in between left a
        #: stale ``_sought`` entry that later took every offset up to a record as a gap)
        self._seeked_generation: int | None = None
        #: a put-back's position check and seek, and the generation's seek to the committed
        #: offsets, one at a time: a put-back asked before that seek must not land after it
        #: (it left the events between the two unread: 31 lost in one two-worker run of 12)
        self._seek_lock = asyncio.Lock()

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        generation = self.app.consumer_generation_id
        async with self._seek_lock:  # no put-back seek lands after this one (:meth:`_put_back`)
            offsets = await super().seek_to_committed()
            self._sought.update({tp: o if o is not None and o >= 0 else None
                                 for tp, o in offsets.items()})  # fmt: skip
            if self.app.consumer_generation_id == generation:
                self._seeked_generation = generation
        return offsets

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        await super().seek_wait(partitions)
        self._sought.update(partitions)

    async def _seek(self, partition: TP, offset: int) -> None:
        await super()._seek(partition, offset)
        self._sought[partition] = offset

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Fetch for a snapshot of the active partitions. Faust hands its live set to the
        consumer thread, which reads it later; the partitions a rebalance's recovery resumes
        meanwhile were then fetched too (see :meth:`_wait_next_records`)."""
        asked = None if active_partitions is None else set(active_partitions)
        return await super()._getmany(active_partitions=asked, timeout=timeout)

    async def _wait_next_records(self, timeout: float) -> Any:
        """Faust's, without its filter of the records by the live set of active partitions
        when they arrive: :meth:`_drain_messages` checks each record as it delivers it, and
        puts back what it does not deliver (:meth:`_put_back`)."""
        records, _active = await super()._wait_next_records(timeout)
        return records, None

    def _deliverable(self, tp: TP, generation: int) -> bool:
        """Whether a record of ``tp`` fetched in consumer ``generation`` may go to its stream
        now: the flow is on, no rebalance came since, an event topic's partitions have been
        sought to their committed offsets in this generation (faust resumes the flow before that
        seek), and ``tp`` is not paused (a rebalance pauses every partition until its tables are
        recovered; a partition whose stream buffer is full stays deliverable, as in faust)."""
        return (
            self.flow_active
            and generation_live(self.app, generation)
            and (self._seeked_generation == generation
                 or not self.app.topics.acks_enabled_for(tp.topic))  # e.g. a changelog's recovery
            and (tp in self._get_active_partitions() or tp in self._buffered_partitions)
        )

    async def _put_back(self, tp: TP, offset: int) -> None:
        """Leave the record at ``offset`` (and the rest of its fetch) to be read again: when the
        consumer has moved past it and nothing will bring it back (no seek to an offset at or
        below it), seek ``tp`` back to it. Faust drops such records without a seek, and a
        partition that is not sought again (resumed after a rebalance's recovery with its
        position already past them) then never reads them: lost, and its commit stuck."""
        async with self._seek_lock:
            committed = self._committed_offset.get(tp)
            if committed is not None and offset < committed:
                return  # committed: processed before
            if await self._stale(tp, offset):
                return  # the consumer reads it again, in order
            try:
                await self.seek(tp, offset)
            except Exception as exc:  # e.g. no longer assigned: its new owner reads it
                log.info("%s: record %d not put back (%s)", tp, offset, exc)
                return
        log.info("%s: record %d fetched while the partition was paused or a rebalance ran; "
                 "read again from there", tp, offset)

    async def _stale(self, tp: TP, offset: int) -> bool:
        """Whether the record at ``offset`` was fetched before a seek moved ``tp`` back: the
        consumer's position is then at or below it (it reads the record again, in order);
        after a real gap (compaction, retention, transaction markers) it is past it."""
        try:
            position = await self.position(tp)
        except Exception:  # e.g. no longer assigned: not ours to deliver
            return True
        return position is None or position <= offset

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Faust's fetch loop (faust 0.15 ``Consumer._drain_messages``), with each delivery
        run by :meth:`_deliver` instead of a ``wait_first``, and no record fetched before a
        seek delivered after it.

        After a rebalance faust resumes the partitions and *then* seeks them to their committed
        offsets; a fetch in between returns records from the old position, past the commit.
        Faust delivers them, takes the offsets skipped as a gap (acked: the commit jumps over
        events never processed, lost for good) and then drops the re-read ones below them (a
        record never acked: the partition's commit stops there for ever, the "unfetched"
        partitions of a kill test). Here the first record after a seek must be the one sought,
        and any record after a gap is checked against the consumer's position
        (:meth:`_stale`): one fetched before the seek is dropped and read again in order.

        Faust awaits ``wait_first(callback(message), suspend_flow.wait())`` per message: four
        tasks, an ``asyncio.wait`` and their cancellation, on the event loop that also runs the
        agent, for a delivery that almost always finishes at once. Without them the worker
        stage of the stream bench ran 5,543-8,390 vs 4,663-6,216 events/s (15,000 events, four
        runs each, ABBA order; docs/benchmarks.md).
        """
        callback = self.callback
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set  # type: ignore[attr-defined]
        read_offset = self._read_offset
        sought = self._sought
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, _ = await self._wait_next_records(1.0)
                generation = self.app.consumer_generation_id
                await self.sleep(0)  # faust: getmany may not give the loop a turn
                if records is None or self.should_stop:
                    continue
                put_back: set[TP] = set()  # partitions rewound in this fetch
                for tp, record in self.scheduler.iterate(records):
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    if tp in put_back:
                        continue
                    message = self._to_message(tp, record)
                    if not self._deliverable(tp, generation):
                        put_back.add(tp)
                        await self._put_back(tp, message.offset)
                        continue
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    offset, last = message.offset, read_offset[tp]
                    if last is not None and offset < last:
                        continue  # read before a seek back: faust drops these too
                    if tp in sought:  # the first record since a seek
                        expected = sought[tp]
                        if offset != expected and await self._stale(tp, offset):
                            log.info("%s: record %d fetched before the seek to %s dropped "
                                     "(read again in order)", tp, offset, expected)
                            continue  # fetched before the seek: read again, in order
                        del sought[tp]
                        if expected is not None and offset > expected and (
                            acks_enabled_for(message.topic)
                        ):
                            log.info("%s: the first record after the seek to %d is %d: %d..%d "
                                     "taken as a gap", tp, expected, offset, expected, offset - 1)
                            await self._add_gap(tp, expected, offset - 1)
                    elif last and offset - last > 1 and acks_enabled_for(message.topic):
                        if await self._stale(tp, offset):
                            log.info("%s: record %d after %d fetched before a seek dropped",
                                     tp, offset, last)
                            continue
                        log.warning("%s: offsets %d..%d skipped by the log", tp, last + 1,
                                    offset - 1)
                        await self._add_gap(tp, last + 1, offset - 1)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await self._deliver(callback(message))
                    if self.app.consumer_generation_id == generation:
                        read_offset[tp] = offset  # else the new generation's seek stands
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception:
            log.exception("the fetch loop failed")
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, delivery: Awaitable[Any]) -> None:
        """Run ``delivery`` (putting one message in its stream's buffer) with the outcome of
        faust's ``wait_first(delivery, suspend_flow.wait())``, without any task when it finishes
        at its first step, as it does unless the flow is suspended, the producer's buffer is
        over its limit or the stream's buffer is full. A delivery that has to wait is finished
        under ``wait_first`` as faust does it: given up when a rebalance suspends the flow, so
        no message of the old generation reaches a stream after the rebalance.
        """
        if not isinstance(delivery, Coroutine):  # not faust's conductor: its own way
            await self.wait_first(delivery, self.suspend_flow.wait())
            return
        try:
            waiting = delivery.send(None)
        except StopIteration:
            return
        await self.wait_first(_resume(delivery, waiting), self.suspend_flow.wait())


async def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Drive ``coro``, which has run to its first wait (``waiting``: what it yielded, a future
    or ``None`` for a bare yield), to its end as an asyncio Task would: resumed when ``waiting``
    is done; cancelling this task cancels ``waiting``, which ``coro`` then sees raise, or, with
    nothing to cancel, gets the ``CancelledError`` thrown in."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False  # taken over, as a Task takes it
                await waiting
            step = None
        except asyncio.CancelledError as exc:
            step = None if waiting is not None and waiting.cancelled() else exc
        try:
            waiting = coro.send(None) if step is None else coro.throw(step)
        except StopIteration:
            return


class Transport(faust_aiokafka.Transport):
    """aiokafka transport with a short fetch wait, exact high-water marks, a fetch loop
    without a task per message and a flush that waits for every buffered message."""

    Consumer: ClassVar[Any] = _Consumer
    Producer: ClassVar[Any] = FlushProducer


def faust_app(settings: Settings, **overrides: Any) -> faust.App:
    """The worker's Faust app, without topics or agents (the store bench opens its table; the
    bench's baselines pass ``overrides`` of single Faust options).

    Configured from ``settings`` alone: its transport reads the fetch wait from the app itself
    (:class:`~streams.worker.transport.KafkaApp`), so two apps in one process do not share it.
    """
    options: dict[str, Any] = dict(
        broker=f"interest-kafka://{settings.bootstrap}",
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee=settings.processing_guarantee,
        broker_credentials=faust_credentials(settings),
        topic_allow_declare=True,
        table_standby_replicas=0,
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        broker_commit_interval=1.0,
        producer_linger=0.0,  # no wait before a produce request: ~1 ms off the send path
        stream_buffer_maxsize=max(4096, settings.batch_size * 4),
        stream_wait_empty=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    options.update(overrides)
    return KafkaApp(settings.app_id, fetch_max_wait_ms=settings.fetch_max_wait_ms, **options)
