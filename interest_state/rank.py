"""Ranking: score users' interest vectors against a catalog, filter seen items, explain.

The catalog is anything shaped like :class:`Catalog` (``encoders.ItemIndex`` in the stream,
a small in-memory class in the tests). All users of one call are scored with a single
``catalog.search``; each user's explanations cost one small matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .arrays import FloatVector
from .errors import DimensionError, ParamsError
from .events import EventType
from .state import InterestState

_VERBS: dict[int, str] = {  # keyed by EventType, looked up by the int in a state
    EventType.BROWSE: "browsed",
    EventType.CLICK: "clicked",
    EventType.COMMENT: "commented on",
}
FALLBACK_REASON = "close to your recent interests"


class Catalog(Protocol):
    """The item index as ranking sees it."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``(m, dim)`` queries -> scores and rows, each ``(m, min(k, len))``, best first."""
        ...

    def item_id_at(self, row: int) -> str: ...

    def vector(self, item_id: str) -> FloatVector | None: ...

    def vectors_of(self, item_ids: Sequence[str]) -> tuple[list[int], npt.NDArray[np.float32]]:
        """The known ones of ``item_ids``: their positions in ``item_ids``, and their vectors
        stacked in that order (``(0, dim)`` when none is known)."""
        ...

    def title_of(self, item_id: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommended item, its score, and a short human-readable reason."""

    item_id: str
    score: float
    reason: str


def rank(
    states: Sequence[InterestState],
    catalog: Catalog,
    k: int = 10,
    *,
    long_weight: float = 0.0,
    exclude_seen: bool = True,
) -> list[list[Recommendation]]:
    """Top-``k`` recommendations for each state, in the order of ``states``.

    States with no interest vector yet get ``[]``. When ``exclude_seen`` is true, items in a
    state's history ring are never recommended; enough candidates are fetched that ``k``
    remain whenever the catalog holds that many unseen items.
    """
    if k < 1:
        raise ParamsError(f"k must be >= 1, got {k}")
    queries = interest_queries(states, catalog, long_weight)
    results: list[list[Recommendation]] = [[] for _ in states]
    if not queries or len(catalog) == 0:
        return results
    seen = {i: states[i].seen_items() if exclude_seen else frozenset() for i in queries}
    want = min(k + max(len(s) for s in seen.values()), len(catalog))
    scores, rows = catalog.search(np.stack(list(queries.values())), want)
    for n, i in enumerate(queries):
        picked = _pick(scores[n], rows[n], catalog, seen[i], k)
        results[i] = explain(states[i], catalog, picked)
    return results


def nearest_titles(
    state: InterestState, catalog: Catalog, k: int = 5, *, long_weight: float = 0.0
) -> list[str]:
    """Titles (item ids where untitled) of the items nearest the interest; seen ones included."""
    if k < 1:
        raise ParamsError(f"k must be >= 1, got {k}")
    queries = interest_queries([state], catalog, long_weight)
    if not queries or len(catalog) == 0:
        return []
    _, rows = catalog.search(np.stack(list(queries.values())), min(k, len(catalog)))
    ids = [catalog.item_id_at(int(row)) for row in rows[0] if row >= 0]
    return [catalog.title_of(item_id) or item_id for item_id in ids]


def interest_queries(
    states: Sequence[InterestState], catalog: Catalog, long_weight: float
) -> dict[int, FloatVector]:
    """Interest vectors by position in ``states``, for the states that have one."""
    queries: dict[int, FloatVector] = {}
    for i, state in enumerate(states):
        if state.dim != catalog.dim:
            raise DimensionError(f"state dim {state.dim} differs from catalog dim {catalog.dim}")
        vector = state.interest_vector(long_weight)
        if vector is not None:
            queries[i] = vector
    return queries


def _pick(
    scores: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    catalog: Catalog,
    seen: frozenset[str],
    k: int,
) -> list[tuple[str, float]]:
    picked: list[tuple[str, float]] = []
    for score, row in zip(scores, rows, strict=True):
        if row < 0:
            continue
        item_id = catalog.item_id_at(int(row))
        if item_id not in seen:
            picked.append((item_id, float(score)))
            if len(picked) == k:
                break
    return picked


def explain(
    state: InterestState, catalog: Catalog, picked: list[tuple[str, float]]
) -> list[Recommendation]:
    """Name, for each picked item, the user's recent item most similar to it: ``because you
    clicked "<title>"``, or ``matches your comment '<words>'`` when that item is the one of the
    user's latest comment (dislikes are never a reason)."""
    anchors, anchor_vectors = _anchors(state, catalog)
    reasons = [FALLBACK_REASON] * len(picked)
    usable, targets = catalog.vectors_of([item_id for item_id, _ in picked])
    commented = _latest_comment_item(state)
    if anchors and usable:
        best = np.argmax(anchor_vectors @ targets.T, axis=0)
        for j, a in zip(usable, best, strict=True):
            item_id, kind = anchors[int(a)]
            if item_id == commented:
                reasons[j] = f"matches your comment '{state.last_comment}'"
                continue
            title = catalog.title_of(item_id) or item_id
            reasons[j] = f'because you {_VERBS[kind]} "{title}"'
    return [
        Recommendation(item_id=item_id, score=score, reason=reason)
        for (item_id, score), reason in zip(picked, reasons, strict=True)
    ]


def _latest_comment_item(state: InterestState) -> str | None:
    """The item of the user's latest comment when its words are kept, else ``None``."""
    if not state.last_comment:
        return None
    pairs = zip(state.recent_items, state.recent_types, strict=True)
    return next((item for item, kind in reversed(list(pairs)) if kind == EventType.COMMENT), None)


def _anchors(
    state: InterestState, catalog: Catalog
) -> tuple[list[tuple[str, int]], npt.NDArray[np.float32]]:
    """Recent items with a catalog vector (newest first), each with its strongest event type,
    and their vectors (one gather from the catalog)."""
    strongest: dict[str, int] = {}
    for item_id, kind in zip(state.recent_items, state.recent_types, strict=True):
        if kind in _VERBS:  # a dislike is never a reason
            strongest[item_id] = max(kind, strongest.get(item_id, kind))
    newest_first = list(reversed(strongest))
    found, vectors = catalog.vectors_of(newest_first)
    return [(newest_first[i], strongest[newest_first[i]]) for i in found], vectors
