"""Dead letters: the original record with its context, cut (and saying so) when too large to
re-send, and never a reason for the worker to stop."""

from __future__ import annotations

import asyncio
import logging

import faust
import pytest
from aiokafka import ConsumerRecord
from faust.types import Message

from streams.settings import Settings
from streams.worker.dlq import (
    PREFIX_BYTES,
    WHOLE_MAX_BYTES,
    bounded,
    dead_letter,
    dead_letters,
    dlq_headers,
)
from streams.worker.ports import MemorySink, MemoryStore, Sent
from streams.worker.stats import Stats
from streams.worker.wiring import Wiring
from tests.unit.streams.worker.sinks import GatedSink


def _wiring(dlq: object) -> Wiring:
    settings = Settings()
    app, topics = faust.App("dlq-test"), settings.topics
    return Wiring(app=app, settings=settings, events=app.topic(*topics.events),
                  items=app.topic(topics.items), recommendations=MemorySink(),
                  dlq=dlq, table=MemoryStore(), stats=Stats())  # type: ignore[arg-type]


def _message(key: bytes | None, value: bytes | None, offset: int = 7) -> Message:
    return Message("events.click", 3, offset, 1.0, 0, [], key, value, None)


def _send(key: bytes | None, value: bytes | None, reason: str = "not JSON: x") -> Sent:
    sink = MemorySink()
    asyncio.run(dead_letter(_wiring(sink), _message(key, value), reason))
    [sent] = sink.sent
    return sent


def test_a_small_record_goes_whole_with_its_context() -> None:
    sent = _send(b"u1", b"{nope")
    assert (sent.key, sent.value) == (b"u1", b"{nope")
    assert dict(sent.headers) == {"dlq.reason": b"not JSON: x", "dlq.topic": b"events.click",
                                  "dlq.partition": b"3", "dlq.offset": b"7"}  # fmt: skip


def test_a_null_key_and_a_null_value_stay_null() -> None:
    sent = _send(None, None, "no value (null): a record must be a JSON object")
    assert sent.key is None and sent.value is None
    assert "dlq.truncated" not in dict(sent.headers)
    assert _send(b"", b"").value == b""  # empty is not null


@pytest.mark.parametrize(
    ("key", "value", "cut"),
    [
        (b"u1", b"x" * 5_242_880, b"value:5242880"),
        (b"k" * 1_100_000, b"{}", b"key:1100000"),
        (b"k" * 1_100_000, b"v" * 5_242_880, b"key:1100000,value:5242880"),
        (b"k" * 100_000, b"v" * 850_000, b"key:100000,value:850000"),  # 950,000 together
        (None, b"v" * (WHOLE_MAX_BYTES + 1), f"value:{WHOLE_MAX_BYTES + 1}".encode()),
    ],
)
def test_a_record_too_large_to_resend_keeps_a_prefix_and_says_what_was_cut(
    key: bytes | None, value: bytes, cut: bytes
) -> None:
    sent = _send(key, value)
    headers = dict(sent.headers)
    assert headers["dlq.truncated"] == cut
    assert headers["dlq.reason"] == b"not JSON: x" and headers["dlq.offset"] == b"7"
    assert sent.value == value[:PREFIX_BYTES]
    assert sent.key == (None if key is None else key[:PREFIX_BYTES])
    assert len(sent.key or b"") + len(sent.value or b"") <= 2 * PREFIX_BYTES


def test_the_limit_of_a_whole_record_is_key_and_value_together() -> None:
    at_limit = (b"k" * 1000, b"v" * (WHOLE_MAX_BYTES - 1000))
    assert bounded(*at_limit) == (*at_limit, "")
    over = (b"k" * 1001, b"v" * (WHOLE_MAX_BYTES - 1000))
    assert bounded(*over) == (b"k" * 1001, b"v" * PREFIX_BYTES, f"value:{WHOLE_MAX_BYTES - 1000}")
    assert WHOLE_MAX_BYTES + 1024 < 1_000_000  # room for headers under the producer's limit


def test_the_reason_header_is_bounded_utf8_whatever_the_reason() -> None:
    headers = dict(dlq_headers("é" * 2000, "t", 0, 1))
    assert len(headers["dlq.reason"]) <= 1000
    assert headers["dlq.reason"].decode() == "é" * 500  # cut between characters, not inside one
    escaped = dict(dlq_headers("bad \ud800 text", "t", 0, 1))["dlq.reason"]
    assert escaped == b"bad \\ud800 text"


def test_an_aiokafka_record_of_the_catalog_feed_is_dead_lettered_alike() -> None:
    sink = MemorySink()
    record = ConsumerRecord("items", 1, 42, 0, 0, b"i" * 1_100_000, b"{}", None, 1_100_000, 2, [])
    asyncio.run(dead_letter(_wiring(sink), record, "missing field 'title'"))
    [sent] = sink.sent
    headers = dict(sent.headers)
    assert headers["dlq.topic"] == b"items" and headers["dlq.offset"] == b"42"
    assert headers["dlq.truncated"] == b"key:1100000" and sent.value == b"{}"


class _FailingSink:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0

    async def send(self, **_: object) -> object:
        self.calls += 1
        raise self.exc


def test_a_dead_letter_that_cannot_be_sent_is_logged_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = _FailingSink(RuntimeError("MessageSizeTooLargeError"))
    wiring = _wiring(sink)
    with caplog.at_level(logging.ERROR, logger="streams.worker.dlq"):
        asyncio.run(dead_letter(wiring, _message(b"u1", b"{nope", 9), "not JSON: x"))
    assert sink.calls == 1
    assert wiring.stats.dead_letters == {"not JSON": 1}  # counted all the same
    [record] = caplog.records
    assert "events.click[3]@9" in record.getMessage() and "not JSON: x" in record.getMessage()
    assert record.exc_info is not None


def test_cancellation_is_not_swallowed() -> None:
    wiring = _wiring(_FailingSink(asyncio.CancelledError()))  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(dead_letter(wiring, _message(b"u1", b"x"), "r"))


def test_a_batch_of_dead_letters_is_handed_over_together_not_one_after_another() -> None:
    """One awaited send per bad record held a flood of them to ~1,300 records/s."""
    sink = GatedSink()
    wiring = _wiring(sink)
    letters = [(_message(b"u%d" % n, b"{nope", offset=n), "not JSON: x") for n in range(200)]

    async def scenario() -> None:
        sending = asyncio.ensure_future(dead_letters(wiring, letters))
        for _ in range(20):  # a few turns of the loop, far fewer than one per letter
            await asyncio.sleep(0)
        assert len(sink.sent) == 200 and not sending.done()  # all started, none finished
        sink.gate.set()
        await asyncio.wait_for(sending, 5)

    asyncio.run(scenario())
    assert [dict(m.headers)["dlq.offset"] for m in sink.sent] == [b"%d" % n for n in range(200)]
    assert wiring.stats.dead_letters == {"not JSON": 200}


def test_a_flood_of_failed_dead_letters_is_logged_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = _FailingSink(RuntimeError("broker down"))
    wiring = _wiring(sink)
    letters = [(_message(b"u1", b"{nope", offset=n), "not JSON: x") for n in range(500)]
    with caplog.at_level(logging.DEBUG, logger="streams.worker.dlq"):
        asyncio.run(dead_letters(wiring, letters))
    assert sink.calls == 500 and wiring.stats.dead_letters == {"not JSON": 500}
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and len(caplog.records) <= 2  # and at most one debug line
    assert "500 of 500" in errors[0].getMessage() and "events.click[3]@0" in errors[0].getMessage()
    assert errors[0].exc_info is not None
