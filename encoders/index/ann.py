"""Approximate inner-product search (faiss IVF-PQ) over catalog rows, kept in step with them.

An :class:`AnnIndex` mirrors the rows ``[0, covered)`` of a source matrix (the text vectors of
:class:`encoders.ItemIndex`, or a sequence model's item vectors with their ``known`` flags)
and answers "which rows score highest for these queries" approximately. It also keeps the
exact first and second moments of the vectors it was given (count, sum, sum of outer
products), so the mean and variance of ``q . x`` over those rows are ``q . sum / count`` and
``q^T outer q / count - mean^2`` without scoring them. Rows beyond ``covered`` (added to the
source since the last :meth:`AnnIndex.sync`) are the caller's to score exactly, so nothing is
ever missing, only slower until the next sync (:mod:`interest_state.blend_ann` does that).

The index is an inverted file (k-means lists, ``2 sqrt(rows)`` of them) of product-quantised
4-bit codes, one per dimension up to 128 dimensions and one per two above (faiss "fast scan",
SIMD table lookups): 96 B a row for 384-d text, 32 B for a 64-d sequence model, against the
``4 * dim`` bytes of the float copy the caller keeps and rescores candidates with. A search
scans ``probes`` lists, so its cost grows as ``sqrt(rows)``; the codes rank coarsely, so ask
for a few hundred candidates and rescore. Measured on the benchmark's catalog
(``streams.bench.ann``, 1M items, 2,000 lists, 128 probes, 64 queries on one core): the best
256 hold 96% of the exact top 10 of the 384-d text vectors in 26 ms and 99% of the 64-d
sequence model's in 13 ms; 8-bit scalar codes took 180 ms for the same text recall, and
HNSW (M=32) took 5x the build time for less recall at the same search time.

It is trained once ``min_rows`` rows are known (nothing is indexed before), and rebuilt,
lists re-trained, when the live rows have grown ``growth``-fold since or a quarter of the
entries are orphans; a rebuild runs outside the lock while searches use the old lists, and
is swapped in whole.

:meth:`AnnIndex.sync` appends the new rows and, for the rows named in ``touched``, notices a
changed vector (by fingerprint) or ``known`` flag: the old entry is orphaned (its label maps to
no row), the new vector is added under a new label, and the moments trade the old vector
(decoded from its codes: approximate, for one row of n) for the new one. A changed
``version`` (another sequence model) starts from scratch.

Concurrency contract: one writer (the caller serialises :meth:`~AnnIndex.sync`, e.g. under the
pipeline's index lock) and any number of readers (:meth:`~AnnIndex.candidates` from executor
threads). faiss must not search inverted lists while adding to them, so every faiss call on
the live lists holds this index's lock, ``chunk`` rows per hold. A search returns its rows,
``covered`` and the moments as one snapshot taken under the lock; the moments are immutable
and replaced, never updated in place.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from encoders.errors import ConfigurationError, InputError

__all__ = [
    "AnnIndex",
    "Candidates",
    "Moments",
    "check_finite",
    "check_source",
    "fingerprint",
    "limit_ann_threads",
]

Rows = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]
# faiss's type stubs lag its SWIG module (no SearchParametersIVF, no DirectMap)
_SEARCH_PARAMETERS: Any = getattr(faiss, "SearchParametersIVF")  # noqa: B009
_BY_LABEL: Any = getattr(faiss, "DirectMap").Array  # noqa: B009
_FINE_DIMS = 128
"""Up to this many dimensions, a 4-bit code per dimension; above, one per two (as accurate on
384-d text vectors, where the lists scanned limit recall; 2 per code lost 9% of the 64-d
sequence model's top 10)."""
_TRAIN_PER_LIST = 64
"""Training rows per list (faiss wants 39 at least)."""


def limit_ann_threads(threads: int) -> None:
    """Cap faiss's OpenMP pool (0 leaves it alone), as the worker caps numpy's BLAS pool."""
    if threads < 0:
        raise ConfigurationError(f"threads must be >= 0, got {threads}")
    if threads > 0:
        faiss.omp_set_num_threads(threads)


@dataclass(frozen=True, slots=True, eq=False)
class Moments:
    """``count`` vectors, their sum ``total`` (dim,) and sum of outer products ``outer``
    (dim, dim), both float64."""

    count: int
    total: npt.NDArray[np.float64]
    outer: npt.NDArray[np.float64]

    @classmethod
    def zero(cls, dim: int) -> Moments:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    def plus(self, vectors: Vectors, sign: int = 1) -> Moments:
        """These moments with ``vectors`` added (``sign`` 1) or taken out (``sign`` -1)."""
        if len(vectors) == 0:
            return self
        as64 = vectors.astype(np.float64)
        return Moments(
            self.count + sign * len(as64),
            self.total + sign * as64.sum(axis=0),
            self.outer + sign * (as64.T @ as64),
        )


@dataclass(frozen=True, slots=True, eq=False)
class Candidates:
    """One search: ``rows`` (m, count) best first, -1 where fewer were found; the index held
    the live vectors of rows ``[0, covered)`` (``moments``) of source ``version``."""

    rows: Rows
    covered: int
    moments: Moments
    version: str


class _Lists:
    """One trained faiss IVF-PQ (4-bit fast scan) index and its label <-> row maps."""

    def __init__(
        self, dim: int, version: str, sample: Vectors | None = None, lists: int = 1
    ) -> None:
        self.version = version
        self.trained_on = 0
        self.covered = 0
        self.moments = Moments.zero(dim)
        self.index: Any = None
        self.row_of_label = np.empty(0, dtype=np.int64)  # -1: orphaned by a replacement
        self.label_of_row = np.empty(0, dtype=np.int64)  # -1: row not in the index
        self.print_of_row = np.empty(0, dtype=np.uint64)
        if sample is not None:
            quantiser = faiss.IndexFlatIP(dim)
            codes = dim // 2 if dim > _FINE_DIMS and dim % 2 == 0 else dim
            self.index = faiss.IndexIVFPQFastScan(
                quantiser, dim, lists, codes, 4, faiss.METRIC_INNER_PRODUCT
            )
            self.index.set_direct_map_type(_BY_LABEL)  # reconstruct by label
            self.index.train(np.ascontiguousarray(sample))

    @property
    def entries(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def add(self, rows: Rows, vectors: Vectors, covered: int) -> None:
        """Add ``vectors`` as the entries of ``rows``; rows ``[0, covered)`` are synced."""
        first = self.entries
        if len(rows):
            self.index.add(vectors)
        self.row_of_label = np.concatenate([self.row_of_label, rows])
        if covered > len(self.label_of_row):
            size = max(covered, 2 * len(self.label_of_row))
            self.label_of_row = _grown(self.label_of_row, size, -1)
            self.print_of_row = _grown(self.print_of_row, size, 0)
        self.label_of_row[rows] = np.arange(first, first + len(rows), dtype=np.int64)
        self.print_of_row[rows] = fingerprint(vectors)
        self.moments = self.moments.plus(vectors)
        self.covered = covered

    def replace(self, rows: Rows, vectors: Vectors, known: npt.NDArray[np.bool_]) -> None:
        """Re-enter the ``rows`` whose known flag or vector changed: the old entry is orphaned
        and its decoded (approximate) vector leaves the moments."""
        labels = self.label_of_row[rows]
        present = labels >= 0
        changed = (present != known) | (present & (self.print_of_row[rows] != fingerprint(vectors)))
        gone = changed & present
        if gone.any():
            old = np.asarray(self.index.reconstruct_batch(labels[gone]), dtype=np.float32)
            self.moments = self.moments.plus(old, sign=-1)
            self.row_of_label[labels[gone]] = -1
            self.label_of_row[rows[gone]] = -1
        fresh = changed & known
        self.add(rows[fresh], np.ascontiguousarray(vectors[fresh]), self.covered)


class AnnIndex:
    """IVF-PQ (4-bit fast scan, inner product) over a source matrix's rows; see the module."""

    def __init__(
        self,
        dim: int,
        *,
        probes: int = 128,
        min_rows: int = 1024,
        growth: float = 4.0,
        chunk: int = 4096,
    ) -> None:
        if min(dim, probes, min_rows, chunk) < 1 or growth <= 1:
            raise ConfigurationError(
                "need dim, probes, min_rows and chunk >= 1 and growth > 1, got "
                f"{dim}, {probes}, {min_rows}, {chunk}, {growth}"
            )
        self.dim = dim
        self.probes = probes
        self.min_rows = min_rows
        self.growth = growth
        self.chunk = chunk
        self._lock = threading.Lock()
        self._lists = _Lists(dim, "")

    def __repr__(self) -> str:
        return (
            f"AnnIndex(dim={self.dim}, version={self.version!r}, covered={self.covered}, "
            f"vectors={len(self)}, orphans={self.orphans}, lists={self.lists})"
        )

    @property
    def version(self) -> str:
        return self._lists.version

    @property
    def covered(self) -> int:
        """Rows ``[0, covered)`` of the source have been synced."""
        return self._lists.covered

    def __len__(self) -> int:
        """Live vectors (synced rows that are known)."""
        return self._lists.moments.count

    @property
    def orphans(self) -> int:
        """Entries left behind by replaced rows (scanned, never returned; gone at a rebuild)."""
        return self._lists.entries - len(self)

    @property
    def lists(self) -> int:
        index = self._lists.index
        return 0 if index is None else int(index.nlist)

    def sync(
        self,
        vectors: npt.ArrayLike,
        known: npt.ArrayLike | None = None,
        *,
        version: str = "",
        touched: Sequence[int] | npt.NDArray[np.integer[Any]] = (),
    ) -> int:
        """Bring the index up to the source rows ``[0, len(vectors))``; return the rows added.

        ``known`` (one flag per row, default all true) says which rows have a vector; rows in
        ``touched`` below ``covered`` are compared with what the index holds and re-entered
        when they changed. May rebuild the whole index (see the module docstring).
        """
        matrix, flags, touched_rows = check_source(self.dim, vectors, known, touched)
        current = self._lists
        live = int(flags.sum())
        if self._needs_build(current, version, live):
            if live < self.min_rows:
                with self._lock:
                    self._lists = _Lists(self.dim, version)
                return 0
            return self._rebuild(matrix, flags, version)
        rows = touched_rows[touched_rows < current.covered]
        if len(rows):
            check_finite(matrix[rows[flags[rows]]], "touched rows")
            with self._lock:
                current.replace(rows, np.ascontiguousarray(matrix[rows]), flags[rows])
        start = current.covered
        for low in range(start, len(matrix), self.chunk):
            high = min(low + self.chunk, len(matrix))
            rows, block = _block(matrix, flags, low, high)
            with self._lock:
                current.add(rows, block, covered=high)
        return max(len(matrix) - start, 0)

    def _needs_build(self, current: _Lists, version: str, live: int) -> bool:
        if version != current.version or current.index is None:
            return True
        return live >= self.growth * current.trained_on or self.orphans * 4 > len(self)

    def _rebuild(self, matrix: Vectors, flags: npt.NDArray[np.bool_], version: str) -> int:
        """Train new lists on every known row and fill them, then swap them in."""
        live = np.flatnonzero(flags)
        lists = max(1, min(round(2 * math.sqrt(len(live))), len(live) // _TRAIN_PER_LIST))
        sample = matrix[live[:: max(1, len(live) // (_TRAIN_PER_LIST * lists))]]
        check_finite(sample, "training rows")
        fresh = _Lists(self.dim, version, sample, lists)
        fresh.trained_on = len(live)
        for low in range(0, len(matrix), self.chunk):
            high = min(low + self.chunk, len(matrix))
            fresh.add(*_block(matrix, flags, low, high), covered=high)
        with self._lock:
            self._lists = fresh
        return len(matrix)

    def candidates(self, queries: npt.ArrayLike, count: int) -> Candidates:
        """The ``count`` best rows per query (approximately), with the index's snapshot."""
        query = np.ascontiguousarray(queries, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise InputError(f"queries must be (m, {self.dim}), got {query.shape}")
        check_finite(query, "queries")
        if count < 1:
            raise ConfigurationError(f"count must be >= 1, got {count}")
        with self._lock:
            lists = self._lists
            rows = np.full((len(query), count), -1, dtype=np.int64)
            if lists.entries and len(query):
                params = _SEARCH_PARAMETERS(nprobe=min(self.probes, lists.index.nlist))
                _, labels = lists.index.search(query, count, params=params)
                rows = np.where(labels >= 0, lists.row_of_label[labels.clip(0)], -1)
            return Candidates(rows.astype(np.int64), lists.covered, lists.moments, lists.version)


def check_source(
    dim: int,
    vectors: npt.ArrayLike,
    known: npt.ArrayLike | None,
    touched: Sequence[int] | npt.NDArray[np.integer[Any]],
) -> tuple[Vectors, npt.NDArray[np.bool_], Rows]:
    """A candidate index's ``sync`` arguments checked: the (n, dim) float32 source, one bool
    flag per row (all true when ``known`` is ``None``) and the touched rows, unique, sorted."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise InputError(f"vectors must be (n, {dim}), got {matrix.shape}")
    n = len(matrix)
    flags = np.ones(n, dtype=bool) if known is None else np.asarray(known)
    if flags.dtype != np.bool_ or flags.shape != (n,):
        raise InputError(f"known must be bool ({n},), got {flags.dtype} {flags.shape}")
    rows = np.unique(np.asarray(touched, dtype=np.int64).reshape(-1))
    if len(rows) and (rows[0] < 0 or rows[-1] >= n):
        raise InputError(f"touched rows must be within 0..{n - 1}")
    return matrix, flags, rows


def fingerprint(vectors: Vectors) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each row's exact float32 bits (to notice a replaced vector)."""
    bits = np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32).astype(np.uint64)
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, bits.shape[1], np.uint64) | 1
    with np.errstate(over="ignore"):
        out: npt.NDArray[np.uint64] = (bits * weights).sum(axis=1, dtype=np.uint64)
    return out


def _block(
    matrix: Vectors, flags: npt.NDArray[np.bool_], low: int, high: int
) -> tuple[Rows, Vectors]:
    rows = low + np.flatnonzero(flags[low:high]).astype(np.int64)
    block = np.ascontiguousarray(matrix[rows])
    check_finite(block, f"rows {low}..{high - 1}")
    return rows, block


def _grown(array: npt.NDArray[Any], size: int, fill: int) -> npt.NDArray[Any]:
    out = np.full(size, fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


def check_finite(vectors: Vectors, what: str) -> None:
    if not np.isfinite(vectors).all():
        raise InputError(f"{what} contain NaN or infinity")
