"""What a recommendation list holds beyond the ranking's best items.

The ranking gives each user's best candidates; :class:`ListMaker` makes them into the list
that is sent: re-ranked for diversity (maximal marginal relevance over the best
:data:`MMR_CANDIDATES`, :func:`interest_state.mmr_rerank_many`, one vectorised pass for the
batch) and, for a user with few events, mixed with trending items (cold start,
:func:`interest_state.mix_trending`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from interest_state import (
    Catalog,
    InterestState,
    Recommendation,
    mix_trending,
    mmr_rerank_many,
    trending_share,
)

__all__ = ["MMR_CANDIDATES", "ListMaker"]

MMR_CANDIDATES = 50
"""How many of the best items MMR re-ranks (as in the evaluation that chose its lambda)."""

Trending = Callable[[int], Sequence[tuple[str, float]]]
"""Up to ``n`` most trending item ids with their scores, most trending first."""


class ListMaker:
    """How the worker turns ranked candidates into the list it sends."""

    def __init__(self, catalog: Catalog, *, mmr_lambda: float = 1.0, personal_after: int = 5):
        self.catalog = catalog
        #: MMR's relevance weight (1: relevance alone, no re-ranking).
        self.mmr_lambda = mmr_lambda
        #: A user's list is personal alone from this many events on; below, a share of it is
        #: trending (:func:`interest_state.trending_share`).
        self.personal_after = personal_after
        #: The trending source (set by the worker; ``None``: no cold start).
        self.trending: Trending | None = None

    def candidates(self, k: int) -> int:
        """How many ranked candidates a list of ``k`` is made from."""
        return k if self.mmr_lambda >= 1.0 else max(k, MMR_CANDIDATES)

    def finish(
        self, states: Sequence[InterestState], ranked: list[list[Recommendation]], k: int
    ) -> list[list[Recommendation]]:
        """Each user's list of (up to) ``k`` from their ranked candidates."""
        if self.candidates(k) > k:
            ranked = mmr_rerank_many(ranked, self.catalog, k, self.mmr_lambda)
        shares = [trending_share(s.n_events, self.personal_after) for s in states]
        if not any(shares):
            return ranked
        hot = self.trending_items(k + max((len(s.recent_items) for s in states), default=0))
        if not hot:
            return ranked
        return [
            mix_trending(recs, hot, k, share, state.seen_items()) if share else recs
            for state, recs, share in zip(states, ranked, shares, strict=True)
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
