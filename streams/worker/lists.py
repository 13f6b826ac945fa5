"""What a recommendation list holds beyond the ranking's best items.

The ranking gives each user's best candidates (the Transformer's blend); :class:`ListMaker`
makes them into the list that is sent, for a whole microbatch at once:

1. the neighbours of what the user disliked move down (:func:`interest_state.push_down_disliked`);
2. the list is re-ranked for diversity: maximal marginal relevance over the best
   :data:`MMR_CANDIDATES` (:func:`interest_state.mmr_rerank_many`, one vectorised pass);
3. ``interest_slots`` after the head of the list go to the user's interests, shared out by
   their weights (:func:`interest_state.interest_picks`: each interest's nearest unseen items,
   one catalog search for the batch);
4. the last ``explore_slots`` go to exploration: candidates with a tag (genre) the user has
   touched least (:func:`interest_state.explore`), ``reason = "explore: <tag>"``;
5. a user with few events gets trending items mixed in (cold start,
   :func:`interest_state.mix_trending`);
6. every item carries its reason: items the interests brought are explained like the
   ranking's (:func:`interest_state.explain`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from interest_state import (
    Catalog,
    InterestState,
    Recommendation,
    explain,
    explore,
    interest_hits,
    interest_picks,
    mix_trending,
    mmr_rerank_many,
    push_down_disliked,
    trending_share,
)

__all__ = ["MMR_CANDIDATES", "ApproxSearch", "ListMaker"]

MMR_CANDIDATES = 50
"""How many of the best items MMR re-ranks (as in the evaluation that chose its lambda)."""

Trending = Callable[[int], Sequence[tuple[str, float]]]
"""Up to ``n`` most trending item ids with their scores, most trending first."""


class _Candidates(Protocol):
    def candidates(self, queries: npt.ArrayLike, count: int) -> Any: ...


class ApproxSearch:
    """``catalog`` searched through a candidate index (faiss or the device: its ``count`` best
    rows per query, and every row it does not cover yet, rescored exactly; deleted rows left
    out): what the interest slots search on a catalog the ranking ranks approximately, instead
    of a product with every item."""

    def __init__(self, catalog: Any, index: _Candidates) -> None:
        self.catalog, self.index = catalog, index

    def __getattr__(self, name: str) -> Any:  # dim, __len__ lookups, item_id_at, vectors_of ...
        return getattr(self.catalog, name)

    def __len__(self) -> int:
        return len(self.catalog)

    def search(self, queries: npt.NDArray[np.float32], k: int
               ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:  # fmt: skip
        found = self.index.candidates(queries, k)
        vectors = self.catalog.vectors_view()
        rows = np.asarray(found.rows, dtype=np.int64)
        tail = np.arange(found.covered, len(vectors), dtype=np.int64)  # not in the index yet
        if len(tail):
            rows = np.concatenate([rows, np.broadcast_to(tail, (len(rows), len(tail)))], axis=1)
        usable = (rows >= 0) & (rows < len(vectors))
        usable[usable] &= ~np.isin(rows[usable], self.catalog.deleted_rows)
        picked = vectors[np.where(usable, rows, 0)]
        scores = np.einsum("md,mkd->mk", np.asarray(queries, np.float32), picked)
        scores = np.where(usable, scores, -np.inf).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")
        rows = np.where(usable, rows, -1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


class ListMaker:
    """How the worker turns ranked candidates into the list it sends."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        mmr_lambda: float = 1.0,
        personal_after: int = 5,
        interest_slots: int = 0,
        explore_slots: int = 0,
    ) -> None:
        self.catalog = catalog
        #: MMR's relevance weight (1: relevance alone, no re-ranking).
        self.mmr_lambda = mmr_lambda
        #: A user's list is personal alone from this many events on; below, a share of it is
        #: trending (:func:`interest_state.trending_share`).
        self.personal_after = personal_after
        #: Slots after the head of each list that go to the user's interests (0: none).
        self.interest_slots = interest_slots
        #: Slots at the end of each list that go to exploration (0: none).
        self.explore_slots = explore_slots
        #: The trending source (set by the worker; ``None``: no cold start).
        self.trending: Trending | None = None
        #: Each catalog item's tags (what exploration opens), kept by :meth:`set_tags`.
        self.tags: dict[str, tuple[str, ...]] = {}

    def set_tags(self, items: Iterable[tuple[str, Sequence[str]]]) -> None:
        """Remember the tags of catalog items (an item without tags is forgotten)."""
        for item_id, tags in items:
            if tags:
                self.tags[item_id] = tuple(tags)
            else:
                self.tags.pop(item_id, None)

    def candidates(self, k: int) -> int:
        """How many ranked candidates a list of ``k`` is made from."""
        widen = self.mmr_lambda < 1.0 or self.explore_slots or self.interest_slots
        return max(k, MMR_CANDIDATES) if widen else k

    def finish(
        self,
        states: Sequence[InterestState],
        ranked: list[list[Recommendation]],
        k: int,
        hide: Sequence[Collection[str]] | None = None,
        search_in: Catalog | None = None,
    ) -> list[list[Recommendation]]:
        """Each user's list of (up to) ``k`` from their ranked candidates (module docstring);
        ``hide`` (one collection per state) keeps more items than the ring's off the lists (the
        offline evaluation hides a user's older history); ``search_in``: where the interests'
        items are searched (default the catalog, exactly; :class:`ApproxSearch` for a large one)."""
        pools = [push_down_disliked(state, recs, self.catalog)
                 for state, recs in zip(states, ranked, strict=True)]  # fmt: skip
        if self.mmr_lambda < 1.0:
            lists = mmr_rerank_many(pools, self.catalog, k, self.mmr_lambda)
        else:
            lists = [pool[:k] for pool in pools]
        extra_i = self.interest_slots if k > self.interest_slots + self.explore_slots else 0
        extra_e = self.explore_slots if k > self.explore_slots else 0
        if extra_i or extra_e:
            hits = interest_hits(states, search_in or self.catalog)
            hidden = hide if hide is not None else [() for _ in states]
            lists = [
                self._with_extras(state, pool, listed, found, set(gone), k, extra_i, extra_e)
                for state, pool, listed, found, gone in zip(
                    states, pools, lists, hits, hidden, strict=True)
            ]  # fmt: skip
        lists = [self._explained(state, recs) for state, recs in zip(states, lists, strict=True)]
        return self._with_trending(states, lists, k)

    def _with_extras(
        self, state: InterestState, pool: list[Recommendation], listed: list[Recommendation],
        hits: list[list[tuple[str, float]]], hidden: set[str], k: int, n_interest: int,
        n_explore: int,
    ) -> list[Recommendation]:  # fmt: skip
        """``listed`` with the slots after its head given to the interests' picks and then to
        exploration picks, when there are any (the list's own items fill the slots they do
        not take)."""
        head = listed[: k - n_interest - n_explore]
        taken = {r.item_id for r in head} | hidden
        hits = [[h for h in found if h[0] not in hidden] for found in hits]
        picks = interest_picks(state, hits, taken, n_interest)
        taken |= {r.item_id for r in picks}
        known = {r.item_id for r in pool}
        near = [Recommendation(i, score, "") for found in hits for i, score in found
                if i not in known]  # fmt: skip
        picks += explore(state, [*pool, *near], taken, n_explore, self.catalog, self.tags)
        chosen = {r.item_id for r in picks}
        tail = [r for r in listed[len(head) :] if r.item_id not in chosen]
        return [*head, *picks, *tail][:k]

    def _explained(self, state: InterestState, recs: list[Recommendation]) -> list[Recommendation]:
        """``recs`` with a reason for each item that has none yet."""
        missing = [(r.item_id, r.score) for r in recs if not r.reason]
        if not missing:
            return recs
        why = {r.item_id: r.reason for r in explain(state, self.catalog, missing)}
        return [r if r.reason else Recommendation(r.item_id, r.score, why[r.item_id]) for r in recs]

    def _with_trending(
        self, states: Sequence[InterestState], lists: list[list[Recommendation]], k: int
    ) -> list[list[Recommendation]]:
        shares = [trending_share(s.n_events, self.personal_after) for s in states]
        if not any(shares):
            return lists
        hot = self.trending_items(k + max((len(s.recent_items) for s in states), default=0))
        if not hot:
            return lists
        return [
            mix_trending(recs, hot, k, share, state.seen_items()) if share else recs
            for state, recs, share in zip(states, lists, shares, strict=True)
        ]

    def trending_items(self, n: int) -> list[tuple[str, float]]:
        """Up to ``n`` trending catalog items, most trending first (items no longer in the
        catalog left out); empty without a trending source."""
        if self.trending is None:
            return []
        live = self.catalog.title_of  # None for an item not (or no longer) in the catalog
        return [(item, score) for item, score in self.trending(n) if live(item) is not None][:n]

    def for_new_user(self, k: int) -> list[Recommendation]:
        """The list of a user the worker has never seen: the trending items."""
        return mix_trending([], self.trending_items(k), k, 1.0)
