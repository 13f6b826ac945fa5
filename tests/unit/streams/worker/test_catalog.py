"""The catalog feed: no ``items`` record stops it; a tombstone deletes its item.

One fetch of records goes through :meth:`CatalogFeed.apply` on the in-memory dead-letter sink;
nothing here reads or writes Kafka.
"""

from __future__ import annotations

import asyncio
import json

import faust
import pytest
from aiokafka import ConsumerRecord

from encoders import InferenceError, TextEncoder
from interest_state import UpdateParams
from streams.settings import Settings
from streams.worker.catalog import CatalogFeed
from streams.worker.pipeline import Pipeline
from streams.worker.ports import MemorySink, MemoryStore
from streams.worker.stats import Stats
from streams.worker.wiring import Wiring

TITLES = {"1": "space battle saga", "2": "romantic comedy in paris", "3": "war drama"}


class _Feed:
    """A catalog feed on a fresh pipeline, its dead letters kept in memory."""

    def __init__(self, encoder: TextEncoder) -> None:
        settings = Settings()
        app, topics = faust.App("catalog-test"), settings.topics
        self.dlq = MemorySink()
        self.wiring = Wiring(app=app, settings=settings, events=app.topic(*topics.events),
                             items=app.topic(topics.items), recommendations=MemorySink(),
                             dlq=self.dlq, table=MemoryStore(), stats=Stats())  # fmt: skip
        self.pipeline = Pipeline(encoder, UpdateParams(), top_k=2)
        self.feed = CatalogFeed(self.wiring, self.pipeline)
        self.offset = 0

    def record(self, key: bytes | None, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
        self.offset += 1
        return ConsumerRecord("items", 0, self.offset, 0, 0, key, value, None,
                              len(key or b""), len(value or b""), ())  # fmt: skip

    def item(self, item_id: str, title: str | None = None) -> ConsumerRecord[bytes, bytes]:
        body = {"item_id": item_id, "title": title or TITLES[item_id]}
        return self.record(item_id.encode(), json.dumps(body).encode())

    def apply(self, *records: ConsumerRecord[bytes, bytes]) -> None:
        asyncio.run(self.feed.apply(records))

    def dead(self) -> list[tuple[int, str]]:
        """(offset, reason) of each dead letter, in order."""
        return [(int(headers["dlq.offset"]), headers["dlq.reason"].decode())
                for headers in (dict(m.headers) for m in self.dlq.sent)]  # fmt: skip

    def items(self) -> set[str]:
        return {i for i in TITLES if i in self.pipeline.index}


def test_records_that_do_not_decode_are_dead_lettered_and_the_feed_goes_on(
        tiny_encoder: TextEncoder) -> None:
    f = _Feed(tiny_encoder)
    deep = b"[" * 10_000 + b"]" * 10_000
    f.apply(f.item("1"), f.record(b"x", b"{nope"), f.record(b"y", deep),
            f.record(b"z", b'{"item_id": "z"}'), f.item("2"))  # fmt: skip
    assert f.items() == {"1", "2"} and f.wiring.stats.items_indexed == 2
    dead = f.dead()
    assert [offset for offset, _ in dead] == [2, 3, 4]
    assert dead[0][1].startswith("not JSON") and dead[2][1] == "missing field 'title'"
    assert dead[1][1]  # nested too deep: a reason (whichever layer gives it), not a crash
    assert [m.key for m in f.dlq.sent] == [b"x", b"y", b"z"]


def test_any_exception_while_decoding_is_a_bounded_reason(
        tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.worker.catalog

    real = streams.worker.catalog.decode_item

    def fragile(raw: bytes | None):  # type: ignore[no-untyped-def]
        if raw == b'"boom"':
            raise RuntimeError("x" * 5000)
        return real(raw)

    monkeypatch.setattr(streams.worker.catalog, "decode_item", fragile)
    f = _Feed(tiny_encoder)
    f.apply(f.record(b"b", b'"boom"'), f.item("3"))
    [(offset, reason)] = f.dead()
    assert offset == 1 and reason == "could not be decoded: RuntimeError: " + "x" * 200 + "..."
    assert f.items() == {"3"}


def test_a_tombstone_deletes_its_item_and_a_later_record_brings_it_back(
        tiny_encoder: TextEncoder) -> None:
    f = _Feed(tiny_encoder)
    f.apply(f.item("1"), f.item("2"), f.item("3"))
    f.apply(f.record(b"2", None), f.record(b"unknown", None))  # unknown: nothing happens
    assert f.items() == {"1", "3"} and f.wiring.stats.items_indexed == 2 and f.dead() == []
    f.apply(f.item("2", "romance again"))
    assert f.items() == {"1", "2", "3"} and f.pipeline.index.title_of("2") == "romance again"
    # within one fetch the last record of an item wins
    f.apply(f.item("1"), f.record(b"1", None), f.record(b"3", None), f.item("3", "war"))
    assert f.items() == {"2", "3"} and f.pipeline.index.title_of("3") == "war"
    assert f.dead() == []


def test_a_tombstone_without_a_usable_key_is_dead_lettered(tiny_encoder: TextEncoder) -> None:
    f = _Feed(tiny_encoder)
    f.apply(f.item("1"))
    f.apply(f.record(None, None), f.record(b"", None), f.record(b"\xff1", None))
    assert f.dead() == [
        (2, "tombstone without a key: no item to delete"),
        (3, "tombstone without a key: no item to delete"),
        (4, "tombstone key is not UTF-8: 'utf-8' codec can't decode byte 0xff in position 0: "
            "invalid start byte"),
    ]
    assert f.items() == {"1"}


def test_an_item_that_cannot_be_encoded_is_dead_lettered_and_its_batch_indexed(
        tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tiny_encoder.encode

    def picky(texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "war drama" in texts:
            raise InferenceError("ONNX Runtime failed on a batch: out of memory")
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(tiny_encoder, "encode", picky)
    f = _Feed(tiny_encoder)
    f.apply(f.item("1"), f.item("3"), f.item("2"))
    assert f.items() == {"1", "2"}
    assert f.dead() == [(2, "could not be encoded: InferenceError: ONNX Runtime failed on a "
                            "batch: out of memory")]
    assert [m.key for m in f.dlq.sent] == [b"3"]


def test_an_item_vector_of_another_length_or_not_finite_is_dead_lettered(
    tiny_encoder: TextEncoder,
) -> None:
    feed = _Feed(tiny_encoder)

    def with_vector(item_id: str, vector: object) -> ConsumerRecord[bytes, bytes]:
        body = {"item_id": item_id, "title": TITLES[item_id], "vector": vector}
        return feed.record(item_id.encode(), json.dumps(body).encode())

    nan = b'{"item_id": "3", "title": "war drama", "vector": [1, NaN, 2]}'
    feed.apply(with_vector("1", [0.5, 1.0, 2.0]), with_vector("2", [1.0, 2.0]),
               feed.record(b"3", nan))  # fmt: skip
    assert feed.items() == {"1"} and feed.feed.vector_length == 3
    assert feed.dead() == [
        (2, "field 'vector' has 2 numbers, the catalog's vectors 3"),
        (3, "field 'vector' must hold finite numbers, got nan at 1"),
    ]
