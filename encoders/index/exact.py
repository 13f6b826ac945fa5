"""Exact top-k search by inner product over the item catalog.

Concurrency contract: one writer (the event loop, calling :meth:`ItemIndex.upsert`) and any
number of readers (executor threads calling :meth:`ItemIndex.search`). New rows are written
beyond the published count and only then published; growth copies into a new array (capacity
doubles) and swaps the reference. ``(matrix, n)`` is published as one tuple, so a reader
snapshots both at once and never sees an unwritten row. A row *replaced* in place may be read
half-updated by a concurrent search; that costs one stale score, never a crash.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from encoders.errors import ConfigurationError, InputError
from interest_state import inner_products

__all__ = ["ItemIndex"]


class ItemIndex:
    """Item vectors (float32, one row per item id) with exact inner-product top-k."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        if dim < 1 or capacity < 1:
            raise ConfigurationError(f"need dim >= 1 and capacity >= 1, got {dim}, {capacity}")
        self.dim = dim
        self._view: tuple[np.ndarray, int] = (np.zeros((capacity, dim), dtype=np.float32), 0)
        self._ids: list[str] = []
        self._titles: list[str] = []
        self._rows: dict[str, int] = {}

    @property
    def capacity(self) -> int:
        return int(self._view[0].shape[0])

    def __len__(self) -> int:
        return self._view[1]

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and item_id in self._rows

    def __repr__(self) -> str:
        return f"ItemIndex(dim={self.dim}, items={len(self)}, capacity={self.capacity})"

    def upsert(self, item_ids: Sequence[str], titles: Sequence[str], vectors: np.ndarray) -> None:
        """Add new ids at the end, overwrite the rows of known ids (the last duplicate wins)."""
        matrix_in = self._check_batch(item_ids, titles, vectors)
        latest: dict[str, int] = {}
        for position, item_id in enumerate(item_ids):
            latest[item_id] = position
        matrix, n = self._view
        fresh = [item_id for item_id in latest if item_id not in self._rows]
        if n + len(fresh) > matrix.shape[0]:
            matrix = self._grown(matrix, n, n + len(fresh))
        new_rows = {item_id: n + offset for offset, item_id in enumerate(fresh)}
        for item_id, position in latest.items():
            row = self._rows[item_id] if item_id in self._rows else new_rows[item_id]
            matrix[row] = matrix_in[position]
            if row < n:
                self._titles[row] = titles[position]
        self._ids.extend(fresh)
        self._titles.extend(titles[latest[item_id]] for item_id in fresh)
        self._view = (matrix, n + len(fresh))  # publish: readers now see the new rows
        self._rows.update(new_rows)

    def _check_batch(
        self, item_ids: Sequence[str], titles: Sequence[str], vectors: np.ndarray
    ) -> np.ndarray:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise InputError(f"vectors must be (n, {self.dim}), got {matrix.shape}")
        if not len(item_ids) == len(titles) == matrix.shape[0]:
            raise InputError(
                f"{len(item_ids)} ids, {len(titles)} titles and {matrix.shape[0]} vectors differ"
            )
        if isinstance(item_ids, str) or not all(isinstance(i, str) for i in item_ids):
            raise InputError("item_ids must be a sequence of str")
        if not np.isfinite(matrix).all():
            raise InputError("vectors contain NaN or infinity")
        return matrix

    def _grown(self, matrix: np.ndarray, n: int, needed: int) -> np.ndarray:
        capacity = max(1, matrix.shape[0])
        while capacity < needed:
            capacity *= 2
        bigger = np.zeros((capacity, self.dim), dtype=np.float32)
        bigger[:n] = matrix[:n]
        return bigger

    def vector(self, item_id: str) -> np.ndarray | None:
        """A copy of the item's vector, or None for an unknown id."""
        row = self._rows.get(item_id)
        return None if row is None else self._view[0][row].copy()

    def vectors_of(self, item_ids: Sequence[str]) -> tuple[list[int], np.ndarray]:
        """The known ones of ``item_ids``: their positions in ``item_ids`` and a copy of their
        vectors, one row each in that order (``(0, dim)`` when none is known). One gather."""
        rows = self._rows
        found = [(i, row) for i, item_id in enumerate(item_ids)
                 if (row := rows.get(item_id)) is not None]
        matrix, _ = self._view  # rows below the published count never change place
        picked = np.fromiter((row for _, row in found), dtype=np.int64, count=len(found))
        return [i for i, _ in found], matrix[picked]

    def title_of(self, item_id: str) -> str | None:
        row = self._rows.get(item_id)
        return None if row is None else self._titles[row]

    def item_id_at(self, row: int) -> str:
        if not 0 <= row < len(self):
            raise InputError(f"row {row} is outside the index (0..{len(self) - 1})")
        return self._ids[row]

    def row_of(self, item_id: str) -> int | None:
        return self._rows.get(item_id)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Raw inner products (m, len(self)) float32 in row order: one matrix product, no sort."""
        query = np.asarray(queries, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise InputError(f"queries must be (m, {self.dim}), got {query.shape}")
        matrix, n = self._view  # one snapshot for the whole call
        out: np.ndarray = inner_products(query, matrix[:n])
        return out

    def vectors_view(self) -> np.ndarray:
        """Rows ``[0, len(self))`` as a read-only view, no copy (what an ANN index syncs from
        and candidate rows are rescored with); a row replaced later shows through."""
        matrix, n = self._view
        view = matrix[:n]
        view.flags.writeable = False
        return view

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best-first (scores (m, k'), rows (m, k') int64), k' = min(k, len(self)).

        One matrix product for all queries, ``argpartition`` to the top k', then a sort of those.
        """
        query = np.asarray(queries, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise InputError(f"queries must be (m, {self.dim}), got {query.shape}")
        if k < 0:
            raise ConfigurationError(f"k must be >= 0, got {k}")
        matrix, n = self._view  # one snapshot for the whole call
        top = min(k, n)
        if top == 0:
            return (
                np.empty((query.shape[0], 0), dtype=np.float32),
                np.empty((query.shape[0], 0), dtype=np.int64),
            )
        scores = inner_products(query, matrix[:n])
        if top < n:
            candidates = np.argpartition(-scores, top - 1, axis=1)[:, :top]
        else:
            candidates = np.broadcast_to(np.arange(n), scores.shape)
        picked = np.take_along_axis(scores, candidates, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        rows = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
        return np.take_along_axis(picked, order, axis=1), rows
