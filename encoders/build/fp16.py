"""The GPU graph: the export fused by onnxruntime's transformer optimizer, in float16.

:func:`optimize_fp16` turns an export's ``model.onnx`` into ``model.fp16.onnx``: one
``EmbedLayerNormalization``, one ``Attention`` per layer, ``SkipLayerNormalization`` and
``BiasGelu`` (66 nodes instead of 532 for MiniLM), weights in float16, inputs and the output
vector kept as the export's (int64 ids in, float32 vector out). It is checked before it is kept:
every fusion must have happened and each validation text's vector must stay within
:data:`~encoders.runtime.metadata.MIN_COSINE` of the float32 graph's. ``model.fp16.json`` (its
:class:`~encoders.runtime.metadata.Fp16Card`) records the check and the float32 reference
vectors, so the CUDA session can repeat it at warm-up (GPU kernels are not the CPU's); reading
the card and repeating the check are the runtime's (:mod:`encoders.runtime.metadata`).

Building needs the ``onnx`` package (the ``export`` or ``gpu`` extra); loading needs only
onnxruntime. The CUDA execution provider runs it; the CPU provider runs it too (slowly), which
is what the build-time check and the tests use.
"""

from __future__ import annotations

import importlib
import json
import os
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from encoders.build.export import VALIDATION_TEXTS
from encoders.errors import (
    EXPORT_INSTALL_HINT,
    ExportDependencyError,
    ExportError,
    ModelNotFoundError,
)
from encoders.runtime.metadata import (
    FP16_CARD,
    FP16_FILE,
    MODEL_FILE,
    Fp16Card,
    check_vectors,
    file_sha256,
    is_exported,
    read_metadata,
)
from encoders.runtime.text import TextEncoder

__all__ = ["optimize_fp16"]

_REQUIRED_FUSIONS = ("Attention", "SkipLayerNormalization")


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
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    encoder = TextEncoder.from_session(session, model_dir)
    if encoder.input_names != input_names:
        raise ExportError(f"{graph} takes {encoder.input_names}, the export {input_names}")
    return encoder.encode(list(texts))
