"""The ``state`` section of ``interest-stream bench``: bytes of one user's state.

A user whose history (50) and dedupe (64) rings are full, with and without a long-term vector,
encoded by :func:`interest_state.encode_state`, against ``pickle`` (highest protocol) of the
same :class:`interest_state.InterestState`.
"""

from __future__ import annotations

import pickle

import numpy as np

from streams.bench.common import Row
from streams.bench.rank import full_ring_states, random_unit_vectors

__all__ = ["state_section"]


def state_section() -> list[Row]:
    from interest_state import encode_state

    rng = np.random.default_rng(11)
    vectors = random_unit_vectors(2_000, 384, rng)
    state = full_ring_states(vectors, 1, rng)[0]
    with_long = state.with_long_term(vectors[0], "seq-v1")
    rows = []
    for label, value in (("full ring", state), ("full ring + long-term", with_long)):
        size = len(encode_state(value))
        rows.append(Row("state", f"bytes/user, {label}", size, "B", "pickle",
                        len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)),
                        f"{1e9 / size / 1e6:.2f}M users per GB"))
    return rows
