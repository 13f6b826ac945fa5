"""Exact inner-product candidates on an ONNX Runtime device: the item index on the GPU.

A :class:`DeviceIndex` keeps the rows ``[0, covered)`` of a source matrix (the catalog's text
vectors, or a sequence model's item vectors with their ``known`` flags) in a matrix on the
device of an ONNX Runtime session: float16 on the CUDA provider, float32 on the CPU one. It has
the ``sync`` / ``candidates`` contract of :class:`encoders.index.ann.AnnIndex`, so
:mod:`interest_state.blend_ann` ranks over either; where faiss's IVF-PQ answers approximately,
this one is exact. A search is one run of a two-node graph: ``Gemm`` of the queries against
every row plus a per-row bias, then ``TopK``. The bias is 0 for a live row and -inf for a row
that is not known, not synced yet, or beyond the rows in use (the device matrix has room to
grow, doubling), so those never come back. On CUDA the scores are float16: the result is a
candidate set, which the caller rescores in float32 (rounding can only swap near-equal rows at
the edge of the set).

:meth:`DeviceIndex.sync` sends only what changed: new rows and the touched rows whose vector or
``known`` flag changed go to the device in one run of a second graph (``ScatterND`` /
``ScatterElements`` from the live pair of buffers into a spare pair, swapped in after; a
``Gather`` in the same run returns the changed rows' old vectors), so the matrix is not sent
again for a few rows. Growing past the room, many new rows at once, or another ``version``
(another sequence model) send every row again.

The moments (count, sum, sum of outer products, see :class:`encoders.index.ann.Moments`) are summed
afresh from the float32 source whenever every row is sent, and kept up to date by each patch:
exact for every vector added; a replaced row leaves them with its device copy (float16 on CUDA:
approximate for one row in n, as ``AnnIndex``'s decoded codes are). In float16 a value beyond
its range (65,504) is refused rather than turned into infinity.

Device memory: two pairs of buffers, ``2 * room * dim`` values and ``2 * room`` biases (the
spare pair is let go before a full send allocates the new one), plus one search's
``queries x room`` scores (1M rows of 384-d text in float16: 1.5 GiB, and 128 MiB of scores
for 64 queries).

Concurrency contract: one writer (:meth:`~DeviceIndex.sync`, serialised by the caller) and any
number of readers (:meth:`~DeviceIndex.candidates` from executor threads). A search holds this
index's lock while it runs; a patch writes into the spare pair without it and swaps the pairs
(with the moments and ``covered`` that go with them) under it, so no search reads a pair while
it is written, and each search sees one consistent snapshot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from encoders.errors import ConfigurationError, InferenceError, InputError, ModelLoadError
from encoders.index.ann import Candidates, Moments, check_finite, check_source, fingerprint
from encoders.index.device_graphs import graphs
from encoders.runtime.providers import CUDA, choose_providers, session_options

__all__ = ["DeviceIndex"]

log = logging.getLogger(__name__)

Rows = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]
_CHUNK = 65_536
"""Rows per block when every row is cast, fingerprinted and summed (bounds the host memory)."""
_HALF_MAX = float(np.finfo(np.float16).max)


@dataclass(slots=True, eq=False)
class _Buffers:
    """One pair of device buffers: ``items`` (room, dim) and ``bias`` (room,), as OrtValues
    (``host`` keeps the array a CPU OrtValue may share memory with alive)."""

    items: Any
    bias: Any
    host: tuple[np.ndarray, ...] = ()


class DeviceIndex:
    """Exact top-k candidates by inner product on an ONNX Runtime device; see the module."""

    def __init__(
        self,
        dim: int,
        *,
        provider: str = "auto",
        room: int = 1024,
        threads: int | None = None,
        chunk: int = 65_536,
        half: bool | None = None,
    ) -> None:
        """``half``: float16 buffers and graphs (default: on CUDA only; the CPU provider runs
        them too, which the tests use)."""
        if min(dim, room, chunk) < 1:
            raise ConfigurationError(f"need dim, room and chunk >= 1, got {dim}, {room}, {chunk}")
        self.dim = dim
        self.chunk = chunk
        providers = choose_providers(provider)
        self.provider: str = providers[0]
        self.device = "cuda" if self.provider == CUDA else "cpu"
        half = self.provider == CUDA if half is None else half
        self.dtype = np.dtype(np.float16 if half else np.float32)
        search, patch = graphs(half)
        options = session_options(threads)
        try:
            self._search = ort.InferenceSession(search, sess_options=options, providers=providers)
            self._patch = ort.InferenceSession(patch, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises untyped pybind errors
            raise ModelLoadError(f"the device index's graphs do not load on {providers}: {exc}"
                                 ) from exc
        self._lock = threading.Lock()
        self._min_room = room
        self._version = ""
        self._covered = 0
        self._moments = Moments.zero(dim)
        self._live: _Buffers | None = None
        self._spare: _Buffers | None = None
        self._room = 0
        #: Times every row was sent (start, growth, many new rows, another version).
        self.full_sends = 0
        self._present = np.zeros(0, dtype=bool)  # rows with a live vector on the device
        self._prints = np.zeros(0, dtype=np.uint64)
        log.info("device item index (dim %d) on %s, %s", dim, self.provider, self.dtype)

    def __repr__(self) -> str:
        return (
            f"DeviceIndex(dim={self.dim}, provider={self.provider!r}, version={self.version!r}, "
            f"covered={self.covered}, vectors={len(self)}, room={self.room})"
        )

    @property
    def version(self) -> str:
        return self._version

    @property
    def covered(self) -> int:
        """Rows ``[0, covered)`` of the source have been synced."""
        return self._covered

    @property
    def room(self) -> int:
        """Rows the device buffers hold before they grow."""
        return self._room

    def __len__(self) -> int:
        """Live vectors (synced rows that are known)."""
        return self._moments.count

    def sync(
        self,
        vectors: npt.ArrayLike,
        known: npt.ArrayLike | None = None,
        *,
        version: str = "",
        touched: Sequence[int] | npt.NDArray[np.integer[Any]] = (),
    ) -> int:
        """Bring the device copy up to the source rows ``[0, len(vectors))``; return the rows
        added. Arguments as :meth:`encoders.index.ann.AnnIndex.sync`."""
        matrix, flags, touched_rows = check_source(self.dim, vectors, known, touched)
        n = len(matrix)
        if self._live is None or version != self._version:
            self._upload(matrix, flags, version)
            return n
        start = self._covered
        fresh = np.arange(start, n, dtype=np.int64)
        if n > self._room or 8 * len(fresh) > self._room:  # cheaper to send everything
            self._upload(matrix, flags, version)
            return max(n - start, 0)
        rows = touched_rows[touched_rows < start]
        if len(rows):
            present = self._present[rows]
            changed = (present != flags[rows]) | (
                present & (self._prints[rows] != fingerprint(matrix[rows])))
            self._send(rows[changed], matrix, flags)
        self._send(fresh, matrix, flags)
        return max(n - start, 0)

    def candidates(self, queries: npt.ArrayLike, count: int) -> Candidates:
        """The ``count`` best rows per query (exactly, up to float16 rounding on CUDA), -1 where
        fewer rows are live, with the index's snapshot."""
        query = np.ascontiguousarray(queries, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise InputError(f"queries must be (m, {self.dim}), got {query.shape}")
        self._check_values(query, "queries")
        if count < 1:
            raise ConfigurationError(f"count must be >= 1, got {count}")
        rows = np.full((len(query), count), -1, dtype=np.int64)
        with self._lock:
            live = self._live
            if live is not None and len(self) and len(query):
                take = min(count, self._room)
                binding = self._search.io_binding()
                binding.bind_cpu_input("queries", query.astype(self.dtype, copy=False))
                binding.bind_ortvalue_input("items", live.items)
                binding.bind_ortvalue_input("bias", live.bias)
                binding.bind_cpu_input("k", np.array([take], dtype=np.int64))
                binding.bind_output("values", "cpu")
                binding.bind_output("rows", "cpu")
                try:
                    self._search.run_with_iobinding(binding)
                except Exception as exc:  # onnxruntime raises untyped pybind errors (e.g. OOM)
                    raise InferenceError(f"device index search of {len(query)} queries failed "
                                         f"on {self.provider}: {exc}") from exc  # fmt: skip
                values, found = binding.copy_outputs_to_cpu()
                rows[:, :take] = np.where(np.isfinite(values), found, -1)
            return Candidates(rows, self._covered, self._moments, self._version)

    def _upload(self, matrix: Vectors, flags: npt.NDArray[np.bool_], version: str) -> None:
        """Send every row to fresh buffers with room for them (doubling from the least), with
        the moments of the known rows summed afresh; the old spare pair is let go first, so the
        device holds two pairs at most meanwhile."""
        n = len(matrix)
        room = max(self._min_room, self._room)
        while room < n:
            room *= 2
        with self._lock:
            self._spare = None
        try:
            items = np.zeros((room, self.dim), dtype=self.dtype)
            bias = np.full(room, -np.inf, dtype=self.dtype)
            prints = np.zeros(room, dtype=np.uint64)
        except MemoryError as exc:
            raise InferenceError(f"no host memory for {room:,} x {self.dim}: {exc}") from exc
        moments = Moments.zero(self.dim)
        for low in range(0, n, _CHUNK):  # one pass, in blocks: check, sum, cast, fingerprint
            high = min(low + _CHUNK, n)
            block, known = matrix[low:high], flags[low:high]
            self._check_values(block[known], f"rows {low}..{high - 1}")
            moments = moments.plus(block[known])
            items[low:high] = np.where(known[:, None], block, 0)
            prints[low:high] = fingerprint(block)
        bias[:n][flags] = 0
        try:
            fresh = _Buffers(ort.OrtValue.ortvalue_from_numpy(items, self.device, 0),
                             ort.OrtValue.ortvalue_from_numpy(bias, self.device, 0),
                             (items, bias) if self.device == "cpu" else ())  # fmt: skip
        except Exception as exc:  # e.g. out of device memory
            raise InferenceError(f"cannot place {room:,} x {self.dim} on {self.device}: {exc}"
                                 ) from exc
        present = np.zeros(room, dtype=bool)
        present[:n] = flags
        self.full_sends += 1
        with self._lock:
            self._live, self._room = fresh, room
            self._present, self._prints = present, prints
            self._version, self._covered, self._moments = version, n, moments

    def _send(self, rows: Rows, matrix: Vectors, flags: npt.NDArray[np.bool_]) -> None:
        """Write ``rows`` (unique, within the room) into the device copy, ``chunk`` at a time:
        each chunk is patched into the spare buffers, which are then swapped in together with
        the moments and ``covered`` that go with them."""
        for low in range(0, len(rows), self.chunk):
            part = rows[low : low + self.chunk]
            known = flags[part]
            vectors = matrix[part]
            self._check_values(vectors[known], "synced rows")
            live, spare, old = self._patched(part, np.where(known[:, None], vectors, 0), known)
            moments = self._moments.plus(old[self._present[part]], sign=-1).plus(vectors[known])
            self._present[part] = known
            self._prints[part] = fingerprint(vectors)
            with self._lock:
                self._live, self._spare = spare, live
                self._moments = moments
                self._covered = max(self._covered, int(part.max()) + 1)

    def _patched(self, rows: Rows, values: Vectors, known: npt.NDArray[np.bool_]
                 ) -> tuple[_Buffers, _Buffers, Vectors]:
        """One run of the patch graph from the live buffers into the spare ones (which no
        search reads: searches hold the lock, swaps happen under it); returns both pairs and
        the rows' previous device vectors as float32."""
        live = self._live
        if live is None:  # sync uploads before it sends rows
            raise RuntimeError("rows sent before the first upload")
        spare = self._spare or self._empty_buffers()
        binding = self._patch.io_binding()
        binding.bind_ortvalue_input("items", live.items)
        binding.bind_ortvalue_input("bias", live.bias)
        binding.bind_cpu_input("rows", np.ascontiguousarray(rows, dtype=np.int64))
        binding.bind_cpu_input("values", np.ascontiguousarray(values, dtype=self.dtype))
        binding.bind_cpu_input("bias_values", np.where(known, 0, -np.inf).astype(self.dtype))
        binding.bind_output("old", "cpu")
        binding.bind_ortvalue_output("new_items", spare.items)
        binding.bind_ortvalue_output("new_bias", spare.bias)
        try:
            self._patch.run_with_iobinding(binding)
        except Exception as exc:  # onnxruntime raises untyped pybind errors
            raise InferenceError(f"device index patch of {len(rows)} rows failed on "
                                 f"{self.provider}: {exc}") from exc  # fmt: skip
        # only "old" comes back to the host (copy_outputs_to_cpu would copy the new matrix too)
        old: Vectors = binding.get_outputs()[0].numpy().astype(np.float32)
        return live, spare, old

    def _check_values(self, values: Vectors, what: str) -> None:
        """Finite, and within float16's range when the buffers are float16 (a value beyond it
        would become inf on the device and its scores NaN)."""
        check_finite(values, what)
        if self.dtype == np.float16 and values.size and float(np.abs(values).max()) > _HALF_MAX:
            raise InputError(f"{what} exceed float16's range (|x| > {_HALF_MAX:g})")

    def _empty_buffers(self) -> _Buffers:
        """A spare pair (the first patch after a full send makes it: with one copy of the
        matrix on the device, the likeliest place to run out of its memory)."""
        new = ort.OrtValue.ortvalue_from_shape_and_type
        try:
            return _Buffers(new([self._room, self.dim], self.dtype.type, self.device, 0),
                            new([self._room], self.dtype.type, self.device, 0))  # fmt: skip
        except Exception as exc:  # onnxruntime raises untyped errors (or MemoryError)
            raise InferenceError(f"cannot place a spare {self._room:,} x {self.dim} on "
                                 f"{self.device}: {exc}") from exc  # fmt: skip
