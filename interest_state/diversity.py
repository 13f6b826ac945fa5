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

__all__ = ["MMR_LAMBDA", "mmr", "mmr_rerank"]

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
