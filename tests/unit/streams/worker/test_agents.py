"""``handle_batch`` end to end on the in-memory store and sinks of :mod:`streams.worker.ports`:
what a batch leaves behind when it returns, and where."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
import pytest
from faust.events import Event
from faust.types import EventT, Message

from encoders import TextEncoder
from interest_state import UpdateParams, decode_state
from streams.contract import ItemRecord
from streams.settings import Settings
from streams.worker import agents
from streams.worker.agents import handle_batch, in_partition_of
from streams.worker.pipeline import Pipeline
from streams.worker.ports import MemorySink, MemoryStore
from streams.worker.schemas import decode_event
from streams.worker.stats import Stats
from streams.worker.wiring import Wiring
from tests.unit.streams.worker.sinks import GatedSink

TITLES = ["space battle saga", "romantic comedy in paris", "animated toys adventure", "war drama"]


@dataclass
class _Setup:
    settings: Settings
    wiring: Wiring
    recommendations: MemorySink
    dlq: MemorySink
    table: MemoryStore

    offsets: dict[int, int] = field(default_factory=dict)

    def event(self, event_id: str, user: str, item: str, stamp: float = 1.0,
              partition: int = 0, offset: int | None = None) -> EventT[bytes]:
        """A click as the agent receives it: a faust event on the click topic, at the next
        offset of its partition unless ``offset`` is given."""
        body = json.dumps({"event_id": event_id, "user_id": user, "item_id": item, "ts": 1000.0})
        if offset is None:
            offset = self.offsets.get(partition, 0)
        self.offsets[partition] = max(offset + 1, self.offsets.get(partition, 0))
        return self.record(user.encode(), body.encode(), stamp, partition, offset)

    def record(self, key: bytes | None, value: bytes | None, stamp: float = 1.0,
               partition: int = 0, offset: int = 0) -> EventT[bytes]:
        """Any record on the click topic, as the agent receives it."""
        message = Message(self.settings.topics.click, partition, offset, stamp, 0, [],
                          key, value, None)
        return Event(self.wiring.app, message.key, message.value, [], message)

    def run(self, pipeline: Pipeline, batch: list[EventT[bytes]]) -> None:
        with ThreadPoolExecutor(max_workers=1) as executor:
            asyncio.run(handle_batch(self.wiring, pipeline, executor, batch))


def _setup() -> _Setup:
    """A wiring whose table and output topics live in memory; the app and its source topics
    are faust's own, never started (nothing here reads or writes Kafka)."""
    settings = Settings()
    app, topics = faust.App("agents-test"), settings.topics
    table, recommendations, dlq = MemoryStore(), MemorySink(), MemorySink()
    wiring = Wiring(app=app, settings=settings,
                    events=app.topic(*topics.events), items=app.topic(topics.items),
                    recommendations=recommendations, dlq=dlq, table=table, stats=Stats())
    return _Setup(settings, wiring, recommendations, dlq, table)


def _pipeline(encoder: TextEncoder) -> Pipeline:
    pipeline = Pipeline(encoder, UpdateParams(), top_k=2)
    pipeline.add_items([ItemRecord(str(i), t, t, ()) for i, t in enumerate(TITLES)])
    return pipeline


def test_a_batch_hands_one_recommendation_per_user_to_the_producer_before_it_returns(
    tiny_encoder: TextEncoder,
) -> None:
    setup = _setup()
    recommendations, table = setup.recommendations, setup.table
    setup.run(_pipeline(tiny_encoder), [
        setup.event("a", "u1", "0"), setup.event("b", "u2", "1"),
        setup.event("c", "u1", "2"), setup.event("d", "u3", "nope")])

    sent = {m.key: json.loads(m.value or b"") for m in recommendations.sent}
    assert len(recommendations.sent) == 2 and set(sent) == {b"u1", b"u2"}
    # handed to the producer, not attached to (held for) a source event
    assert all(m.forced for m in recommendations.sent)
    assert sent[b"u1"]["event_ids"] == ["a", "c"] and sent[b"u2"]["event_ids"] == ["b"]
    assert all(len(body["items"]) == 2 for body in sent.values())
    assert table.keys_by_partition() == {0: {b"u1", b"u2"}}
    assert decode_state(table.get(b"u1") or b"").n_events == 2
    assert [json.loads(m.value or b"")["event_id"] for m in setup.dlq.sent] == ["d"]  # unknown item


def test_the_brokers_ack_records_each_answered_events_time_from_its_record_timestamp(
    tiny_encoder: TextEncoder,
) -> None:
    setup = _setup()
    stats = setup.wiring.stats
    now = time.time()
    setup.run(_pipeline(tiny_encoder), [
        setup.event("a", "u1", "0", now - 0.3), setup.event("b", "u2", "1", now - 0.2),
        setup.event("c", "u1", "2", now - 0.1),
        setup.event("e", "u1", "nope", now - 50.0)])  # rejected: not answered
    assert stats.acked.summary() == {}  # sent, not acked yet

    assert setup.recommendations.ack() == 2
    acked = stats.acked.summary()
    assert acked["n"] == 3
    assert 300.0 <= acked["max"] < 50_000.0 and 100.0 <= acked["p50"] < acked["max"]
    assert stats.acked.summary(since=time.time() + 1.0) == {}


def test_a_users_state_lives_in_the_partition_of_their_events_and_is_read_back_from_it(
    tiny_encoder: TextEncoder,
) -> None:
    setup = _setup()
    pipeline = _pipeline(tiny_encoder)
    setup.run(pipeline, [setup.event("a", "u1", "0", partition=2),
                         setup.event("b", "u2", "1", partition=0)])
    assert setup.table.keys_by_partition() == {2: {b"u1"}, 0: {b"u2"}}

    setup.run(pipeline, [setup.event("d", "u2", "3", partition=0),
                         setup.event("c", "u1", "2", partition=2),
                         setup.event("a", "u1", "0", partition=2)])  # "a" again: a replay
    assert setup.table.keys_by_partition() == {2: {b"u1"}, 0: {b"u2"}}
    state = decode_state(setup.table.get(b"u1") or b"")
    assert (state.n_events, state.n_duplicates) == (2, 1)  # the first batch's state was found
    last = {m.key: json.loads(m.value or b"") for m in setup.recommendations.sent[2:]}
    assert last[b"u1"]["event_ids"] == ["c", "a"] and last[b"u2"]["event_ids"] == ["d"]


def test_a_redelivered_batch_changes_no_state_sends_no_dead_letter_twice_and_is_rewritten(
    tiny_encoder: TextEncoder,
) -> None:
    """After a kill the consumer reads again from its committed offset: the same records at
    the same offsets. They are recognised by their offsets (not by a ring of recent ids), the
    user's state is written again unchanged (the changelog must hold it before the replayed
    offsets are committed), and a record already dead-lettered is not dead-lettered again."""
    setup = _setup()
    pipeline = _pipeline(tiny_encoder)
    first = [setup.event(f"e{i}", "u1", "nope" if i == 100 else str(i % 4), partition=1)
             for i in range(101)]  # the last one's item is unknown: dead-lettered
    setup.run(pipeline, first)
    stored = setup.table.get(b"u1")
    assert stored is not None and decode_state(stored).n_events == 100
    assert len(setup.dlq.sent) == 1 and setup.wiring.stats.redelivered == 0
    setup.run(pipeline, first[30:])  # replayed from a commit 30 events behind
    again = setup.table.get(b"u1")
    assert again is not stored  # written again (re-encoded: the same state)
    state, before = decode_state(again or b""), decode_state(stored)
    assert (state.recent_event_ids, state.applied_offsets) == (
        before.recent_event_ids, before.applied_offsets)  # fmt: skip
    assert (state.n_events, state.n_duplicates) == (100, 0) and len(setup.dlq.sent) == 1
    assert setup.wiring.stats.redelivered == 71  # 70 applied before, 1 dead-lettered before
    answered = json.loads(setup.recommendations.sent[-1].value or b"")["event_ids"]
    assert len(answered) == 71


def test_the_memory_store_refuses_a_write_outside_an_event_as_the_faust_table_does() -> None:
    setup = _setup()
    with pytest.raises(RuntimeError, match="outside of agent/stream"):
        setup.table[b"u1"] = b"state"
    with in_partition_of(setup.event("a", "u1", "0", partition=3)):
        setup.table[b"u1"] = b"state"
        assert setup.table.get(b"u1") == b"state"
    with in_partition_of(setup.event("b", "u1", "0", partition=1)):
        assert setup.table.get(b"u1") is None  # another partition's store
    assert setup.table.get(b"u1") == b"state"  # no event (the web view): wherever it is


def test_a_record_whose_decoding_fails_unexpectedly_is_dead_lettered_and_the_batch_goes_on(
    tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a known bad input (those raise ``EventRejected``): a bug of ours on one record."""
    decode = decode_event  # what the agent calls

    def flaky(raw: bytes | None, event_type: str | None, key: bytes | None, n: int,
              **position: Any) -> object:
        if raw is not None and b'"boom"' in raw:
            raise KeyError("boom " + "x" * 500)
        return decode(raw, event_type, key, n, **position)

    monkeypatch.setattr(agents, "decode_event", flaky)
    setup = _setup()
    boom = setup.event("boom", "u2", "1")
    with caplog.at_level(logging.WARNING, logger="streams.worker.agents"):
        setup.run(_pipeline(tiny_encoder), [
            setup.event("a", "u1", "0"), boom, setup.event("c", "u1", "2")])

    sent = {m.key: json.loads(m.value or b"") for m in setup.recommendations.sent}
    assert set(sent) == {b"u1"} and sent[b"u1"]["event_ids"] == ["a", "c"]
    assert decode_state(setup.table.get(b"u1") or b"").n_events == 2
    [dead] = setup.dlq.sent
    assert (dead.key, dead.value) == (b"u2", boom.message.value)
    reason = dict(dead.headers)["dlq.reason"].decode()
    assert reason.startswith("could not be decoded: KeyError: 'boom xxx")
    assert len(reason) < 260  # the message is quoted, bounded
    assert setup.wiring.stats.dead_letters == {"could not be decoded": 1}
    [logged] = [r for r in caplog.records if r.name == "streams.worker.agents"]
    assert logged.levelno == logging.WARNING and logged.exc_info is not None


def test_a_null_key_and_a_null_value_are_dead_lettered_as_they_came(
    tiny_encoder: TextEncoder,
) -> None:
    setup = _setup()
    good = setup.event("a", "u1", "0")
    unkeyed = setup.record(None, good.message.value, offset=1)
    setup.run(_pipeline(tiny_encoder), [
        unkeyed, setup.record(b"u1", None, offset=2), good])

    assert [m.key for m in setup.recommendations.sent] == [b"u1"]
    assert json.loads(setup.recommendations.sent[0].value or b"")["event_ids"] == ["a"]
    first, second = setup.dlq.sent
    assert (first.key, first.value) == (None, good.message.value)
    assert dict(first.headers)["dlq.reason"].startswith(b"no key: events are keyed by user_id")
    assert (second.key, second.value) == (b"u1", None)
    assert dict(second.headers)["dlq.reason"].startswith(b"no value (null)")
    assert [dict(m.headers)["dlq.offset"] for m in setup.dlq.sent] == [b"1", b"2"]


def test_good_events_are_answered_before_their_batchs_dead_letters_go_out(
    tiny_encoder: TextEncoder,
) -> None:
    """A flood of bad records must not hold the good ones of a batch back; the batch returns
    (and is acked, so committed) only once every dead letter is handed to the producer."""
    setup = _setup()
    dlq = setup.wiring.dlq = GatedSink()
    batch = [setup.record(b"u9", b"not json", offset=n) for n in range(100)]
    batch.insert(50, setup.event("a", "u1", "0"))
    order: list[str] = []
    for sink, what in ((setup.recommendations, "recommendation"), (dlq, "dead letter")):
        def logged(send: Any = sink.send, what: str = what, **kwargs: Any) -> Any:
            order.append(what)
            return send(**kwargs)

        setattr(sink, "send", logged)  # noqa: B010  # an instance's send, logged

    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=1) as executor:
            handling = asyncio.ensure_future(
                handle_batch(setup.wiring, _pipeline(tiny_encoder), executor, batch)
            )
            for _ in range(500):
                if setup.recommendations.sent or handling.done():
                    break
                await asyncio.sleep(0.01)
            assert [m.key for m in setup.recommendations.sent] == [b"u1"]
            for _ in range(500):
                if dlq.sent:
                    break
                await asyncio.sleep(0.01)
            assert len(dlq.sent) == 100  # all handed over together
            assert order[0] == "recommendation" and set(order[1:]) == {"dead letter"}
            await asyncio.sleep(0.05)
            assert not handling.done()  # still waits for its dead letters
            dlq.gate.set()
            await asyncio.wait_for(handling, 5)

    asyncio.run(scenario())
    assert setup.wiring.stats.dead_letters == {"not JSON": 100}


def test_a_flood_of_records_failing_unexpectedly_logs_one_line_a_batch(
    tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object) -> object:
        raise ValueError("a bug of ours")

    monkeypatch.setattr(agents, "decode_event", broken)
    setup = _setup()
    with caplog.at_level(logging.DEBUG, logger="streams.worker.agents"):
        setup.run(_pipeline(tiny_encoder), [
            setup.record(b"u1", b"{}", offset=n) for n in range(300)])
    assert len(setup.dlq.sent) == 300
    [logged] = [r for r in caplog.records if r.name == "streams.worker.agents"]
    assert logged.levelno == logging.WARNING and logged.exc_info is not None
    assert logged.getMessage().startswith("300 records of the batch could not be decoded")


def test_a_user_forgotten_while_their_batch_runs_is_not_written_back(
    tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forget (streams.worker.control) deletes a state while a batch that read it is in the
    model thread: the batch must not write it back, nor send that user's recommendations."""
    setup = _setup()
    pipeline = _pipeline(tiny_encoder)
    process = pipeline.process

    def forget_meanwhile(*args: Any) -> Any:
        setup.wiring.forgotten.mark("u1")
        return process(*args)

    monkeypatch.setattr(pipeline, "process", forget_meanwhile)
    setup.run(pipeline, [setup.event("a", "u1", "0"), setup.event("b", "u2", "1")])
    assert setup.table.keys_by_partition() == {0: {b"u2"}}
    assert [m.key for m in setup.recommendations.sent] == [b"u2"]
    monkeypatch.undo()
    setup.run(pipeline, [setup.event("c", "u1", "2")])  # a later batch: the user is back
    assert setup.table.keys_by_partition() == {0: {b"u1", b"u2"}}


def test_a_batch_overtaken_by_a_rebalance_sends_no_dead_letter(
    tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its records are read again by the partition's owner (the batch is not acked), who
    dead-letters them: sending them here too would put each bad record in the topic twice."""
    setup = _setup()
    pipeline = _pipeline(tiny_encoder)
    process = pipeline.process

    def rebalanced(*args: Any) -> Any:
        setup.wiring.app.revoked = True  # type: ignore[attr-defined]  # a revoke came meanwhile
        return process(*args)

    monkeypatch.setattr(pipeline, "process", rebalanced)
    batch = [setup.record(b"u9", b"not json", offset=0), setup.event("a", "u1", "0", offset=1),
             setup.event("b", "u1", "unknown-item", offset=2)]  # fmt: skip
    setup.run(pipeline, batch)
    assert setup.dlq.sent == [] and setup.recommendations.sent == []
    assert setup.table.get(b"u1") is None
    setup.wiring.app.revoked = False  # type: ignore[attr-defined]  # the owner reads them again
    monkeypatch.setattr(pipeline, "process", process)
    setup.run(pipeline, batch)
    # the rejected event's before the write-back, the undecodable record's after the answer
    assert [dict(m.headers)["dlq.offset"] for m in setup.dlq.sent] == [b"2", b"0"]
    assert [m.key for m in setup.recommendations.sent] == [b"u1"]


def test_a_rebalance_after_the_write_back_still_sends_the_rejected_events_dead_letters(
    tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state written back records the rejected event as handled, so its owner will not
    dead-letter it when the batch is read again: it is sent here, before the state is written.
    A record that did not decode is in no state: its owner sends it."""
    setup = _setup()
    publish = agents._publish
    send = setup.dlq.send
    written_before: list[bool] = []

    async def sending(**kwargs: Any) -> Any:
        written_before.append(setup.table.get(b"u1") is not None)
        return await send(**kwargs)

    monkeypatch.setattr(setup.dlq, "send", sending)

    async def rebalanced(*args: Any) -> None:
        await publish(*args)
        setup.wiring.app.revoked = True  # type: ignore[attr-defined]

    monkeypatch.setattr(agents, "_publish", rebalanced)
    setup.run(_pipeline(tiny_encoder), [
        setup.record(b"u9", b"not json", offset=0), setup.event("a", "u1", "0", offset=1),
        setup.event("b", "u1", "unknown-item", offset=2)])  # fmt: skip
    assert [dict(m.headers)["dlq.offset"] for m in setup.dlq.sent] == [b"2"]
    assert written_before == [False]  # sent before the state that records it as handled
    assert decode_state(setup.table.get(b"u1") or b"").n_events == 1
