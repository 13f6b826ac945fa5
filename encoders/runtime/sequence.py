"""The sequence (interest) Transformer at runtime: onnxruntime + numpy, no torch.

A user's last ``max_len`` events become int64 arrays (item rows, event types, time-gap buckets,
mask, and the hour of day and day of week of each event), left-padded; one :class:`SequenceModel`
session turns a batch of them into user vectors in the item space, and ranking is one matrix
product with :attr:`SequenceModel.items`. A model takes the inputs its graph declares: the four
of every model, plus ``hours`` and ``weekdays`` when it was trained with context; which extra
inputs a model uses (context, the tags vocabulary, the length of an item's ``vector``, dislike
events) is in its card (:class:`ModelInputs`), and a card without them is a model without them.
The same feature code (:func:`features`, in :mod:`encoders.runtime.sequence_features`) feeds
training, export validation and the stream, so the three cannot drift apart. Training lives in
:mod:`encoders.build.sequence_train` (its inputs, ``TrainConfig`` and ``TrainingData``, in
:mod:`encoders.build.sequence_data`),
export in :mod:`encoders.build.sequence_export` (torch, imported lazily).

Model folder (written by :func:`encoders.build.sequence_export.export_sequence_model`)::

    sequence.onnx       item_rows, event_types, gap_buckets, mask [, hours, weekdays] [B, L]
                        int64 -> user [B, D]
    items.npy           float32 [n_items, D], the output item vectors in catalog order
    text_proj.npz       weight [T, D], bias [D] (+ tag_weight [n_tags, D], vector_weight [V, D]
                        when the model uses tags / item vectors): a brand-new item's vector
    sequence.json       the model card: item ids, data, split, metrics, parameters, seed, version

Errors are those of :mod:`encoders.errors` (``ModelNotFoundError``, ``ModelLoadError``,
``InputError``, ``InferenceError``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from encoders.errors import InferenceError, InputError, ModelLoadError, ModelNotFoundError
from encoders.runtime.providers import choose_providers, session_options
from encoders.runtime.sequence_features import (
    CONTEXT_INPUTS,
    DISLIKE,
    DISLIKE_INDEX,
    EVENT_TYPES,
    GAP_BOUNDARIES_S,
    INPUT_NAMES,
    N_GAP_BUCKETS,
    OTHER_INDEX,
    ModelInputs,
    SequenceEvent,
    SequenceFeatures,
    event_type_index,
    features,
    gap_buckets,
    hours_and_weekdays,
)

__all__ = [
    "CARD_FILE",
    "EVENT_TYPES",
    "CONTEXT_INPUTS",
    "DISLIKE",
    "DISLIKE_INDEX",
    "GAP_BOUNDARIES_S",
    "INPUT_NAMES",
    "ITEMS_FILE",
    "ItemProjection",
    "N_GAP_BUCKETS",
    "OTHER_INDEX",
    "SEQUENCE_FILE",
    "TEXT_PROJ_FILE",
    "ModelInputs",
    "SequenceEvent",
    "SequenceFeatures",
    "SequenceModel",
    "event_type_index",
    "features",
    "gap_buckets",
    "hours_and_weekdays",
    "is_sequence_model",
]

SEQUENCE_FILE = "sequence.onnx"
ITEMS_FILE = "items.npy"
TEXT_PROJ_FILE = "text_proj.npz"
CARD_FILE = "sequence.json"
def is_sequence_model(model_dir: Path) -> bool:
    return all((Path(model_dir) / f).is_file() for f in (SEQUENCE_FILE, ITEMS_FILE, CARD_FILE))


class ItemProjection:
    """The vector of an item a model never saw (``text_proj.npz``): its text vector's
    projection, plus (for a model trained with them) the mean of its known tags' rows of
    ``tag_weight`` and its ``vector`` times ``vector_weight``, as in training.

    The fallback: an item without tags (or none the model knows), or without a ``vector`` (or
    one of another length, or not finite), gets nothing from them: its text alone stands for it.
    """

    def __init__(self, arrays: dict[str, np.ndarray], inputs: ModelInputs) -> None:
        if not {"weight", "bias"} <= arrays.keys():
            raise ModelLoadError(f"{TEXT_PROJ_FILE} lacks weight or bias")
        self.weight, self.bias, self.inputs = arrays["weight"], arrays["bias"], inputs
        dim = self.bias.shape[0]
        self.tag_weight, self.vector_weight = arrays.get("tag_weight"), arrays.get("vector_weight")
        declared = (("tag_weight", self.tag_weight, len(inputs.tags)),
                    ("vector_weight", self.vector_weight, inputs.vector_dim))  # fmt: skip
        for name, given, rows in declared:
            shape = None if given is None else given.shape
            if (rows or shape is not None) and shape != (rows, dim):
                raise ModelLoadError(f"{TEXT_PROJ_FILE}: {name} of shape {shape} does not fit "
                                     f"the card's inputs ({rows} rows of {dim})")  # fmt: skip
        self._tag_row = {tag: n for n, tag in enumerate(inputs.tags)}

    def __call__(
        self,
        text_vectors: np.ndarray,
        *,
        tags: Sequence[Sequence[str]] | None = None,
        vectors: Sequence[npt.ArrayLike | None] | None = None,
    ) -> np.ndarray:
        """float32 [n, D] from n text vectors and, optionally, the n items' tags and vectors."""
        text = np.asarray(text_vectors, dtype=np.float32)
        if text.ndim != 2 or text.shape[1] != self.weight.shape[0]:
            raise InputError(f"text vectors must be [n, {self.weight.shape[0]}], got {text.shape}")
        for given in (tags, vectors):
            if given is not None and len(given) != len(text):
                raise InputError(f"{len(given)} tags or vectors for {len(text)} text vectors")
        out: np.ndarray = text @ self.weight + self.bias
        if tags is not None and self.tag_weight is not None:
            out += self.tag_matrix(tags) @ self.tag_weight
        if vectors is not None and self.vector_weight is not None:
            out += self.vector_matrix(vectors) @ self.vector_weight
        return out

    def tag_matrix(self, tags: Sequence[Sequence[str]]) -> np.ndarray:
        """[n, n_tags] float32: each row the mean over the item's known tags (zeros: none)."""
        matrix = np.zeros((len(tags), len(self.inputs.tags)), dtype=np.float32)
        for n, item_tags in enumerate(tags):
            cols = sorted({self._tag_row[t] for t in item_tags if t in self._tag_row})
            if cols:
                matrix[n, cols] = 1.0 / len(cols)
        return matrix

    def vector_matrix(self, vectors: Sequence[npt.ArrayLike | None]) -> np.ndarray:
        """[n, vector_dim] float32; zeros for an item without a finite vector of that length."""
        dim = self.inputs.vector_dim
        matrix = np.zeros((len(vectors), dim), dtype=np.float32)
        for n, vector in enumerate(vectors):
            row = None if vector is None else np.asarray(vector, dtype=np.float32).ravel()
            if row is not None and row.shape == (dim,) and np.isfinite(row).all():
                matrix[n] = row
        return matrix


class SequenceModel:
    """User vectors from an exported sequence model; one ``InferenceSession``, reused.

    ``items`` (float32 [n_items, D]) is the item matrix in the order of ``item_ids``;
    ``scores = encode_users(...) @ items.T``.
    """

    def __init__(self, session: Any, items: np.ndarray, card: dict[str, Any],
                 text_proj: dict[str, np.ndarray] | None) -> None:  # fmt: skip
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
        self.inputs = ModelInputs.from_card(card)
        if items.shape[0] != len(self.item_ids):
            raise ModelLoadError(
                f"{ITEMS_FILE} has {items.shape[0]} rows for {len(self.item_ids)} item ids"
            )
        graph = tuple(i.name for i in session.get_inputs())
        if graph != self.inputs.graph_inputs:
            raise ModelLoadError(f"the graph takes {graph}, the card declares "
                                 f"{self.inputs.graph_inputs}")  # fmt: skip
        self.projection = None if text_proj is None else ItemProjection(text_proj, self.inputs)

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
                    proj = {key: npz[key].astype(np.float32) for key in npz.files}
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
        return features(histories, self.row_of, self.max_len, context=self.inputs.context,
                        dislikes=self.inputs.dislikes)  # fmt: skip

    def run(self, batch: SequenceFeatures) -> np.ndarray:
        """The graph on an already padded batch: float32 [B, D]."""
        try:
            out = self._session.run(None, batch.feeds(self.inputs.graph_inputs))[0]
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

    def item_vectors_from_text(
        self,
        text_vectors: np.ndarray,
        *,
        tags: Sequence[Sequence[str]] | None = None,
        vectors: Sequence[npt.ArrayLike | None] | None = None,
    ) -> np.ndarray:
        """Output vectors of items the model never saw (:class:`ItemProjection`)."""
        if self.projection is None:
            raise ModelLoadError(f"this model has no {TEXT_PROJ_FILE}")
        return self.projection(text_vectors, tags=tags, vectors=vectors)

    def scores(self, user_vectors: np.ndarray) -> np.ndarray:
        """Inner products with every item, float32 [B, n_items]."""
        out: np.ndarray = np.asarray(user_vectors, dtype=np.float32) @ self.items.T
        return out
