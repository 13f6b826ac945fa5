"""Exact top-k search by inner product over the item catalog.

Concurrency contract: one writer (the event loop, calling :meth:`ItemIndex.upsert`) and any
number of readers (executor threads calling :meth:`ItemIndex.search`). New rows are written
beyond the published count and only then published; growth copies into a new array (capacity
doubles) and swaps the reference. ``(matrix, n, deleted rows)`` is published as one tuple, so
a reader snapshots them at once and never sees an unwritten row. A row *replaced* in place may
be read half-updated by a concurrent search; that costs one stale score, never a crash.

Deleting an item (:meth:`ItemIndex.delete`, the catalog's tombstone) keeps its row and marks it
deleted: the id no longer resolves (``vector``, ``row_of``, ``title_of``, ``in``), ``search``
never returns the row and ``scores`` gives it ``-inf``, and ``len`` counts live items only. Rows
never move, so whatever is aligned row for row with the index (a sequence model's items, the
candidate indexes) stays aligned; :meth:`ItemIndex.deleted_rows` tells it which rows to leave
out. Upserting the id again brings the item back in its old row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from encoders.errors import ConfigurationError, InputError
from interest_state import inner_products

__all__ = ["ItemIndex"]


def _frozen(rows: np.ndarray) -> np.ndarray:
    out = np.asarray(rows, dtype=np.int64)
    out.flags.writeable = False
    return out


_NONE = _frozen(np.empty(0, dtype=np.int64))


class ItemIndex:
    """Item vectors (float32, one row per item id) with exact inner-product top-k."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        if dim < 1 or capacity < 1:
            raise ConfigurationError(f"need dim >= 1 and capacity >= 1, got {dim}, {capacity}")
        self.dim = dim
        #: (matrix, rows in use, deleted rows: sorted, read-only), published as one tuple
        self._view: tuple[np.ndarray, int, np.ndarray] = (
            np.zeros((capacity, dim), dtype=np.float32), 0, _NONE)
        self._ids: list[str] = []
        self._titles: list[str] = []
        self._rows: dict[str, int] = {}  # live items only
        self._gone: dict[str, int] = {}  # deleted items: their rows, kept for a return

    @property
    def capacity(self) -> int:
        return int(self._view[0].shape[0])

    def __len__(self) -> int:
        """Live items (rows in use less the deleted ones)."""
        _, n, dead = self._view
        return n - len(dead)

    @property
    def rows(self) -> int:
        """Rows in use, deleted ones included: ``vectors_view`` and ``scores`` have this many."""
        return self._view[1]

    @property
    def deleted_rows(self) -> np.ndarray:
        """The rows of deleted items, sorted, read-only (empty when none is deleted)."""
        return self._view[2]

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and item_id in self._rows

    def __repr__(self) -> str:
        return (f"ItemIndex(dim={self.dim}, items={len(self)}, rows={self.rows}, "
                f"capacity={self.capacity})")  # fmt: skip

    def upsert(self, item_ids: Sequence[str], titles: Sequence[str], vectors: np.ndarray) -> None:
        """Add new ids at the end, overwrite the rows of known ids (the last duplicate wins); a
        deleted id comes back in its old row."""
        matrix_in = self._check_batch(item_ids, titles, vectors)
        latest: dict[str, int] = {}
        for position, item_id in enumerate(item_ids):
            latest[item_id] = position
        matrix, n, dead = self._view
        back = {item_id: self._gone.pop(item_id) for item_id in latest if item_id in self._gone}
        fresh = [item_id for item_id in latest if item_id not in self._rows and item_id not in back]
        if n + len(fresh) > matrix.shape[0]:
            matrix = self._grown(matrix, n, n + len(fresh))
        new_rows = {item_id: n + offset for offset, item_id in enumerate(fresh)}
        for item_id, position in latest.items():
            row = self._rows.get(item_id)
            if row is None:
                row = back[item_id] if item_id in back else new_rows[item_id]
            matrix[row] = matrix_in[position]
            if row < n:
                self._titles[row] = titles[position]
        self._ids.extend(fresh)
        self._titles.extend(titles[latest[item_id]] for item_id in fresh)
        if back:
            dead = _frozen(np.setdiff1d(dead, list(back.values())))
        self._view = (matrix, n + len(fresh), dead)  # publish: readers now see the new rows
        self._rows.update(new_rows)
        self._rows.update(back)

    def delete(self, item_ids: Sequence[str]) -> list[int]:
        """Delete these items (unknown or already deleted ids are ignored); return their rows,
        sorted. See the module docstring for what a deleted row is."""
        if isinstance(item_ids, str):
            raise InputError("item_ids must be a sequence of str")
        gone = {item_id: row for item_id in dict.fromkeys(item_ids)
                if (row := self._rows.pop(item_id, None)) is not None}  # fmt: skip
        if not gone:
            return []
        self._gone.update(gone)
        matrix, n, dead = self._view
        self._view = (matrix, n, _frozen(np.union1d(dead, list(gone.values()))))  # publish
        return sorted(gone.values())

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
        matrix = self._view[0]  # rows below the published count never change place
        picked = np.fromiter((row for _, row in found), dtype=np.int64, count=len(found))
        return [i for i, _ in found], matrix[picked]

    def title_of(self, item_id: str) -> str | None:
        row = self._rows.get(item_id)
        return None if row is None else self._titles[row]

    def item_id_at(self, row: int) -> str:
        """The id of the item in ``row`` (a deleted row keeps the id it had)."""
        if not 0 <= row < self.rows:
            raise InputError(f"row {row} is outside the index (0..{self.rows - 1})")
        return self._ids[row]

    def row_of(self, item_id: str) -> int | None:
        return self._rows.get(item_id)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Raw inner products (m, rows) float32 in row order, ``-inf`` at deleted rows: one
        matrix product, no sort."""
        query = np.asarray(queries, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise InputError(f"queries must be (m, {self.dim}), got {query.shape}")
        matrix, n, dead = self._view  # one snapshot for the whole call
        out: np.ndarray = inner_products(query, matrix[:n])
        if len(dead):
            out[:, dead] = -np.inf
        return out

    def vectors_view(self) -> np.ndarray:
        """Rows ``[0, rows)`` as a read-only view, no copy (what an ANN index syncs from and
        candidate rows are rescored with); a row replaced later shows through. Deleted rows
        keep their last vector: see :attr:`deleted_rows`."""
        matrix, n, _ = self._view
        view = matrix[:n]
        view.flags.writeable = False
        return view

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best-first (scores (m, k'), rows (m, k') int64), k' = min(k, len(self)); deleted
        rows are never returned.

        One matrix product for all queries, ``argpartition`` to the top k', then a sort of those.
        """
        query = np.asarray(queries, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise InputError(f"queries must be (m, {self.dim}), got {query.shape}")
        if k < 0:
            raise ConfigurationError(f"k must be >= 0, got {k}")
        matrix, n, dead = self._view  # one snapshot for the whole call
        top = min(k, n - len(dead))
        if top == 0:
            return (
                np.empty((query.shape[0], 0), dtype=np.float32),
                np.empty((query.shape[0], 0), dtype=np.int64),
            )
        scores = inner_products(query, matrix[:n])
        if len(dead):  # below every live score: argpartition leaves them out of the top
            scores[:, dead] = -np.inf
        if top < n:
            candidates = np.argpartition(-scores, top - 1, axis=1)[:, :top]
        else:
            candidates = np.broadcast_to(np.arange(n), scores.shape)
        picked = np.take_along_axis(scores, candidates, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        rows = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
        return np.take_along_axis(picked, order, axis=1), rows
