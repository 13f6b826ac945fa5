"""The rank section's baseline and users."""

from __future__ import annotations

import numpy as np

from streams.bench.rank import full_ring_states, plain_topk, random_unit_vectors


def test_plain_topk_matches_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    matrix = random_unit_vectors(50, 8, rng)
    queries = random_unit_vectors(3, 8, rng)
    expected = np.argsort(-(queries @ matrix.T), axis=1)[:, :5]
    assert np.array_equal(plain_topk(matrix, queries, 5), expected)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0)


def test_full_ring_states_fill_both_rings() -> None:
    rng = np.random.default_rng(1)
    state = full_ring_states(random_unit_vectors(100, 8, rng), 1, rng)[0]
    assert len(state.recent_items) == 50 and len(state.recent_event_ids) == 64
