"""Diversity: maximal-marginal-relevance (MMR) re-ranking of a ranked candidate list.

Greedy MMR (Carbonell & Goldstein, 1998): from the candidates, pick one at a time the item
that maximises ``lam * rel(i) - (1 - lam) * max_{j picked} cos(v_i, v_j)``. ``rel`` is the
candidates' relevance score min-max scaled to [0, 1] over the candidates (all 0 when they are
equal), so ``lam`` is a unitless share whatever the scorer: :func:`interest_state.rank` gives
cosines, :func:`interest_state.rank_blended` standardised blends. The first pick is always the
most relevant candidate. ``lam = 1`` returns the relevance order; ``lam = 0`` takes, after the
first, the candidate least similar to everything picked so far.

Ties are broken by the raw score (higher first), then by the candidate's position (earlier
first), so the result is a function of the inputs alone. Greedy MMR is prefix-consistent: the
first ``k`` of a longer re-ranking of the same candidates are the re-ranking for ``k``.

:func:`mmr` is the vectorised core (indices into the candidates); :func:`mmr_rerank` applies it
to the :class:`Recommendation` lists that :func:`rank` and :func:`rank_blended` return, with
the catalog's item vectors (items the catalog has no vector for count as similar to nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .errors import DimensionError, ParamsError
from .rank import Catalog, Recommendation

__all__ = ["MMR_LAMBDA", "mmr", "mmr_batch", "mmr_rerank", "mmr_rerank_many"]

MMR_LAMBDA = 0.5
"""Default ``lam``, chosen on the ml-100k validation split (``docs/evaluation.md``, 2026-12-02):
of 0.9 / 0.8 / 0.7 / 0.6 / 0.5 / 0.3 over the served blend's best 50, the one with the highest
intra-list diversity whose NDCG@10 stays within 2 % of no re-ranking (0.3 fell 2.8 % short)."""


def mmr(scores: npt.ArrayLike, vectors: npt.ArrayLike, k: int, lam: float) -> npt.NDArray[np.int64]:
    """Indices of up to ``k`` of the ``n`` candidates in MMR order (see the module docstring).

    ``scores`` is ``(n,)``, finite; ``vectors`` is ``(n, d)``, finite (rows are L2-normalised
    here; an all-zero row is similar to nothing). ``lam`` in [0, 1], ``k >= 1``.
    """
    raw, unit_rows = _checked(scores, vectors, k, lam)
    n = raw.shape[0]
    take = min(k, n)
    order = np.empty(take, dtype=np.int64)
    if take == 0:
        return order
    span = float(raw.max() - raw.min())
    rel = (raw - raw.min()) / span if span > 0.0 else np.zeros(n)
    sims = unit_rows @ unit_rows.T  # (n, n) cosines: one product
    value = rel.copy()  # the first pick: the most relevant
    max_sim = np.zeros(n)
    for step in range(take):
        best = np.flatnonzero(value == value.max())
        pick = int(best[np.argmax(raw[best])])  # ties: higher raw score, then earlier
        order[step] = pick
        max_sim = sims[pick] if step == 0 else np.maximum(max_sim, sims[pick])
        value = lam * rel - (1.0 - lam) * max_sim
        value[order[: step + 1]] = -np.inf
    return order


def mmr_rerank(
    recommendations: Sequence[Recommendation], catalog: Catalog, k: int, lam: float
) -> list[Recommendation]:
    """The best ``k`` of ``recommendations`` (one user's ranked candidates) in MMR order, by
    their ``score`` and the catalog's item vectors; scores and reasons are kept as they are."""
    if not recommendations:
        if k < 1:
            raise ParamsError(f"k must be >= 1, got {k}")
        return []
    found, known = catalog.vectors_of([r.item_id for r in recommendations])
    vectors = np.zeros((len(recommendations), catalog.dim), dtype=np.float64)
    if found:
        vectors[found] = known
    order = mmr([r.score for r in recommendations], vectors, k, lam)
    return [recommendations[int(i)] for i in order]


def mmr_batch(
    scores: npt.ArrayLike, vectors: npt.ArrayLike, k: int, lam: float
) -> npt.NDArray[np.int64]:
    """:func:`mmr` for ``m`` users at once: ``scores`` ``(m, n)`` (``-inf`` marks a padding
    slot of a user with fewer than ``n`` candidates), ``vectors`` ``(m, n, d)``. Returns
    ``(m, min(k, n))`` candidate indices, ``-1`` where a user has run out of candidates; each
    row is what :func:`mmr` returns for that user's real candidates. One batched product for the
    similarities and ``k`` vector steps, instead of a Python loop per user."""
    if k < 1:
        raise ParamsError(f"k must be >= 1, got {k}")
    if not 0.0 <= lam <= 1.0:
        raise ParamsError(f"lam must be in [0, 1], got {lam!r}")
    raw = np.asarray(scores, dtype=np.float64)
    unit_rows = np.array(vectors, dtype=np.float32)  # a copy, normalised in place below
    matrix = unit_rows
    if raw.ndim != 2 or matrix.ndim != 3 or matrix.shape[:2] != raw.shape:
        raise DimensionError(
            f"scores must be (m, n) and vectors (m, n, d), got {raw.shape} and {matrix.shape}"
        )
    real = raw > -np.inf
    unit_rows[~real] = 0.0  # padding slots may hold anything
    if np.isnan(raw).any() or np.isposinf(raw).any() or not np.isfinite(unit_rows).all():
        raise ParamsError("scores and vectors must be finite (-inf only for padding)")
    m, n = raw.shape
    take = min(k, n)
    order = np.full((m, take), -1, dtype=np.int64)
    if take == 0 or m == 0:
        return order
    filled = np.where(real, raw, 0.0)
    low = np.where(real, raw, np.inf).min(axis=1, keepdims=True)
    high = np.where(real, raw, -np.inf).max(axis=1, keepdims=True)
    span = high - low
    safe = np.where(span > 0.0, span, 1.0)
    rel = np.where(real & (span > 0.0), (filled - np.where(real, low, 0.0)) / safe, 0.0)
    norms = np.linalg.norm(unit_rows, axis=2, keepdims=True)
    np.divide(unit_rows, norms, out=unit_rows, where=norms > 0.0)
    unit_rows[(norms <= 0.0)[..., 0]] = 0.0
    users = np.arange(m)
    value = np.where(real, rel, -np.inf)
    max_sim = np.full((m, n), -np.inf)
    open_ = real.copy()
    for step in range(take):
        best = value.max(axis=1, keepdims=True)
        tied = open_ & (value == best)
        # ties: the higher raw score, then the earlier candidate
        tie_raw = np.where(tied, raw, -np.inf)
        pick = np.argmax(tied & (tie_raw == tie_raw.max(axis=1, keepdims=True)), axis=1)
        alive = open_.any(axis=1)
        order[alive, step] = pick[alive]
        open_[users[alive], pick[alive]] = False
        # cosines to the item just picked only: k products of (n, d) by (d,) per user
        chosen = (unit_rows @ unit_rows[users, pick][:, :, None])[..., 0].astype(np.float64)
        max_sim = np.maximum(max_sim, chosen)
        value = np.where(open_, lam * rel - (1.0 - lam) * max_sim, -np.inf)
    return order


def mmr_rerank_many(
    ranked: Sequence[Sequence[Recommendation]], catalog: Catalog, k: int, lam: float
) -> list[list[Recommendation]]:
    """:func:`mmr_rerank` for many users' candidate lists at once (:func:`mmr_batch`): the
    same lists, one vectorised pass (one gather of the item vectors for the whole batch)."""
    if k < 1:
        raise ParamsError(f"k must be >= 1, got {k}")
    width = max((len(r) for r in ranked), default=0)
    if width == 0:
        return [[] for _ in ranked]
    flat = [r.item_id for recs in ranked for r in recs]
    found, known = catalog.vectors_of(flat)
    rows = np.zeros((len(flat), catalog.dim), dtype=np.float32)
    if found:
        rows[found] = known
    scores = np.full((len(ranked), width), -np.inf)
    vectors = np.zeros((len(ranked), width, catalog.dim), dtype=np.float32)
    start = 0
    for user, recs in enumerate(ranked):
        scores[user, : len(recs)] = [r.score for r in recs]
        vectors[user, : len(recs)] = rows[start : start + len(recs)]
        start += len(recs)
    order = mmr_batch(scores, vectors, k, lam)
    return [[recs[int(i)] for i in row if i >= 0] for recs, row in zip(ranked, order, strict=True)]


def _checked(
    scores: npt.ArrayLike, vectors: npt.ArrayLike, k: int, lam: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if k < 1:
        raise ParamsError(f"k must be >= 1, got {k}")
    if not 0.0 <= lam <= 1.0:
        raise ParamsError(f"lam must be in [0, 1], got {lam!r}")
    raw = np.asarray(scores, dtype=np.float64)
    matrix = np.asarray(vectors, dtype=np.float64)
    if raw.ndim != 1 or matrix.ndim != 2 or matrix.shape[0] != raw.shape[0]:
        raise DimensionError(
            f"scores must be (n,) and vectors (n, d), got {raw.shape} and {matrix.shape}"
        )
    if not (np.all(np.isfinite(raw)) and np.all(np.isfinite(matrix))):
        raise ParamsError("scores and vectors must be finite")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit_rows = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0.0)
    return raw, unit_rows
