"""The store section's users: states of the shape the worker stores for ml-100k users."""

from __future__ import annotations

from collections import Counter

import numpy as np

from interest_state import decode_state
from streams.bench.store_data import (
    DEDUPE,
    DIM,
    HISTORY,
    INTEREST_COUNTS,
    LONG_DIM,
    encoded_states,
    user_key,
)


def test_states_carry_centroids_in_the_replays_shares_and_sizes() -> None:
    values = encoded_states(np.random.default_rng(5), 200, 1.7e9)
    states = [decode_state(v) for v in values]
    counts = Counter(s.n_interests for s in states)
    assert counts == {4: 110, 1: 46, 3: 26, 2: 18}  # 55 / 23 / 13 / 9 %
    assert [s.n_interests for s in states[:100]] == list(INTEREST_COUNTS)
    sizes = np.array([len(v) for v in values])
    # the scale section's replay of ml-100k: median 4,670 B, largest 5,435 B
    assert 4_400 < sizes.mean() < 4_900
    assert 5_300 < sizes[0] and sizes.max() < 5_600  # user 0 has 4 centroids
    for s in states:
        weights = np.asarray(s.interest_weights)
        assert weights[0] == weights.max() and weights.min() >= 0.5
        assert np.all(np.linalg.norm(s.interests, axis=1) <= weights * 1.001)
        assert s.short_weight >= weights.sum() * 0.999
        assert (len(s.recent_items), len(s.recent_event_ids)) == (HISTORY, DEDUPE)
        assert (s.dim, s.long_dim) == (DIM, LONG_DIM)
        assert [src.split("/")[0] for src, _ in s.applied_offsets] == [
            "events.browse",
            "events.click",
        ]


def test_states_are_distinct_and_keys_sort_by_user() -> None:
    values = encoded_states(np.random.default_rng(1), 50, 1.7e9)
    assert len(set(values)) == 50
    assert user_key(7) < user_key(10) and user_key(7) == b"user-00000007"
