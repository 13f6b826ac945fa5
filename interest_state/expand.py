"""Interest expansion: candidates from each interest, dislikes pushed down, exploration.

Three steps between the ranking and the list (``streams.worker.lists`` runs them for a batch;
the offline evaluation runs the same functions):

* :func:`interest_hits` and :func:`interest_picks`: besides the ranking's own candidates (the
  Transformer's blend), each of the user's interest centroids brings its nearest unseen items
  (``INTEREST_CANDIDATES`` in all, split by the interests' weights), and ``n`` slots of the
  list go to them, shared out by weight: a user with a strong comedy and a weaker horror
  interest gets both, not only what the blend ranks first. Their scores are the cosines to
  their interest.
* :func:`push_down_disliked`: candidates close to an item the user disliked lose
  ``cos * span`` of their score (``span``: the candidates' score range), so a near copy of a
  disliked item falls to the bottom and its neighbourhood moves down.
* :func:`explore`: ``n`` slots of the list go to the best-ranked candidates beyond it that
  carry a tag (genre) new to the user (on at most :data:`EXPLORE_NEW_SHARE` of their recent
  items), one tag each, ``reason = "explore: <tag>"``; without tags, to the candidates least
  like the list (``"explore: beyond your recent items"``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .arrays import unit_rows
from .events import EventType
from .interests import interest_units
from .rank import Catalog, Recommendation
from .state import InterestState

__all__ = [
    "EXPLORE_UNTAGGED",
    "INTEREST_CANDIDATES",
    "explore",
    "interest_hits",
    "interest_picks",
    "push_down_disliked",
]

EXPLORE_NEW_SHARE = 0.05
"""A tag on at most this share of a user's recent items is new to them (exploration opens it)."""
INTEREST_CANDIDATES = 30
"""Candidates the interests bring per user, split by their weights."""
EXPLORE_UNTAGGED = "explore: beyond your recent items"


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


def interest_picks(
    state: InterestState,
    hits: Sequence[Sequence[tuple[str, float]]],
    taken: Collection[str],
    n: int,
) -> list[Recommendation]:
    """Up to ``n`` items from the user's interests (``hits`` from :func:`interest_hits`),
    none in ``taken``: the slots go to the interests by the largest-remainder split of their
    weights (the heaviest first), each slot to its interest's nearest item not yet listed.
    Reasons are left empty (the caller explains the items like the ranking's)."""
    if n < 1 or not hits:
        return []
    weights = np.asarray(state.interest_weights[: len(hits)], dtype=np.float64)
    quota = n * weights / weights.sum()
    slots = np.floor(quota).astype(int)
    for j in np.argsort(-(quota - slots), kind="stable")[: n - int(slots.sum())]:
        slots[j] += 1
    listed = set(taken)
    picks: list[Recommendation] = []
    for j in np.argsort(-weights, kind="stable"):
        fresh = [(item_id, score) for item_id, score in hits[j] if item_id not in listed]
        for item_id, score in fresh[: slots[j]]:
            picks.append(Recommendation(item_id, score, ""))
            listed.add(item_id)
    return picks


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
    closeness[found] = np.clip(unit_rows(vectors) @ unit_rows(bad).T, 0.0, 1.0).max(axis=1)
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
    in_pool = {t for rec in rest for t in tags.get(rec.item_id, ())}
    if not in_pool:
        return []
    # new to the user: a tag on at most EXPLORE_NEW_SHARE of their recent items (or, when the
    # pool has none such, the least touched of the pool's tags); the best-ranked items first
    known = sum(1 for kind in state.recent_types if kind != EventType.DISLIKE)
    floor = max(EXPLORE_NEW_SHARE * known, min(touched[t] for t in in_pool))
    picks: list[Recommendation] = []
    opened: set[str] = set()
    for rec in rest:
        fresh = [t for t in tags.get(rec.item_id, ()) if touched[t] <= floor and t not in opened]
        if not fresh:
            continue
        tag = min(fresh, key=lambda t: (touched[t], t))
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
    closeness[found] = (unit_rows(vectors) @ unit_rows(on_list).T).max(axis=1)
    order = np.lexsort((np.arange(len(rest)), closeness))[:n]
    return [Recommendation(rest[i].item_id, rest[i].score, EXPLORE_UNTAGGED) for i in order]
