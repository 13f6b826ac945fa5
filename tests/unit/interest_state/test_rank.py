"""Ranking: seen filter, k results, one catalog search for many users, explanations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from interest_state import (
    DimensionError,
    Event,
    EventType,
    InterestState,
    Observation,
    ParamsError,
    UpdateParams,
    nearest_titles,
    rank,
    update,
)

DIM = 6
T0 = 1_700_000_000.0


class MemoryCatalog:
    """A small real item index: exact inner-product search over a matrix; counts searches."""

    def __init__(self, items: dict[str, np.ndarray], titles: dict[str, str]) -> None:
        self._ids = list(items)
        self._rows = {item_id: row for row, item_id in enumerate(self._ids)}
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in items.values()])
        self._matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        self._titles = titles
        self.search_calls: list[tuple[int, int]] = []  # (number of queries, k) per call

    @property
    def dim(self) -> int:
        return self._matrix.shape[1]

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.search_calls.append((queries.shape[0], k))
        scores = queries.astype(np.float32) @ self._matrix.T
        rows = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, len(self))]
        return np.take_along_axis(scores, rows, axis=1), rows.astype(np.int64)

    def item_id_at(self, row: int) -> str:
        return self._ids[row]

    def row_of(self, item_id: str) -> int | None:
        return self._rows.get(item_id)

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self._rows.get(item_id)
        return None if row is None else self._matrix[row]

    def vectors_of(self, item_ids: Sequence[str]) -> tuple[list[int], np.ndarray]:
        found = [i for i, item_id in enumerate(item_ids) if item_id in self._rows]
        return found, self._matrix[[self._rows[item_ids[i]] for i in found]]

    def title_of(self, item_id: str) -> str | None:
        return self._titles.get(item_id)


def _direction(axis: int, wobble: float) -> np.ndarray:
    v = np.full(DIM, 0.01, dtype=np.float32)
    v[axis] = 1.0
    v[(axis + 1) % DIM] = wobble
    return v


def _catalog() -> MemoryCatalog:
    """Three genres on three axes, five items each; only some items have titles."""
    items = {
        f"{genre}{i}": _direction(axis, 0.05 * i)
        for axis, genre in enumerate("abc")
        for i in range(5)
    }
    titles = {"a0": "Star Wars (1977)", "b0": "Fargo (1996)", "a1": "Return of the Jedi (1983)"}
    return MemoryCatalog(items, titles)


def _user(catalog: MemoryCatalog, *events: tuple[str, EventType]) -> InterestState:
    observations = [
        Observation(Event(f"e{n}-{item}", "u", item, kind, T0 + n), catalog.vector(item))
        for n, (item, kind) in enumerate(events)
    ]
    state, _ = update(InterestState.empty(DIM), observations, UpdateParams())
    return state


def test_seen_items_are_filtered_and_k_remain() -> None:
    catalog = _catalog()
    user = _user(
        catalog, ("a0", EventType.CLICK), ("a1", EventType.CLICK), ("a2", EventType.BROWSE)
    )
    [recs] = rank([user], catalog, k=4)
    ids = [r.item_id for r in recs]
    assert len(ids) == 4
    assert not set(ids) & {"a0", "a1", "a2"}
    assert set(ids[:2]) == {"a3", "a4"}  # the unseen rest of the genre comes first
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


def test_seen_items_stay_when_asked() -> None:
    catalog = _catalog()
    user = _user(catalog, ("a0", EventType.CLICK))
    [recs] = rank([user], catalog, k=3, exclude_seen=False)
    assert recs[0].item_id == "a0"


def test_small_catalog_returns_what_is_unseen() -> None:
    catalog = _catalog()
    user = _user(catalog, *((f"{g}{i}", EventType.CLICK) for g in "ab" for i in range(5)))
    [recs] = rank([user], catalog, k=10)
    assert sorted(r.item_id for r in recs) == [f"c{i}" for i in range(5)]


def test_many_users_cost_one_search_and_empty_users_get_nothing() -> None:
    catalog = _catalog()
    users = [
        _user(catalog, ("a0", EventType.CLICK)),
        InterestState.empty(DIM),
        _user(catalog, ("b0", EventType.CLICK), ("b1", EventType.BROWSE)),
        _user(catalog, ("c2", EventType.COMMENT)),
    ]
    results = rank(users, catalog, k=3)
    assert len(catalog.search_calls) == 1
    assert catalog.search_calls[0] == (3, 3 + 2)  # three queries, k plus the largest seen set
    assert results[1] == []
    assert [r.item_id[0] for r in results[0]] == ["a", "a", "a"]
    assert [r.item_id[0] for r in results[2]] == ["b", "b", "b"]
    assert [r.item_id[0] for r in results[3]] == ["c", "c", "c"]


def test_only_empty_users_do_not_search() -> None:
    catalog = _catalog()
    assert rank([InterestState.empty(DIM)] * 2, catalog) == [[], []]
    assert catalog.search_calls == []


def test_reason_names_the_most_similar_recent_item_and_the_verb() -> None:
    catalog = _catalog()
    user = _user(
        catalog,
        ("a0", EventType.CLICK),
        ("b0", EventType.COMMENT),
        ("b0", EventType.BROWSE),
        ("c0", EventType.BROWSE),
    )
    [recs] = rank([user], catalog, k=12)
    reasons = {r.item_id: r.reason for r in recs}
    assert reasons["a3"] == 'because you clicked "Star Wars (1977)"'
    assert reasons["b2"] == 'because you commented on "Fargo (1996)"'  # strongest of b0's events
    assert reasons["c4"] == 'because you browsed "c0"'  # untitled: falls back to the item id


def test_bad_arguments_are_errors() -> None:
    with pytest.raises(DimensionError):
        rank([InterestState.empty(DIM + 1)], _catalog())
    with pytest.raises(ParamsError, match="k"):
        rank([InterestState.empty(DIM)], _catalog(), k=0)
    with pytest.raises(ParamsError, match="long_weight"):
        rank([_user(_catalog(), ("a0", EventType.CLICK))], _catalog(), long_weight=2.0)


def test_nearest_titles_summarises_interest_including_seen() -> None:
    catalog = _catalog()
    user = _user(catalog, ("a0", EventType.CLICK), ("a1", EventType.CLICK))
    titles = nearest_titles(user, catalog, k=3)
    assert set(titles[:2]) == {"Star Wars (1977)", "Return of the Jedi (1983)"}
    assert titles[2] == "a2"
    assert nearest_titles(InterestState.empty(DIM), catalog) == []
