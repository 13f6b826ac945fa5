"""Tests of streams.data.formats: the JSON Lines items and events files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streams.contract import EventRecord, ItemRecord
from streams.data.formats import read_events, read_items, write_events, write_items
from streams.errors import DatasetError

ITEMS = [
    ItemRecord("1", "Toy Story", "Toy Story (1995) Animation Children's Comedy",
               ("Animation", "Children's", "Comedy")),
    ItemRecord("543", "Misérables, Les", "Misérables, Les (1995) Drama Musical",
               ("Drama", "Musical")),
    ItemRecord("x", "No tags", "No tags"),
]  # fmt: skip

EVENTS = [
    EventRecord("e1", "u1", "1", "click", 100.0),
    EventRecord("e2", "u2", "543", "browse", 100.0, dwell_ms=0),
    EventRecord("e3", "u1", "x", "browse", 101.5, dwell_ms=2500, context={"device": "tv"}),
    EventRecord("e4", "ü" * 128, "1", "comment", 200.25, text="Loved it — «vraiment»"),
]


def _event_obj(**overrides: object) -> dict[str, object]:
    obj: dict[str, object] = {
        "event_id": "e1", "user_id": "u1", "item_id": "1", "type": "click", "ts": 1.0,
    }  # fmt: skip
    obj.update(overrides)
    return obj


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------ round trips


def test_items_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "items.jsonl"
    write_items(path, ITEMS)
    assert read_items(path) == ITEMS
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first == {
        "item_id": "1",
        "title": "Toy Story",
        "text": "Toy Story (1995) Animation Children's Comedy",
        "tags": ["Animation", "Children's", "Comedy"],
    }
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


def test_events_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_events(path, EVENTS)
    assert list(read_events(path)) == EVENTS
    objs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert objs[0] == {"event_id": "e1", "user_id": "u1", "item_id": "1", "type": "click",
                       "ts": 100.0}  # fmt: skip
    assert objs[2]["context"] == {"device": "tv"} and objs[2]["dwell_ms"] == 2500
    assert "dwell_ms" not in objs[0] and "text" not in objs[0]


def test_read_accepts_kafka_shapes(tmp_path: Path) -> None:
    """Optional fields may be absent or null, ts may be ISO-8601, extra fields are ignored."""
    items = _write_lines(tmp_path / "items.jsonl", [
        json.dumps({"item_id": "a", "title": "Alpha"}),
        "",
        json.dumps({"item_id": "b", "title": "Beta", "text": None, "tags": None, "extra": 1}),
    ])  # fmt: skip
    assert read_items(items) == [ItemRecord("a", "Alpha", "Alpha"), ItemRecord("b", "Beta", "Beta")]
    events = _write_lines(tmp_path / "events.jsonl", [
        json.dumps(_event_obj(ts="1970-01-01T00:00:10Z")),
        json.dumps(_event_obj(event_id="e2", ts="1970-01-01T00:00:10.5", dwell_ms=None)),
        json.dumps(_event_obj(event_id="e3", ts="1970-01-01T01:00:11+01:00")),
    ])  # fmt: skip
    assert [e.ts for e in read_events(events)] == [10.0, 10.5, 11.0]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"event_id": "e9", "user_id": ', "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in _event_obj().items() if k != "user_id"}), "'user_id'"),
        (json.dumps(_event_obj(user_id="")), "field 'user_id' is empty"),
        (json.dumps(_event_obj(user_id="u" * 129)), "at most 128"),
        (json.dumps(_event_obj(item_id=7)), "'item_id' must be a string"),
        (json.dumps(_event_obj(type="purchase")), "'type' must be one of"),
        (json.dumps(_event_obj(ts="yesterday")), "ISO-8601"),
        (json.dumps(_event_obj(ts=True)), "'ts'"),
        (json.dumps(_event_obj(ts=-1)), "'ts' must be a finite, non-negative time"),
        (json.dumps(_event_obj(ts=time.time() * 1000)), "epoch seconds expected, not millis"),
        (json.dumps(_event_obj(type="browse", dwell_ms=-1)), "'dwell_ms'"),
        (json.dumps(_event_obj(type="browse", dwell_ms=1.5)), "'dwell_ms'"),
        (json.dumps(_event_obj(type="comment")), "comment events need a string field 'text'"),
        (json.dumps(_event_obj(context={"device": 1})), "'context'"),
    ],
)
def test_bad_event_line_names_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    path = _write_lines(tmp_path / "events.jsonl", [json.dumps(_event_obj(event_id="e0")), line])
    with pytest.raises(DatasetError, match=match) as info:
        list(read_events(path))
    assert f"{path}:2:" in str(info.value)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("not json", "not JSON"),
        (json.dumps({"title": "T"}), "missing field 'item_id'"),
        (json.dumps({"item_id": "2", "title": "T", "tags": "Drama"}), "'tags'"),
        (json.dumps({"item_id": "2", "title": "T", "text": 3}), "'text'"),
        (json.dumps({"item_id": "1", "title": "again"}), "duplicate item_id '1'.*line 1"),
    ],
)
def test_bad_item_line_names_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    path = _write_lines(
        tmp_path / "items.jsonl", [json.dumps({"item_id": "1", "title": "T"}), line]
    )
    with pytest.raises(DatasetError, match=match) as info:
        read_items(path)
    assert f"{path}:2:" in str(info.value)


def test_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"item_id": "1", "title": "Mis\xe9rables"}\n')
    with pytest.raises(DatasetError, match=r":1: not UTF-8"):
        read_items(path)


def test_non_chronological_file(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "events.jsonl", [
        json.dumps(_event_obj(event_id="a", ts=5.0)),
        json.dumps(_event_obj(event_id="b", ts=5.0)),
        json.dumps(_event_obj(event_id="c", ts=4.0)),
    ])  # fmt: skip
    it = read_events(path)
    assert [next(it).event_id, next(it).event_id] == ["a", "b"]
    with pytest.raises(DatasetError, match=r"events\.jsonl:3: .*not in chronological.*line 2"):
        next(it)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such events file"):
        read_events(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="cannot open"):
        read_items(tmp_path / "nope.jsonl")


def test_write_events_refuses_unsorted_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_events(path, EVENTS[:1])
    before = path.read_bytes()
    with pytest.raises(DatasetError, match="chronological"):
        write_events(path, [EVENTS[3], EVENTS[0]])
    with pytest.raises(DatasetError, match="at most 128"):
        write_events(path, [EventRecord("e", "u" * 200, "1", "click", 1.0)])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl"]


def test_write_items_refuses_duplicates(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="duplicate item_id"):
        write_items(tmp_path / "items.jsonl", [ITEMS[0], ITEMS[0]])
    assert not (tmp_path / "items.jsonl").exists()
