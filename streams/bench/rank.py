"""The ``rank`` section of ``interest-stream bench``: users/s of :func:`interest_state.rank`.

Each catalog size (``cfg.rank_sizes``) is an :class:`encoders.ItemIndex` of random unit vectors;
``cfg.rank_users`` users whose history and dedupe rings are full are ranked in one call, top 10
with the seen-filter and explanations, against a plain numpy matmul + argpartition top-k of the
same queries (no filter, no explanations), in alternating rounds.

:func:`random_unit_vectors` and :func:`full_ring_states` also make the ``state`` section's user.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.bench.common import BenchConfig, Row, paired_rates, timed_rate

__all__ = ["full_ring_states", "plain_topk", "random_unit_vectors", "rank_section"]


def random_unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def full_ring_states(vectors: np.ndarray, users: int, rng: np.random.Generator) -> list[Any]:
    """Users whose history and dedupe rings are full (random clicks over ``vectors``' rows)."""
    from interest_state import Event, EventType, InterestState, Observation, UpdateParams, update

    params = UpdateParams()
    events = max(params.history_len, params.dedupe_len) + 6
    states = []
    for user in range(users):
        rows = rng.integers(0, len(vectors), size=events)
        observations = [
            Observation(Event(f"u{user}-{n}", f"u{user}", str(row), EventType.CLICK, 1e9 + n),
                        vectors[row])
            for n, row in enumerate(rows)
        ]
        state, _ = update(InterestState.empty(vectors.shape[1]), observations, params)
        states.append(state)
    return states


def plain_topk(matrix: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Baseline: one matmul, argpartition, sort the top k; no seen-filter, no explanations."""
    scores = queries @ matrix.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def _rank_row(size: int, cfg: BenchConfig, rng: np.random.Generator, dim: int, k: int) -> Row:
    from encoders import ItemIndex
    from interest_state import rank

    vectors = random_unit_vectors(size, dim, rng)
    index = ItemIndex(dim, capacity=size)
    ids = [str(i) for i in range(size)]
    index.upsert(ids, ids, vectors)
    states = full_ring_states(vectors, cfg.rank_users, rng)
    queries = np.stack([s.interest_vector() for s in states])

    def ours() -> int:
        rank(states, index, k)
        return len(states)

    def plain() -> int:
        plain_topk(vectors, queries, k)
        return len(states)

    mine, theirs = paired_rates(lambda: timed_rate(ours, cfg.min_seconds),
                                lambda: timed_rate(plain, cfg.min_seconds), cfg.rounds)
    return Row("rank", f"users/s, {size:,} items (top {k}, {len(states)}/call)", mine,
               "users/s", "numpy matmul+top-k", theirs)


def rank_section(cfg: BenchConfig, dim: int = 384, k: int = 10) -> list[Row]:
    rng = np.random.default_rng(7)
    return [_rank_row(size, cfg, rng, dim, k) for size in cfg.rank_sizes]
