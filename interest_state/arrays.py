"""Small numpy helpers shared by the modules of :mod:`interest_state` (private)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import DimensionError, ObservationError

FloatVector = npt.NDArray[np.float32]
"""A one-dimensional float32 array."""
FloatMatrix = npt.NDArray[np.float32]
"""A two-dimensional float32 array (one vector per row)."""


def frozen_vector(values: npt.ArrayLike, dim: int, what: str) -> FloatVector:
    """Return a read-only float32 copy of ``values``, checked to be finite with shape ``(dim,)``."""
    array: npt.NDArray[Any] = np.array(values, dtype=np.float32, copy=True)
    if array.shape != (dim,):
        raise DimensionError(f"{what} has shape {array.shape}, expected ({dim},)")
    if not np.all(np.isfinite(array)):
        raise ObservationError(f"{what} contains NaN or infinite values")
    array.setflags(write=False)
    return array


def frozen_any_vector(values: npt.ArrayLike, what: str) -> FloatVector:
    """Like :func:`frozen_vector` for a vector of any (non-zero) length."""
    array: npt.NDArray[Any] = np.array(values, dtype=np.float32, copy=True)
    if array.ndim != 1 or array.shape[0] < 1:
        raise DimensionError(f"{what} has shape {array.shape}, expected a non-empty vector")
    return frozen_vector(array, array.shape[0], what)


def unit(vector: npt.NDArray[Any]) -> FloatVector | None:
    """Return ``vector`` scaled to unit L2 norm as float32, or ``None`` when it is all zeros."""
    as64 = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(as64))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return (as64 / norm).astype(np.float32)


def unit_rows(rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The rows of a matrix scaled to unit L2 norm, as float64 (all-zero rows stay zero)."""
    matrix = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    out: npt.NDArray[np.float64] = np.divide(
        matrix, norms, out=np.zeros_like(matrix), where=norms > 0.0
    )
    return out


#: Up to this many queries, :func:`inner_products` takes the product the other way round.
FEW_QUERIES = 32


def inner_products(queries: npt.NDArray[Any], matrix: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``queries @ matrix.T`` ((m, d) by (n, d) -> (m, n), C order), quicker for a few queries.

    OpenBLAS multiplies a few short rows by a tall transposed matrix slowly: with one BLAS
    thread here, for 4 queries against 1,682 x 384 float32 rows, ``queries @ matrix.T`` takes
    0.37 ms and ``(matrix @ queries.T).T`` 0.16 (1.1-2.9x for 2 to 32 queries at widths of
    64 to 384 and 1.7k to 1M rows, the least at 32; no gain for 1, mixed from 64). A live
    stream's batches touch a few users each, so up to :data:`FEW_QUERIES` queries go that way
    round (plus one copy of the small result into C order); more go straight. The values agree
    to float32 rounding.
    """
    if 1 < queries.shape[0] <= FEW_QUERIES:
        return np.ascontiguousarray((matrix @ queries.T).T)
    out: npt.NDArray[Any] = queries @ matrix.T
    return out
