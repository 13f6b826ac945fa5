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
    pytest.param(event(type="comment", text=""), OK, id="comment-empty-text"),
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
    obj = json.loads(line) if line != "{nope" else None
    fields = obj if isinstance(obj, dict) else {}
    topic = fields["type"] if isinstance(fields.get("type"), str) else "click"
    user = fields.get("user_id")
    key = user.encode() if isinstance(user, str) else None
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
