"""ONNX export of the sequence (interest) Transformer, validated against torch; needs torch.

The exported graph takes the padded feature arrays (the four of every model, plus ``hours``
and ``weekdays`` for a model with context) and returns the user vector (the hidden state at
the last position; the final block computes that position only). After every export torch and
ONNX Runtime are compared on real batches, and the runtime's vectors of new items (text, tags,
item vector: :meth:`SequenceModel.item_vectors_from_text`) with torch's for every catalog item;
:class:`ExportMismatchError` is raised beyond the tolerance; only then is the graph renamed into
place, and the model card (with the inputs the model uses, and the digests of every file) is
written last. Model and training:
:mod:`encoders.build.sequence_train`. Runtime (:mod:`encoders.runtime.sequence`) needs none of this.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np

from encoders.build.sequence_data import TrainConfig, TrainingData
from encoders.build.sequence_train import (
    SequenceTransformer,
    TrainResult,
    tensors,
    train_sequence_model,
)
from encoders.errors import (
    EXPORT_INSTALL_HINT,
    ExportDependencyError,
    ExportError,
    ExportMismatchError,
)
from encoders.runtime.sequence import (
    CARD_FILE,
    ITEMS_FILE,
    SEQUENCE_FILE,
    TEXT_PROJ_FILE,
    ItemProjection,
    SequenceFeatures,
)

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - the export extra is part of the dev install
    raise ExportDependencyError(f"training needs torch ({EXPORT_INSTALL_HINT}): {exc}") from exc

__all__ = [
    "SequenceTransformer",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "export_sequence_model",
    "train_sequence_model",
    "validate_item_vectors",
    "validate_sequence_export",
]

OPSET = 17
FORMAT_VERSION = 1


class _UserVectors(nn.Module):
    """What is exported: the hidden state at the last position."""

    def __init__(self, model: SequenceTransformer) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(*inputs, last_only=True)[:, -1, :]
        return out


# --------------------------------------------------------------------------- export


def _check_batches(result: TrainResult) -> list[SequenceFeatures]:
    """Two batches of different widths from the validation users (dynamic axes are used)."""
    batch = result.validation_batch
    if batch is None or batch.item_rows.shape[0] == 0:
        raise ExportError("the training result has no validation batch to check the export on")
    head = SequenceFeatures(*(a[:32] for a in batch.arrays()))
    narrow = SequenceFeatures(*(np.ascontiguousarray(a[:5, -7:]) for a in batch.arrays()))
    return [head, narrow]


def validate_sequence_export(
    model: SequenceTransformer,
    onnx_path: Path,
    batches: Sequence[SequenceFeatures],
    atol: float = 1e-4,
    names: Sequence[str] | None = None,
) -> float:
    """Max |torch - ONNX Runtime| over ``batches``; :class:`ExportMismatchError` above ``atol``.

    The tolerance is relative to the largest reference value when that exceeds 1. ``names``:
    the graph's inputs (default: the session's own).
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        raise ExportError(f"ONNX Runtime cannot load the export {onnx_path}: {exc}") from exc
    worst = 0.0
    model.eval()
    names = tuple(names or (i.name for i in session.get_inputs()))
    for batch in batches:
        with torch.inference_mode():
            expected = model(*tensors(batch, slice(None)))[:, -1, :].numpy()
        got = session.run(None, batch.feeds(names))[0]
        if got.shape != expected.shape:
            raise ExportMismatchError(math.inf, atol, f"shape {got.shape} != {expected.shape}")
        scale = max(1.0, float(np.abs(expected).max()))
        worst = max(worst, float(np.abs(got - expected).max()) / scale)
        if not np.isfinite(worst) or worst > atol:
            raise ExportMismatchError(worst, atol, f"batch of shape {batch.item_rows.shape}")
    return worst


def validate_item_vectors(
    model: SequenceTransformer, projection: dict[str, np.ndarray], result: TrainResult,
    tags: Sequence[Sequence[str]] = (), vectors: np.ndarray | None = None, atol: float = 1e-4,
) -> float:  # fmt: skip
    """Max |torch - runtime| of every catalog item's vector without its id embedding: torch's
    text projection + tags + item vector against :meth:`SequenceModel.item_vectors_from_text`
    on the exported ``projection`` (what a new item gets at serve time), so the two formulas
    cannot drift apart. :class:`ExportMismatchError` above ``atol`` (relative beyond 1)."""
    runtime = ItemProjection(projection, result.inputs)
    with torch.inference_mode():
        text = cast(torch.Tensor, model.text)[1:].numpy()
        expected = (model.text_proj(model.text) + model.feature_vectors())[1:].numpy()
    got = runtime(
        text, tags=list(tags) or None,
        vectors=list(vectors) if vectors is not None else None,
    )  # fmt: skip
    scale = max(1.0, float(np.abs(expected).max()))
    worst = float(np.abs(got - expected).max()) / scale
    if not np.isfinite(worst) or worst > atol:
        raise ExportMismatchError(worst, atol, "the item vectors of new items (text, tags, vector)")
    return worst


def export_sequence_model(
    result: TrainResult, out_dir: Path, *, card: dict[str, Any] | None = None,
    atol: float = 1e-4, item_tags: Sequence[Sequence[str]] = (),
    item_vectors: np.ndarray | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write the ONNX graph, item matrix, text projection and model card; returns the card.

    The graph is written under a temporary name and only renamed into place once it matches
    torch, so a failed export never leaves a loadable but wrong model behind. ``item_tags`` and
    ``item_vectors``: the training catalog's (``TrainingData``), for the check of new items'
    vectors of a model that uses them.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = result.model.eval()
    batches = _check_batches(result)
    tmp = out_dir / (SEQUENCE_FILE + ".tmp")
    names = result.inputs.graph_inputs
    axes = {name: {0: "batch", 1: "length"} for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                _UserVectors(model),
                tuple(tensors(batches[0], slice(None))[: len(names)]),
                str(tmp),
                dynamo=False,
                input_names=list(names),
                output_names=["user"],
                dynamic_axes={**axes, "user": {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
            )
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ExportError(f"torch.onnx.export failed: {exc}") from exc
    max_diff = validate_sequence_export(model, tmp, batches, atol, names)
    projection = _projection(model)
    item_diff = validate_item_vectors(model, projection, result, item_tags, item_vectors, atol)
    with torch.inference_mode():
        items = model.item_vectors()[1:].numpy().astype(np.float32)
    np.save(out_dir / ITEMS_FILE, items)
    np.savez(out_dir / TEXT_PROJ_FILE, allow_pickle=False, **projection)
    tmp.replace(out_dir / SEQUENCE_FILE)
    digest = hashlib.sha256((out_dir / SEQUENCE_FILE).read_bytes()).hexdigest()
    full_card = {
        "format_version": FORMAT_VERSION,
        "version": f"seq-{digest[:12]}",
        "sha256": digest,
        "item_ids": list(result.item_ids),
        "parameters": {**asdict(result.config), "n_warm_items": result.n_warm},
        "training": {
            "seconds": round(result.seconds, 2),
            "best_epoch": result.best_epoch,
            "best_validation_ndcg10": result.best_ndcg10,
            "epochs_run": len(result.history),
            "history": result.history,
        },
        "inputs": result.inputs.to_card(),
        "export": {
            "opset": OPSET,
            "atol": atol,
            "max_abs_diff": max_diff,
            "item_vectors_max_abs_diff": item_diff,
        },  # fmt: skip
        **(card or {}),
    }
    full_card["sha256_files"] = {
        name: hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
        for name in (ITEMS_FILE, TEXT_PROJ_FILE)
    }
    # The card goes last and whole (temporary name, then rename): a worker polling the folder
    # never reads half a card, and the digests tie the graph and matrices to it.
    tmp_card = out_dir / (CARD_FILE + ".tmp")
    tmp_card.write_text(json.dumps(full_card, indent=2) + "\n", encoding="utf-8")
    tmp_card.replace(out_dir / CARD_FILE)
    return full_card


def _projection(model: SequenceTransformer) -> dict[str, np.ndarray]:
    """The arrays of ``text_proj.npz``: what a new item's vector is made of at serve time."""
    with torch.inference_mode():
        out = {"weight": model.text_proj.weight.numpy().T, "bias": model.text_proj.bias.numpy()}
        if model.tag_emb is not None:
            out["tag_weight"] = model.tag_emb.weight[1:].numpy()
        if model.vector_proj is not None:
            out["vector_weight"] = model.vector_proj.weight.numpy().T
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in out.items()}
