"""Ranking with a sequence model: long-term and short-term scores, standardised and blended.

For each user ``score = w * z(long) + (1 - w) * z(short)`` over the catalog, where

* ``long = long_term @ long_items.T``: the state's long-term vector (a sequence model's user
  vector, in that model's own item space) against the model's item matrix, aligned row for row
  with the catalog (:class:`LongTermItems`);
* ``short = unit(short_term) @ catalog.T``: the short-term vector against the text item matrix;
* ``z`` standardises each user's row over the candidate items (mean 0, std 1), candidates being
  the items not filtered as seen (and, for ``long``, those with a long-term item vector).

It falls back, never fails: a user without a usable long-term vector (none, another model
version, another length, all zeros) is ranked by ``z(short)`` alone, and so is a catalog item
without a long-term item vector. A batch costs one matrix product for each of the two scores.
The explanation and the seen filter are those of :func:`interest_state.rank`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .arrays import FloatVector, inner_products, unit
from .errors import DimensionError, ParamsError
from .rank import Catalog, Recommendation, explain
from .state import InterestState

__all__ = ["BlendCatalog", "LongTermItems", "rank_blended"]

_EPS = 1e-12


class BlendCatalog(Catalog, Protocol):
    """The item index as blended ranking sees it: :class:`Catalog` plus row lookup."""

    def row_of(self, item_id: str) -> int | None: ...


@runtime_checkable
class _FullScores(Protocol):
    """A catalog that can return raw scores in row order (no sorting): the fast path."""

    def scores(self, queries: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True, slots=True, eq=False)
class LongTermItems:
    """A sequence model's item vectors, aligned row for row with the catalog.

    ``vectors[r]`` belongs to the catalog's row ``r`` when ``known[r]``; rows that are not
    known, or beyond ``len(vectors)``, have no long-term vector (their content is ignored).
    ``version`` names the model: a state's long-term vector counts only when it was made by
    the same version.
    """

    version: str
    vectors: npt.NDArray[np.float32]
    known: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[1] < 1:
            raise DimensionError(f"long-term items must be [n, dim], got {self.vectors.shape}")
        if self.known.shape != (self.vectors.shape[0],):
            raise DimensionError(
                f"known has shape {self.known.shape}, expected ({self.vectors.shape[0]},)"
            )

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def long_query(self, state: InterestState) -> FloatVector | None:
        """The state's long-term vector when it is usable with these items, else ``None``."""
        if state.long_term is None or state.long_term_version != self.version:
            return None
        if state.long_dim != self.dim:
            return None
        return unit(state.long_term)


def rank_blended(
    states: Sequence[InterestState],
    catalog: BlendCatalog,
    long_items: LongTermItems | None,
    k: int = 10,
    *,
    weight: float = 0.95,
    exclude_seen: bool = True,
    hide: Sequence[Collection[str]] | None = None,
) -> list[list[Recommendation]]:
    """Top-``k`` recommendations per state by the blended score (see the module docstring).

    ``weight`` is the share of the long-term score. States with neither a short-term nor a
    usable long-term vector get ``[]``; with ``exclude_seen``, items in a state's history ring
    are never recommended. ``hide`` (one collection per state) removes more items from the
    result without changing the standardisation: the result is the unhidden ranking with those
    items taken out (the offline evaluator hides context items the ring no longer holds).
    Scores in the result are the blended standardised scores.
    """
    check_blend_args(states, k, weight, hide)
    short_q, long_q = blend_queries(states, catalog, long_items)
    users = sorted(set(short_q) | set(long_q))
    results: list[list[Recommendation]] = [[] for _ in states]
    if not users or len(catalog) == 0:
        return results
    short = _short_scores(catalog, short_q, users)
    n = short.shape[1]
    candidate = np.isfinite(short)
    if exclude_seen:
        candidate &= ~_rows_mask([states[i].seen_items() for i in users], catalog, n)
    blend = _standardise(short, candidate)
    if long_items is not None and long_q:
        long = _long_scores(long_items, long_q, users, n)
        long_ok = candidate & np.isfinite(long)
        z_long = _standardise(long, long_ok)
        blend = np.where(long_ok, weight * z_long + (1.0 - weight) * blend, blend)
    blend = np.where(candidate, blend, -np.inf)
    if hide is not None:
        blend[_rows_mask([hide[i] for i in users], catalog, n)] = -np.inf
    for n_user, i in enumerate(users):
        picked = _top(blend[n_user], catalog, k)
        results[i] = explain(states[i], catalog, picked)
    return results


def check_blend_args(
    states: Sequence[InterestState],
    k: int,
    weight: float,
    hide: Sequence[Collection[str]] | None,
) -> None:
    if k < 1:
        raise ParamsError(f"k must be >= 1, got {k}")
    if hide is not None and len(hide) != len(states):
        raise ParamsError(f"hide has {len(hide)} entries for {len(states)} states")
    if not 0.0 <= weight <= 1.0:
        raise ParamsError(f"weight must be in [0, 1], got {weight!r}")


def blend_queries(
    states: Sequence[InterestState], catalog: Catalog, long_items: LongTermItems | None
) -> tuple[dict[int, FloatVector], dict[int, FloatVector]]:
    short: dict[int, FloatVector] = {}
    long: dict[int, FloatVector] = {}
    for i, state in enumerate(states):
        if state.dim != catalog.dim:
            raise DimensionError(f"state dim {state.dim} differs from catalog dim {catalog.dim}")
        vector = unit(state.short_term)
        if vector is not None:
            short[i] = vector
        query = long_items.long_query(state) if long_items is not None else None
        if query is not None:
            long[i] = query
    return short, long


def _short_scores(
    catalog: Catalog, queries: dict[int, FloatVector], users: Sequence[int]
) -> npt.NDArray[np.float64]:
    """[len(users), n] short-term scores in catalog row order; 0 for a user without a query,
    NaN for a row the catalog did not score. One matrix product."""
    matrix = np.stack([queries.get(i, np.zeros(catalog.dim, np.float32)) for i in users])
    if isinstance(catalog, _FullScores):
        return np.asarray(catalog.scores(matrix), dtype=np.float64)
    found, rows = catalog.search(matrix, len(catalog))
    width = max(len(catalog), int(rows.max()) + 1 if rows.size else 0)
    out = np.full((len(users), width), np.nan, dtype=np.float64)
    valid = rows >= 0
    user_index = np.broadcast_to(np.arange(len(users))[:, None], rows.shape)
    out[user_index[valid], rows[valid]] = found[valid]
    return out


def _long_scores(
    items: LongTermItems, queries: dict[int, FloatVector], users: Sequence[int], n: int
) -> npt.NDArray[np.float64]:
    """[len(users), n] long-term scores; NaN for users without a query and rows without a
    vector. One matrix product."""
    out = np.full((len(users), n), np.nan, dtype=np.float64)
    have = [n_user for n_user, i in enumerate(users) if i in queries]
    rows = min(n, items.vectors.shape[0])
    if not have or rows == 0:
        return out
    query = np.stack([queries[users[n_user]] for n_user in have])
    # A row's score depends on that row alone, so rows that are not known (whatever they
    # hold, NaN included) are scored with the rest and then overwritten: no masked copy.
    with np.errstate(invalid="ignore", over="ignore"):
        scores = inner_products(query, items.vectors[:rows])
    scores[:, ~items.known[:rows]] = np.nan
    out[np.asarray(have), :rows] = scores
    return out


def _rows_mask(
    item_sets: Sequence[Collection[str]], catalog: BlendCatalog, n: int
) -> npt.NDArray[np.bool_]:
    """[len(item_sets), n]: true at the catalog rows of each set's items."""
    mask = np.zeros((len(item_sets), n), dtype=bool)
    for n_user, item_ids in enumerate(item_sets):
        rows = [catalog.row_of(item_id) for item_id in item_ids]
        mask[n_user, [r for r in rows if r is not None and r < n]] = True
    return mask


def _standardise(
    scores: npt.NDArray[np.float64], candidate: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Per row ``(x - mean) / std`` over the candidate entries; other entries are 0."""
    count = np.maximum(candidate.sum(axis=1, keepdims=True), 1)
    values = np.where(candidate, scores, 0.0)
    mean = values.sum(axis=1, keepdims=True) / count
    centred = np.where(candidate, scores - mean, 0.0)
    std = np.sqrt((centred**2).sum(axis=1, keepdims=True) / count)
    out: npt.NDArray[np.float64] = centred / np.maximum(std, _EPS)
    return out


def _top(row: npt.NDArray[np.float64], catalog: Catalog, k: int) -> list[tuple[str, float]]:
    """The ``k`` best finite entries of ``row``, best first (ties by row)."""
    finite = np.flatnonzero(np.isfinite(row))
    if finite.size == 0:
        return []
    take = min(k, finite.size)
    part = finite[np.argpartition(-row[finite], take - 1)[:take]]
    order = part[np.lexsort((part, -row[part]))]
    return [(catalog.item_id_at(int(r)), float(row[r])) for r in order]
