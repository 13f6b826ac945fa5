"""Ranking over candidate rows from approximate indexes: the large-catalog path.

:func:`rank_blended` and :func:`rank` score every catalog row for every user (``m x n x d`` per
batch). Here each user's items are only the *candidates*: the best ``candidates`` rows of the
short-term query from one index and of the long-term query from another (any
:class:`CandidateSource`, e.g. ``encoders.index.ann.AnnIndex``), and every row an index has not
synced yet (scored exactly, so a new item is recommendable at once). Candidates are scored
exactly, blended, filtered and explained as :func:`rank_blended` does.

The standardisation is exact without scoring the catalog. Over any set of rows the mean of
``q . x`` is ``q . sum(x) / count`` and its variance ``q^T sum(x x^T) q / count - mean^2``: an
index gives those sums for the rows it holds (:class:`MomentsLike`), the unsynced rows add
their exact scores, and a user's seen rows (scored exactly too) are taken out, so mean and
std are those :func:`rank_blended` computes over the same candidate items. Hence the result
*is* :func:`rank_blended`'s whenever the candidates hold its top ``k`` (tested with candidates
that cover the catalog); how often they do at scale is the recall the benchmark reports
(:mod:`streams.bench.ann`). One difference remains: an index's sums are over the vectors it
synced, so a row replaced in the catalog since then counts with its old vector (1 row in n).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .arrays import FloatVector
from .blend import BlendCatalog, LongTermItems, blend_queries, check_blend_args
from .errors import ParamsError
from .rank import Catalog, Recommendation, explain, interest_queries
from .state import InterestState

__all__ = [
    "CandidateSet",
    "CandidateSource",
    "MomentsLike",
    "VectorCatalog",
    "rank_approx",
    "rank_blended_approx",
]

Rows = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
_EPS = 1e-12


class MomentsLike(Protocol):
    """``count`` vectors, their sum ``total`` (dim,) and sum of outer products ``outer``."""

    @property
    def count(self) -> int: ...
    @property
    def total(self) -> Floats: ...
    @property
    def outer(self) -> Floats: ...


class CandidateSet(Protocol):
    """One search: ``rows`` (m, c) best first, -1 for none; the index held the live vectors of
    rows ``[0, covered)`` of source ``version``, whose sums are ``moments``."""

    @property
    def rows(self) -> Rows: ...
    @property
    def covered(self) -> int: ...
    @property
    def moments(self) -> MomentsLike: ...
    @property
    def version(self) -> str: ...


class CandidateSource(Protocol):
    def candidates(self, queries: npt.NDArray[np.float32], count: int) -> CandidateSet: ...


class VectorCatalog(BlendCatalog, Protocol):
    """A catalog that lends its item matrix (rows ``[0, len)``, read-only, no copy)."""

    def vectors_view(self) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True, slots=True, eq=False)
class _Space:
    """One score space for a batch of users: their queries against ``vectors`` (rows without
    a vector: not ``known``), their candidate ``rows``, and the mean and std of their scores
    over the space's candidate items (every known row, seen ones taken out)."""

    queries: npt.NDArray[np.float32]
    vectors: npt.NDArray[np.float32]
    known: npt.NDArray[np.bool_] | None
    rows: Rows
    mean: Floats
    std: Floats

    def scores(self, rows: Rows) -> Floats:
        return _scores_at(self.queries, self.vectors, self.known, rows)

    def z(self, rows: Rows) -> Floats:
        return (self.scores(rows) - self.mean[:, None]) / np.maximum(self.std, _EPS)[:, None]


def rank_blended_approx(
    states: Sequence[InterestState],
    catalog: VectorCatalog,
    long_items: LongTermItems | None,
    short_index: CandidateSource | None,
    long_index: CandidateSource | None,
    k: int = 10,
    *,
    weight: float = 0.95,
    exclude_seen: bool = True,
    hide: Sequence[Collection[str]] | None = None,
    candidates: int = 256,
) -> list[list[Recommendation]]:
    """:func:`rank_blended` over candidate rows (see the module docstring).

    ``short_index`` holds the catalog's text vectors, ``long_index`` ``long_items``' vectors
    (an index of another version, or ``None``, is not searched: every row then counts as not
    synced and is scored exactly). ``candidates`` rows are asked of each index per user.
    """
    check_blend_args(states, k, weight, hide)
    if candidates < 1:
        raise ParamsError(f"candidates must be >= 1, got {candidates}")
    short_q, long_q = blend_queries(states, catalog, long_items)
    users = sorted(set(short_q) | set(long_q))
    results: list[list[Recommendation]] = [[] for _ in states]
    vectors = catalog.vectors_view()
    if not users or len(vectors) == 0:
        return results
    n = len(vectors)
    seen = _row_lists([states[i].seen_items() if exclude_seen else () for i in users], catalog, n)
    short = _space(short_index, _stack(short_q, users, catalog.dim), vectors, None, seen,
                   candidates)  # fmt: skip
    if long_items is None or not long_q:
        rows = _union(short.rows)
        blended = short.z(rows)
    else:
        long = _space(long_index, _stack(long_q, users, long_items.dim), long_items.vectors[:n],
                      long_items.known[:n], seen, candidates, long_items.version)  # fmt: skip
        rows = _union(short.rows, long.rows)
        z_short, z_long = short.z(rows), long.z(rows)
        has_long = np.isin(users, list(long_q))[:, None] & np.isfinite(z_long)
        blended = np.where(has_long, weight * z_long + (1.0 - weight) * z_short, z_short)
    if hide is not None:
        seen = np.concatenate([seen, _row_lists([hide[i] for i in users], catalog, n)], axis=1)
    blended[_dropped(rows, seen)] = -np.inf
    for n_user, i in enumerate(users):
        results[i] = explain(states[i], catalog, _top(rows[n_user], blended[n_user], catalog, k))
    return results


def rank_approx(
    states: Sequence[InterestState],
    catalog: VectorCatalog,
    index: CandidateSource | None,
    k: int = 10,
    *,
    long_weight: float = 0.0,
    exclude_seen: bool = True,
    candidates: int = 256,
) -> list[list[Recommendation]]:
    """:func:`rank` over candidate rows of ``index`` (the catalog's text vectors) and the rows
    it has not synced; scores are the raw inner products, as in :func:`rank`."""
    if k < 1 or candidates < 1:
        raise ParamsError(f"k and candidates must be >= 1, got {k}, {candidates}")
    queries = interest_queries(states, catalog, long_weight)
    results: list[list[Recommendation]] = [[] for _ in states]
    vectors = catalog.vectors_view()
    if not queries or len(vectors) == 0:
        return results
    users = list(queries)
    seen = _row_lists([states[i].seen_items() if exclude_seen else () for i in users],
                      catalog, len(vectors))  # fmt: skip
    count = max(candidates, k + seen.shape[1])
    space = _space(index, _stack(queries, users, catalog.dim), vectors, None, seen, count)
    rows = _union(space.rows)
    scores = space.scores(rows)
    scores[_dropped(rows, seen)] = -np.inf
    for n_user, i in enumerate(users):
        results[i] = explain(states[i], catalog, _top(rows[n_user], scores[n_user], catalog, k))
    return results


def _space(
    index: CandidateSource | None,
    queries: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    known: npt.NDArray[np.bool_] | None,
    seen: Rows,
    count: int,
    version: str | None = None,
) -> _Space:
    """Candidates of ``index`` plus the best ``count`` known rows it has not synced (scored
    exactly), and the mean and std of the scores over every known row but the seen ones."""
    n = len(vectors)
    covered, found, (counted, total, outer) = _indexed(index, queries, count, version, vectors)
    tail_rows = covered + (
        np.arange(n - covered) if known is None else np.flatnonzero(known[covered:])
    )
    tail = (queries @ vectors[tail_rows].T).astype(np.float64)
    seen_scores = _scores_at(queries, vectors, known, seen)
    as64 = queries.astype(np.float64)
    left = np.maximum(counted + len(tail_rows) - np.isfinite(seen_scores).sum(axis=1), 1)
    s1 = as64 @ total + tail.sum(axis=1) - np.nansum(seen_scores, axis=1)
    s2 = ((as64 @ outer) * as64).sum(axis=1) + (tail**2).sum(axis=1)
    mean = s1 / left
    var = (s2 - np.nansum(seen_scores**2, axis=1)) / left - mean**2
    take = min(count, len(tail_rows))
    best = tail_rows[np.argpartition(-tail, take - 1, axis=1)[:, :take]] if take else found[:, :0]
    rows = np.concatenate([found, best], axis=1)
    return _Space(queries, vectors, known, rows, mean, np.sqrt(np.maximum(var, 0.0)))


def _indexed(
    index: CandidateSource | None,
    queries: npt.NDArray[np.float32],
    count: int,
    version: str | None,
    vectors: npt.NDArray[np.float32],
) -> tuple[int, Rows, tuple[int, Floats, Floats]]:
    """``covered``, the candidate rows and the moments ``(count, total, outer)`` of ``index``;
    nothing when there is no index or it holds another ``version``."""
    n, dim = vectors.shape
    none = np.empty((len(queries), 0), dtype=np.int64)
    if index is None:
        return 0, none, (0, np.zeros(dim), np.zeros((dim, dim)))
    answer = index.candidates(queries, count)
    if version is not None and answer.version != version:
        return 0, none, (0, np.zeros(dim), np.zeros((dim, dim)))
    moments = answer.moments
    rows = np.where(answer.rows < n, answer.rows, -1)  # the index may be ahead of the snapshot
    return min(answer.covered, n), rows, (moments.count, moments.total, moments.outer)


def _scores_at(
    queries: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    known: npt.NDArray[np.bool_] | None,
    rows: Rows,
) -> Floats:
    """[users, c] exact scores at ``rows``; NaN at -1, beyond the vectors, or not known."""
    ok = (rows >= 0) & (rows < len(vectors))
    safe = np.where(ok, rows, 0)
    if known is not None:
        ok &= known[safe]
    raw = np.matmul(vectors[safe], queries[:, :, None])[:, :, 0].astype(np.float64)
    return np.where(ok, raw, np.nan)


def _stack(
    queries: dict[int, FloatVector], users: Sequence[int], dim: int
) -> npt.NDArray[np.float32]:
    """[len(users), dim] float32: each user's query, zeros for a user without one."""
    zero = np.zeros(dim, dtype=np.float32)
    return np.stack([queries.get(i, zero) for i in users]).astype(np.float32)


def _row_lists(item_sets: Sequence[Collection[str]], catalog: BlendCatalog, n: int) -> Rows:
    """[len(item_sets), widest] catalog rows of each set's items (below ``n``), -1 padded."""
    lists = [
        [r for r in (catalog.row_of(item_id) for item_id in items) if r is not None and r < n]
        for items in item_sets
    ]
    out = np.full((len(lists), max(map(len, lists), default=0)), -1, dtype=np.int64)
    for n_user, rows in enumerate(lists):
        out[n_user, : len(rows)] = rows
    return out


def _union(*parts: Rows) -> Rows:
    """Per user, the rows of all ``parts`` once each, -1 padded on the left (as few as the
    user with the most rows needs)."""
    rows = np.sort(np.concatenate(parts, axis=1), axis=1)
    repeat = np.zeros(rows.shape, dtype=bool)
    repeat[:, 1:] = rows[:, 1:] == rows[:, :-1]
    rows[repeat] = -1
    rows.sort(axis=1)
    width = int((rows >= 0).sum(axis=1).max(initial=0))
    return rows[:, rows.shape[1] - width :]


def _dropped(rows: Rows, excluded: Rows) -> npt.NDArray[np.bool_]:
    """True where ``rows`` is -1 or one of that user's ``excluded`` rows."""
    hit = (rows[:, :, None] == excluded[:, None, :]).any(axis=2) if excluded.size else False
    return (rows < 0) | hit


def _top(rows: Rows, scores: Floats, catalog: Catalog, k: int) -> list[tuple[str, float]]:
    """The ``k`` best finite ``scores``' rows, best first (ties by row)."""
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.lexsort((rows[finite], -scores[finite]))][:k]
    return [(catalog.item_id_at(int(rows[j])), float(scores[j])) for j in order]
