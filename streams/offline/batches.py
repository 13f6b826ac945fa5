"""Ranking many users in batches, with the ranking contract checked.

The evaluator's loop (:mod:`streams.offline.evaluate`), shared with the cold-start table
(:mod:`streams.offline.coldstart`): a model is asked for :data:`RANK_BATCH` users at a time,
and every list it gives back is checked: at most ``k`` items, and, with seen items masked, none
of the user's context.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.errors import EvaluationError
from streams.offline.rankers import Recommender, UserContext

__all__ = ["RANK_BATCH", "check_lists", "rank_all"]

RANK_BATCH = 256
"""Users ranked per model call (one matrix product each in :class:`ShortTermModel`)."""


def rank_all(
    model: Recommender, users: Sequence[UserContext], k: int, masked: bool
) -> list[list[str]]:
    """Rank ``users`` in batches and check the model kept its contract."""
    ranked: list[list[str]] = []
    for start in range(0, len(users), RANK_BATCH):
        batch = users[start : start + RANK_BATCH]
        ranked.extend(check_lists(model.name, batch, model.rank(batch, k, exclude_seen=masked),
                                  k, masked))  # fmt: skip
    return ranked


def check_lists(
    name: str, users: Sequence[UserContext], ranked: list[list[str]], k: int, masked: bool
) -> list[list[str]]:
    """``ranked`` when it holds one list of at most ``k`` items per user and, when
    ``masked``, no item of a user's context; else :class:`EvaluationError` naming ``name``."""
    if len(ranked) != len(users) or any(len(items) > k for items in ranked):
        raise EvaluationError(f"{name}: rank must give <= {k} items for each user")
    if masked:
        for user, items in zip(users, ranked, strict=True):
            if not user.seen().isdisjoint(items):
                raise EvaluationError(f"{name}: recommended a seen item to {user.user_id}")
    return ranked
