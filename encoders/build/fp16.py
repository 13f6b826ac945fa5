"""The GPU graph: the export fused by onnxruntime's transformer optimizer, in float16.

:func:`optimize_fp16` turns an export's ``model.onnx`` into ``model.fp16.onnx``: one
``EmbedLayerNormalization``, one ``Attention`` per layer, ``SkipLayerNormalization`` and
``BiasGelu`` (66 nodes instead of 532 for MiniLM), weights in float16, inputs and the output
vector kept as the export's (int64 ids in, float32 vector out). It is checked before it is kept:
every fusion must have happened and each validation text's vector must stay within
:data:`MIN_COSINE` of the float32 graph's. ``model.fp16.json`` records the check and the float32
reference vectors, so the CUDA session can repeat it at warm-up (GPU kernels are not the CPU's).

Building needs the ``onnx`` package (the ``export`` or ``gpu`` extra); loading needs only
onnxruntime. The CUDA execution provider runs it; the CPU provider runs it too (slowly), which
is what the build-time check and the tests use.
"""

from __future__ import annotations

import importlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from encoders.errors import (
    EXPORT_INSTALL_HINT,
    ExportDependencyError,
    ExportError,
    ExportMismatchError,
    ModelLoadError,
    ModelNotFoundError,
)
from encoders.runtime.metadata import FP16_CARD, FP16_FILE, MODEL_FILE, file_sha256, read_metadata

__all__ = ["MIN_COSINE", "Fp16Card", "check_vectors", "optimize_fp16", "read_fp16_card"]

MIN_COSINE = 0.999
"""Each validation text's fp16 vector has at least this cosine with the float32 one."""

_REQUIRED_FUSIONS = ("Attention", "SkipLayerNormalization")


@dataclass(frozen=True)
class Fp16Card:
    """What ``model.fp16.json`` records about the fused fp16 graph."""

    source_sha256: str
    sha256: str
    fused: dict[str, int]
    nodes: int
    min_cosine: float
    texts: tuple[str, ...]
    reference: tuple[tuple[float, ...], ...]
    options: dict[str, bool] = field(default_factory=dict)

    def reference_vectors(self) -> np.ndarray:
        return np.asarray(self.reference, dtype=np.float32)


def read_fp16_card(model_dir: Path) -> Fp16Card | None:
    """The card of a *current* fp16 graph in ``model_dir``, or ``None``.

    ``None`` when there is no graph, no card, or the graph was built from another ``model.onnx``
    (a re-export makes the old fp16 graph stale). :class:`ModelLoadError` for an unreadable card
    or a graph whose digest does not match it.
    """
    model_dir = Path(model_dir)
    graph, card_path = model_dir / FP16_FILE, model_dir / FP16_CARD
    if not (graph.is_file() and card_path.is_file()):
        return None
    try:
        raw = json.loads(card_path.read_text(encoding="utf-8"))
        card = Fp16Card(**{**raw, "texts": tuple(raw["texts"]),
                           "reference": tuple(tuple(row) for row in raw["reference"])})
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"cannot read {card_path}: {exc}") from exc
    if card.source_sha256 != read_metadata(model_dir).sha256:
        return None
    if file_sha256(graph) != card.sha256:
        raise ModelLoadError(f"{graph} does not match the digest in {card_path}; build it again")
    return card


def check_vectors(actual: np.ndarray, card: Fp16Card, where: str) -> float:
    """The smallest cosine between ``actual`` and the card's reference vectors.

    :class:`ExportMismatchError` when it is below :data:`MIN_COSINE` (or not finite).
    """
    expected = card.reference_vectors()
    if actual.shape != expected.shape:
        raise ExportMismatchError(float("inf"), MIN_COSINE,
                                  f"{where}: shape {actual.shape} != {expected.shape}")
    norms = np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    cosine = float(np.min(np.sum(actual * expected, axis=1) / np.maximum(norms, 1e-12)))
    if not cosine >= MIN_COSINE:
        raise ExportMismatchError(1.0 - cosine, 1.0 - MIN_COSINE,
                                  f"{where}: fp16 vector cosine {cosine:.5f} < {MIN_COSINE}")
    return cosine


def optimize_fp16(model_dir: Path, *, raw_mask: bool = False, embed_fusion: bool = True,
                  attention_fusion: bool = True) -> Path:
    """Fuse and convert ``model_dir/model.onnx`` -> ``model_dir/model.fp16.onnx`` (+ its card).

    The defaults are the build that ``scripts/gpu/fp16_probe.py`` found right on an H100
    (onnxruntime-gpu 1.31.1: min cosine 0.9998 to float32; keeping the pooling in float32
    instead did not even load there); the options are kept for that probe. ``raw_mask``: the
    Attention nodes take the 2-D attention mask (else the per-row lengths); ``embed_fusion``:
    fuse the embeddings with their layer norm; ``attention_fusion``: one Attention node per
    layer.

    :class:`ExportError` when the graph does not fuse (an export from before eager attention:
    export again), :class:`ExportMismatchError` when fp16 moves a validation vector too far.
    """
    from encoders.build.export import VALIDATION_TEXTS, is_exported

    model_dir = Path(model_dir)
    if not is_exported(model_dir):
        raise ModelNotFoundError(f"no complete export at {model_dir} to build the fp16 graph from")
    metadata = read_metadata(model_dir)
    if metadata.num_heads < 1:
        raise ExportError(f"{model_dir} was exported before the fusable graph (no num_heads); "
                          "export it again: interest-stream export [--source …] --fp16")
    optimizer, fusion_options = _optimizer()
    options = fusion_options.FusionOptions("bert")
    options.use_raw_attention_mask(raw_mask)
    options.enable_embed_layer_norm = embed_fusion
    options.enable_attention = attention_fusion
    chosen = {"raw_mask": raw_mask, "embed_fusion": embed_fusion,
              "attention_fusion": attention_fusion}
    token = uuid.uuid4().hex[:8]
    partial, partial_card = (model_dir / f".{name}.{token}.tmp" for name in (FP16_FILE, FP16_CARD))
    try:
        model = optimizer.optimize_model(
            str(model_dir / MODEL_FILE), model_type="bert", num_heads=metadata.num_heads,
            hidden_size=metadata.dim, opt_level=0, use_gpu=True, optimization_options=options)
        fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        required = _REQUIRED_FUSIONS if attention_fusion else _REQUIRED_FUSIONS[1:]
        missing = [name for name in required if not fused.get(name)]
        if missing:
            raise ExportError(f"onnxruntime's optimizer did not fuse {missing} in "
                              f"{model_dir / MODEL_FILE}; export the model again")
        model.convert_float_to_float16(keep_io_types=True)
        model.save_model_to_file(str(partial))
        reference = _vectors(model_dir / MODEL_FILE, metadata.input_names, VALIDATION_TEXTS,
                             model_dir)
        card = Fp16Card(
            source_sha256=metadata.sha256, sha256=file_sha256(partial), fused=fused,
            nodes=len(model.model.graph.node), min_cosine=0.0, texts=VALIDATION_TEXTS,
            reference=tuple(tuple(float(x) for x in row) for row in reference), options=chosen)
        actual = _vectors(partial, metadata.input_names, VALIDATION_TEXTS, model_dir)
        card = Fp16Card(**{**asdict(card), "min_cosine": check_vectors(actual, card, "build")})
        partial_card.write_text(json.dumps(asdict(card)) + "\n", encoding="utf-8")
        os.replace(partial, model_dir / FP16_FILE)
        os.replace(partial_card, model_dir / FP16_CARD)  # the card last: it vouches for the graph
    except ExportError:
        raise
    except Exception as exc:  # the optimizer and onnx raise a variety of untyped errors
        raise ExportError(f"building the fp16 graph of {model_dir} failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
        partial_card.unlink(missing_ok=True)
    return model_dir / FP16_FILE


def _optimizer() -> tuple[Any, Any]:
    try:
        importlib.import_module("onnx")
        return (importlib.import_module("onnxruntime.transformers.optimizer"),
                importlib.import_module("onnxruntime.transformers.fusion_options"))
    except ImportError as exc:
        raise ExportDependencyError(
            f"building the fp16 graph needs onnx ({exc}); {EXPORT_INSTALL_HINT}"
        ) from exc


def _vectors(graph: Path, input_names: tuple[str, ...], texts: tuple[str, ...],
             model_dir: Path) -> np.ndarray:
    """Vectors of ``texts`` from ``graph`` on the CPU provider, through the runtime encoder."""
    from encoders.runtime.text import TextEncoder

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    encoder = TextEncoder.from_session(session, model_dir)
    if encoder.input_names != input_names:
        raise ExportError(f"{graph} takes {encoder.input_names}, the export {input_names}")
    return encoder.encode(list(texts))
