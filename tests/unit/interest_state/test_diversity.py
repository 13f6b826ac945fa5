"""MMR re-ranking: hand-worked orders, the lam = 1 / lam = 0 extremes, properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from interest_state import DimensionError, ParamsError, Recommendation, mmr, mmr_batch, mmr_rerank

# a and b point the same way, c is orthogonal to both, d is opposite to a.
VECTORS = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
SCORES = np.array([1.0, 0.9, 0.5, 0.0])


def test_hand_computed_order() -> None:
    # rel = [1, .9, .5, 0]. lam = .5: a first; then b .45-.5=-.05, c .25-0=.25, d 0+.5=.5 -> d;
    # then b .45-.5 (max(cos b,a)=1), c .25-0 -> c; then b.
    assert mmr(SCORES, VECTORS, 4, 0.5).tolist() == [0, 3, 2, 1]
    # lam = .8: a; b .72-.2=.52, c .4, d 0+.2=.2 -> b; c .4, d .2 -> c; d.
    assert mmr(SCORES, VECTORS, 4, 0.8).tolist() == [0, 1, 2, 3]
    # lam = .6: a; b .54-.4=.14, c .3, d .4 -> d; b .14, c .3 -> c; b.
    assert mmr(SCORES, VECTORS, 2, 0.6).tolist() == [0, 3]


def test_lam_one_is_the_relevance_order_and_lam_zero_the_most_diverse() -> None:
    assert mmr(SCORES, VECTORS, 4, 1.0).tolist() == [0, 1, 2, 3]
    # lam = 0: most relevant first (a), then the least similar to a (d, cos -1), then c
    # (max cos 0 against a and d) before b (cos 1 with a).
    assert mmr(SCORES, VECTORS, 4, 0.0).tolist() == [0, 3, 2, 1]


def test_ties_go_to_the_higher_raw_score_then_the_earlier_candidate() -> None:
    same = np.array([[1.0, 0.0]] * 3)
    assert mmr([0.2, 0.2, 0.2], same, 3, 0.5).tolist() == [0, 1, 2]
    # Min-max scaling rounds 1.0 and the next float up to the same value next to -1e17:
    # the raw score still decides.
    close = [1.0, float(np.nextafter(1.0, 2.0)), -1e17]
    assert mmr(close, same, 3, 1.0).tolist() == [1, 0, 2]
    assert mmr(close, same, 3, 0.5).tolist() == [1, 0, 2]


def test_zero_vector_is_similar_to_nothing_and_k_beyond_n_gives_all() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    assert mmr([1.0, 0.8, 0.5], vectors, 10, 0.5).tolist() == [0, 2, 1]


@pytest.mark.parametrize(
    ("scores", "vectors", "k", "lam", "error"),
    [
        ([1.0], [[1.0]], 0, 0.5, ParamsError),
        ([1.0], [[1.0]], 1, 1.5, ParamsError),
        ([1.0], [[1.0]], 1, -0.1, ParamsError),
        ([np.nan], [[1.0]], 1, 0.5, ParamsError),
        ([1.0], [[np.inf]], 1, 0.5, ParamsError),
        ([1.0, 2.0], [[1.0]], 1, 0.5, DimensionError),
        ([1.0], [1.0], 1, 0.5, DimensionError),
    ],
)
def test_bad_arguments_are_refused(scores, vectors, k, lam, error) -> None:
    with pytest.raises(error):
        mmr(scores, vectors, k, lam)


class TinyCatalog:
    dim = 2

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self._vectors = {k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()}

    def vectors_of(self, item_ids):
        found = [n for n, i in enumerate(item_ids) if i in self._vectors]
        rows = [self._vectors[item_ids[n]] for n in found]
        return found, np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)


def test_mmr_rerank_keeps_scores_and_reasons_and_treats_unknown_items_as_dissimilar() -> None:
    catalog = TinyCatalog({"a": [1, 0], "b": [1, 0], "c": [0, 1]})
    recs = [Recommendation(i, s, f"why {i}") for i, s in
            [("a", 3.0), ("b", 2.0), ("gone", 1.5), ("c", 1.0)]]  # fmt: skip
    out = mmr_rerank(recs, catalog, 3, 0.5)  # type: ignore[arg-type]
    # rel = [1, .5, .25, 0]: a; b .25-.5, gone .125-0, c 0-0 -> gone; then c 0 beats b -.25.
    assert [r.item_id for r in out] == ["a", "gone", "c"]
    assert out[1] is recs[2]
    assert mmr_rerank(recs, catalog, 4, 1.0) == recs  # type: ignore[arg-type]
    assert mmr_rerank([], catalog, 3, 0.5) == []  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@st.composite
def candidates(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, float]:
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 5))
    scores = draw(arrays(np.float64, n, elements=finite))
    vectors = draw(arrays(np.float64, (n, d), elements=finite))
    return scores, vectors, draw(st.integers(1, 15)), draw(st.floats(0.0, 1.0))


@settings(max_examples=150, deadline=None)
@given(candidates())
def test_never_repeats_gives_min_k_n_and_is_deterministic(case) -> None:
    scores, vectors, k, lam = case
    order = mmr(scores, vectors, k, lam)
    assert len(order) == min(k, len(scores))
    assert len(set(order.tolist())) == len(order)
    assert order[0] == int(np.lexsort((np.arange(len(scores)), -scores))[0])
    assert mmr(scores.copy(), vectors.copy(), k, lam).tolist() == order.tolist()
    longer = mmr(scores, vectors, len(scores), lam)
    assert longer[: len(order)].tolist() == order.tolist()  # prefix-consistent


@settings(max_examples=150, deadline=None)
@given(candidates())
def test_lam_one_is_the_stable_relevance_sort(case) -> None:
    scores, vectors, k, _ = case
    expected = np.lexsort((np.arange(len(scores)), -scores))[:k]
    assert mmr(scores, vectors, k, 1.0).tolist() == expected.tolist()


@settings(max_examples=150, deadline=None)
@given(candidates())
def test_lam_zero_picks_the_least_similar_candidate_each_step(case) -> None:
    scores, vectors, k, _ = case
    order = mmr(scores, vectors, k, 0.0).tolist()
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    sims = unit @ unit.T
    for step in range(1, len(order)):
        picked, rest = order[:step], [i for i in range(len(scores)) if i not in order[:step]]
        closeness = {i: max(sims[i, j] for j in picked) for i in rest}
        assert closeness[order[step]] <= min(closeness.values()) + 1e-9


def test_lam_zero_maximises_the_smallest_distance_on_a_small_exhaustive_case() -> None:
    angles = np.deg2rad([0, 10, 90, 100, 180])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    order = mmr([5, 4, 3, 2, 1], vectors, 3, 0.0).tolist()
    assert order == [0, 4, 2]  # 0 deg, then 180 deg, then 90 deg: pairwise >= 90 deg apart
    best = max(
        min(1 - vectors[i] @ vectors[j] for i, j in itertools.combinations((0, *rest), 2))
        for rest in itertools.combinations(range(1, 5), 2)
    )
    assert min(1 - vectors[i] @ vectors[j] for i, j in itertools.combinations(order, 2)) == (
        pytest.approx(best)
    )


def test_the_batched_mmr_lists_each_user_as_mmr_does() -> None:
    """Users with different candidate counts (``-inf`` padding) in one call get what ``mmr``
    gives each of them alone, for every lambda."""
    rng = np.random.default_rng(7)
    for lam in (0.0, 0.3, 0.5, 1.0):
        lengths = [0, 1, 5, 12, 12]
        scores = np.full((len(lengths), 12), -np.inf)
        vectors = rng.normal(size=(len(lengths), 12, 6))
        for user, n in enumerate(lengths):
            scores[user, :n] = rng.normal(size=n)
        batched = mmr_batch(scores, vectors, 8, lam)
        for user, n in enumerate(lengths):
            alone = mmr(scores[user, :n], vectors[user, :n], 8, lam).tolist() if n else []
            assert [int(i) for i in batched[user] if i >= 0] == alone


def test_the_batched_mmr_refuses_bad_input() -> None:
    with pytest.raises(ParamsError):
        mmr_batch([[np.nan, 1.0]], np.zeros((1, 2, 3)), 2, 0.5)
    with pytest.raises(DimensionError):
        mmr_batch([[1.0, 1.0]], np.zeros((1, 3, 3)), 2, 0.5)
    with pytest.raises(ParamsError):
        mmr_batch([[1.0]], np.zeros((1, 1, 3)), 0, 0.5)
