"""Blended ranking: z(long-term) and z(short-term) scores, seen filter, fallbacks, one search."""

from __future__ import annotations

import numpy as np
import pytest

from interest_state import (
    DimensionError,
    EventType,
    InterestState,
    LongTermItems,
    ParamsError,
    inner_products,
    rank,
    rank_blended,
)
from tests.unit.interest_state.test_rank import DIM, MemoryCatalog, _catalog, _user

LONG_DIM = 4
VERSION = "seq-test"


def _long_items(catalog: MemoryCatalog, known: np.ndarray | None = None) -> LongTermItems:
    """Item r of the catalog gets a fixed pseudo-random long-term vector."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(len(catalog), LONG_DIM)).astype(np.float32)
    mask = np.ones(len(catalog), dtype=bool) if known is None else known
    return LongTermItems(VERSION, vectors, mask)


def _z(row: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    values = row[candidate]
    return (row - values.mean()) / values.std()


def _with_long(state: InterestState, vector: np.ndarray, version: str = VERSION) -> InterestState:
    return state.with_long_term(vector, version)


def _users(catalog: MemoryCatalog) -> list[InterestState]:
    return [
        _user(catalog, ("a0", EventType.CLICK), ("a1", EventType.BROWSE)),
        InterestState.empty(DIM),
        _user(catalog, ("b0", EventType.COMMENT)),
        _user(catalog, ("c2", EventType.CLICK), ("a4", EventType.CLICK)),
    ]


def test_without_long_term_it_ranks_like_rank() -> None:
    catalog = _catalog()
    users = _users(catalog)
    plain = rank(users, catalog, k=5)
    for long_items in (None, _long_items(catalog)):  # states carry no long-term vector
        blended = rank_blended(users, catalog, long_items, k=5, weight=0.9)
        assert [[r.item_id for r in u] for u in blended] == [[r.item_id for r in u] for u in plain]
        assert [[r.reason for r in u] for u in blended] == [[r.reason for r in u] for u in plain]
    assert blended[1] == []


def test_scores_are_the_weighted_sum_of_standardised_rows() -> None:
    catalog = _catalog()
    items = _long_items(catalog)
    state = _with_long(_user(catalog, ("a0", EventType.CLICK)), np.array([1.0, -0.5, 0.2, 2.0]))
    [recs] = rank_blended([state], catalog, items, k=len(catalog), weight=0.7)
    seen = catalog.row_of("a0")
    candidate = np.arange(len(catalog)) != seen
    short_q = state.short_term / np.linalg.norm(state.short_term)
    long_q = state.long_term / np.linalg.norm(state.long_term)
    short = np.array([short_q @ catalog.vector(catalog.item_id_at(r)) for r in range(len(catalog))])
    expected = 0.7 * _z(items.vectors @ long_q, candidate) + 0.3 * _z(short, candidate)
    got = {r.item_id: r.score for r in recs}
    assert "a0" not in got and len(got) == len(catalog) - 1
    for row in np.flatnonzero(candidate):
        assert got[catalog.item_id_at(int(row))] == pytest.approx(expected[row], abs=1e-4)
    assert [r.score for r in recs] == sorted(got.values(), reverse=True)


def test_weight_one_ranks_by_the_long_term_vector_alone() -> None:
    catalog = _catalog()
    items = _long_items(catalog)
    long_vector = np.array([0.3, 1.0, -0.4, 0.1])
    state = _with_long(_user(catalog, ("a0", EventType.CLICK)), long_vector)
    [recs] = rank_blended([state], catalog, items, k=5, weight=1.0)
    scores = items.vectors @ long_vector
    scores[catalog.row_of("a0")] = -np.inf
    want = [catalog.item_id_at(int(r)) for r in np.argsort(-scores, kind="stable")[:5]]
    assert [r.item_id for r in recs] == want
    assert all(r.reason.startswith("because you ") for r in recs)  # by the recent items


@pytest.mark.parametrize(
    "make",
    [
        lambda s: s.with_long_term(np.ones(LONG_DIM), "another-model"),
        lambda s: s.with_long_term(np.ones(LONG_DIM + 1), VERSION),
        lambda s: s.with_long_term(np.zeros(LONG_DIM), VERSION),
        lambda s: s.with_long_term(None, VERSION),
    ],
    ids=["other-version", "other-length", "zero", "none"],
)
def test_an_unusable_long_term_vector_falls_back_to_short_term(make) -> None:  # type: ignore[no-untyped-def]
    catalog = _catalog()
    state = _user(catalog, ("b1", EventType.CLICK), ("c0", EventType.BROWSE))
    [want] = rank_blended([state], catalog, None, k=6)
    [got] = rank_blended([make(state)], catalog, _long_items(catalog), k=6, weight=0.9)
    assert [r.item_id for r in got] == [r.item_id for r in want]
    assert [r.score for r in got] == pytest.approx([r.score for r in want])


def test_items_without_a_long_term_vector_keep_their_short_term_score() -> None:
    catalog = _catalog()
    known = np.ones(len(catalog), dtype=bool)
    known[catalog.row_of("c3")] = False
    items = _long_items(catalog, known)
    items.vectors[catalog.row_of("c3")] = np.nan  # ignored: the row is not known
    state = _with_long(_user(catalog, ("c0", EventType.CLICK)), np.ones(LONG_DIM))
    [recs] = rank_blended([state], catalog, items, k=len(catalog), weight=0.9)
    [short_only] = rank_blended([state], catalog, None, k=len(catalog))
    got = {r.item_id: r.score for r in recs}
    assert np.isfinite(list(got.values())).all()
    assert got["c3"] == pytest.approx({r.item_id: r.score for r in short_only}["c3"])


def test_a_catalog_longer_than_the_long_term_items_treats_new_rows_as_unknown() -> None:
    catalog = _catalog()
    items = _long_items(catalog)
    short = LongTermItems(VERSION, items.vectors[:5].copy(), items.known[:5].copy())
    state = _with_long(_user(catalog, ("a0", EventType.CLICK)), np.ones(LONG_DIM))
    [recs] = rank_blended([state], catalog, short, k=len(catalog))
    assert len(recs) == len(catalog) - 1  # the rows beyond 5 are still ranked (short-term)


def test_many_users_cost_one_search_and_seen_items_never_come_back() -> None:
    catalog = _catalog()
    items = _long_items(catalog)
    users = [_with_long(u, np.arange(1.0, 5.0)) if u.n_events else u for u in _users(catalog)]
    results = rank_blended(users, catalog, items, k=20, weight=0.9)
    assert len(catalog.search_calls) == 1
    for state, recs in zip(users, results, strict=True):
        assert not state.seen_items() & {r.item_id for r in recs}
        assert len(recs) == (len(catalog) - len(state.seen_items()) if state.n_events else 0)
    unmasked = rank_blended(users[:1], catalog, items, k=20, exclude_seen=False)[0]
    assert {"a0", "a1"} <= {r.item_id for r in unmasked}


class ScoringCatalog(MemoryCatalog):
    """A catalog with the fast path: raw scores in row order, no sorting."""

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return queries.astype(np.float32) @ self._matrix.T


def test_a_catalog_that_returns_raw_scores_is_not_searched() -> None:
    base = _catalog()
    fast = ScoringCatalog({i: base.vector(i) for i in base._ids}, base._titles)
    users = _users(base)
    items = _long_items(base)
    users = [_with_long(u, np.arange(1.0, 5.0)) for u in users]
    slow = rank_blended(users, base, items, k=7)
    quick = rank_blended(users, fast, items, k=7)
    assert fast.search_calls == []
    assert [[(r.item_id, round(r.score, 5)) for r in u] for u in quick] == [
        [(r.item_id, round(r.score, 5)) for r in u] for u in slow
    ]


def test_bad_arguments_are_errors() -> None:
    catalog = _catalog()
    with pytest.raises(ParamsError, match="k"):
        rank_blended([], catalog, None, k=0)
    with pytest.raises(ParamsError, match="weight"):
        rank_blended([], catalog, None, weight=1.5)
    with pytest.raises(DimensionError):
        rank_blended([InterestState.empty(DIM + 1)], catalog, None)
    with pytest.raises(DimensionError):
        LongTermItems(VERSION, np.zeros(4, np.float32), np.ones(4, bool))
    with pytest.raises(DimensionError):
        LongTermItems(VERSION, np.zeros((4, 2), np.float32), np.ones(3, bool))


def test_hidden_items_are_taken_out_without_changing_the_other_scores() -> None:
    catalog = _catalog()
    items = _long_items(catalog)
    users = [_with_long(u, np.arange(1.0, 5.0)) if u.n_events else u for u in _users(catalog)]
    full = rank_blended(users, catalog, items, k=len(catalog), weight=0.8)
    hide = [{"a3", "b2", "nope"}, set(), {"b4"}, {"c0", "c1", "c3"}]
    hidden = rank_blended(users, catalog, items, k=4, weight=0.8, hide=hide)
    for recs, got, gone in zip(full, hidden, hide, strict=True):
        want = [(r.item_id, r.score) for r in recs if r.item_id not in gone][:4]
        assert [(r.item_id, r.score) for r in got] == want
    with pytest.raises(ParamsError, match="hide"):
        rank_blended(users, catalog, items, hide=hide[:2])


@pytest.mark.parametrize("m", [0, 1, 2, 4, 32, 33, 64])
def test_inner_products_match_the_plain_product_either_way_round(m: int) -> None:
    rng = np.random.default_rng(m)
    matrix = rng.standard_normal((300, 48)).astype(np.float32)
    queries = rng.standard_normal((m, 48)).astype(np.float32)
    out = inner_products(queries, matrix)
    assert out.shape == (m, 300) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.allclose(out, queries.astype(np.float64) @ matrix.T.astype(np.float64), atol=1e-4)
