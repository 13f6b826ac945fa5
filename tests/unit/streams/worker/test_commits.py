"""The consumer's ack and commit bookkeeping across rebalances (:mod:`streams.worker.commits`),
on the worker's real consumer (:class:`streams.worker.transport._Consumer`, not started: the
bookkeeping needs no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import Message

from streams.settings import Settings
from streams.worker.commits import generation_live
from streams.worker.transport import faust_app

TOPIC = "events.click"
P0 = TP(TOPIC, 0)


@pytest.fixture
def consumer() -> Iterator[Any]:
    app = faust_app(Settings(bootstrap="127.0.0.1:1"))
    app.topics.add(app.topic(TOPIC))
    asyncio.run(app.topics._update_indices())  # acks are counted for the topics of the agents
    app.consumer_generation_id = 3
    yield app.consumer


def message(offset: int, generation: int = 3) -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, None, b"user", b"{}", None, None, None, tp=P0,
                   generation_id=generation)  # fmt: skip


def test_a_commit_run_starts_at_the_committed_offset(consumer: Any) -> None:
    """The committed offset is the next event to process: acks of the two after it do not move
    the commit (faust's check let a run start one past it, skipping that event)."""
    consumer._committed_offset[P0] = 10
    assert consumer.ack(message(11)) and consumer.ack(message(12))
    assert consumer._new_offset(P0) is None
    assert consumer.ack(message(10))
    assert consumer._new_offset(P0) == 13


def test_a_gap_at_the_committed_offset_lets_the_run_start() -> None:
    app = faust_app(Settings(bootstrap="127.0.0.1:1"))
    app.topics.add(app.topic(TOPIC))
    asyncio.run(app.topics._update_indices())
    app.consumer_generation_id = 1
    consumer: Any = app.consumer
    consumer._committed_offset[P0] = 10
    asyncio.run(consumer._add_gap(P0, 10, 11))  # 10 and 11 are not in the log (compaction)
    assert consumer.ack(message(12, generation=1))
    assert consumer._new_offset(P0) == 13


def test_acks_of_an_old_or_revoked_generation_are_refused(consumer: Any) -> None:
    consumer._committed_offset[P0] = 0
    assert not consumer.ack(message(0, generation=2))  # read before the last rebalance
    consumer.app.revoked = True  # a rebalance began; the new generation is not known yet
    assert not consumer.ack(message(0))
    assert consumer._new_offset(P0) is None


def test_nothing_is_committed_while_the_generation_is_revoked(consumer: Any) -> None:
    consumer._committed_offset[P0] = 0
    assert consumer.ack(message(0))
    consumer.app.revoked = True
    assert asyncio.run(consumer._commit_tps([P0], start_new_transaction=False)) is False
    assert asyncio.run(consumer._commit_offsets({P0: 1})) is False
    assert consumer._committed_offset[P0] == 0


def test_a_revoke_holds_every_generation_until_the_assignment(consumer: Any) -> None:
    assert generation_live(consumer.app, 3)
    consumer.app.on_rebalance_start()
    asyncio.run(consumer.on_partitions_revoked(set()))
    assert not generation_live(consumer.app, 3)
    # Tansu's first generation has the id the app starts with: the assignment must free it
    asyncio.run(consumer.on_partitions_assigned(set(), 3))
    assert generation_live(consumer.app, 3)
