"""The sequence (interest) Transformer at runtime: onnxruntime + numpy, no torch.

A user's last ``max_len`` events become four int64 arrays (item rows, event types, time-gap
buckets, mask), left-padded; one :class:`SequenceModel` session turns a batch of them into user
vectors in the item space, and ranking is one matrix product with :attr:`SequenceModel.items`.
The same feature code (:func:`features`) feeds training, export validation and the stream, so
the three cannot drift apart. Training lives in :mod:`encoders.build.sequence_train` (its
inputs, :class:`~encoders.build.sequence_data.TrainConfig` and
:class:`~encoders.build.sequence_data.TrainingData`, in :mod:`encoders.build.sequence_data`),
export in :mod:`encoders.build.sequence_export` (torch, imported lazily).

Model folder (written by :func:`encoders.build.sequence_export.export_sequence_model`)::

    sequence.onnx       item_rows, event_types, gap_buckets, mask [B, L] int64 -> user [B, D]
    items.npy           float32 [n_items, D], the output item vectors in catalog order
    text_proj.npz       weight [T, D], bias [D]: item vector of a brand-new item from its text
    sequence.json       the model card: item ids, data, split, metrics, parameters, seed, version

Errors are those of :mod:`encoders.errors` (``ModelNotFoundError``, ``ModelLoadError``,
``InputError``, ``InferenceError``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from encoders.errors import InferenceError, InputError, ModelLoadError, ModelNotFoundError
from encoders.runtime.providers import choose_providers, session_options
from interest_state import EventType

__all__ = [
    "CARD_FILE",
    "EVENT_TYPES",
    "GAP_BOUNDARIES_S",
    "ITEMS_FILE",
    "N_GAP_BUCKETS",
    "SEQUENCE_FILE",
    "TEXT_PROJ_FILE",
    "SequenceEvent",
    "SequenceFeatures",
    "SequenceModel",
    "event_type_index",
    "features",
    "gap_buckets",
    "is_sequence_model",
]

SEQUENCE_FILE = "sequence.onnx"
ITEMS_FILE = "items.npy"
TEXT_PROJ_FILE = "text_proj.npz"
CARD_FILE = "sequence.json"
INPUT_NAMES = ("item_rows", "event_types", "gap_buckets", "mask")

EVENT_TYPES: tuple[str, ...] = tuple(
    kind.name.lower() for kind in (EventType.CLICK, EventType.BROWSE, EventType.COMMENT)
)
"""The event type names (``click``, ``browse``, ``comment``: :class:`interest_state.EventType`'s,
lower-cased) in the model's embedding order: index 0 is padding, 1.. these types, the last
index any other type. The order is the trained models' (not the enum's) and must not change."""

GAP_BOUNDARIES_S = tuple(float(4**k) for k in range(1, 15))
"""Log-spaced (x4) gap boundaries, 4 s .. ~8.5 years. Bucket 0 = padding, 1 = no previous
event, 2 + ``searchsorted(boundaries, gap)`` otherwise."""
N_GAP_BUCKETS = len(GAP_BOUNDARIES_S) + 3


class SequenceEvent(NamedTuple):
    """One event as the sequence model reads it."""

    item_id: str
    event_type: str
    ts: float


def event_type_index(event_type: str) -> int:
    try:
        return EVENT_TYPES.index(event_type) + 1
    except ValueError:
        return len(EVENT_TYPES) + 1


def gap_buckets(ts: Sequence[float]) -> np.ndarray:
    """Bucket of the gap before each event (1 for the first), int64."""
    times = np.asarray(ts, dtype=np.float64)
    out = np.ones(len(times), dtype=np.int64)
    if len(times) > 1:
        gaps = np.maximum(np.diff(times), 0.0)
        out[1:] = 2 + np.searchsorted(np.asarray(GAP_BOUNDARIES_S), gaps, side="right")
    return out


@dataclass(frozen=True, slots=True)
class SequenceFeatures:
    """A left-padded batch, ready for the graph (all int64, shape [B, L])."""

    item_rows: np.ndarray
    event_types: np.ndarray
    gap_buckets: np.ndarray
    mask: np.ndarray

    def feeds(self) -> dict[str, np.ndarray]:
        return dict(zip(INPUT_NAMES, self.arrays(), strict=True))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.item_rows, self.event_types, self.gap_buckets, self.mask


def features(
    histories: Sequence[Sequence[SequenceEvent]],
    row_of: dict[str, int],
    max_len: int,
    *,
    width: int | None = None,
) -> SequenceFeatures:
    """Encode each history's last ``max_len`` known events, left-padded to ``width``.

    ``row_of`` maps item ids to rows 1..n (0 is padding); events of unknown items are skipped.
    Gaps are taken over the whole known history, before the cut to ``max_len``. ``width``
    defaults to the longest kept history (at least 1).
    """
    kept: list[tuple[list[int], list[int], np.ndarray]] = []
    for history in histories:
        known = [e for e in history if e.item_id in row_of]
        buckets = gap_buckets([e.ts for e in known])[-max_len:] if known else np.empty(0, np.int64)
        known = known[-max_len:]
        rows = [row_of[e.item_id] for e in known]
        kept.append((rows, [event_type_index(e.event_type) for e in known], buckets))
    width = width or max(1, max((len(k[0]) for k in kept), default=1))
    shape = (len(histories), width)
    arrays = [np.zeros(shape, dtype=np.int64) for _ in range(4)]
    for n, (rows, types, buckets) in enumerate(kept):
        size = min(len(rows), width)
        if size:
            arrays[0][n, -size:] = rows[-size:]
            arrays[1][n, -size:] = types[-size:]
            arrays[2][n, -size:] = buckets[-size:]
            arrays[3][n, -size:] = 1
    return SequenceFeatures(*arrays)


def is_sequence_model(model_dir: Path) -> bool:
    return all((Path(model_dir) / f).is_file() for f in (SEQUENCE_FILE, ITEMS_FILE, CARD_FILE))


class SequenceModel:
    """User vectors from an exported sequence model; one ``InferenceSession``, reused.

    ``items`` (float32 [n_items, D]) is the item matrix in the order of ``item_ids``;
    ``scores = encode_users(...) @ items.T``.
    """

    def __init__(self, session: Any, items: np.ndarray, card: dict[str, Any],
                 text_proj: tuple[np.ndarray, np.ndarray] | None) -> None:  # fmt: skip
        self._session = session
        self.card = card
        try:
            self.item_ids: tuple[str, ...] = tuple(card["item_ids"])
            self.max_len = int(card["parameters"]["max_len"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{CARD_FILE} lacks item_ids or max_len: {exc}") from exc
        self.items = items
        self.version = str(card.get("version", "unknown"))
        self.row_of = {item_id: n + 1 for n, item_id in enumerate(self.item_ids)}
        self._text_proj = text_proj
        if items.shape[0] != len(self.item_ids):
            raise ModelLoadError(
                f"{ITEMS_FILE} has {items.shape[0]} rows for {len(self.item_ids)} item ids"
            )

    @property
    def dim(self) -> int:
        return int(self.items.shape[1])

    @classmethod
    def load(
        cls, model_dir: Path, *, provider: str = "auto", intra_op_threads: int | None = None
    ) -> SequenceModel:
        folder = Path(model_dir)
        if not is_sequence_model(folder):
            raise ModelNotFoundError(
                f"no sequence model in {folder} (want {SEQUENCE_FILE}, {ITEMS_FILE}, "
                f"{CARD_FILE}); train one with `interest-stream train --out {folder}`"
            )
        try:
            card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
            items = np.load(folder / ITEMS_FILE, allow_pickle=False).astype(np.float32)
            proj = None
            if (folder / TEXT_PROJ_FILE).is_file():
                with np.load(folder / TEXT_PROJ_FILE, allow_pickle=False) as npz:
                    proj = (npz["weight"].astype(np.float32), npz["bias"].astype(np.float32))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"unusable sequence model in {folder}: {exc}") from exc
        try:
            session = ort.InferenceSession(
                str(folder / SEQUENCE_FILE),
                sess_options=session_options(intra_op_threads),
                providers=choose_providers(provider),
            )
        except Exception as exc:  # onnxruntime raises untyped pybind errors
            path = folder / SEQUENCE_FILE
            raise ModelLoadError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        return cls(session, items, card, proj)

    def features(self, histories: Sequence[Sequence[SequenceEvent]]) -> SequenceFeatures:
        return features(histories, self.row_of, self.max_len)

    def run(self, batch: SequenceFeatures) -> np.ndarray:
        """The graph on an already padded batch: float32 [B, D]."""
        try:
            out = self._session.run(None, batch.feeds())[0]
        except Exception as exc:  # onnxruntime raises untyped pybind errors
            raise InferenceError(f"the sequence model failed: {exc}") from exc
        return np.asarray(out, dtype=np.float32)

    def encode_users(
        self, histories: Sequence[Sequence[SequenceEvent]], *, batch_size: int = 256
    ) -> np.ndarray:
        """User vectors float32 [len(histories), D], padded per batch of ``batch_size``.

        A history without any event of a known item gets the zero vector.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        parts = []
        for start in range(0, len(histories), batch_size):
            batch = self.features(histories[start : start + batch_size])
            vectors = self.run(batch)
            vectors[batch.mask.sum(axis=1) == 0] = 0.0  # no known event: no interest yet
            parts.append(vectors)
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def item_vectors_from_text(self, text_vectors: np.ndarray) -> np.ndarray:
        """Output vectors of items the model never saw, from their text vectors alone."""
        if self._text_proj is None:
            raise ModelLoadError(f"this model has no {TEXT_PROJ_FILE}")
        weight, bias = self._text_proj
        vectors = np.asarray(text_vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != weight.shape[0]:
            raise InputError(f"text vectors must be [n, {weight.shape[0]}], got {vectors.shape}")
        out: np.ndarray = vectors @ weight + bias
        return out

    def scores(self, user_vectors: np.ndarray) -> np.ndarray:
        """Inner products with every item, float32 [B, n_items]."""
        out: np.ndarray = np.asarray(user_vectors, dtype=np.float32) @ self.items.T
        return out
