"""Approximate ranking: AnnIndex (IVF-PQ) candidates, exact moments, incremental sync, errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import faiss
import numpy as np
import pytest

from encoders import ConfigurationError, InputError, ItemIndex
from encoders.index.ann import AnnIndex, Moments, limit_ann_threads
from interest_state import (
    DimensionError,
    InterestState,
    LongTermItems,
    ParamsError,
    Recommendation,
    rank,
    rank_blended,
)
from interest_state.blend_ann import rank_approx, rank_blended_approx
from streams.bench.ann_data import (
    VERSION,
    MixedCatalog,
    build_indexes,
    mixture_catalog,
    recall_at,
    synthetic_seeds,
    taste_users,
)


@pytest.fixture(autouse=True)
def _one_faiss_thread() -> Iterator[None]:
    """As in the worker: on a small shared machine an OpenMP pool makes small adds 10x slower."""
    before = faiss.omp_get_max_threads()
    limit_ann_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _world(
    n: int, users: int = 12, seed: int = 0, probes: int = 10_000
) -> tuple[MixedCatalog, ItemIndex, LongTermItems, AnnIndex, AnnIndex, list[InterestState]]:
    """A clustered catalog (every 7th row without a long-term vector), both indexes (scanning
    ``probes`` lists: all by default, so candidates can cover the catalog), users."""
    rng = np.random.default_rng(seed)
    catalog = mixture_catalog(synthetic_seeds(rng, n=200, clusters=10), n, rng)
    index, _, text_ann, _, _ = build_indexes(catalog, min_rows=16, probes=probes)
    known = np.arange(n) % 7 != 3
    long_items = LongTermItems(VERSION, catalog.long, known)
    long_ann = AnnIndex(catalog.long.shape[1], min_rows=16, probes=probes)
    long_ann.sync(long_items.vectors, known, version=VERSION)
    assert text_ann.lists > 1 and long_ann.lists > 1
    assert text_ann.covered == long_ann.covered == n and len(long_ann) == known.sum()
    return catalog, index, long_items, text_ann, long_ann, taste_users(catalog, users, rng)


def _ids(ranked: list[list[Recommendation]]) -> list[list[str]]:
    return [[r.item_id for r in user] for user in ranked]


def _scores(ranked: list[list[Recommendation]]) -> np.ndarray:
    return np.array([[r.score for r in user] for user in ranked])


def test_candidates_covering_the_catalog_rank_exactly_as_rank_blended() -> None:
    _, index, items, text_ann, long_ann, users = _world(400)
    users[1] = users[1].with_long_term(None, VERSION)  # short-term only in a blended batch
    hide = [frozenset({index.item_id_at(r) for r in range(0, 400, 9)})] * len(users)
    exact = rank_blended(users, index, items, k=10, weight=0.8, hide=hide)
    approx = rank_blended_approx(
        users, index, items, text_ann, long_ann, k=10, weight=0.8, hide=hide, candidates=400
    )
    assert _ids(approx) == _ids(exact) and all(len(u) == 10 for u in exact)
    np.testing.assert_allclose(_scores(approx), _scores(exact), atol=1e-5)
    assert [[r.reason for r in u] for u in approx] == [[r.reason for r in u] for u in exact]
    assert _ids(rank_approx(users, index, text_ann, k=10, candidates=400)) == _ids(
        rank(users, index, k=10)
    )


def test_few_candidates_carry_their_full_catalog_z_scores() -> None:
    """The blended score of each returned item is w z(long) + (1-w) z(short) with mean and std
    over every unseen catalog row (known rows for long), though only 8 rows per index were
    scored: the index's moments stand in for the rest."""
    _, index, items, text_ann, long_ann, users = _world(600)
    [recs] = rank_blended_approx(users[:1], index, items, text_ann, long_ann, k=5, candidates=8)
    state = users[0]
    candidate = np.ones(600, dtype=bool)
    candidate[[index.row_of(i) for i in state.seen_items()]] = False
    assert candidate.sum() < 600, "the user has seen items"
    short = index.vectors_view() @ (state.short_term / np.linalg.norm(state.short_term))
    long = items.vectors @ (state.long_term / np.linalg.norm(state.long_term))

    def z(row: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return (row - row[mask].mean()) / row[mask].std()

    z_short, z_long = z(short, candidate), z(long, candidate & items.known)
    expected = np.where(items.known, 0.95 * z_long + 0.05 * z_short, z_short)
    assert len(recs) == 5
    for rec in recs:
        assert rec.score == pytest.approx(expected[index.row_of(rec.item_id)], abs=1e-4)


def test_recall_against_exact_on_a_clustered_catalog() -> None:
    _, index, items, text_ann, long_ann, users = _world(3000, users=24, probes=8)
    exact = rank_blended(users, index, items, k=10)
    approx = rank_blended_approx(users, index, items, text_ann, long_ann, k=10, candidates=128)
    assert recall_at(approx, exact) >= 0.9
    short = rank_approx(users, index, text_ann, k=10, candidates=128)
    assert recall_at(short, rank(users, index, k=10)) >= 0.8


def test_rows_not_synced_yet_are_scored_exactly() -> None:
    catalog, index, items, _, long_ann, users = _world(500)
    text_ann = AnnIndex(index.dim, min_rows=16, probes=10_000)
    assert text_ann.sync(index.vectors_view()[:200]) == 200
    assert text_ann.covered == 200
    target = users[0].short_term / np.linalg.norm(users[0].short_term)
    index.upsert(["new"], ["new"], target[None, :])  # the user's ideal item, not synced
    [recs] = rank_approx(users[:1], index, text_ann, k=3, candidates=8)
    assert recs[0].item_id == "new"
    exact = rank_blended(users, index, items, k=10)
    approx = rank_blended_approx(users, index, items, text_ann, long_ann, k=10, candidates=600)
    assert _ids(approx) == _ids(exact)


def test_an_index_of_another_model_version_is_not_used() -> None:
    _, index, items, text_ann, _, users = _world(300)
    stale = AnnIndex(items.dim, min_rows=16)
    stale.sync(np.zeros_like(items.vectors) + 1.0, version="old-model")
    exact = rank_blended(users, index, items, k=10)
    approx = rank_blended_approx(users, index, items, text_ann, stale, k=10, candidates=300)
    assert _ids(approx) == _ids(exact)


def test_incremental_sync_and_replacement() -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((2000, 24)).astype(np.float32)
    ann = AnnIndex(24, min_rows=800, chunk=256)
    assert ann.sync(vectors[:400]) == 0 and ann.covered == 0, "too few rows to train on"
    assert ann.sync(vectors[:1000]) == 1000 and ann.sync(vectors) == 1000
    assert (ann.covered, len(ann), ann.orphans) == (2000, 2000, 0)
    found = ann.candidates(vectors[[1500, 5]], 5)
    assert list(found.rows[:, 0]) == [1500, 5], "an appended row is found like a trained one"
    np.testing.assert_allclose(found.moments.total, vectors.astype(np.float64).sum(0), rtol=1e-9)
    changed = vectors.copy()
    changed[5] = -vectors[5]
    assert ann.sync(changed, touched=[5, 6]) == 0  # row 6 is unchanged: not re-entered
    assert (len(ann), ann.orphans) == (2000, 1)
    assert ann.candidates(changed[[5]], 3).rows[0, 0] == 5
    assert 5 not in ann.candidates(vectors[[5]], 3).rows, "the old vector no longer finds it"
    # the old vector leaves the moments decoded from its 4-bit codes: close, not exact
    error = ann.candidates(changed[:1], 1).moments.total - changed.astype(np.float64).sum(0)
    assert np.linalg.norm(error) < 0.5 * np.linalg.norm(vectors[5])
    known = np.ones(2000, dtype=bool)
    known[7] = False
    ann.sync(changed, known, touched=[7])
    assert len(ann) == 1999 and 7 not in ann.candidates(changed[[7]], 10).rows
    more = np.concatenate([changed, rng.standard_normal((2100, 24)).astype(np.float32)])
    assert ann.sync(more, np.concatenate([known, np.ones(2100, bool)])) == 4100, "4x: rebuilt"
    assert (len(ann), ann.orphans, ann.covered, ann.lists) == (4099, 0, 4100, 4099 // 64)
    ann.sync(changed[:10], version="v2")
    assert (ann.version, ann.covered, len(ann)) == ("v2", 0, 0), "a new version starts empty"


def test_searches_run_while_a_sync_adds_chunks() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    ann = AnnIndex(16, min_rows=64, growth=100.0, chunk=128)
    ann.sync(vectors[:128])
    seen: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while ann.covered < 3000:
                found = ann.candidates(vectors[:4], 10)
                assert found.rows.max() < found.covered == found.moments.count
                seen.append(found.covered)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    ann.sync(vectors)
    reader.join(timeout=30)
    assert not errors and seen == sorted(seen)


def test_item_index_lends_a_read_only_view() -> None:
    index = ItemIndex(3, capacity=1)
    index.upsert(["a", "b"], ["A", "B"], np.eye(3, dtype=np.float32)[:2])
    view = index.vectors_view()
    assert view.shape == (2, 3) and not view.flags.writeable
    np.testing.assert_array_equal(view[1], [0, 1, 0])


def test_moments_add_and_remove() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    moments = Moments.zero(3).plus(x).plus(x[:1], sign=-1)
    assert moments.count == 3
    np.testing.assert_allclose(moments.outer, x[1:].T.astype(np.float64) @ x[1:])


def test_bad_input_raises_typed_errors() -> None:
    _, index, items, text_ann, long_ann, users = _world(200, users=2)
    with pytest.raises(ConfigurationError):
        AnnIndex(0)
    with pytest.raises(InputError, match="vectors must be"):
        text_ann.sync(np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(InputError, match="NaN"):
        AnnIndex(4, min_rows=1).sync(np.full((3, 4), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="known"):
        long_ann.sync(items.vectors, np.ones(3, dtype=bool), version=VERSION)
    with pytest.raises(InputError, match="touched"):
        text_ann.sync(index.vectors_view(), touched=[200])
    with pytest.raises(InputError, match="queries"):
        text_ann.candidates(np.zeros((1, 5), dtype=np.float32), 3)
    with pytest.raises(ConfigurationError):
        text_ann.candidates(index.vectors_view()[:1], 0)
    with pytest.raises(ParamsError, match="candidates"):
        rank_blended_approx(users, index, items, text_ann, long_ann, candidates=0)
    with pytest.raises(ParamsError, match="k must"):
        rank_blended_approx(users, index, items, text_ann, long_ann, k=0)
    with pytest.raises(ParamsError):
        rank_approx(users, index, text_ann, k=0)
    with pytest.raises(DimensionError):
        rank_approx([InterestState.empty(7)], index, text_ann)
    assert rank_blended_approx([InterestState.empty(index.dim)], index, items, None, None) == [[]]
