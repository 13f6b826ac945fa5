"""The trending bookkeeping: panes per partition in the windowed table, what a batch counts,
the changelog records every worker reads back, and the cached top list over the window."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import faust
import pytest
from aiokafka import ConsumerRecord
from faust.events import Event
from faust.types import TP, EventT, Message

from encoders import TextEncoder
from interest_state import TRENDING_REASON, UpdateParams
from streams.contract import ItemRecord
from streams.errors import SettingsError
from streams.settings import Settings
from streams.worker.agents import handle_batch
from streams.worker.pipeline import Pipeline
from streams.worker.ports import MemorySink, MemoryStore
from streams.worker.stats import Stats
from streams.worker.trending import (
    TOP_CACHED,
    TrendingCounts,
    TrendingFeed,
    TrendingTable,
    decode_pane,
    flush_interval,
    pane_counts,
    pane_start,
    topic_spec,
)
from streams.worker.views import user_summary
from streams.worker.wiring import Wiring


@pytest.fixture(autouse=True)
def event_loop_in_place() -> object:
    """Faust's tables look up the current event loop when a key is set; a test before this one
    that ran ``asyncio.run`` leaves none."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()

SETTINGS = Settings(trending_window_s=600.0, trending_hop_s=60.0)


class Clock:
    """A settable clock for :class:`TrendingCounts`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _event(app: faust.App, stamp: float, partition: int = 0, body: bytes = b"{}",
           key: bytes = b"u", offset: int = 0) -> EventT[bytes]:  # fmt: skip
    message = Message(SETTINGS.topics.click, partition, offset, stamp, 0, [], key, body, None)
    return Event(app, message.key, message.value, [], message)


def _changelog(app: faust.App) -> list[ConsumerRecord[bytes, bytes]]:
    """The changelog records the table has handed to its (unstarted) producer, as a consumer
    of the changelog topic reads them."""
    queue = app.producer.buffer.pending
    records = []
    while not queue.empty():
        message = queue.get_nowait().message
        records.append(ConsumerRecord("changelog", message.partition, len(records), 0, 0,
                                      message.key, message.value, None, 0, 0, []))  # fmt: skip
    return records


def test_the_window_sums_the_latest_count_of_each_partitions_panes_and_drops_old_ones() -> None:
    clock = Clock(10_000.0)  # pane 9960; the window's panes start at 9420..9960
    counts = TrendingCounts(600.0, 60.0, refresh_s=0.0, clock=clock)
    assert counts.oldest_live(clock.now) == 9420.0
    assert counts.set(0, "a", 9960.0, 3) and counts.set(1, "a", 9960.0, 2)
    assert counts.set(0, "a", 9420.0, 4) and counts.set(2, "b", 9900.0, 8)
    assert counts.set(0, "a", 9960.0, 5)  # a later value of the same pane: it replaces
    assert not counts.set(0, "c", 9360.0, 50)  # out of the window already
    assert counts.top(10) == [("a", 11.0), ("b", 8.0)]
    clock.now = 10_020.0  # the pane of 9420 leaves the window
    assert counts.top(10) == [("b", 8.0), ("a", 7.0)]
    assert counts.set(2, "b", 9900.0, 0)  # a tombstone
    assert counts.top(10) == [("a", 7.0)] and len(counts) == 1
    clock.now = 20_000.0
    assert counts.top(10) == [] and len(counts) == 0


def test_the_top_list_is_recomputed_at_most_every_refresh_or_when_a_pane_ends() -> None:
    clock = Clock(10_000.0)
    counts = TrendingCounts(600.0, 60.0, refresh_s=1.0, clock=clock)
    for n, item in enumerate(["d", "c", "b", "a"]):
        counts.set(0, item, 9960.0, 1 + n // 2)
    assert counts.top(3) == [("a", 2.0), ("b", 2.0), ("c", 1.0)]  # ties by item id
    counts.set(0, "z", 9960.0, 9)
    clock.now += 0.5
    assert counts.top(2) == [("a", 2.0), ("b", 2.0)]  # the cached list: no sort per call
    clock.now += 0.5
    assert counts.top(2) == [("z", 9.0), ("a", 2.0)]
    counts.set(0, "y", 9960.0, 99)
    clock.now = 10_020.0  # a new pane: recomputed at once
    assert counts.top(1) == [("y", 99.0)]


def test_the_cached_top_list_holds_more_than_one_list_asks_for() -> None:
    clock = Clock(10_000.0)
    counts = TrendingCounts(600.0, 60.0, refresh_s=60.0, clock=clock)
    for n in range(TOP_CACHED + 50):
        counts.set(n % 3, f"i{n:04d}", 9960.0, n + 1)
    assert len(counts.top(10)) == 10
    longest = counts.top(TOP_CACHED + 50)  # longer than the cache: recomputed
    assert len(longest) == TOP_CACHED + 50 and longest[0] == (f"i{TOP_CACHED + 49:04d}", 178.0)


def test_the_changelog_is_compacted_and_its_records_expire_after_the_window() -> None:
    spec = topic_spec(Settings(partitions=6, app_id="team"))
    topic = spec.new_topic(replication=3, cleanup_policy="compact")
    assert (topic.name, topic.num_partitions, topic.replication_factor) == (
        "team-item_trending-changelog", 6, 3)  # fmt: skip
    assert topic.topic_configs == {"cleanup.policy": "compact,delete", "retention.ms": "4200000"}


def test_a_window_shorter_than_its_hop_is_refused() -> None:
    with pytest.raises(SettingsError):
        TrendingCounts(30.0, 60.0)
    with pytest.raises(SettingsError, match="whole seconds"):
        TrendingTable(faust.App("t-hop", store="memory://"), Settings(trending_hop_s=0.5))


def test_a_batch_is_counted_per_partition_pane_and_item_by_record_time() -> None:
    app = faust.App("t-panes", store="memory://")
    a0, a1 = _event(app, 1000.0), _event(app, 1001.0)
    applied = [(a0, "a"), (a1, "a"), (_event(app, 1000.0, 1), "a"), (_event(app, 1400.0), "a")]
    groups = pane_counts(applied, 60.0)
    assert [(e.message.partition, pane_start(e.message.timestamp, 60.0), item, n)
            for e, item, n in groups] == [(0, 960.0, "a", 2), (1, 960.0, "a", 1),
                                          (0, 1380.0, "a", 1)]  # fmt: skip
    assert groups[0][0] is a0


def test_the_table_counts_in_each_events_partition_and_its_records_read_back() -> None:
    """What the agent writes, faust serialises to the changelog, and every worker's feed reads
    back into the same counts."""
    app = faust.App("t-table", store="memory://")
    table = TrendingTable(app, SETTINGS)
    table.count([(_event(app, 1000.0), "a"), (_event(app, 1010.0), "a"),
                 (_event(app, 1000.0, 3), "a"), (_event(app, 1090.0), "b")])  # fmt: skip
    table.count([(_event(app, 1001.0), "a")])  # a second batch: pending, added up
    assert dict(table.table.data.data) == {} and len(table.pending) == 3  # nothing written yet
    assert table.flush() == 3
    table.count([(_event(app, 1020.0), "a"), (_event(app, 1002.0), "a")])
    assert table.flush() == 2 and table.flush() == 0
    assert dict(table.table.data.data) == {
        (("a", 0), (960.0, 1019.9)): 4, (("a", 3), (960.0, 1019.9)): 1,
        (("b", 0), (1080.0, 1139.9)): 1, (("a", 0), (1020.0, 1079.9)): 1,
    }  # fmt: skip
    assert table.writes == 5
    records = _changelog(app)
    assert [decode_pane(r.key, r.value) for r in records] == [
        ("a", 960.0, 3),
        ("a", 960.0, 1),
        ("b", 1080.0, 1),
        ("a", 1020.0, 1),
        ("a", 960.0, 4),
    ]
    counts = TrendingCounts(600.0, 60.0, refresh_s=0.0, clock=Clock(1100.0))
    feed = TrendingFeed(app, SETTINGS, counts)
    feed.apply(records)
    assert counts.top(5) == [("a", 6.0), ("b", 1.0)]


def test_the_counts_of_a_partition_this_worker_no_longer_holds_are_dropped() -> None:
    app = faust.App("t-owned", store="memory://")
    table = TrendingTable(app, SETTINGS)
    table.count([(_event(app, 1000.0, 0), "a"), (_event(app, 1000.0, 1), "a"),
                 (_event(app, 1000.0, 1), "b")])  # fmt: skip
    assert table.flush({TP(SETTINGS.topics.click, 0), TP(SETTINGS.topics.browse, 1)}) == 1
    assert dict(table.table.data.data) == {(("a", 0), (960.0, 1019.9)): 1}
    assert (table.writes, table.dropped, table.pending) == (1, 2, {})


def test_counts_are_written_ten_times_a_hop_and_when_the_table_stops() -> None:
    assert (flush_interval(300.0), flush_interval(10.0), flush_interval(2.0)) == (30.0, 1.0, 1.0)
    app = faust.App("t-stop", store="memory://")
    table = TrendingTable(app, SETTINGS)
    table.count([(_event(app, 1000.0, 2), "a")])

    async def stop() -> None:
        await table.table.on_stop()  # a graceful stop: before the store is closed

    asyncio.run(stop())
    assert dict(table.table.data.data) == {(("a", 2), (960.0, 1019.9)): 1}
    assert table.pending == {}


def test_a_record_that_is_no_count_is_refused_by_the_decoder_and_skipped_by_the_feed() -> None:
    assert decode_pane(b'[["a",2],[60.0,119.9]]', None) == ("a", 60.0, 0)  # a tombstone
    for key, value in [
        (b"nope", b"1"),
        (b'[["a",2],[60.0,119.9]]', b'"x"'),
        (None, b"1"),
        (b"[[1,2],[60.0,119.9]]", b"1"),
        (b'[["a",2],[60.0,119.9]]', b"-1"),
        (b'[["a",2],[60.0,119.9]]', b"true"),
        (b'["a",[60.0]]', b"1"),
    ]:
        with pytest.raises(ValueError, match="not a trending"):
            decode_pane(key, value)
    app = faust.App("t-feed", store="memory://")
    counts = TrendingCounts(600.0, 60.0, refresh_s=0.0, clock=Clock(100.0))
    feed = TrendingFeed(app, SETTINGS, counts)
    bad = ConsumerRecord("c", 0, 0, 0, 0, b"nope", b"1", None, 0, 0, [])
    good = ConsumerRecord("c", 1, 0, 0, 0, b'[["a",1],[60.0,119.9]]', b"7", None, 0, 0, [])
    feed.apply([bad, good])
    assert (feed.records, feed.skipped, counts.top(3)) == (2, 1, [("a", 7.0)])


TITLES = ["space battle saga", "romantic comedy in paris", "animated toys adventure", "war drama"]


def _pipeline(encoder: TextEncoder) -> Pipeline:
    pipeline = Pipeline(encoder, UpdateParams(), top_k=3)
    pipeline.add_items([ItemRecord(str(i), t, t, ()) for i, t in enumerate(TITLES)])
    return pipeline


def test_only_events_that_changed_a_state_are_counted(tiny_encoder: TextEncoder) -> None:
    """Not a dead letter, not a client's resend of an event id, not a redelivery."""
    app = faust.App("t-agent", store="memory://")
    table = TrendingTable(app, SETTINGS)
    topics = SETTINGS.topics
    wiring = Wiring(app=app, settings=SETTINGS, events=app.topic(*topics.events),
                    items=app.topic(topics.items), recommendations=MemorySink(),
                    dlq=MemorySink(), table=MemoryStore(), stats=Stats(),
                    trending=table)  # fmt: skip

    def click(event_id: str, user: str, item: str, offset: int, partition: int = 0) -> EventT:
        body = json.dumps({"event_id": event_id, "user_id": user, "item_id": item, "ts": 5.0})
        return _event(app, 1000.0, partition, body.encode(), user.encode(), offset)

    batch = [
        click("a", "u1", "0", 0),
        click("b", "u1", "nope", 1),
        click("a", "u1", "0", 2),
        click("c", "u2", "0", 0, partition=2),
        click("d", "u2", "1", 1, partition=2),
    ]
    pipeline = _pipeline(tiny_encoder)

    async def run() -> None:
        with ThreadPoolExecutor(max_workers=1) as executor:
            await handle_batch(wiring, pipeline, executor, batch)
            await handle_batch(wiring, pipeline, executor, batch[:2])  # redelivered
        table.flush()

    asyncio.run(run())
    assert (wiring.stats.events_applied, wiring.stats.duplicates, len(wiring.dlq.sent)) == (
        3, 1, 1)  # fmt: skip
    assert dict(table.table.data.data) == {
        (("0", 0), (960.0, 1019.9)): 1, (("0", 2), (960.0, 1019.9)): 1,
        (("1", 2), (960.0, 1019.9)): 1,
    }  # fmt: skip


def test_a_user_with_no_state_gets_the_trending_items(tiny_encoder: TextEncoder) -> None:
    pipeline = _pipeline(tiny_encoder)
    empty = user_summary("nobody", None, pipeline)
    assert (empty["found"], empty["events"], empty["recommendations"]) == (False, 0, [])
    counts = TrendingCounts(600.0, 60.0, refresh_s=0.0, clock=Clock(1000.0))
    counts.set(0, "2", 960.0, 5)
    counts.set(1, "gone", 960.0, 9)  # not in the catalog: not offered
    counts.set(1, "0", 960.0, 3)
    pipeline.lists.trending = counts.top
    body = user_summary("nobody", None, pipeline)
    assert [
        (r["item_id"], r["title"], r["score"], r["reason"]) for r in body["recommendations"]
    ] == [("2", TITLES[2], 5.0, TRENDING_REASON), ("0", TITLES[0], 3.0, TRENDING_REASON)]
