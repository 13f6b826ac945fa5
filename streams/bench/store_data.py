"""The users the ``store`` section writes: distinct states of the shape the worker stores for a
heavy ml-100k user, encoded, and their keys; :mod:`streams.bench.store` puts them in the
worker's table store in-process, :mod:`streams.bench.store_worker` on a real worker's changelog.

Each state has full rings (50 recent items, 64 event-id hashes: 60 % of the ml-100k users after
all their events), a 384-d short-term vector, the sequence model's 64-d long-term vector with its
``seq-<12 hex>`` version, the two sources it was read from (``events.browse/<p>``,
``events.click/<p>``) with their offsets, and up to 4 interest centroids (the worker's default
``INTEREST_STREAM_INTERESTS``). How many centroids, and their weights, follow what the worker
stored for the 943 ml-100k users after all 100,000 events went through its batch step
(``bench --sections scale``' replay, 2026-12-02): 4 for 55 % of the users, 1 for 23 %, 3 for
13 %, 2 for 9 % (:data:`INTEREST_COUNTS`, the first user of every chunk has 4); the heaviest
centroid weighs 3-41 (its p10-p90), the others 0.5-2 (one or two decayed clicks or browses).
Encoded: 5.4 KB with 4 centroids (the replay's largest state: 5,435 B), about 4.7 KB on average
(the replay's median: 4,670 B). ml-100k has no comments: ``last_comment`` stays empty (up to
80 characters more).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from interest_state import InterestState, encode_state

__all__ = [
    "CHUNK",
    "DEDUPE",
    "DIM",
    "HISTORY",
    "INTEREST_COUNTS",
    "LONG_DIM",
    "encoded_states",
    "user_key",
]

DIM = 384
LONG_DIM = 64
"""The sequence model's item space (``encoders/build/sequence_data.py``'s default ``dim``)."""
HISTORY = 50
DEDUPE = 64
CHUNK = 5_000
"""States made (and written) per step."""
INTEREST_COUNTS: tuple[int, ...] = (4,) * 55 + (1,) * 23 + (3,) * 13 + (2,) * 9
"""The centroid count of user ``n`` of a chunk is ``INTEREST_COUNTS[n % 100]``: the shares of
the ml-100k users' states with 4, 1, 3 and 2 centroids in the scale section's replay."""
SOURCES = ("events.browse", "events.click")
"""The default topics of the events ml-100k replays as (sorted, as a state keeps them)."""
PARTITIONS = 8
MODEL_VERSION = "seq-bc37e94b313c"
"""A sequence model version of the worker's form (``seq-`` and 12 hex digits)."""


def user_key(user: int) -> bytes:
    return b"user-%08d" % user


def encoded_states(rng: np.random.Generator, count: int, base_ts: float) -> list[bytes]:
    """``count`` distinct full-ring states with a long-term vector and interest centroids,
    encoded (see the module docstring for their shape)."""
    short = rng.standard_normal((count, DIM), dtype=np.float32)
    long = rng.standard_normal((count, LONG_DIM), dtype=np.float32)
    hashes = rng.integers(0, 2**64, (count, DEDUPE), dtype=np.uint64).tolist()
    items = rng.integers(0, 2_000, (count, HISTORY)).tolist()
    types = rng.integers(0, 3, (count, HISTORY)).tolist()
    offsets = rng.integers(0, 10_000_000, (count, len(SOURCES))).tolist()
    centroids, weights = _centroids(rng, count)
    stamps = tuple(base_ts + n for n in range(HISTORY))
    out = []
    for row in range(count):
        kinds = tuple(types[row])
        n = INTEREST_COUNTS[row % len(INTEREST_COUNTS)]
        partition = row % PARTITIONS
        state = InterestState(
            dim=DIM,
            short_term=short[row],
            short_weight=float(weights[row, :n].sum()),
            long_term=long[row],
            long_term_version=MODEL_VERSION,
            updated_ts=stamps[-1],
            recent_items=tuple(map(str, items[row])),
            recent_types=kinds,
            recent_ts=stamps,
            recent_event_ids=tuple(hashes[row]),
            n_events=HISTORY + 20,
            n_by_type=(kinds.count(0), kinds.count(1), kinds.count(2), kinds.count(3)),
            n_duplicates=0,
            applied_offsets=tuple(
                (f"{topic}/{partition}", offset)
                for topic, offset in zip(SOURCES, offsets[row], strict=True)
            ),
            interests=centroids[row, :n],
            interest_weights=tuple(weights[row, :n].tolist()),
        )
        out.append(encode_state(state))
    return out


def _centroids(
    rng: np.random.Generator, count: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Four centroids for each of ``count`` users (a user keeps the first of them), as the
    update keeps them: weighted sums (norm at most the weight) and their weights, the heaviest
    first; ``(count, 4, DIM)`` and ``(count, 4)``."""
    most = max(INTEREST_COUNTS)
    weights = np.empty((count, most))
    weights[:, 0] = np.exp(rng.uniform(np.log(3.0), np.log(41.0), count))
    weights[:, 1:] = rng.uniform(0.5, 2.0, (count, most - 1))
    directions = rng.standard_normal((count, most, DIM), dtype=np.float32)
    directions /= np.linalg.norm(directions, axis=2, keepdims=True)
    norms = (weights * rng.uniform(0.6, 1.0, (count, most))).astype(np.float32)
    return directions * norms[:, :, None], weights
