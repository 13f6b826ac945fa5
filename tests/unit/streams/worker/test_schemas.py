"""Input validation: every bad record gets a reason a person can act on."""

from __future__ import annotations

import json
import time

import pytest

from interest_state import EventType
from streams.contract import MAX_DEPTH, MAX_VALUE_BYTES, parse_ts
from streams.errors import EventRejected
from streams.worker.schemas import (
    NO_KEY,
    decode_event,
    decode_item,
    encode_recommendations,
    max_key_bytes,
)


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
        (b"\xff\xfe", "click", b"u1", "not UTF-8"),
        (b"[]", "click", b"u1", "JSON object"),
        (None, "click", b"u1", "no value (null)"),
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


def literal(**literals: str) -> bytes:
    """A good event whose fields named in ``literals`` are that raw JSON text (numbers no Python
    ``json.dumps`` writes, nesting, escapes)."""
    text = raw(**{name: f"@@{name}@@" for name in literals}).decode()
    for name, value in literals.items():
        text = text.replace(f'"@@{name}@@"', value)
    return text.encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


GOOD = raw()
UTF16 = json.dumps(json.loads(GOOD))


@pytest.mark.parametrize(
    ("value", "event_type", "key", "words"),
    [
        # the record as a whole: null key and value, sizes, encodings, depth
        pytest.param(GOOD, "click", None, NO_KEY, id="null-key"),
        pytest.param(None, "click", None, "no value (null)", id="null-key-and-value"),
        pytest.param(GOOD, "click", b"u" * 513, "key is 513 bytes, at most 512", id="key-513"),
        pytest.param(b"x" * (MAX_VALUE_BYTES + 1), "click", b"u1",
                     f"value is {MAX_VALUE_BYTES + 1} bytes, at most {MAX_VALUE_BYTES}",
                     id="value-over-1MiB"),
        pytest.param(UTF16.encode("utf-16"), "click", b"u1", "not UTF-8", id="utf16-bom"),
        pytest.param(UTF16.encode("utf-16-le"), "click", b"u1", "NUL bytes", id="utf16le"),
        pytest.param(UTF16.encode("utf-16-be"), "click", b"u1", "NUL bytes", id="utf16be"),
        pytest.param(UTF16.encode("utf-32"), "click", b"u1", "not UTF-8", id="utf32-bom"),
        pytest.param(UTF16.encode("utf-32-le"), "click", b"u1", "NUL bytes", id="utf32le"),
        pytest.param(GOOD[:-1] + b', "x": "\xed\xa0\x80"}', "click", b"u1", "not UTF-8",
                     id="utf8-encoded-surrogate"),
        pytest.param(nested(10_000).encode(), "click", b"u1",
                     f"JSON nested deeper than {MAX_DEPTH} levels", id="deep-10000"),
        pytest.param(literal(context=nested(10_000)), "click", b"u1", "nested deeper",
                     id="deep-in-context"),
        pytest.param(literal(extra=nested(MAX_DEPTH)), "click", b"u1", "nested deeper",
                     id="deep-65-in-an-ignored-field"),
        pytest.param(b"{" * 10_000, "click", b"u1", "nested deeper", id="deep-unclosed"),
        # numbers out of range: Python's int-digit limit (4300), float overflow, NaN, Infinity
        pytest.param(literal(ts="9" * 5000), "click", b"u1",
                     "field 'ts' is out of range: an integer of more than 20 digits",
                     id="ts-5000-digits"),
        pytest.param(literal(ts="1" + "0" * 400), "click", b"u1", "field 'ts' is out of range",
                     id="ts-1e400-as-integer"),
        pytest.param(literal(ts="1e400"), "click", b"u1", "field 'ts' must be a finite",
                     id="ts-1e400-float"),
        pytest.param(literal(ts="NaN"), "click", b"u1", "field 'ts' must be a finite", id="ts-nan"),
        pytest.param(literal(ts="-Infinity"), "click", b"u1", "field 'ts' must be a finite",
                     id="ts-minus-infinity"),
        pytest.param(literal(dwell_ms="9" * 5000), "browse", b"u1",
                     "field 'dwell_ms' is out of range", id="dwell-5000-digits"),
        pytest.param(literal(dwell_ms="1" + "0" * 400), "browse", b"u1",
                     "field 'dwell_ms' is out of range", id="dwell-1e400-as-integer"),
        pytest.param(literal(dwell_ms="Infinity"), "browse", b"u1", "field 'dwell_ms' must be",
                     id="dwell-infinity"),
        pytest.param(literal(dwell_ms="NaN"), "browse", b"u1", "field 'dwell_ms' must be",
                     id="dwell-nan"),
        pytest.param(literal(year="9" * 5000), "click", b"u1",
                     "field 'year' is out of range", id="5000-digits-in-an-ignored-field"),
        pytest.param(literal(ids="[1, " + "9" * 21 + "]"), "click", b"u1",
                     "out of range: an integer of more than 20 digits", id="21-digits-in-an-array"),
        pytest.param(("9" * 5000).encode(), "click", b"u1", "out of range", id="bare-5000-digits"),
    ],
)
def test_records_past_a_limit_are_rejected_with_a_reason_that_names_it(
    value: bytes | None, event_type: str, key: bytes | None, words: str
) -> None:
    with pytest.raises(EventRejected) as info:
        decode_event(value, event_type, key)
    assert words in info.value.reason


def test_the_order_of_the_checks_first_failure_wins() -> None:
    # the key's size before the value is looked at; a null key after the value's fields
    with pytest.raises(EventRejected, match="key is"):
        decode_event(b"x" * (MAX_VALUE_BYTES + 1), "click", b"k" * 1_100_000)
    with pytest.raises(EventRejected, match="missing field 'user_id'"):
        decode_event(raw(user_id=None), "click", None)
    with pytest.raises(EventRejected, match="unknown event type"):
        decode_event(None, "purchase", None)


def test_records_within_the_limits_decode_as_before() -> None:
    assert decode_event(b"\xef\xbb\xbf" + GOOD, "click", b"u1").event_id == "e1"  # UTF-8 BOM
    assert decode_event(literal(extra=nested(MAX_DEPTH - 1)), "click", b"u1").item_id == "i1"
    assert decode_event(literal(extra='"' + "[" * 10_000 + '"'), "click", b"u1").user_id == "u1"
    assert decode_event(literal(year="9" * 20), "click", b"u1").user_id == "u1"
    assert decode_event(literal(dwell_ms=str(2**53 - 1)), "browse", b"u1").dwell_ms == 2**53 - 1
    widest = "\U0001f600" * 128  # the longest user id in UTF-8: its key is the most allowed
    assert len(widest.encode()) == max_key_bytes(128) == 512
    assert decode_event(raw(user_id=widest), "click", widest.encode()).user_id == widest
    assert decode_event(raw(user_id="u" * 300), "click", b"u" * 300, 300).user_id == "u" * 300


def test_lone_surrogates_are_refused_in_every_string_the_worker_uses() -> None:
    for field, value, topic in [("user_id", "\ud800", "click"), ("event_id", "e\udfff", "click"),
                                ("item_id", "\udc00x", "click"), ("text", "ok \ud800", "comment")]:
        with pytest.raises(EventRejected, match=f"field '{field}' is not valid Unicode"):
            decode_event(raw(**{field: value}), topic, b"u1")
    for context in [{"device": "\ud800"}, {"\ud800": "tv"}]:
        with pytest.raises(EventRejected, match="field 'context' is not valid Unicode"):
            decode_event(raw(context=context), "click", b"u1")
    # a pair of surrogate escapes is one character, as JSON means it
    assert decode_event(raw(text="\ud83d\ude00"), "comment", b"u1").text == "\U0001f600"


def test_items_past_a_limit_are_rejected() -> None:
    with pytest.raises(EventRejected, match="no value"):
        decode_item(None)
    with pytest.raises(EventRejected, match="value is"):
        decode_item(json.dumps({"item_id": "1", "title": "t" * MAX_VALUE_BYTES}).encode())
    with pytest.raises(EventRejected, match="nested deeper"):
        decode_item(b'{"item_id": "1", "title": "t", "tags": ' + nested(1000).encode() + b"}")
    with pytest.raises(EventRejected, match="field 'year' is out of range"):
        decode_item(b'{"item_id": "1", "title": "t", "year": ' + b"9" * 5000 + b"}")
    with pytest.raises(EventRejected, match="field 'title' is not valid Unicode"):
        decode_item(json.dumps({"item_id": "1", "title": "a \ud800"}).encode())


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
        "variant": "A",
        "latency_ms": 3.2,
    }
    b = json.loads(encode_recommendations("u1", ["e1"], [], "m-2", 1.0, 10.0, "B"))
    assert (b["variant"], b["model_version"]) == ("B", "m-2")
