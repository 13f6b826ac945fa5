"""The users the ``store`` section writes: distinct states of one realistic shape, encoded,
and their keys; :mod:`streams.bench.store` puts them in the worker's table store in-process,
:mod:`streams.bench.store_worker` on a real worker's changelog.

Each state has the shape of ``bench --sections state``' "full ring + long-term" (50 recent
items, 64 event-id hashes, two 384-d vectors; about 2.9 KB encoded).
"""

from __future__ import annotations

import numpy as np

from interest_state import InterestState, encode_state

__all__ = ["CHUNK", "DEDUPE", "DIM", "HISTORY", "encoded_states", "user_key"]

DIM = 384
HISTORY = 50
DEDUPE = 64
CHUNK = 5_000
"""States made (and written) per step."""


def user_key(user: int) -> bytes:
    return b"user-%08d" % user


def encoded_states(rng: np.random.Generator, count: int, base_ts: float) -> list[bytes]:
    """``count`` distinct full-ring states with a long-term vector, encoded."""
    short = rng.standard_normal((count, DIM), dtype=np.float32)
    long = rng.standard_normal((count, DIM), dtype=np.float32)
    hashes = rng.integers(0, 2**64, (count, DEDUPE), dtype=np.uint64).tolist()
    items = rng.integers(0, 2_000, (count, HISTORY)).tolist()
    types = rng.integers(0, 3, (count, HISTORY)).tolist()
    stamps = tuple(base_ts + n for n in range(HISTORY))
    out = []
    for row in range(count):
        kinds = tuple(types[row])
        state = InterestState(
            dim=DIM,
            short_term=short[row],
            short_weight=3.5,
            long_term=long[row],
            long_term_version="seq-v1",
            updated_ts=stamps[-1],
            recent_items=tuple(map(str, items[row])),
            recent_types=kinds,
            recent_ts=stamps,
            recent_event_ids=tuple(hashes[row]),
            n_events=HISTORY + 20,
            n_by_type=(kinds.count(0), kinds.count(1), kinds.count(2), kinds.count(3)),
            n_duplicates=0,
        )
        out.append(encode_state(state))
    return out
