"""Small numpy helpers shared by the modules of :mod:`interest_state` (private)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import DimensionError, ObservationError

FloatVector = npt.NDArray[np.float32]
"""A one-dimensional float32 array."""


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
