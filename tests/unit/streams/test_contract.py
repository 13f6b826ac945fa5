"""One contract: a file line and a topic message are accepted or rejected alike, and for alike.

Every case goes through the file reader (a JSON Lines file in ``tmp_path``) and through the
topic decoder (the same bytes on the topic its ``type`` names, keyed by its user id). Both must
accept it and give the same event, or both reject it with the words given.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from interest_state import Event, EventType
from streams.contract import (
    EVENT_TYPES,
    MAX_DWELL_MS,
    MAX_TEXT_CHARS,
    MAX_USER_ID_LEN,
    EventRecord,
    ItemRecord,
    event_to_obj,
    item_to_obj,
    parse_event,
)
from streams.data.formats import read_events, read_items
from streams.errors import DatasetError, EventRejected
from streams.worker.schemas import decode_event, decode_item

DROP = object()
TS = 1_700_000_000.0
OK = None  # the expectation of an accepted case


def event(**fields: object) -> str:
    """One event line: a good click with ``fields`` changed (``DROP`` removes one)."""
    body: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click",
                            "ts": TS}  # fmt: skip
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not DROP})


def item(**fields: object) -> str:
    body: dict[str, Any] = {"item_id": "1", "title": "Toy Story"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not DROP})


def ctx(n: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(n)}


EVENT_CASES = [
    pytest.param(event(), OK, id="click"),
    pytest.param(event(type="browse", dwell_ms=1200), OK, id="browse-dwell"),
    pytest.param(event(type="browse", dwell_ms=0), OK, id="browse-dwell-0"),
    pytest.param(event(type="browse", dwell_ms=None), OK, id="browse-dwell-null"),
    pytest.param(event(type="comment", text="more Pixar"), OK, id="comment"),
    pytest.param(event(type="comment", text="t" * MAX_TEXT_CHARS), OK, id="comment-64k-chars"),
    pytest.param(event(type="comment", text="\U0001f600 ü"), OK, id="comment-astral-text"),
    pytest.param(event(type="browse", dwell_ms=MAX_DWELL_MS), OK, id="dwell-max"),
    pytest.param(event(dwell_ms=MAX_DWELL_MS + 1), OK, id="click-ignores-dwell-over-max"),
    pytest.param(event(text="\ud800"), OK, id="click-ignores-text-surrogate"),
    pytest.param(event(extra=["\ud800", "t" * 70_000]), OK, id="ignored-fields-are-ignored"),
    pytest.param(event(ts=0), OK, id="ts-0"),
    pytest.param(event(ts=1_700_000_000), OK, id="ts-int"),
    pytest.param(event(ts="2023-11-14T22:13:20Z"), OK, id="ts-iso-z"),
    pytest.param(event(ts="2023-11-14T22:13:20"), OK, id="ts-iso-naive"),
    pytest.param(event(ts="2023-11-14T23:13:20+01:00"), OK, id="ts-iso-offset"),
    pytest.param(event(context={"device": "ios"}), OK, id="context"),
    pytest.param(event(context=None), OK, id="context-null"),
    pytest.param(event(context={}), OK, id="context-empty"),
    pytest.param(event(context=ctx(32)), OK, id="context-32-fields"),
    pytest.param(event(user_id="u" * MAX_USER_ID_LEN), OK, id="user-id-128"),
    pytest.param(event(user_id="ü" * MAX_USER_ID_LEN), OK, id="user-id-128-unicode"),
    pytest.param(event(event_id="e" * 256), OK, id="event-id-256"),
    pytest.param(event(extra={"any": 1}), OK, id="extra-field"),
    pytest.param(event(dwell_ms=-1), OK, id="click-ignores-dwell"),
    pytest.param(event(text=5), OK, id="click-ignores-text"),
    pytest.param(event(type="browse", text=[1]), OK, id="browse-ignores-text"),
    pytest.param("{nope", "JSON", id="not-json"),
    pytest.param("[1, 2]", "expected a JSON object, got list", id="array"),
    pytest.param('"click"', "expected a JSON object, got str", id="string"),
    pytest.param("7", "expected a JSON object, got int", id="number"),
    pytest.param("null", "expected a JSON object, got NoneType", id="null"),
    pytest.param(event(event_id=DROP), "missing field 'event_id'", id="no-event-id"),
    pytest.param(event(user_id=DROP), "missing field 'user_id'", id="no-user-id"),
    pytest.param(event(item_id=DROP), "missing field 'item_id'", id="no-item-id"),
    pytest.param(event(ts=DROP), "missing field 'ts'", id="no-ts"),
    pytest.param(event(user_id=""), "field 'user_id' is empty", id="empty-user-id"),
    pytest.param(event(item_id=""), "field 'item_id' is empty", id="empty-item-id"),
    pytest.param(event(user_id=7), "field 'user_id' must be a string, got int", id="int-user"),
    pytest.param(event(item_id=7), "field 'item_id' must be a string, got int", id="int-item"),
    pytest.param(event(event_id=None), "field 'event_id' must be a string", id="null-event-id"),
    pytest.param(event(user_id="u" * 129), "is 129 chars, at most 128 allowed", id="user-id-129"),
    pytest.param(event(event_id="e" * 257), "at most 256 allowed", id="event-id-257"),
    pytest.param(event(type="purchase"), "'purchase'", id="unknown-type"),
    pytest.param(event(type=5), "5", id="int-type"),
    pytest.param(event(ts=-1), "non-negative", id="ts-negative"),
    pytest.param(event(ts=time.time() * 1000), "not milliseconds", id="ts-milliseconds"),
    pytest.param(event(ts="2999-01-01T00:00:00Z"), "in the future", id="ts-far-future"),
    pytest.param(event(ts="yesterday"), "does not parse as ISO-8601", id="ts-not-iso"),
    pytest.param(event(ts=True), "got a boolean", id="ts-bool"),
    pytest.param(event(ts=[1]), "epoch seconds or ISO-8601, got list", id="ts-list"),
    pytest.param(event(ts=float("nan")), "finite", id="ts-nan"),
    pytest.param(event(type="browse", dwell_ms=-1), "'dwell_ms'", id="dwell-negative"),
    pytest.param(event(type="browse", dwell_ms=1.5), "'dwell_ms'", id="dwell-float"),
    pytest.param(event(type="browse", dwell_ms="9"), "'dwell_ms'", id="dwell-string"),
    pytest.param(event(type="browse", dwell_ms=True), "'dwell_ms'", id="dwell-bool"),
    pytest.param(event(type="comment"), "string field 'text'", id="comment-no-text"),
    pytest.param(event(type="comment", text=5), "string field 'text'", id="comment-int-text"),
    pytest.param(event(type="comment", text=None), "string field 'text'", id="comment-null"),
    pytest.param(event(context=["a"]), "'context' must be an object", id="context-list"),
    pytest.param(event(context="ios"), "'context' must be an object", id="context-string"),
    pytest.param(event(context={"a": 1}), "'context' must map names to strings", id="ctx-int"),
    pytest.param(event(context=ctx(33)), "has 33 fields, at most 32", id="context-33-fields"),
    pytest.param(event(type="comment", text=""), "field 'text' is empty", id="comment-empty"),
    pytest.param(event(type="comment", text=" \n\t"), "field 'text' is empty", id="comment-blank"),
    pytest.param(event(type="comment", text="t" * (MAX_TEXT_CHARS + 1)),
                 f"field 'text' is {MAX_TEXT_CHARS + 1} chars, at most {MAX_TEXT_CHARS} allowed",
                 id="comment-too-long"),
    pytest.param(event(ts=10**400), "field 'ts' is out of range", id="ts-1e400-as-integer"),
    pytest.param(event(ts=10**20), "field 'ts' is out of range", id="ts-21-digits"),
    pytest.param(event(ts=10**19), "in the future", id="ts-20-digits"),
    pytest.param(event(ts=float("inf")), "finite", id="ts-infinity"),
    pytest.param(event(ts=float("-inf")), "finite", id="ts-minus-infinity"),
    pytest.param(event(type="browse", dwell_ms=10**400), "field 'dwell_ms' is out of range",
                 id="dwell-1e400-as-integer"),
    pytest.param(event(type="browse", dwell_ms=MAX_DWELL_MS + 1),
                 "field 'dwell_ms' is out of range", id="dwell-over-max"),
    pytest.param(event(type="browse", dwell_ms=-(10**30)), "field 'dwell_ms' is out of range",
                 id="dwell-minus-31-digits"),
    pytest.param(event(type="browse", dwell_ms=float("nan")), "'dwell_ms' must be", id="dwell-nan"),
    pytest.param(event(user_id="\ud800"), "field 'user_id' is not valid Unicode",
                 id="user-id-surrogate"),
    pytest.param(event(event_id="e\udfff"), "field 'event_id' is not valid Unicode",
                 id="event-id-surrogate"),
    pytest.param(event(item_id="\udc00"), "field 'item_id' is not valid Unicode",
                 id="item-id-surrogate"),
    pytest.param(event(type="comment", text="great \ud800 film"),
                 "field 'text' is not valid Unicode: a lone surrogate at character 6",
                 id="comment-surrogate"),
    pytest.param(event(context={"device": "\ud800"}), "field 'context' is not valid Unicode",
                 id="context-value-surrogate"),
    pytest.param(event(context={"\ud800": "tv"}), "field 'context' is not valid Unicode",
                 id="context-key-surrogate"),
    pytest.param(event(type="x" * 10_000), "'xxxxx", id="long-type-is-cut-in-the-reason"),
    pytest.param(event(extra="@@").replace('"@@"', "[" * 64 + "]" * 64),
                 "nested deeper than 64 levels", id="deep-65"),
    pytest.param("[" * 10_000 + "]" * 10_000, "nested deeper than 64 levels", id="deep-10000"),
    pytest.param(event(dwell_ms=10**30), "field 'dwell_ms' is out of range", id="click-huge-dwell"),
    pytest.param(event(n=10**400), "field 'n' is out of range", id="huge-int-ignored-field"),
    pytest.param(event(ids=[10**20]), "out of range: an integer of more than 20", id="int-array"),
    pytest.param(event(ts="@@").replace('"@@"', "9" * 5000), "field 'ts' is out of range",
                 id="ts-5000-digits"),
]


def _from_file(tmp_path: Path, line: str) -> EventRecord | str:
    path = tmp_path / "events.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    try:
        [record] = read_events(path)
    except DatasetError as exc:
        assert str(exc).startswith(f"{path}:1: ")  # the error names the line
        return str(exc)
    return record


def _from_topic(line: str) -> Event | str:
    """The line on the topic its ``type`` names (any other line arrives on the click topic)."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, too many digits, too deep
        obj = None
    fields = obj if isinstance(obj, dict) else {}
    topic = fields["type"] if isinstance(fields.get("type"), str) else "click"
    user = fields.get("user_id")
    key = user.encode("utf-8", "surrogatepass") if isinstance(user, str) else None
    try:
        return decode_event(line.encode(), topic, key)
    except EventRejected as exc:
        return exc.reason


@pytest.mark.parametrize(("line", "words"), EVENT_CASES)
def test_a_file_line_and_a_topic_message_are_one_contract(
    tmp_path: Path, line: str, words: str | None
) -> None:
    from_file, from_topic = _from_file(tmp_path, line), _from_topic(line)
    if words is None:
        assert isinstance(from_file, EventRecord) and isinstance(from_topic, Event)
        assert from_file.to_event() == from_topic
        assert EventRecord.from_event(from_topic) == from_file
    else:
        assert isinstance(from_file, str) and isinstance(from_topic, str)
        assert words in from_file and words in from_topic


@pytest.mark.parametrize("line", [p.values[0] for p in EVENT_CASES if p.values[1] is None])
def test_what_produce_sends_decodes_to_what_the_file_holds(tmp_path: Path, line: str) -> None:
    """``produce`` drops ``type`` (the topic says it): the worker reads the same event."""
    record = _from_file(tmp_path, line)
    assert isinstance(record, EventRecord)
    body = event_to_obj(record)
    topic = body.pop("type")
    assert decode_event(json.dumps(body).encode(), topic, record.user_id.encode()) == (
        record.to_event()
    )


@pytest.mark.parametrize("line", [event(type=DROP), event(type=None)])
def test_a_topic_may_leave_the_type_out_but_a_file_line_may_not(tmp_path: Path, line: str) -> None:
    """The topic says what an event is; in a file only ``type`` can pick its topic."""
    assert decode_event(line.encode(), "click", b"u1").event_type is EventType.CLICK
    assert "missing field 'type'" in str(_from_file(tmp_path, line))
    with pytest.raises(EventRejected, match="missing field 'type'"):
        parse_event(json.loads(line))
    with pytest.raises(EventRejected, match="'browse' on the click topic"):
        parse_event(json.loads(event(type="browse")), EventType.CLICK)


def test_event_types_are_the_interest_state_kinds() -> None:
    assert dict(EVENT_TYPES) == {
        "browse": EventType.BROWSE, "click": EventType.CLICK, "comment": EventType.COMMENT,
        "dislike": EventType.DISLIKE,
    }  # fmt: skip


ITEM_CASES = [
    pytest.param(item(), OK, id="minimal"),
    pytest.param(item(text="Toy Story (1995) Animation", tags=["Animation"]), OK, id="full"),
    pytest.param(item(text=None, tags=None), OK, id="nulls"),
    pytest.param(item(text=""), OK, id="empty-text-is-title"),
    pytest.param(item(tags=[]), OK, id="no-tags"),
    pytest.param(item(title="t" * 1024, extra=1), OK, id="title-1024-extra"),
    pytest.param("{nope", "JSON", id="not-json"),
    pytest.param("[]", "expected a JSON object, got list", id="array"),
    pytest.param(item(item_id=DROP), "missing field 'item_id'", id="no-id"),
    pytest.param(item(title=DROP), "missing field 'title'", id="no-title"),
    pytest.param(item(title=""), "field 'title' is empty", id="empty-title"),
    pytest.param(item(item_id=3), "field 'item_id' must be a string", id="int-id"),
    pytest.param(item(item_id="i" * 257), "at most 256 allowed", id="id-257"),
    pytest.param(item(title="t" * 1025), "at most 1024 allowed", id="title-1025"),
    pytest.param(item(text=3), "field 'text' must be a string", id="int-text"),
    pytest.param(item(tags="Drama"), "field 'tags' must be a list of strings", id="tags-str"),
    pytest.param(item(tags=[1]), "field 'tags' must be a list of strings", id="tags-ints"),
    pytest.param(item(text="t" * MAX_TEXT_CHARS), OK, id="text-64k-chars"),
    pytest.param(item(text="t" * (MAX_TEXT_CHARS + 1)), f"at most {MAX_TEXT_CHARS} allowed",
                 id="text-too-long"),
    pytest.param(item(item_id="\ud800"), "field 'item_id' is not valid Unicode", id="id-surr"),
    pytest.param(item(title="a \ud800"), "field 'title' is not valid Unicode", id="title-surr"),
    pytest.param(item(text="\udfff"), "field 'text' is not valid Unicode", id="text-surr"),
    pytest.param(item(tags=["ok", "\ud800"]), "field 'tags' is not valid Unicode", id="tag-surr"),
]


@pytest.mark.parametrize(("line", "words"), ITEM_CASES)
def test_an_items_line_and_an_items_message_are_one_contract(
    tmp_path: Path, line: str, words: str | None
) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    try:
        from_file: list[ItemRecord] | str = read_items(path)
    except DatasetError as exc:
        from_file = str(exc)
    try:
        from_topic: ItemRecord | str = decode_item(line.encode())
    except EventRejected as exc:
        from_topic = exc.reason
    if words is None:
        assert from_file == [from_topic]
        assert isinstance(from_topic, ItemRecord)
        assert decode_item(json.dumps(item_to_obj(from_topic)).encode()) == from_topic
    else:
        assert isinstance(from_file, str) and isinstance(from_topic, str)
        assert from_file.startswith(f"{path}:1: ")
        assert words in from_file and words in from_topic
