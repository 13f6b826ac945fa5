"""What training the sequence (interest) Transformer takes: its data and its hyper-parameters.

Kept apart from :mod:`encoders.build.sequence_train` (which imports torch at the top) so that a
command can build a :class:`TrainingData` and a :class:`TrainConfig` without torch, and import
the trainer only when it really trains (``streams.offline.train`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from encoders.runtime.sequence import DISLIKE_INDEX, SequenceEvent

__all__ = ["TrainConfig", "TrainingData", "next_targets"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters of :func:`encoders.build.sequence_train.train_sequence_model`."""

    max_len: int = 50
    dim: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.3
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 200
    eval_every: int = 2
    patience: int = 10
    """Evaluations without a better validation NDCG@10 before training stops."""
    seed: int = 0
    tags: bool = False
    """Fuse the items' tags into their vectors (a learned embedding per tag of the catalog,
    averaged over an item's tags). Off: measured on ml-100k, see docs/evaluation.md."""
    context: bool = False
    """Feed the hour of day and day of week of each event (UTC, from ``ts``) to the model."""
    dislikes: bool = False
    """Feed dislike events to the model as their own event type (off: they are left out of its
    inputs, as for models trained without them). Never targets either way: the model predicts the
    next item a user engages with, not the next one they reject."""
    item_vectors: bool = False
    """Fuse the items' ``vector`` (a fixed-length float list, e.g. an image embedding) into
    their vectors through a learned projection; needs :attr:`TrainingData.item_vectors`."""


@dataclass(frozen=True, slots=True)
class TrainingData:
    """Catalog (ids + text vectors, same order) and chronological per-user sequences."""

    item_ids: tuple[str, ...]
    text_vectors: np.ndarray
    train: tuple[tuple[SequenceEvent, ...], ...]
    validation: tuple[tuple[tuple[SequenceEvent, ...], str], ...]
    """(context, target item id) per validation user."""
    item_tags: tuple[tuple[str, ...], ...] = ()
    """Each catalog item's tags, in ``item_ids`` order (empty: no item has tags)."""
    item_vectors: np.ndarray | None = None
    """float32 [n_items, V]: each catalog item's ``vector``, a zero row for an item without one
    (``None``: no item has one)."""


def next_targets(item_rows: np.ndarray, event_types: np.ndarray) -> np.ndarray:
    """For each position, the row of the next event after it that is not a dislike (0: none):
    what the model learns to predict there. A dislike is input, never a target."""
    out = np.zeros_like(item_rows)
    following = 0
    for n in range(len(item_rows) - 1, -1, -1):
        out[n] = following
        if event_types[n] != DISLIKE_INDEX:
            following = item_rows[n]
    return out
