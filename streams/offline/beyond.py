"""Beyond accuracy: what the top-``k`` lists look like, whatever the target was.

For each model row, on the first ``k`` items of each user's list (``k`` the smallest cut-off):

- ``ILD@k``, intra-list diversity: the mean over the list's pairs of the cosine distance
  ``1 - cos`` of the items' text vectors (the evaluation's text index), averaged over users
  whose list has at least two items with a vector. 0 when all items are alike; 1 orthogonal.
- ``coverage@k``: distinct items in all users' lists / catalog size (one number for the
  row: no standard error).
- ``novelty@k``: the mean over the list of ``-log2 p(i)``, ``p(i) = (c(i) + 1) / (N + n)`` the
  item's share of the ``N`` training events (``c(i)`` its count, ``n`` the catalog size; the
  add-one keeps items without a training event finite). Popular items are low.
- ``new-items@k``: the share of the list whose first event anywhere in the data (all users,
  every split) is later than the user's last context event: items that did not exist yet,
  as far as the data can tell, when the user's history ended. Items with no event at all are
  not counted as new.

Per-user values are averaged with their standard error, as for the accuracy metrics.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streams.offline.rankers import TrainData, UserContext
from streams.offline.report import MetricValue, mean_se

__all__ = ["ItemVectors", "ListMetrics", "beyond_names"]


class ItemVectors(Protocol):
    """Item vectors by id (``encoders.ItemIndex`` and :class:`interest_state.Catalog` fit)."""

    def vectors_of(self, item_ids: Sequence[str]) -> tuple[list[int], npt.NDArray[np.float32]]: ...


def beyond_names(k: int, *, with_vectors: bool = True) -> list[str]:
    names = [f"ILD@{k}"] if with_vectors else []
    return [*names, f"coverage@{k}", f"novelty@{k}", f"new-items@{k}"]


@dataclass(frozen=True, slots=True, eq=False)
class ListMetrics:
    """What the beyond-accuracy metrics need, gathered once per evaluation."""

    catalog_size: int
    self_information: Mapping[str, float]
    first_seen: Mapping[str, float]
    rows: Mapping[str, int]
    unit_vectors: npt.NDArray[np.float64] | None

    @classmethod
    def build(
        cls, train: TrainData, first_seen: Mapping[str, float], vectors: ItemVectors | None
    ) -> ListMetrics:
        """``first_seen``: each item's earliest event time in the whole data set."""
        ids = [item.item_id for item in train.items]
        counts = Counter(event.item_id for event in train.events)
        total = len(train.events) + len(ids)
        info = {i: -math.log2((counts[i] + 1) / total) for i in ids}
        rows: dict[str, int] = {}
        unit = None
        if vectors is not None:
            found, matrix = vectors.vectors_of(ids)
            rows = {ids[n]: row for row, n in enumerate(found)}
            m = np.asarray(matrix, dtype=np.float64)
            norms = np.linalg.norm(m, axis=1, keepdims=True)
            unit = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0.0)
        return cls(len(ids), info, dict(first_seen), rows, unit)

    def names(self, k: int) -> list[str]:
        return beyond_names(k, with_vectors=self.unit_vectors is not None)

    def score(
        self, ranked: Sequence[Sequence[str]], users: Sequence[UserContext], k: int
    ) -> dict[str, MetricValue]:
        """The metrics of the module docstring on the first ``k`` items of each list."""
        lists = [list(items[:k]) for items in ranked]
        out: dict[str, MetricValue] = {}
        if self.unit_vectors is not None:
            out[f"ILD@{k}"] = mean_se(self.diversities(lists))
        distinct = {item for items in lists for item in items}
        out[f"coverage@{k}"] = MetricValue(len(distinct) / self.catalog_size, None)
        filled = [items for items in lists if items]
        out[f"novelty@{k}"] = mean_se(
            np.array([np.mean([self.self_information[i] for i in items]) for items in filled])
        )
        cutoffs = [user.events[-1].ts if user.events else -math.inf for user in users]
        out[f"new-items@{k}"] = mean_se(
            np.array(
                [
                    np.mean([self.first_seen.get(i, -math.inf) > cut for i in items])
                    for items, cut in zip(lists, cutoffs, strict=True)
                    if items
                ],
                dtype=np.float64,
            )
        )
        return out

    def diversities(self, lists: Sequence[Sequence[str]]) -> npt.NDArray[np.float64]:
        """Mean pairwise cosine distance per list of >= 2 items with a vector (others left out)."""
        values: list[float] = []
        if self.unit_vectors is None:
            return np.array(values, dtype=np.float64)
        for items in lists:
            rows = [self.rows[i] for i in items if i in self.rows]
            if len(rows) < 2:
                continue
            v = self.unit_vectors[rows]
            sims = v @ v.T
            n = len(rows)
            mean_sim = (sims.sum() - np.trace(sims)) / (n * (n - 1))
            values.append(1.0 - float(mean_sim))
        return np.array(values, dtype=np.float64)
