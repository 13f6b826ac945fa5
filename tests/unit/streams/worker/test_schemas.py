"""Input validation: every bad record gets a reason a person can act on."""

from __future__ import annotations

import json
import time

import pytest

from interest_state import EventType
from streams.contract import parse_ts
from streams.errors import EventRejected
from streams.worker.schemas import decode_event, decode_item, encode_recommendations


def raw(**fields: object) -> bytes:
    body = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 1_700_000_000.0, **fields}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def test_a_good_click_decodes() -> None:
    event = decode_event(raw(context={"device": "ios"}), "click", b"u1")
    assert (event.event_id, event.user_id, event.item_id) == ("e1", "u1", "i1")
    assert event.event_type is EventType.CLICK and event.context == {"device": "ios"}


def test_browse_keeps_dwell_and_comment_keeps_text() -> None:
    assert decode_event(raw(dwell_ms=1200), "browse", b"u1").dwell_ms == 1200
    assert decode_event(raw(text="great"), "comment", b"u1").text == "great"


@pytest.mark.parametrize(
    ("value", "event_type", "key", "words"),
    [
        (b"{nope", "click", b"u1", "not JSON"),
        (b"\xff\xfe", "click", b"u1", "not JSON"),
        (b"[]", "click", b"u1", "JSON object"),
        (None, "click", b"u1", "empty message"),
        (raw(user_id=None), "click", None, "missing field 'user_id'"),
        (raw(user_id=""), "click", b"", "is empty"),
        (raw(user_id="x" * 129), "click", None, "at most 128"),
        (raw(user_id=7), "click", None, "must be a string"),
        (raw(item_id=None), "click", b"u1", "missing field 'item_id'"),
        (raw(ts=None), "click", b"u1", "missing field 'ts'"),
        (raw(ts="not a time"), "click", b"u1", "ISO-8601"),
        (raw(ts=True), "click", b"u1", "boolean"),
        (raw(ts=-1), "click", b"u1", "non-negative"),
        (raw(ts=time.time() * 1000), "click", b"u1", "milliseconds"),
        (raw(dwell_ms=-1), "browse", b"u1", "dwell_ms"),
        (raw(dwell_ms=1.5), "browse", b"u1", "dwell_ms"),
        (raw(), "comment", b"u1", "text"),
        (raw(type="purchase"), "click", b"u1", "unknown event type"),
        (raw(), "purchase", b"u1", "unknown event type"),
        (raw(context={"a": 1}), "click", b"u1", "context"),
        (raw(), "click", b"u2", "key must be the user_id"),
    ],
)
def test_bad_input_is_rejected_with_its_reason(
    value: bytes | None, event_type: str, key: bytes | None, words: str
) -> None:
    with pytest.raises(EventRejected) as info:
        decode_event(value, event_type, key)
    assert words in info.value.reason


def test_iso_timestamps_parse_and_naive_ones_are_utc() -> None:
    assert parse_ts("2024-01-01T00:00:00Z") == 1_704_067_200.0
    assert parse_ts("2024-01-01T00:00:00") == 1_704_067_200.0
    assert parse_ts("2024-01-01T01:00:00+01:00") == 1_704_067_200.0


def test_items_need_an_id_and_a_title_and_text_defaults_to_title() -> None:
    item = decode_item(json.dumps({"item_id": "1", "title": "Toy Story"}).encode())
    assert item.text == "Toy Story" and item.tags == ()
    with pytest.raises(EventRejected, match="title"):
        decode_item(json.dumps({"item_id": "1"}).encode())
    with pytest.raises(EventRejected, match="tags"):
        decode_item(json.dumps({"item_id": "1", "title": "t", "tags": "x"}).encode())


def test_recommendation_message_has_the_documented_fields() -> None:
    from interest_state import Recommendation

    body = json.loads(
        encode_recommendations(
            "u1", ["e1", "e2"], [Recommendation("i9", 0.5, "like x")], "m-1", 3.2, 10.0
        )
    )
    assert body == {
        "user_id": "u1",
        "ts": 10.0,
        "event_id": "e2",
        "event_ids": ["e1", "e2"],
        "items": [{"item_id": "i9", "score": 0.5, "reason": "like x"}],
        "model_version": "m-1",
        "latency_ms": 3.2,
    }
