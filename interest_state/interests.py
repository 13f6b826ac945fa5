"""Several interests per user: up to ``k`` weighted centroids, updated online.

:class:`Centroids` is the update's scratch copy of a state's ``interests`` and
``interest_weights`` (time-decayed weighted sums of item vectors and their decayed weights,
as of the state's ``updated_ts``, like the short-term vector). A positive event joins the
centroid whose direction is nearest to it when their cosine is at least ``interest_join_cos``;
otherwise it starts a centroid of its own, after merging the two closest centroids when all
``interests`` are taken (so the newest distinct interest always gets a row, and the rows stay
apart). A negative event takes its weight off the centroid nearest to it (a centroid left
with no weight is dropped). After each event, centroids lighter than ``interest_prune_share``
of the heaviest are dropped: an interest not fed for several half-lives fades out.

Deterministic: the same events in the same order give the same centroids (ties go to the
lower row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .arrays import FloatMatrix, unit_rows
from .params import UpdateParams
from .state import InterestState

__all__ = ["Centroids", "interest_units"]


@dataclass(slots=True)
class Centroids:
    """Mutable centroids for one :func:`interest_state.update` call (never escapes it)."""

    sums: list[npt.NDArray[np.float64]]
    weights: list[float]
    limit: int
    join_cos: float
    prune_share: float

    @classmethod
    def of(cls, state: InterestState, params: UpdateParams) -> Centroids:
        return cls(
            sums=[row.astype(np.float64) for row in state.interests],
            weights=list(state.interest_weights),
            limit=params.interests,
            join_cos=params.interest_join_cos,
            prune_share=params.interest_prune_share,
        )

    def decay(self, factor: float) -> None:
        self.sums = [row * factor for row in self.sums]
        self.weights = [w * factor for w in self.weights]

    def join(self, vector: npt.NDArray[np.float64], weight: float) -> None:
        """Add a positive event's ``vector`` with ``weight``."""
        nearest, cos = self._nearest(vector)
        if nearest is not None and (cos >= self.join_cos or self.limit == 1):
            self.sums[nearest] = self.sums[nearest] + weight * vector
            self.weights[nearest] += weight
        else:
            if len(self.sums) >= self.limit:
                self._merge_closest()
            self.sums.append(weight * vector)
            self.weights.append(weight)
        self._prune()

    def weaken(self, vector: npt.NDArray[np.float64], weight: float) -> None:
        """Take a negative event's ``weight`` off the centroid nearest to ``vector``."""
        nearest, _ = self._nearest(vector)
        if nearest is None:
            return
        left = self.weights[nearest] - weight
        if left <= 0.0:
            del self.sums[nearest], self.weights[nearest]
        else:
            self.sums[nearest] = self.sums[nearest] * (left / self.weights[nearest])
            self.weights[nearest] = left
        self._prune()

    def rows(self) -> tuple[FloatMatrix, tuple[float, ...]]:
        """The centroids as a state stores them (float32 rows, weights)."""
        if not self.sums:
            return np.zeros((0, 0), dtype=np.float32), ()
        return np.stack(self.sums).astype(np.float32), tuple(float(w) for w in self.weights)

    def _nearest(self, vector: npt.NDArray[np.float64]) -> tuple[int | None, float]:
        if not self.sums:
            return None, -1.0
        cos = unit_rows(np.stack(self.sums)) @ _unit(vector)
        best = int(np.argmax(cos))
        return best, float(cos[best])

    def _merge_closest(self) -> None:
        units = unit_rows(np.stack(self.sums))
        sims = units @ units.T
        np.fill_diagonal(sims, -np.inf)
        a, b = sorted(np.unravel_index(int(np.argmax(sims)), sims.shape))
        self.sums[a] = self.sums[a] + self.sums[b]
        self.weights[a] += self.weights[b]
        del self.sums[b], self.weights[b]

    def _prune(self) -> None:
        if not self.weights:
            return
        floor = self.prune_share * max(self.weights)
        keep = [i for i, w in enumerate(self.weights) if w >= floor and w > 0.0]
        self.sums = [self.sums[i] for i in keep]
        self.weights = [self.weights[i] for i in keep]


def interest_units(state: InterestState) -> FloatMatrix:
    """The state's interest centroids as unit rows (``(m, dim)``; zero rows stay zero)."""
    return unit_rows(state.interests.astype(np.float64)).astype(np.float32)


def _unit(vector: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norm = float(np.linalg.norm(vector))
    out: npt.NDArray[np.float64] = vector / norm if norm > 0.0 else vector
    return out
