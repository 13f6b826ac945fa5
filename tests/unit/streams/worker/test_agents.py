"""``handle_batch`` end to end on stand-in topics: what a batch leaves behind when it returns."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from encoders import TextEncoder
from interest_state import UpdateParams, decode_state
from streams.settings import Settings
from streams.worker.agents import handle_batch
from streams.worker.pipeline import Pipeline
from streams.worker.schemas import ItemMessage
from streams.worker.stats import Stats
from streams.worker.wiring import Wiring

TITLES = ["space battle saga", "romantic comedy in paris", "animated toys adventure", "war drama"]


@dataclass
class _Message:
    topic: str
    key: bytes
    value: bytes
    timestamp: float
    partition: int = 0
    offset: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(eq=False)
class _Event:
    message: _Message


class _Topic:
    """Records what was handed to the producer; ``send_soon`` is not there on purpose: a
    message left in faust's buffer would reach the broker only when the agent next yields."""

    def __init__(self, *, forced: bool) -> None:
        self.forced = forced
        self.sent: list[tuple[bytes, bytes]] = []
        self.callbacks: list[Callable[[Any], Any]] = []

    async def send(self, *, key: bytes, value: bytes, force: bool = False,
                   headers: Any = None, callback: Callable[[Any], Any] | None = None) -> None:
        if self.forced:
            assert force, "a recommendation must not be attached to (held for) a source event"
        self.sent.append((key, value))
        if callback is not None:
            self.callbacks.append(callback)

    def ack_all(self) -> None:
        """What faust does when the broker acks each message: call its callback."""
        for callback in self.callbacks:
            callback(None)


def _event(settings: Settings, event_id: str, user: str, item: str,
           stamp: float = 1.0) -> _Event:
    body = {"event_id": event_id, "user_id": user, "item_id": item, "ts": 1000.0}
    return _Event(_Message(settings.topics.click, user.encode(), json.dumps(body).encode(),
                           stamp))


@dataclass
class _Setup:
    settings: Settings
    wiring: Wiring
    recommendations: _Topic
    dlq: _Topic
    table: dict[bytes, bytes]

    def run(self, pipeline: Pipeline, batch: list[_Event]) -> None:
        with ThreadPoolExecutor(max_workers=1) as executor:
            asyncio.run(handle_batch(self.wiring, pipeline, executor, batch))  # type: ignore[arg-type]


def _setup() -> _Setup:
    settings = Settings()
    table: dict[bytes, bytes] = {}
    recommendations, dlq = _Topic(forced=True), _Topic(forced=False)
    wiring = Wiring(app=None, settings=settings, events=None, items=None,  # type: ignore[arg-type]
                    recommendations=recommendations, dlq=dlq,  # type: ignore[arg-type]
                    table=table, stats=Stats())  # type: ignore[arg-type]
    return _Setup(settings, wiring, recommendations, dlq, table)


def _pipeline(encoder: TextEncoder) -> Pipeline:
    pipeline = Pipeline(encoder, UpdateParams(), top_k=2)
    pipeline.add_items([ItemMessage(str(i), t, t, ()) for i, t in enumerate(TITLES)])
    return pipeline


def test_a_batch_hands_one_recommendation_per_user_to_the_producer_before_it_returns(
    tiny_encoder: TextEncoder,
) -> None:
    setup = _setup()
    settings, recommendations, table = setup.settings, setup.recommendations, setup.table
    setup.run(_pipeline(tiny_encoder), [
        _event(settings, "a", "u1", "0"), _event(settings, "b", "u2", "1"),
        _event(settings, "c", "u1", "2"), _event(settings, "d", "u3", "nope")])

    sent = {key: json.loads(value) for key, value in recommendations.sent}
    assert len(recommendations.sent) == 2 and set(sent) == {b"u1", b"u2"}
    assert sent[b"u1"]["event_ids"] == ["a", "c"] and sent[b"u2"]["event_ids"] == ["b"]
    assert all(len(body["items"]) == 2 for body in sent.values())
    assert set(table) == {b"u1", b"u2"} and decode_state(table[b"u1"]).n_events == 2
    assert [json.loads(value)["event_id"] for _, value in setup.dlq.sent] == ["d"]  # unknown item


def test_the_brokers_ack_records_each_answered_events_time_from_its_record_timestamp(
    tiny_encoder: TextEncoder,
) -> None:
    setup = _setup()
    settings, stats = setup.settings, setup.wiring.stats
    now = time.time()
    setup.run(_pipeline(tiny_encoder), [
        _event(settings, "a", "u1", "0", now - 0.3), _event(settings, "b", "u2", "1", now - 0.2),
        _event(settings, "c", "u1", "2", now - 0.1),
        _event(settings, "e", "u1", "nope", now - 50.0)])  # rejected: not answered
    assert stats.acked.summary() == {}  # sent, not acked yet

    setup.recommendations.ack_all()
    acked = stats.acked.summary()
    assert acked["n"] == 3
    assert 300.0 <= acked["max"] < 50_000.0 and 100.0 <= acked["p50"] < acked["max"]
    assert stats.acked.summary(since=time.time() + 1.0) == {}
