"""Which candidate index ranks a large catalog: faiss IVF-PQ on the CPU, or the exact device
index (:class:`encoders.index.device.DeviceIndex`) on the text encoder's device; how one is
made, and how it is named on ``/metrics``. The pipeline keeps it in step with the catalog.
"""

from __future__ import annotations

import logging

from encoders import EncoderError
from encoders.index.ann import AnnIndex
from encoders.index.device import DeviceIndex
from encoders.runtime.providers import CUDA
from streams.settings import CANDIDATE_INDEXES

__all__ = ["candidate_kind", "describe", "new_candidate_index"]

log = logging.getLogger(__name__)


def candidate_kind(choice: str, provider: str) -> str:
    """``faiss`` or ``device`` for the setting ``choice`` and the text encoder's provider."""
    if choice not in CANDIDATE_INDEXES:
        raise ValueError(f"candidate index must be one of {', '.join(CANDIDATE_INDEXES)}, "
                         f"got {choice!r}")  # fmt: skip
    if choice == "auto":
        return "device" if provider == CUDA else "faiss"
    return choice


def new_candidate_index(
    kind: str, choice: str, dim: int, provider: str, *, threads: int | None, ann_min_items: int
) -> tuple[AnnIndex | DeviceIndex, str]:
    """A ``kind`` candidate index for ``dim``-wide vectors, on the encoder's ``provider``, and
    the kind it is. The device index chosen by ``auto`` (``choice``) that cannot start leaves
    faiss in its place (logged); one asked for by name fails."""
    if kind == "device":  # the encoder's device: CUDA, or the CPU when asked
        try:
            index = DeviceIndex(dim, provider="cuda" if provider == CUDA else "cpu",
                                threads=threads)  # fmt: skip
            return index, kind
        except EncoderError as exc:
            if choice != "auto":
                raise
            log.error("device item index unavailable, faiss candidates instead: %s", exc)
    return AnnIndex(dim, min_rows=max(1024, ann_min_items // 2)), "faiss"


def describe(index: AnnIndex | DeviceIndex) -> str:
    if isinstance(index, AnnIndex):
        return "faiss IVF-PQ (approximate, CPU)"
    return f"exact search on {index.provider} ({index.dtype})"
