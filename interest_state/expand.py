"""Interest expansion: candidates from each interest, dislikes pushed down, exploration.

Three steps between the ranking and the list (``streams.worker.lists`` runs them for a batch;
the offline evaluation runs the same functions):

* :func:`interest_hits` and :func:`fuse_interests`: besides the ranking's own candidates (the
  Transformer's blend), each of the user's interest centroids brings its nearest unseen items,
  ``INTEREST_CANDIDATES`` in all, split in proportion to the interests' weights. The lists are
  merged by weighted reciprocal-rank fusion (Cormack et al., 2009): an item's score is
  ``(1 - share) / (60 + rank in the ranking) + share * w_j / (60 + rank in interest j)`` summed
  over the lists it is in, so an item several sources agree on rises, and ``share`` (0: off) is
  the interests' part. Fused scores are on their own scale (about 1/60 at best).
* :func:`push_down_disliked`: candidates close to an item the user disliked lose
  ``cos * span`` of their score (``span``: the candidates' score range), so a near copy of a
  disliked item falls to the bottom and its neighbourhood moves down.
* :func:`explore`: ``n`` slots of the list go to candidates beyond it that carry a tag (genre)
  the user has engaged with least (none, first), ``reason = "explore: <tag>"``; without tags,
  to the candidates least like the list (``"explore: beyond your recent items"``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .errors import ParamsError
from .events import EventType
from .interests import interest_units
from .rank import Catalog, Recommendation
from .state import InterestState

__all__ = [
    "EXPLORE_UNTAGGED",
    "INTEREST_CANDIDATES",
    "explore",
    "fuse_interests",
    "interest_hits",
    "push_down_disliked",
]

INTEREST_CANDIDATES = 30
"""Candidates the interests bring per user, split by their weights."""
EXPLORE_UNTAGGED = "explore: beyond your recent items"
_RRF_K = 60.0


def interest_hits(
    states: Sequence[InterestState], catalog: Catalog, total: int = INTEREST_CANDIDATES
) -> list[list[list[tuple[str, float]]]]:
    """For each state, for each of its interests, its nearest unseen items (``(item_id,
    cosine)``, best first): ``round(total * w_j / sum(w))`` of them, at least one. One catalog
    search for the whole batch."""
    queries: list[npt.NDArray[np.float32]] = []
    wants: list[tuple[int, int]] = []  # (state, count) per query row
    for n, state in enumerate(states):
        if state.n_interests == 0:
            continue
        weights = np.asarray(state.interest_weights)
        counts = np.maximum(1, np.round(total * weights / weights.sum())).astype(int)
        for row, count in zip(interest_units(state), counts, strict=True):
            queries.append(row)
            wants.append((n, int(count)))
    out: list[list[list[tuple[str, float]]]] = [[] for _ in states]
    if not queries or len(catalog) == 0:
        return out
    deepest = max(count + len(states[n].recent_items) for n, count in wants)
    scores, rows = catalog.search(np.stack(queries), min(deepest, len(catalog)))
    for (n, count), row_scores, row_ids in zip(wants, scores, rows, strict=True):
        seen = states[n].seen_items()
        hits: list[tuple[str, float]] = []
        for score, row in zip(row_scores, row_ids, strict=True):
            if row < 0:
                continue
            item_id = catalog.item_id_at(int(row))
            if item_id not in seen:
                hits.append((item_id, float(score)))
                if len(hits) == count:
                    break
        out[n].append(hits)
    return out


def fuse_interests(
    state: InterestState,
    ranked: Sequence[Recommendation],
    hits: Sequence[Sequence[tuple[str, float]]],
    share: float,
    reasons: Mapping[str, str] | None = None,
) -> list[Recommendation]:
    """``ranked`` and the interests' ``hits`` (from :func:`interest_hits`) merged by weighted
    reciprocal-rank fusion (module docstring), best first. An item only an interest brought
    gets the reason in ``reasons`` (else ``""``: the caller explains it)."""
    if not 0.0 <= share <= 1.0:
        raise ParamsError(f"share must be in [0, 1], got {share!r}")
    if share == 0.0 or not hits:
        return list(ranked)
    fused: dict[str, float] = {}
    for rank, rec in enumerate(ranked):
        fused[rec.item_id] = (1.0 - share) / (_RRF_K + rank)
    weights = np.asarray(state.interest_weights[: len(hits)])
    shares = share * weights / weights.sum()
    for interest_share, items in zip(shares, hits, strict=True):
        for rank, (item_id, _) in enumerate(items):
            fused[item_id] = fused.get(item_id, 0.0) + float(interest_share) / (_RRF_K + rank)
    known = {rec.item_id: rec.reason for rec in ranked}
    extra = reasons or {}
    order = sorted(fused, key=lambda item_id: -fused[item_id])
    return [
        Recommendation(item_id, fused[item_id], known.get(item_id, extra.get(item_id, "")))
        for item_id in order
    ]


def push_down_disliked(
    state: InterestState, candidates: Sequence[Recommendation], catalog: Catalog
) -> list[Recommendation]:
    """``candidates`` re-scored and re-sorted with the neighbours of the user's recent
    dislikes pushed down (module docstring); unchanged without dislikes."""
    disliked = state.disliked_items()
    if not disliked or not candidates:
        return list(candidates)
    _, bad = catalog.vectors_of(list(disliked))
    found, vectors = catalog.vectors_of([r.item_id for r in candidates])
    if len(bad) == 0 or not found:
        return list(candidates)
    closeness = np.zeros(len(candidates))
    closeness[found] = np.clip(_units(vectors) @ _units(bad).T, 0.0, 1.0).max(axis=1)
    scores = np.array([r.score for r in candidates])
    span = float(scores.max() - scores.min()) or 1.0
    moved = scores - closeness * span
    order = np.lexsort((np.arange(len(candidates)), -moved))
    return [
        Recommendation(candidates[i].item_id, float(moved[i]), candidates[i].reason)
        for i in order
    ]


def explore(
    state: InterestState,
    pool: Sequence[Recommendation],
    listed: Collection[str],
    n: int,
    catalog: Catalog,
    tags: Mapping[str, Sequence[str]] | None = None,
) -> list[Recommendation]:
    """Up to ``n`` exploration picks from ``pool`` (the user's candidates, best first) that are
    not ``listed`` (module docstring). Each pick opens a different tag."""
    if n < 1:
        return []
    rest = [r for r in pool if r.item_id not in listed]
    if not rest:
        return []
    tags = tags or {}
    if any(tags.get(r.item_id) for r in rest):
        return _explore_tags(state, rest, n, tags)
    return _explore_far(rest, listed, n, catalog)


def _explore_tags(
    state: InterestState,
    rest: Sequence[Recommendation],
    n: int,
    tags: Mapping[str, Sequence[str]],
) -> list[Recommendation]:
    touched: Counter[str] = Counter()
    for item_id, kind in zip(state.recent_items, state.recent_types, strict=True):
        if kind != EventType.DISLIKE:
            touched.update(tags.get(item_id, ()))
    picks: list[Recommendation] = []
    opened: set[str] = set()
    # the least-touched tag an item carries, then its place in the pool (relevance)
    ranked = sorted(
        (
            (min(touched[t] for t in item_tags), place, min(item_tags, key=lambda t: touched[t]))
            for place, rec in enumerate(rest)
            if (item_tags := [t for t in tags.get(rec.item_id, ()) if t not in opened])
        )
    )
    for _, place, tag in ranked:
        if tag in opened:
            continue
        rec = rest[place]
        picks.append(Recommendation(rec.item_id, rec.score, f"explore: {tag}"))
        opened.add(tag)
        if len(picks) == n:
            break
    return picks


def _explore_far(
    rest: Sequence[Recommendation], listed: Collection[str], n: int, catalog: Catalog
) -> list[Recommendation]:
    _, on_list = catalog.vectors_of(list(listed))
    found, vectors = catalog.vectors_of([r.item_id for r in rest])
    if not found or len(on_list) == 0:
        return [Recommendation(r.item_id, r.score, EXPLORE_UNTAGGED) for r in rest[:n]]
    closeness = np.ones(len(rest))
    closeness[found] = (_units(vectors) @ _units(on_list).T).max(axis=1)
    order = np.lexsort((np.arange(len(rest)), closeness))[:n]
    return [Recommendation(rest[i].item_id, rest[i].score, EXPLORE_UNTAGGED) for i in order]


def _units(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    matrix = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: npt.NDArray[np.float64] = np.divide(
        matrix, norms, out=np.zeros_like(matrix), where=norms > 0.0
    )
    return out
