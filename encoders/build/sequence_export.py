"""ONNX export of the sequence (interest) Transformer, validated against torch; needs torch.

The exported graph takes the four padded feature arrays and returns the user vector (the
hidden state at the last position; the final block computes that position only). After every
export torch and ONNX Runtime are compared on real batches, and :class:`ExportMismatchError` is
raised beyond the tolerance; only then is the graph renamed into place, and the model card,
with the digests of every file, is written last. Model and training:
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
from typing import Any

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
    INPUT_NAMES,
    ITEMS_FILE,
    SEQUENCE_FILE,
    TEXT_PROJ_FILE,
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
) -> float:
    """Max |torch - ONNX Runtime| over ``batches``; :class:`ExportMismatchError` above ``atol``.

    The tolerance is relative to the largest reference value when that exceeds 1.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        raise ExportError(f"ONNX Runtime cannot load the export {onnx_path}: {exc}") from exc
    worst = 0.0
    model.eval()
    for batch in batches:
        with torch.inference_mode():
            expected = model(*tensors(batch, slice(None)))[:, -1, :].numpy()
        got = session.run(None, batch.feeds())[0]
        if got.shape != expected.shape:
            raise ExportMismatchError(math.inf, atol, f"shape {got.shape} != {expected.shape}")
        scale = max(1.0, float(np.abs(expected).max()))
        worst = max(worst, float(np.abs(got - expected).max()) / scale)
        if not np.isfinite(worst) or worst > atol:
            raise ExportMismatchError(worst, atol, f"batch of shape {batch.item_rows.shape}")
    return worst


def export_sequence_model(
    result: TrainResult, out_dir: Path, *, card: dict[str, Any] | None = None, atol: float = 1e-4
) -> dict[str, Any]:
    """Write the ONNX graph, item matrix, text projection and model card; returns the card.

    The graph is written under a temporary name and only renamed into place once it matches
    torch, so a failed export never leaves a loadable but wrong model behind.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = result.model.eval()
    batches = _check_batches(result)
    tmp = out_dir / (SEQUENCE_FILE + ".tmp")
    axes = {name: {0: "batch", 1: "length"} for name in INPUT_NAMES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                _UserVectors(model),
                tuple(tensors(batches[0], slice(None))),
                str(tmp),
                dynamo=False,
                input_names=list(INPUT_NAMES),
                output_names=["user"],
                dynamic_axes={**axes, "user": {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
            )
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ExportError(f"torch.onnx.export failed: {exc}") from exc
    max_diff = validate_sequence_export(model, tmp, batches, atol)
    with torch.inference_mode():
        items = model.item_vectors()[1:].numpy().astype(np.float32)
        weight = model.text_proj.weight.detach().numpy().T.astype(np.float32)
        bias = model.text_proj.bias.detach().numpy().astype(np.float32)
    np.save(out_dir / ITEMS_FILE, items)
    np.savez(out_dir / TEXT_PROJ_FILE, weight=weight, bias=bias)
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
        "export": {"opset": OPSET, "atol": atol, "max_abs_diff": max_diff},
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
